"""`ardm demo`: the shipped model compresses real images at several budgets, every round trip
verified, side by side with PNG and WebP."""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ardm.coding.codec import compress, decompress
from ardm.pretrained import bundled_images, load


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="compress real images with the shipped model at several budgets",
        description="Load the shipped Fashion-MNIST model, compress the bundled test images and, "
        "if the dataset package is installed, more test images, at several budgets; verify every "
        "round trip; print bits/dim against PNG and WebP and save a plot.",
    )
    p.add_argument("--model", default=None, help="shipped model name or run directory")
    p.add_argument("--budgets", default="10,20,50,100", help="comma-separated budgets")
    p.add_argument(
        "--test-images", type=int, default=54, help="extra Fashion-MNIST test images (0: none)"
    )
    p.add_argument("--plot", default="ardm-demo.png", help="where to save the plot (PNG)")
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


def run(args: argparse.Namespace) -> int:
    model = load(args.model)
    x, source = _images(args.test_images)
    try:
        budgets = sorted({int(b) for b in args.budgets.split(",")})
    except ValueError as err:
        raise ValueError(f"--budgets must be comma-separated integers: {args.budgets}") from err
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
    _plot(rows, png_bpd, webp_bpd, Path(args.plot))
    print(f"plot: {args.plot}")
    return 0


def _plot(rows: list[tuple[int, float]], png_bpd: float, webp_bpd: float, path: Path) -> None:
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
