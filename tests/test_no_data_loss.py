"""The CLI never loses or alters a user's data (issue #12): images it cannot code exactly are
refused, never converted; no file is overwritten without --force; -o cannot surprise; --verify
decodes before success; every user error is one line and exit status 1, never a traceback."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import ardm
from ardm.checkpoint import save_model
from ardm.cli import main
from ardm.nets import build_net

K = 256


def _run_dir(tmp_path_factory, channels: int) -> Path:
    """A tiny untrained 8x8 model of ``channels`` channels with step losses, as a run directory."""
    torch.manual_seed(0)
    shape = (channels, 8, 8)
    model = ardm.OrderAgnosticARDM(build_net("tiny", K, shape), K, shape).eval()
    model.estimate_step_losses(ardm.bundled_images()[:, :, 10:18, 10:18].repeat(1, channels, 1, 1))
    path = tmp_path_factory.mktemp(f"run{channels}")
    save_model(model, {"preset": "tiny", "dataset": "fashion-mnist"}, path)
    return path


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory) -> Path:
    return _run_dir(tmp_path_factory, 1)


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory) -> Path:
    return _run_dir(tmp_path_factory, 3)


def crops() -> np.ndarray:
    """Real pixels: 8x8 center crops of the bundled Fashion-MNIST test images, (10, 1, 8, 8)."""
    return ardm.bundled_images()[:, :, 10:18, 10:18].numpy()


def grey() -> np.ndarray:
    return crops()[0, 0]


def colour() -> np.ndarray:
    c = crops()
    return np.stack([c[0, 0], c[1, 0], c[2, 0]], axis=-1)


def fails(argv: list[str], capsys, *phrases: str) -> str:
    """Run the CLI, expecting exit status 1 and one line on stderr that holds ``phrases``."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for phrase in phrases:
        assert phrase in err, err
    return err


def no_outputs(folder: Path, before: set[str]) -> None:
    """Nothing new in ``folder``: no output, no half-written temporary file."""
    assert {p.name for p in folder.iterdir()} == before


