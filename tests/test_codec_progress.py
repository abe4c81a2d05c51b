"""Progress of compress / decompress: the network calls they report sum exactly to the announced
totals (``coding_steps``, ``decoding_steps``), the same for both, and reporting never changes
the blob; ``ardm compress`` / ``ardm decompress`` with and without ``--no-progress``."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import SequenceNet, real_crops, real_text

import ardm
from ardm.checkpoint import save_model
from ardm.cli import main
from ardm.coding import coding_steps, compress, decoding_steps, decompress
from ardm.models import OrderAgnosticARDM, StepSchedule
from ardm.nets import build_net

SHAPE = (1, 8, 8)
K = 16


@pytest.fixture(scope="module")
def image_model() -> OrderAgnosticARDM:
    torch.manual_seed(0)
    m = OrderAgnosticARDM(build_net("tiny", K, SHAPE), K, SHAPE).eval()
    m.estimate_step_losses(real_crops(10))
    return m


def calls_of(model, length: int, budget: int) -> int:
    return len(StepSchedule(model.policy(budget, num_vars=length), model.num_stages, length))


def check_progress(model, x, budget: int, mode: str) -> int:
    """Compress and decompress with progress; the reports sum to the announced totals."""
    total = coding_steps(x, model, budget=budget, mode=mode)
    reported: list[int] = []
    blob = compress(x, model, budget=budget, mode=mode, progress=reported.append)
    assert all(k > 0 for k in reported)
    assert sum(reported) == total
    assert blob == compress(x, model, budget=budget, mode=mode)  # the same bytes without it
    assert decoding_steps(blob, model) == total
    decoded: list[int] = []
    back = decompress(blob, model, progress=decoded.append)
    assert all(k > 0 for k in decoded)
    assert sum(decoded) == total
    assert torch.equal(back, decompress(blob, model))
    return total


@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_an_image_batch_reports_the_calls_of_its_policy(image_model, mode):
    x = real_crops(3)
    for budget in (1, 5, 20):
        assert check_progress(image_model, x, budget, mode) == calls_of(image_model, 64, budget)
    one = real_crops(1)[0]  # a single item: one stream in either mode
    assert check_progress(image_model, one, 5, mode) == calls_of(image_model, 64, 5)


def test_a_model_of_several_stages(upscale_model):
    x = real_crops(2)
    for mode in ("joint", "independent"):
        assert check_progress(upscale_model, x, 7, mode) == calls_of(upscale_model, 64, 7)


@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_a_sequence_of_odd_length_counts_each_length_once(text_model, mode):
    data = real_text(32 * 3 + 7)  # three items of 32 bytes and one of 7
    x = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    total = check_progress(text_model, x, 8, mode)
    assert total == calls_of(text_model, 32, 8) + calls_of(text_model, 7, 8) == 8 + 7
    assert check_progress(text_model, data[:5], 8, mode) == 5  # bytes, one short item
    assert coding_steps(b"", text_model, budget=8, mode=mode) == 0


def test_items_stored_raw_are_counted_the_same():
    """The codec stores raw the items a model codes worse than raw: the totals still agree."""
    torch.manual_seed(3)
    wrong = OrderAgnosticARDM(SequenceNet(32, bias=12.0), 256, (32,)).eval()
    wrong.step_losses.fill_(1.0)
    data = bytes(range(1, 256)) * 2  # never the value the model expects: 15 items of 32 and 30
    for mode in ("joint", "independent"):
        expected = calls_of(wrong, 32, 8) + calls_of(wrong, 30, 8)
        assert check_progress(wrong, data, 8, mode) == expected
        assert check_progress(wrong, data[:32], 8, mode) == calls_of(wrong, 32, 8)


def test_bad_arguments_are_errors_as_in_compress(image_model):
    with pytest.raises(ValueError, match="mode"):
        coding_steps(real_crops(1), image_model, mode="both")
    with pytest.raises(ValueError, match="budget"):
        coding_steps(real_crops(1), image_model, budget=0)
    with pytest.raises(ValueError):
        decoding_steps(b"\x00\x02", image_model)  # a frame cut short


# ---- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = ardm.OrderAgnosticARDM(build_net("tiny", 256, SHAPE), 256, SHAPE).eval()
    model.estimate_step_losses(ardm.bundled_images()[:, :, 10:18, 10:18])
    path = tmp_path_factory.mktemp("run")
    save_model(model, {"preset": "tiny", "dataset": "fashion-mnist"}, path)
    return path


@pytest.mark.parametrize("terminal", [False, True])
def test_cli_with_and_without_progress(run_dir, tmp_path, capsys, monkeypatch, terminal):
    images = ardm.bundled_images()[:3, :, 10:18, 10:18].numpy()
    np.save(tmp_path / "batch.npy", images)
    if terminal:  # tqdm shows its bar when stderr is a terminal
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    blobs = {}
    for flag in ([], ["--no-progress"]):
        out = tmp_path / f"out{len(flag)}"
        out.mkdir()
        args = [str(tmp_path / "batch.npy"), "-o", str(out / "b.ardm"), "--model", str(run_dir),
                "--budget", "6", *flag]
        assert main(["compress", *args]) == 0
        text = capsys.readouterr()
        assert "1 file(s)" in text.out
        assert ("6/6" in text.err and "call" in text.err and "batch.npy" in text.err) == (
            terminal and not flag
        )
        blobs[len(flag)] = (out / "b.ardm").read_bytes()
        assert main(["decompress", str(out / "b.ardm"), "-o", str(out / "r.npy"), "--model",
                     str(run_dir), *flag]) == 0
        text = capsys.readouterr()
        assert "r.npy" in text.out
        assert ("6/6" in text.err and "b.ardm" in text.err) == (terminal and not flag)
        assert np.array_equal(np.load(out / "r.npy"), images)
    assert blobs[0] == blobs[1]
