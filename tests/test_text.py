"""Text end to end: the KJV dataset and its split, the transformer net, infilling, and the
command line on text files (compress / decompress any bytes, sample, infill), on real KJV bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ardm
from ardm.checkpoint import save_model
from ardm.cli import main
from ardm.modalities import get_modality, modality_for_path
from ardm.modalities.text import chunk_bytes, load_text_bytes, split_bytes
from ardm.nets import build_net, net_config, net_from_config
from ardm.training.config import TrainConfig

TEXT = get_modality("text")
LENGTH = 32  # items of the model-level test models: short, so that those tests take no time
RUN_LENGTH = 256  # the saved run takes the modality's real items


@pytest.fixture(scope="module")
def kjv() -> bytes:
    return load_text_bytes("kjv")


def tiny_text_model(length: int = LENGTH, seed: int = 0) -> ardm.OrderAgnosticARDM:
    torch.manual_seed(seed)
    net = build_net("tiny", 256, (length,), net="transformer")
    return ardm.OrderAgnosticARDM(net, 256, (length,), ce_weight=1e-4).eval()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, kjv) -> Path:
    """A tiny transformer, a few steps trained on KJV bytes, with step losses, saved as a run."""
    model = tiny_text_model(RUN_LENGTH).train()
    chunks = chunk_bytes(split_bytes(kjv, "train")[: 64 * RUN_LENGTH], RUN_LENGTH).long()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(30):
        loss, _ = model.training_loss(chunks[(step * 16) % 64 :][:16], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.modality = "text"
    model.estimate_step_losses(chunks[:8], generator=torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("text-run")
    save_model(model, {"preset": "tiny", "dataset": "kjv"}, path)
    return path


# ---- data -----------------------------------------------------------------------------------


def test_kjv_is_split_by_position_never_shuffled(kjv):
    assert kjv.startswith(b"Ge1:1 In the beginning God created the heaven and the earth.")
    train, test = split_bytes(kjv, "train"), split_bytes(kjv, "test")
    assert train + test == kjv and len(train) == int(0.9 * len(kjv))
    x = TEXT.load("kjv", "test")
    assert x.dtype == torch.uint8 and x.shape[1] == 256 and x.shape[0] == len(test) // 256
    assert bytes(x[0].tolist()) == test[:256]
    assert b"Rev22:20" in bytes(x.flatten().tolist())  # the last whole chunk: Revelation


def test_bring_your_own_text_file_and_directory(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"B" * 3000)
    (tmp_path / "a.txt").write_bytes(b"A" * 3000)
    joined = load_text_bytes(tmp_path)
    assert joined == b"A" * 3000 + b"\n" + b"B" * 3000  # sorted, joined by newlines
    assert TEXT.load(tmp_path, "train").shape == (int(0.9 * 6001) // 256, 256)
    assert TEXT.load(tmp_path / "a.txt", "test").shape == (1, 256)
    (tmp_path / "short.txt").write_bytes(b"tiny")
    with pytest.raises(ValueError, match="less than one 256-byte item"):
        TEXT.load(tmp_path / "short.txt", "test")
    with pytest.raises(ValueError, match="no such file"):
        load_text_bytes(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        load_text_bytes(tmp_path / "empty")


def test_a_text_file_is_read_exactly_and_needs_a_text_model(tmp_path):
    data = bytes(range(256)) + b"\xff\xfe not UTF-8"
    (tmp_path / "x.txt").write_bytes(data)
    values = TEXT.read_file(tmp_path / "x.txt", (256,))
    assert values.dtype == np.uint8 and bytes(values) == data
    TEXT.write_file(tmp_path / "y.txt", values)
    assert (tmp_path / "y.txt").read_bytes() == data
    with pytest.raises(ValueError, match="1-D items"):
        TEXT.read_file(tmp_path / "x.txt", (1, 28, 28))
    assert modality_for_path("notes.TXT").name == "text"
    assert modality_for_path("server.log").name == "text"


def test_train_config_takes_modality_net_and_ce_weight_from_the_dataset():
    cfg = TrainConfig(out="runs/x", data="kjv")
    assert (cfg.modality, cfg.net, cfg.ce_weight) == ("text", "transformer", 1e-4)
    image = TrainConfig(out="runs/x")
    assert (image.modality, image.net, image.data, image.ce_weight) == (
        "image", "unet", "fashion-mnist", 1e-3)
    assert TrainConfig(out="runs/x", modality="text", data="/my/logs").net == "transformer"
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(out="runs/x", lr_schedule="linear")


# ---- the transformer ------------------------------------------------------------------------


def test_transformer_is_bidirectional_and_rebuilds_from_its_config():
    net = build_net("tiny", 256, (16,), net="transformer").eval()
    torch.nn.init.normal_(net.out.weight)  # it starts at zero (uniform predictions)
    x = torch.randint(0, 257, (2, 16))
    known = x < 256
    t = known.sum(1)
    out = net(x, known, t)
    assert out.shape == (2, 16, 256)
    y = x.clone()
    y[:, -1] = (x[:, -1] + 1) % 256  # a change at the end moves the prediction at the start
    assert not torch.allclose(net(y, y < 256, t)[:, 0], out[:, 0])
    rebuilt = net_from_config(net_config(net), 256, (16,))
    rebuilt.load_state_dict(net.state_dict())
    assert torch.equal(rebuilt.eval()(x, known, t), out)
    learned = build_net("tiny", 256, (16,), net="transformer", positions="learned")
    assert learned(x, known, t).shape == (2, 16, 256)


@pytest.mark.parametrize(
    "overrides, message",
    [({"positions": "alibi"}, "positions"), ({"width": 30, "num_heads": 4}, "divisible"),
     ({"head": "gaussian"}, "head"), ({"depth": 0}, "depth")],
)
def test_transformer_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_net("tiny", 256, (16,), net="transformer", **overrides)


def test_transformer_takes_sequences_only():
    with pytest.raises(ValueError, match="1-D items"):
        build_net("tiny", 256, (1, 28, 28), net="transformer")


# ---- infilling ------------------------------------------------------------------------------


def test_infill_keeps_the_known_values_and_spends_the_budget(kjv):
    model = tiny_text_model()
    model.step_losses.copy_(torch.linspace(6.0, 1.0, LENGTH, dtype=torch.float64))
    x = torch.tensor(list(kjv[1000 : 1000 + 2 * LENGTH])).view(2, LENGTH)
    known = torch.rand(2, LENGTH, generator=torch.Generator().manual_seed(0)) < 0.75
    known[1] = known[0]  # same count of unknowns in both rows: one policy, one group
    before = model.network_calls
    out = model.sample(2, budget=3, given=x, known=known, generator=torch.Generator().manual_seed(1))
    assert model.network_calls - before == 3
    assert torch.equal(out[known], x[known])
    # rows with different numbers of unknowns are generated in groups, one policy each
    known[1, :4] = False
    known[1, 4:8] = True
    out = model.sample(2, budget=2, given=x, known=known)
    assert torch.equal(out[known], x[known])
    # a fully known row comes back as given
    assert torch.equal(model.sample(1, given=x[0], known=torch.ones(LENGTH, dtype=torch.bool)),
                       x[:1])


def test_infill_nll_is_the_sum_over_the_unknown_steps(kjv):
    model = tiny_text_model(length=8)
    x = torch.tensor(list(kjv[500:508])).view(1, 8)
    known = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=torch.bool)
    order = [7, 0, 2, 3, 1, 4, 5, 6]  # the unknown ones in the order 7, 1, 4, 5
    got = float(model.exact_nll_bits(x, order, known=known))
    expected, mask = 0.0, known.clone()
    for pos in (7, 1, 4, 5):
        lp = model.predict_log_probs(x, mask)[0, pos]
        expected -= float(lp[x[0, pos]]) / np.log(2)
        mask[0, pos] = True
    assert got == pytest.approx(expected, rel=1e-5)
    # two calls over the four unknown ones: fewer bits cannot come from more parallelism
    assert float(model.exact_nll_bits(x, order, policy=[0, 2], known=known)) > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [({"given": None, "known": torch.ones(LENGTH, dtype=torch.bool)}, "needs both"),
     ({"given": torch.zeros(LENGTH, dtype=torch.long), "known": torch.ones(LENGTH)}, "bool"),
     ({"given": torch.zeros(LENGTH, dtype=torch.long),
       "known": torch.ones(LENGTH + 1, dtype=torch.bool)}, "shape"),
     ({"given": torch.zeros(LENGTH, dtype=torch.long), "known": torch.zeros(LENGTH, dtype=torch.bool),
       "order": list(range(LENGTH))}, "not both")],
)
def test_infill_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_text_model().sample(1, **kwargs)


# ---- the command line on text ---------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, RUN_LENGTH - 1, RUN_LENGTH, RUN_LENGTH + 1, 1000])
@pytest.mark.parametrize("independent", [False, True])
def test_compress_decompress_any_text_file_is_identical(text_run, tmp_path, kjv, size, independent):
    data = kjv[len(kjv) - size - 7 : len(kjv) - 7] if size != 1000 else kjv[-1000:-500] + bytes(
        range(256)) + b"\xc3\x28 invalid UTF-8"
    source = tmp_path / "notes.txt"
    source.write_bytes(data)
    args = ["compress", str(source), "--model", str(text_run), "--budget", "5"]
    assert main(args + (["--independent"] if independent else [])) == 0
    source.rename(tmp_path / "original.txt")
    assert main(["decompress", str(tmp_path / "notes.txt.ardm"), "--model", str(text_run)]) == 0
    assert (tmp_path / "notes.txt").read_bytes() == data


def test_a_1_mb_file_round_trips_with_the_tiny_preset(text_run, tmp_path, kjv):
    data = (kjv * 2)[: 1 << 20]
    (tmp_path / "big.txt").write_bytes(data)
    assert main(["compress", str(tmp_path / "big.txt"), "--model", str(text_run), "--budget", "1",
                 "-o", str(tmp_path / "big.ardm")]) == 0
    assert main(["decompress", str(tmp_path / "big.ardm"), "--model", str(text_run),
                 "-o", str(tmp_path / "back.txt")]) == 0
    assert (tmp_path / "back.txt").read_bytes() == data


def test_bad_text_input_gets_a_clear_error(text_run, tmp_path, capsys, kjv):
    (tmp_path / "a.txt").write_bytes(kjv[:300])
    assert main(["compress", str(tmp_path / "a.txt"), "--model", str(text_run)]) == 0
    blob = (tmp_path / "a.txt.ardm").read_bytes()
    (tmp_path / "cut.ardm").write_bytes(blob[: len(blob) // 2])
    assert main(["decompress", str(tmp_path / "cut.ardm"), "--model", str(text_run),
                 "-o", str(tmp_path / "cut.txt")]) == 1
    assert "error" in capsys.readouterr().err and not (tmp_path / "cut.txt").exists()
    # an image model given text, and a text model given an image
    assert main(["compress", str(tmp_path / "a.txt"), "--model", "fashion-mnist"]) == 1
    assert "a.txt is text data, the model fashion-mnist takes image data" in capsys.readouterr().err
    ardm.compress(torch.zeros(5, dtype=torch.uint8), ardm.load(text_run))  # a short item is fine
    with pytest.raises(ValueError):
        ardm.compress(torch.zeros(1, 28, 28, dtype=torch.uint8), ardm.load(text_run))


def test_sample_prints_text_and_infill_fills_the_mask(text_run, tmp_path, capsys):
    out = tmp_path / "s.txt"
    assert main(["sample", str(text_run), "--budget", "4", "--n", "2", "-o", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert out.read_text(encoding="utf-8").count("-" * 72) == 1 and "4 network calls" in printed
    assert main(["infill", str(text_run), "In the ____ God", "--budget", "3"]) == 0
    captured = capsys.readouterr()
    filled = captured.out.rstrip("\n")
    assert filled.startswith("In the ") and filled.endswith(" God") and "____" not in filled
    assert "4 bytes filled in 3 network calls" in captured.err
    assert main(["infill", str(text_run), "no mask here"]) == 1
    assert "no mask character" in capsys.readouterr().err
    assert main(["infill", "fashion-mnist", "a _ b"]) == 1
    assert "text model" in capsys.readouterr().err


# ---- the shipped text model -----------------------------------------------------------------


def test_the_shipped_kjv_model_is_chosen_for_text_files_and_found_from_the_blob(tmp_path, kjv):
    data = split_bytes(kjv, "test")[5000:5300]  # 300 bytes: a whole item and a short one
    (tmp_path / "verse.txt").write_bytes(data)
    assert main(["compress", str(tmp_path / "verse.txt"), "--budget", "8", "--no-progress"]) == 0
    blob = (tmp_path / "verse.txt.ardm").read_bytes()
    assert ardm.coding.blob_model(blob) == "kjv" and 8 * len(blob) < 4 * len(data)
    (tmp_path / "verse.txt").unlink()
    assert main(["decompress", str(tmp_path / "verse.txt.ardm"), "--no-progress"]) == 0
    assert (tmp_path / "verse.txt").read_bytes() == data


def test_readme_use_example_runs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(block, "README.md", "exec"), {})
