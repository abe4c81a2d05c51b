"""`ardm demo`: the shipped models at work. The image model compresses real test images at several
budgets, every round trip verified, side by side with PNG and WebP; the text model compresses
KJV test records of 256 bytes one by one against xz and zlib, writes a sample and fills in a
masked verse; the speech model compresses short test WAVs, each alone, against FLAC."""

from __future__ import annotations

import argparse
import io
import lzma
import time
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ardm.coding.codec import compress, decompress, split
from ardm.commands.paths import check_free, write_whole
from ardm.pretrained import PRETRAINED, bundled_audio, bundled_images, bundled_text, load


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="the shipped models at work: compress images, text and speech, sample, infill",
        description="Load the shipped Fashion-MNIST model, compress the bundled test images and, "
        "if the dataset package is installed, more test images, at several budgets; verify every "
        "round trip; print bits/dim against PNG and WebP and save a plot. Then the shipped KJV "
        "text model: bundled test records of 256 bytes, each compressed alone, against xz and "
        "zlib; a sample; a masked verse filled in. Then the shipped speech model: bundled test "
        "speech files, each compressed alone, against FLAC -8 when flac is installed.",
    )
    p.add_argument("--model", default=None,
                   help="the image model: a shipped name or a run directory of a model of 28x28 "
                   "greyscale images (default: fashion-mnist)")
    p.add_argument("--budgets", default="10,20,50", help="comma-separated budgets")
    p.add_argument(
        "--test-images", type=int, default=14, help="extra Fashion-MNIST test images (0: none)"
    )
    p.add_argument("--plot", default="ardm-demo.png",
                   help="where to save the plot (PNG; an existing file is replaced only with "
                   "--force) (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace the plot file if it exists")
    p.add_argument("--text-budgets", default="20", help="comma-separated budgets for text")
    p.add_argument("--no-text", dest="text", action="store_false", help="leave text out")
    p.add_argument("--audio-budget", type=int, default=20,
                   help="network calls per 8,000-sample chunk for the speech model")
    p.add_argument("--no-audio", dest="audio", action="store_false", help="leave audio out")
    return p


def _codec_bits(images: np.ndarray, fmt: str, **options) -> int:
    bits = 0
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt, **options)
        bits += 8 * buffer.tell()
    return bits


def _images(count: int) -> tuple[torch.Tensor, str]:
    images, source = bundled_images(), "10 bundled test images"
    if count > 0:
        try:
            from ardm.data import load_dataset

            extra = load_dataset("fashion-mnist", "test")[100 : 100 + count]
            images, source = torch.cat([images, extra]), f"{source} + {len(extra)} from the test set"
        except ValueError as err:
            print(f"(dataset not installed, using the bundled images only: {err})")
    return images, source


def _budgets(text: str, flag: str, model=None) -> list[int]:
    """The budgets of ``flag``, each checked against ``model``'s range before any work."""
    try:
        budgets = sorted({int(b) for b in text.split(",")})
    except ValueError as err:
        raise ValueError(f"{flag} must be comma-separated integers: {text}") from err
    for budget in budgets:
        if model is not None and not model.min_budget <= budget <= model.max_budget:
            raise ValueError(f"{flag}: budget {budget} is out of range: the model takes "
                             f"{model.min_budget}..{model.max_budget} network calls")
    return budgets


def run(args: argparse.Namespace) -> int:
    text = args.text and (PRETRAINED["kjv"] / "config.json").exists()
    if text:
        _budgets(args.text_budgets, "--text-budgets", load("kjv"))
    if not Path(args.plot).parent.is_dir():
        raise ValueError(f"--plot {args.plot}: the directory {Path(args.plot).parent} does "
                         "not exist")
    _check_plot(Path(args.plot), args.force)  # before minutes of work, not after
    audio = args.audio and (PRETRAINED["speech"] / "config.json").exists()
    if audio:
        _budgets(str(args.audio_budget), "--audio-budget", load("speech"))
    status = _image_demo(args)
    if status == 0 and text:
        status = _text_demo(_budgets(args.text_budgets, "--text-budgets"))
    if status == 0 and audio:
        status = _audio_demo(args.audio_budget)
    return status


def _audio_demo(budget: int) -> int:
    import shutil
    import subprocess
    import tempfile

    from ardm.modalities.audio import samples_from_values, write_wav

    model = load("speech")
    clips = bundled_audio()
    flac = shutil.which("flac")
    print(f"\naudio: {len(clips)} bundled test files of the asterisk split (8 kHz speech), each "
          f"compressed alone at {budget} network calls per 8,000-sample chunk"
          + ("" if flac else "; install flac to see FLAC -8 beside it"))
    print(f"{'file':>14}{'samples':>9}{'ARDM b/sample':>15}{'FLAC -8':>9}{'enc s':>7}{'dec s':>7}  round trip")
    with tempfile.TemporaryDirectory() as tmp:
        for name, values in clips.items():
            t0 = time.perf_counter()
            blob = compress(values, model, budget=budget)
            t1 = time.perf_counter()
            ok = torch.equal(decompress(blob, model), values)
            t2 = time.perf_counter()
            flac_bps = float("nan")
            if flac:
                wav = write_wav(Path(tmp) / "x.wav", samples_from_values(values.numpy()), 8000)
                subprocess.run([flac, "-8", "--no-padding", "-s", "-f", "-o", f"{wav}.flac",
                                str(wav)], check=True)
                flac_bps = 8 * Path(f"{wav}.flac").stat().st_size / values.numel()
            tqdm.write(f"{name:>14}{values.numel():>9}{8 * len(blob) / values.numel():>15.3f}"
                       f"{flac_bps:>9.3f}{t1 - t0:>7.1f}{t2 - t1:>7.1f}  "
                       f"{'bit-exact' if ok else 'FAILED'}")
            if not ok:
                return 1
    return 0


