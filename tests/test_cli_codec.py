"""`ardm compress` / `ardm decompress` / `ardm demo` on files, end to end, with a small saved model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import ardm
from ardm.checkpoint import save_model
from ardm.cli import main
from ardm.nets import build_net

SHAPE = (1, 8, 8)
K = 256


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny 8x8 model with step losses, saved as a run directory."""
    torch.manual_seed(0)
    model = ardm.OrderAgnosticARDM(build_net("tiny", K, SHAPE), K, SHAPE).eval()
    crops = ardm.bundled_images()[:, :, 10:18, 10:18]
    model.estimate_step_losses(crops)
    path = tmp_path_factory.mktemp("run")
    save_model(model, {"preset": "tiny", "dataset": "fashion-mnist"}, path)
    return path


def crops() -> np.ndarray:
    return ardm.bundled_images()[:, :, 10:18, 10:18].numpy()


def test_png_and_npy_round_trip(run_dir, tmp_path, capsys):
    images = crops()
    Image.fromarray(images[0, 0]).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", images[1:4].astype(np.int16))
    inputs = [str(tmp_path / "a.png"), str(tmp_path / "b.npy")]
    out = tmp_path / "out"  # several inputs: -o is a directory, created when it ends in /
    assert main(["compress", *inputs, "-o", f"{out}/", "--budget", "9", "--model",
                 str(run_dir)]) == 0
    restored = tmp_path / "restored"
    blobs = [str(out / "a.png.ardm"), str(out / "b.npy.ardm")]
    assert main(["decompress", *blobs, "-o", f"{restored}/", "--model", str(run_dir)]) == 0
    assert np.array_equal(np.asarray(Image.open(restored / "a.png")), images[0, 0])
    back = np.load(restored / "b.npy")
    assert back.dtype == np.int16 and np.array_equal(back, images[1:4])


def test_single_file_output_name(run_dir, tmp_path):
    Image.fromarray(crops()[2, 0]).save(tmp_path / "x.png")
    blob = tmp_path / "x.ardm"
    assert main(["compress", str(tmp_path / "x.png"), "-o", str(blob), "--model", str(run_dir),
                 "--budget", "4"]) == 0
    assert main(["decompress", str(blob), "-o", str(tmp_path / "y.png"), "--model",
                 str(run_dir)]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "y.png")), crops()[2, 0])


@pytest.mark.parametrize(
    "content, name, message",
    [
        (b"not a png", "bad.png", "not a readable image"),
        (b"junk", "bad.bin", "unknown file type"),
        (b"junk", "bad.txt", "is text data, the model"),
    ],
)
def test_bad_input_files(run_dir, tmp_path, capsys, content, name, message):
    (tmp_path / name).write_bytes(content)
    assert main(["compress", str(tmp_path / name), "--model", str(run_dir)]) == 1
    assert message in capsys.readouterr().err


def test_wrong_image_size_and_corrupted_blob(run_dir, tmp_path, capsys):
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "big.png")
    assert main(["compress", str(tmp_path / "big.png"), "--model", str(run_dir)]) == 1
    assert "an image of 9x9 pixels; this model codes" in capsys.readouterr().err
    (tmp_path / "c.ardm").write_bytes(b"\xad\x01\x00garbage")
    assert main(["decompress", str(tmp_path / "c.ardm"), "--model", str(run_dir)]) == 1
    assert "error" in capsys.readouterr().err


def test_shipped_model_is_chosen_by_file_type_and_found_from_the_blob(tmp_path, capsys):
    image = ardm.bundled_images()[3, 0].numpy()
    Image.fromarray(image).save(tmp_path / "shirt.png")
    assert main(["compress", str(tmp_path / "shirt.png"), "--budget", "5"]) == 0
    (tmp_path / "shirt.png").unlink()
    assert main(["decompress", str(tmp_path / "shirt.png.ardm")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "shirt.png")), image)


def test_independent_items_and_a_custom_model_needs_model(run_dir, tmp_path, capsys):
    np.save(tmp_path / "batch.npy", crops()[:5])
    assert main(["compress", str(tmp_path / "batch.npy"), "--independent", "--budget", "6",
                 "--model", str(run_dir)]) == 0
    blob = (tmp_path / "batch.npy.ardm").read_bytes()
    assert len(ardm.coding.split(blob)) == 5
    assert main(["decompress", str(tmp_path / "batch.npy.ardm"), "-o", str(tmp_path / "r.npy")]) == 1
    assert "--model" in capsys.readouterr().err
    assert main(["decompress", str(tmp_path / "batch.npy.ardm"), "-o", str(tmp_path / "r.npy"),
                 "--model", str(run_dir)]) == 0
    assert np.array_equal(np.load(tmp_path / "r.npy"), crops()[:5])


def test_a_file_type_no_model_reads(tmp_path, capsys):
    (tmp_path / "notes.xyz").write_bytes(b"hello")
    assert main(["compress", str(tmp_path / "notes.xyz")]) == 1
    assert "no modality reads .xyz" in capsys.readouterr().err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("train", "compress", "decompress", "demo", "choose-order"):
        assert command in text