def _png(path: Path, width: int, height: int, depth: int, colour_type: int, rows: bytes) -> None:
    """A PNG written byte by byte, for the bit depths Pillow does not write (16-bit RGB, 2-bit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _make(kind: str, path: Path) -> None:
    g = grey()
    if kind == "rgb":
        Image.fromarray(colour()).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([colour(), np.full((8, 8), 200, np.uint8)])).save(path)
    elif kind == "palette":
        Image.fromarray(g).convert("P").save(path)
    elif kind == "16-bit":
        Image.fromarray(g.astype(np.uint16) * 257).save(path)
    elif kind == "16-bit small values":  # values that fit 0..255, still a 16-bit file
        Image.fromarray(g.astype(np.uint16)).save(path)
    elif kind == "LA opaque":  # alpha that is fully opaque is still a conversion to drop
        Image.fromarray(np.dstack([g, np.full((8, 8), 255, np.uint8)]), "LA").save(path)
    elif kind == "16-bit RGB":  # Pillow reads it as 8-bit RGB: the low bytes would be lost
        _png(path, 8, 8, 16, 2, b"".join(b"\x00" + bytes(range(48)) for _ in range(8)))
    elif kind == "2-bit":  # Pillow scales it to 0..255
        _png(path, 8, 8, 2, 0, b"".join(b"\x00\x1b\xe4" for _ in range(8)))
    elif kind == "1-bit":
        Image.fromarray(g > 100).save(path)
    elif kind == "transparent colour":
        Image.fromarray(g).save(path, transparency=int(g[0, 0]))
    elif kind == "animation":
        Image.fromarray(g).save(path, save_all=True, append_images=[Image.fromarray(g[::-1])])
    else:
        raise AssertionError(kind)


# ---- images are refused, never converted --------------------------------------------------------

REFUSED = ["rgb", "rgba", "palette", "16-bit", "16-bit small values", "LA opaque", "16-bit RGB",
           "2-bit", "1-bit", "transparent colour", "animation"]


@pytest.mark.parametrize("kind", REFUSED)
def test_an_image_a_grey_model_cannot_code_exactly_is_refused(grey_run, tmp_path, capsys, kind):
    _make(kind, tmp_path / "x.png")
    before = {p.name for p in tmp_path.iterdir()}
    err = fails(["compress", str(tmp_path / "x.png"), "--model", str(grey_run), "--budget", "5",
                 "--no-progress"], capsys, "8-bit greyscale images (mode L) of 8x8 pixels exactly",
                "ardm never converts")
    no_outputs(tmp_path, before)
    if kind == "rgb":
        assert "ardm train --data DIR" in err and "--model RUN_DIR" in err


def test_the_shipped_model_refuses_a_colour_image(tmp_path, capsys):
    image = ardm.bundled_images()[0, 0].numpy()
    Image.fromarray(np.stack([image, image[::-1], image.T], axis=-1)).save(tmp_path / "color.png")
    fails(["compress", str(tmp_path / "color.png"), "--budget", "5", "--no-progress"], capsys,
          "an 8-bit RGB image", "8-bit greyscale images (mode L) of 28x28 pixels", "ardm train")
    assert not (tmp_path / "color.png.ardm").exists()


def test_an_image_of_another_size_is_refused_with_how_to_train(grey_run, tmp_path, capsys):
    Image.fromarray(np.zeros((9, 7), np.uint8)).save(tmp_path / "big.png")
    fails(["compress", str(tmp_path / "big.png"), "--model", str(grey_run), "--no-progress"],
          capsys, "an image of 7x9 pixels", "of 8x8 pixels", "ardm train --data DIR")


def test_a_colour_model_codes_rgb_exactly_and_refuses_grey(rgb_run, tmp_path, capsys):
    for suffix in (".png", ".webp", ".bmp", ".tif", ".ppm"):
        source = tmp_path / f"c{suffix}"
        Image.fromarray(colour()).save(source, **({"lossless": True} if suffix == ".webp" else {}))
        assert main(["compress", str(source), "--model", str(rgb_run), "--budget", "5",
                     "--no-progress", "--verify"]) == 0
        source.rename(tmp_path / f"orig{suffix}")
        assert main(["decompress", f"{source}.ardm", "--model", str(rgb_run), "--no-progress"]) == 0
        assert np.array_equal(np.asarray(Image.open(source)), colour()), suffix
    Image.fromarray(grey()).save(tmp_path / "g.png")
    fails(["compress", str(tmp_path / "g.png"), "--model", str(rgb_run), "--no-progress"], capsys,
          "an 8-bit greyscale image", "8-bit RGB images of 8x8 pixels")


def test_a_big_endian_array_is_refused_not_converted(grey_run, tmp_path, capsys):
    np.save(tmp_path / "be.npy", crops().astype(">i2"))
    fails(["compress", str(tmp_path / "be.npy"), "--model", str(grey_run), "--no-progress"], capsys,
          ">i2", "<i2")


def test_png_metadata_is_not_kept_and_help_says_so(grey_run, tmp_path, capsys):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by hand")
    Image.fromarray(grey()).save(tmp_path / "t.png", pnginfo=info)
    assert main(["compress", str(tmp_path / "t.png"), "--model", str(grey_run), "--budget", "5",
                 "--no-progress"]) == 0
    assert main(["decompress", str(tmp_path / "t.png.ardm"), "-o", str(tmp_path / "back.png"),
                 "--model", str(grey_run), "--no-progress"]) == 0
    back = Image.open(tmp_path / "back.png")
    assert np.array_equal(np.asarray(back), grey()) and "Comment" not in back.info
    capsys.readouterr()
    for command in ("compress", "decompress"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "PNG metadata (text chunks, ICC profile, gamma, DPI) is not kept" in text
        assert "bit for bit" not in text and "--force" in text


# ---- no file is replaced without --force ---------------------------------------------------------


def test_compress_never_overwrites_without_force(grey_run, tmp_path, capsys):
    Image.fromarray(grey()).save(tmp_path / "x.png")
    (tmp_path / "x.png.ardm").write_bytes(b"precious")
    argv = ["compress", str(tmp_path / "x.png"), "--model", str(grey_run), "--budget", "5",
            "--no-progress"]
    fails(argv, capsys, "x.png.ardm exists", "--force", "-o")
    assert (tmp_path / "x.png.ardm").read_bytes() == b"precious"
    assert main([*argv, "--force"]) == 0
    assert (tmp_path / "x.png.ardm").read_bytes() != b"precious"


def test_decompress_never_overwrites_without_force(grey_run, tmp_path, capsys):
    Image.fromarray(grey()).save(tmp_path / "x.png")
    assert main(["compress", str(tmp_path / "x.png"), "--model", str(grey_run), "--budget", "5",
                 "--no-progress"]) == 0
    Image.fromarray(grey()[::-1]).save(tmp_path / "x.png")  # the user's file, now different
    argv = ["decompress", str(tmp_path / "x.png.ardm"), "--model", str(grey_run), "--no-progress"]
    fails(argv, capsys, "x.png exists; pass --force to replace it, or -o")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), grey()[::-1])
    (tmp_path / "y.png").write_bytes(b"mine")
    fails([*argv, "-o", str(tmp_path / "y.png")], capsys, "y.png exists")
    assert (tmp_path / "y.png").read_bytes() == b"mine"
    assert main([*argv, "--force"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), grey())


def test_sample_never_overwrites_without_force(grey_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["sample", str(grey_run), "--budget", "2", "--n", "2", "--no-progress"]
    for name, extra in (("grid.png", ["-o", str(tmp_path / "grid.png")]), ("samples.png", [])):
        (tmp_path / name).write_bytes(b"precious")
        before = {p.name for p in tmp_path.iterdir()}
        fails([*argv, *extra], capsys, f"{name} exists", "--force")
        assert (tmp_path / name).read_bytes() == b"precious"
        no_outputs(tmp_path, before)  # nor a half-written temporary file
        assert main([*argv, *extra, "--force"]) == 0
        with Image.open(tmp_path / name) as grid:
            assert grid.size[0] > 1


def test_sample_checks_the_name_the_preview_gets(tmp_path, capsys):
    """Text samples asked for as x.png are written as x.txt: that is the file checked."""
    (tmp_path / "x.txt").write_text("mine")
    fails(["sample", "kjv", "--budget", "2", "--n", "1", "-o", str(tmp_path / "x.png"),
           "--no-progress"], capsys, "x.txt exists", "--force")
    assert (tmp_path / "x.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_eval_plots_never_overwrite_without_force(grey_run, fm8_dir, tmp_path, capsys):
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "bpd_vs_budget.png").write_bytes(b"precious")
    argv = ["eval", str(grey_run), "--data", str(fm8_dir), "--budgets", "2", "--test-size", "2",
            "--exact-images", "0", "--plots", str(plots), "--no-progress"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""  # refused before the model is even loaded
    assert err.strip() == (f"ardm eval: error: {plots / 'bpd_vs_budget.png'} exists; pass --force "
                           "to replace it, or --plots to write elsewhere")
    assert [p.name for p in plots.iterdir()] == ["bpd_vs_budget.png"]
    assert (plots / "bpd_vs_budget.png").read_bytes() == b"precious"
    assert main([*argv, "--force"]) == 0
    assert sorted(p.name for p in plots.iterdir()) == ["bpd_vs_budget.png", "step_losses.png"]
    assert (plots / "bpd_vs_budget.png").read_bytes().startswith(b"\x89PNG")


def test_demo_plot_never_overwrites_without_force(tmp_path, capsys):
    plot = tmp_path / "demo.png"
    plot.write_bytes(b"precious")
    argv = ["demo", "--plot", str(plot), "--budgets", "2", "--test-images", "0", "--no-text",
            "--no-audio"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""  # refused before any work
    assert err.strip() == (f"ardm demo: error: {plot} exists; pass --force to replace it, or "
                           "--plot to write elsewhere")
    assert plot.read_bytes() == b"precious"
    assert main([*argv, "--force"]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.png"]  # nothing left behind


def test_a_bare_output_name_gets_its_suffix_and_is_checked_too(grey_run, tmp_path, capsys):
    Image.fromarray(grey()).save(tmp_path / "x.png")
    assert main(["compress", str(tmp_path / "x.png"), "--model", str(grey_run), "--budget", "5",
                 "--no-progress"]) == 0
    argv = ["decompress", str(tmp_path / "x.png.ardm"), "-o", str(tmp_path / "y"), "--model",
            str(grey_run), "--no-progress"]
    assert main(argv) == 0 and (tmp_path / "y.png").exists()
    fails(argv, capsys, "y.png exists")


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(grey_run, tmp_path, capsys):
    Image.fromarray(grey()).save(tmp_path / "x.png")
    assert main(["compress", str(tmp_path / "x.png"), "--model", str(grey_run), "--budget", "5",
                 "--no-progress"]) == 0
    (tmp_path / "x.webp").write_bytes(b"old")
    before = {p.name for p in tmp_path.iterdir()}
    fails(["decompress", str(tmp_path / "x.png.ardm"), "-o", str(tmp_path / "x.webp"), "--force",
           "--model", str(grey_run), "--no-progress"], capsys, "x.webp: WebP has no greyscale")
    assert (tmp_path / "x.webp").read_bytes() == b"old"
    no_outputs(tmp_path, before)


def test_an_output_is_never_an_input(grey_run, tmp_path, capsys):
    Image.fromarray(grey()).save(tmp_path / "x.png")
    fails(["compress", str(tmp_path / "x.png"), "-o", str(tmp_path / "x.png"), "--force",
           "--model", str(grey_run), "--no-progress"], capsys, "is also an input")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), grey())


# ---- -o rules ------------------------------------------------------------------------------------


def test_o_with_several_inputs_must_be_a_directory(grey_run, tmp_path, capsys):
    for name in ("a", "b"):
        Image.fromarray(grey()).save(tmp_path / f"{name}.png")
    inputs = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    common = ["--model", str(grey_run), "--budget", "5", "--no-progress"]
    fails(["compress", *inputs, "-o", str(tmp_path / "single.ardm"), *common], capsys,
          "single.ardm is not a directory, but 2 inputs were given", "end it with /")
    assert not (tmp_path / "single.ardm").exists()
    (tmp_path / "file").write_bytes(b"")
    fails(["compress", *inputs, "-o", str(tmp_path / "file"), *common], capsys, "not a directory")
    assert main(["compress", *inputs, "-o", str(tmp_path / "new") + "/", *common]) == 0
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a.png.ardm", "b.png.ardm"]
    blobs = [str(tmp_path / "new" / "a.png.ardm"), str(tmp_path / "new" / "b.png.ardm")]
    fails(["decompress", *blobs, "-o", str(tmp_path / "one.png"), *common[:2], "--no-progress"],
          capsys, "one.png is not a directory, but 2 inputs were given")
    (tmp_path / "back").mkdir()  # an existing directory needs no slash
    assert main(["decompress", *blobs, "-o", str(tmp_path / "back"), *common[:2],
                 "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back" / "b.png")), grey())


def test_two_inputs_never_share_an_output(grey_run, tmp_path, capsys):
    for folder in ("p", "q"):
        (tmp_path / folder).mkdir()
        Image.fromarray(grey()).save(tmp_path / folder / "x.png")
    fails(["compress", str(tmp_path / "p" / "x.png"), str(tmp_path / "q" / "x.png"), "-o",
           str(tmp_path) + "/", "--model", str(grey_run), "--no-progress"], capsys,
          "would both be written to")
    assert not (tmp_path / "x.png.ardm").exists()


def test_one_input_into_a_missing_directory_is_an_error(grey_run, tmp_path, capsys):
    Image.fromarray(grey()).save(tmp_path / "x.png")
    fails(["compress", str(tmp_path / "x.png"), "-o", str(tmp_path / "no" / "x.ardm"), "--model",
           str(grey_run), "--no-progress"], capsys, "does not exist")


# ---- --verify ------------------------------------------------------------------------------------


def test_verify_decodes_before_success(grey_run, tmp_path, capsys):
    np.save(tmp_path / "b.npy", crops()[:3])
    argv = ["compress", str(tmp_path / "b.npy"), "--model", str(grey_run), "--budget", "5",
            "--no-progress", "--verify"]
    assert main(argv) == 0
    assert "verified" in capsys.readouterr().out
    assert np.array_equal(ardm.decompress((tmp_path / "b.npy.ardm").read_bytes(),
                                          ardm.load(str(grey_run))).numpy(), crops()[:3])


def test_a_failed_verify_writes_nothing_and_exits_1(grey_run, tmp_path, capsys, monkeypatch):
    import ardm.commands.compress as command

    real = command.decompress
    def wrong(blob, model, **kw):
        return real(blob, model, **kw) + 1

    monkeypatch.setattr(command, "decompress", wrong)
    np.save(tmp_path / "b.npy", crops()[:2])
    before = {p.name for p in tmp_path.iterdir()}
    fails(["compress", str(tmp_path / "b.npy"), "--model", str(grey_run), "--budget", "5",
           "--no-progress", "--verify"], capsys, "--verify: the blob does not decode to the input")
    no_outputs(tmp_path, before)


# ---- every user error is one line and exit status 1 ---------------------------------------------


@pytest.fixture()
def files(grey_run, tmp_path) -> Path:
    """A folder of good and bad inputs."""
    Image.fromarray(grey()).save(tmp_path / "x.png")
    assert main(["compress", str(tmp_path / "x.png"), "--model", str(grey_run), "--budget", "5",
                 "--no-progress"]) == 0
    (tmp_path / "x.png").rename(tmp_path / "orig.png")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "empty.ardm").write_bytes(b"")
    (tmp_path / "cut.ardm").write_bytes((tmp_path / "x.png.ardm").read_bytes()[:-3])
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    run = tmp_path / "finished"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"step": 10}))
    (tmp_path / "broken").mkdir()  # an IDX dataset directory whose test images are no IDX file
    (tmp_path / "broken" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    return tmp_path


ERRORS = [
    (["compress", "{d}/nope.png"], "no such file"),
    (["compress", "{d}/dir"], "is a directory"),
    (["compress", "{d}/dir.png"], "is a directory"),
    (["compress", "{d}/empty.png", "--model", "{run}"], "not a readable image"),
    (["compress", "{d}/x.gif"], "no modality reads .gif"),
    (["compress", "{d}/x.png.ardm"], "already compressed"),
    (["compress", "{d}/orig.png", "--budget", "0", "--model", "{run}"], "budget"),
    (["compress", "{d}/orig.png", "--budget", "-3", "--model", "{run}"], "budget"),
    (["compress", "{d}/orig.png", "--budget", "100000", "--model", "{run}"], "budget"),
    (["decompress", "{d}/nope.ardm"], "no such file"),
    (["decompress", "{d}/dir"], "is a directory"),
    (["decompress", "{d}/orig.png"], "does not end in .ardm"),
    (["decompress", "{d}/orig.png", "-o", "{d}/y.png"], "orig.png: "),
    (["decompress", "{d}/cut.ardm", "-o", "{d}/y.png", "--model", "{run}"],
     "cut.ardm: cannot decompress"),
    (["decompress", "{d}/empty.ardm", "-o", "{d}/y.png"], "empty.ardm: "),
    (["decompress", "{d}/x.png.ardm", "-o", "{d}/y.jpg", "--model", "{run}"],
     "y.jpg: unknown output type"),
    (["train", "--out", "{d}/finished", "--preset", "tiny"], "already holds a run"),
    (["train", "--out", "{d}/orig.png", "--preset", "tiny"], "is a file"),
    (["train", "--out", "{d}/r", "--device", "nonsense", "--preset", "tiny"], "not a device"),
    (["train", "--out", "{d}/r", "--steps", "0"], "steps"),
    (["eval", "{d}/nope"], "neither a shipped model"),
    (["eval", "--test-size", "0"], "--test-size"),
    (["sample", "{d}/nope"], "neither a shipped model"),
    (["sample", "--n", "1", "--budget", "5", "-o", "{d}/dir"], "dir is a directory"),
    (["infill", "kjv", "--file", "{d}/nope.txt"], "nope.txt: No such file"),
    (["infill", "kjv", "--file", "{d}/dir"], "dir: Is a directory"),
    (["infill", "kjv", "no mask here"], "no mask character"),
    (["demo", "--budgets", "0", "--no-text", "--test-images", "0"], "out of range"),
    (["demo", "--plot", "{d}/no/plot.png", "--no-text"], "does not exist"),
    (["demo", "--plot", "{d}/dir", "--no-text", "--no-audio"], "dir is a directory; give --plot a file name"),
    (["demo", "--plot", "{d}/plot.xyz", "--no-text", "--no-audio"], "cannot write .xyz files"),
    (["demo", "--model", "kjv", "--no-text", "--no-audio"], "an image model of 28x28"),
    (["train", "--out", "{d}/r", "--threads", "-1", "--preset", "tiny"], "--threads must be >= 1"),
    (["train", "--out", "{d}/r", "--device", "mps", "--preset", "tiny"], "cpu or cuda devices"),
    (["train", "--out", "", "--preset", "tiny"], "--out must name a run directory"),
    (["sample", "{run}", "--n", "1", "--budget", "2", "--scale", "100000", "-o", "{d}/s.png",
      "--no-progress"], "use a smaller scale"),
    (["compress", "{d}/orig.png", "--model", "speech"], "use an image model"),
    (["choose-order", "{d}/nope"], "config.json"),
    # a categorical head over audio's 65,536 values: GBs of logits (it was OOM-killed)
    (["train", "--out", "{d}/r", "--data", "asterisk", "--head", "categorical", "--preset", "tiny"],
     "use --head logistic_mixture, or --model upscale --parametrization direct"),
    (["train", "--out", "{d}/r", "--grad-clip", "-1", "--preset", "tiny"], "grad_clip must be > 0"),
    (["train", "--out", "{d}/r", "--eval-size", "0", "--preset", "tiny"], "eval_size must be >= 1"),
    (["train", "--out", "{d}/r", "--lr", "-0.1", "--preset", "tiny"], "lr must be a positive"),
    (["train", "--out", "{d}/r", "--ema", "1.5", "--preset", "tiny"], "ema must be in [0, 1)"),
    (["eval", "{run}", "--budgets", ""], "--budgets is empty; give comma-separated"),
    (["eval", "{run}", "--budgets", "1,,2"], "--budgets '1,,2' has an empty entry"),
    (["eval", "{run}", "--budgets", "1,x"], "'x' is not an integer"),
    # --data names test data: a path that cannot be read is an error, never the bundled images
    (["eval", "--data", "{d}/nowhere", "--budgets", "2", "--test-size", "2", "--exact-images",
      "0", "--no-progress"], "nowhere does not exist"),
    (["eval", "--data", "{d}/orig.png", "--budgets", "2", "--test-size", "2", "--exact-images",
      "0", "--no-progress"], "orig.png is a file; for image models it is 'fashion-mnist'"),
    (["eval", "--data", "{d}/broken", "--budgets", "2", "--test-size", "2", "--exact-images",
      "0", "--no-progress"], "t10k-images-idx3-ubyte.gz: not an IDX file"),
    (["eval", "--data", "{d}/dir", "--budgets", "2", "--test-size", "2", "--exact-images",
      "0", "--no-progress"], "MNIST IDX) or CIFAR-10 batches in"),
    (["eval", "{run}", "--plots", "{d}/orig.png"], "--plots takes a directory"),
    (["sample", "--n", "100000000", "--no-progress"], "use a smaller --n"),
    (["sample", "--n", "0"], "--n must be >= 1"),
    (["sample", "--temperature", "0"], "--temperature must be a positive number"),
    (["sample", "{run}", "--n", "1", "--budget", "2", "-o", "{d}/no/s.png", "--no-progress"],
     "the directory"),
    (["sample", "{run}", "--n", "1", "--budget", "2", "-o", "{d}/new/", "--no-progress"],
     "new/ is a directory; give the preview file's name"),
    (["infill", "speech", "ab_c"], "infill fills in text, and speech is an audio model"),
    (["infill", "fashion-mnist", "ab_c"], "fashion-mnist is an image model"),
]


@pytest.mark.parametrize("argv, phrase", ERRORS,
                         ids=[" ".join(a).replace("{d}/", "") for a, _ in ERRORS])
def test_a_user_error_is_one_line_and_exit_1(files, grey_run, capsys, argv, phrase):
    argv = [a.format(d=files, run=grey_run) for a in argv]
    if argv[0] in ("compress", "decompress"):
        argv.append("--no-progress")
    before = {p.name for p in files.iterdir()}
    fails(argv, capsys, phrase)
    assert {p.name for p in files.iterdir()} == before  # nothing written, nothing left behind


def test_sample_checks_its_settings_before_sampling(grey_run, tmp_path, capsys, monkeypatch):
    import ardm.commands.sample as command

    def never(*args, **kwargs):
        raise AssertionError("sampled before the settings were checked")

    monkeypatch.setattr(command, "sample_images", never)
    common = [str(grey_run), "--n", "2", "--budget", "2", "--no-progress"]
    fails(["sample", *common, "--scale", "100000", "-o", str(tmp_path / "s.png")], capsys,
          "--scale 100000 makes a grid of", "use a smaller scale")
    fails(["sample", *common, "-o", str(tmp_path / "no" / "s.png")], capsys,
          f"the directory {tmp_path / 'no'} does not exist")
    fails(["sample", str(grey_run), "--n", str(10**12), "--no-progress"], capsys,
          "samples of shape (1, 8, 8) need at least", "GiB of memory; use a smaller --n")
    assert list(tmp_path.iterdir()) == []  # no directory made, nothing written


def test_sample_help_names_every_modality(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    line = next(text for text in lines if text.strip().startswith("sample"))
    assert "audio" in line
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "WAV file per sample" in capsys.readouterr().out


@pytest.mark.parametrize("error, phrase", [
    (MemoryError(), "out of memory; use a smaller --n"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 80 GB."),
     "out of memory (DefaultCPUAllocator: can't allocate memory"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"),
     "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); use a smaller --n"),
])
def test_running_out_of_memory_is_one_line(grey_run, capsys, monkeypatch, error, phrase):
    import ardm.commands.sample as command

    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(command, "sample_images", exhausted)
    fails(["sample", str(grey_run), "--n", "2", "--budget", "2", "--no-progress"], capsys, phrase)


def test_out_of_memory_names_the_options_that_make_the_work_smaller(tmp_path, capsys, monkeypatch):
    import ardm.commands.train as command
    import ardm.training

    def exhausted(cfg):
        raise MemoryError

    monkeypatch.setattr(command, "_check_out", lambda *a, **k: None)
    monkeypatch.setattr(ardm.training, "train", exhausted)
    fails(["train", "--out", str(tmp_path / "r"), "--preset", "tiny"], capsys,
          "out of memory; use a smaller --batch-size or --preset")


def test_other_runtime_errors_are_not_hidden(grey_run, monkeypatch):
    import ardm.commands.sample as command

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not the user's input")

    monkeypatch.setattr(command, "sample_images", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["sample", str(grey_run), "--n", "2", "--budget", "2", "--no-progress"])


def test_the_installed_command_prints_one_line_too(tmp_path):
    missing = tmp_path / "x.ardm"
    result = subprocess.run([sys.executable, "-m", "ardm.cli", "decompress", str(missing)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"ardm decompress: error: {missing}: no such file"]


def test_no_cuda_device_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fails(["train", "--out", str(tmp_path / "r"), "--device", "cuda", "--preset", "tiny"], capsys,
          "no CUDA device is available; use --device cpu")
    assert not (tmp_path / "r").exists()


def test_an_unwritable_output_directory_is_one_line(files, grey_run, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere a mode allows; /sys refuses even root
        folder = Path("/sys")
        if not folder.is_dir():
            pytest.skip("no /sys")
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
    for argv in (["compress", str(files / "orig.png"), "-o", f"{folder}/"],
                 ["decompress", str(files / "x.png.ardm"), "-o", f"{folder}/"]):
        fails([*argv, "--model", str(grey_run), "--no-progress"], capsys,
              f"cannot write in {folder}")


def test_an_unreadable_input_is_one_line(files, grey_run, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    (files / "orig.png").chmod(0)
    fails(["compress", str(files / "orig.png"), "-o", str(files / "a.ardm"), "--model",
           str(grey_run), "--no-progress"], capsys, "orig.png")


def test_train_force_deletes_only_the_runs_files(tmp_path):
    from ardm.commands.train import _check_out

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors", "train_state.pt", "metrics.jsonl", "notes.md"):
        (run / name).write_text("x")
    with pytest.raises(ValueError, match="--resume to continue it, --force to replace it"):
        _check_out(run, resume=False, force=False)
    _check_out(run, resume=True, force=False)  # resuming keeps everything
    assert len(list(run.iterdir())) == 5
    _check_out(run, resume=False, force=True)
    assert [p.name for p in run.iterdir()] == ["notes.md"]