def _text_demo(budgets: list[int]) -> int:
    from ardm.commands.infill import infill_text
    from ardm.modalities.text import printable

    model = load("kjv")
    records = bundled_text()
    raw = [bytes(r.tolist()) for r in records]
    n_bytes = sum(len(r) for r in raw)
    xz = sum(len(lzma.compress(r, preset=9 | lzma.PRESET_EXTREME)) for r in raw) * 8 / n_bytes
    zl = sum(len(zlib.compress(r, 9)) for r in raw) * 8 / n_bytes
    print(f"\ntext: {len(raw)} bundled KJV test records of 256 bytes, each compressed alone; "
          f"xz -9e {xz:.3f}, zlib -9 {zl:.3f} bits/byte")
    print(f"{'budget':>7}{'bits/byte':>11}{'vs xz':>8}{'enc KB/s':>10}{'dec KB/s':>10}  round trip")
    for budget in tqdm(budgets, desc="text budgets", leave=False):
        t0 = time.perf_counter()
        blob = compress(records, model, budget=budget, mode="independent")
        t1 = time.perf_counter()
        back = decompress(blob, model)
        t2 = time.perf_counter()
        ok = torch.equal(back, records)
        bpb = sum(8 * len(b) for b in split(blob)) / n_bytes
        tqdm.write(
            f"{budget:>7}{bpb:>11.3f}{bpb / xz:>7.2f}x{n_bytes / 1e3 / (t1 - t0):>10.2f}"
            f"{n_bytes / 1e3 / (t2 - t1):>10.2f}  {'bit-exact' if ok else 'FAILED'}"
        )
        if not ok:
            return 1
    sample = model.sample(1, budget=64, generator=torch.Generator().manual_seed(0))
    print(f"\na sample (64 network calls):\n{printable(sample[0])}")
    verse = b"Ge1:1 In the beginning God created the ______ and the _____."
    filled, calls = infill_text(model, verse, b"_", budget=20)
    print(f"\ninfilled ({calls} network calls): {verse.decode()}\n  -> {printable(torch.tensor(list(filled)))}")
    return 0


def _image_demo(args: argparse.Namespace) -> int:
    model = load(args.model)
    if model.modality != "image" or tuple(model.data_shape) != (1, 28, 28):
        raise ValueError(
            f"--model {args.model} codes {model.modality} items of shape "
            f"{tuple(model.data_shape)}; the demo's --model is an image model of 28x28 "
            "greyscale images (Fashion-MNIST); the text and speech parts use the shipped kjv "
            "and speech models"
        )
    budgets = _budgets(args.budgets, "--budgets", model)
    x, source = _images(args.test_images)
    dims = x.numel()
    flat = x.numpy().reshape(len(x), *x.shape[-2:])
    png_bpd = _codec_bits(flat, "PNG", optimize=True) / dims
    webp_bpd = _codec_bits(flat, "WEBP", lossless=True, quality=100, method=6) / dims
    print(f"{source}; PNG {png_bpd:.3f} bits/dim, WebP lossless {webp_bpd:.3f} bits/dim")
    print(f"{'budget':>7}{'calls':>7}{'bits/dim':>10}{'vs PNG':>8}{'vs WebP':>9}"
          f"{'enc img/s':>11}{'dec img/s':>11}  round trip")
    rows = []
    for budget in tqdm(budgets, desc="budgets", leave=False):
        t0 = time.perf_counter()
        blob = compress(x, model, budget=budget)
        t1 = time.perf_counter()
        back = decompress(blob, model)
        t2 = time.perf_counter()
        ok = torch.equal(back, x)
        bpd = 8 * len(blob) / dims
        rows.append((budget, bpd))
        tqdm.write(
            f"{budget:>7}{len(model.policy(budget)):>7}{bpd:>10.3f}{bpd / png_bpd:>7.2f}x"
            f"{bpd / webp_bpd:>8.2f}x{len(x) / (t1 - t0):>11.1f}{len(x) / (t2 - t1):>11.1f}  "
            f"{'bit-exact' if ok else 'FAILED'}"
        )
        if not ok:
            return 1
    plot = write_whole(Path(args.plot), partial(_plot, rows, png_bpd, webp_bpd),
                       force=args.force, option="--plot")
    print(f"plot: {plot}")
    return 0


def _plot_path(path: Path) -> Path:
    """Where the plot of ``--plot PATH`` goes: a bare name gets ``.png``."""
    return path if path.suffix else path.with_name(path.name + ".png")


def _check_plot(path: Path, force: bool) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    if path.is_dir():
        raise ValueError(f"--plot {path} is a directory; give --plot a file name")

    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = _plot_path(path).suffix.lower()[1:]
    if suffix not in kinds:
        raise ValueError(f"--plot {path}: matplotlib cannot write .{suffix} files; give a name "
                         f"ending in .png (or one of .{', .'.join(sorted(kinds))})")
    check_free(_plot_path(path), force, "--plot")


def _plot(rows: list[tuple[int, float]], png_bpd: float, webp_bpd: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([b for b, _ in rows], [v for _, v in rows], "o-", label="ARDM (compressed)")
    ax.axhline(png_bpd, color="gray", linestyle="--", label="PNG")
    ax.axhline(webp_bpd, color="gray", linestyle=":", label="WebP lossless")
    ax.set_xscale("log")
    ax.set_xlabel("budget (network calls per image)")
    ax.set_ylabel("bits per dimension")
    ax.set_title("Lossless compression of Fashion-MNIST test images")
    ax.legend()
    fig.tight_layout()
    path = _plot_path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
