"""Lossless compression of Fashion-MNIST test images, each image its own stream, side by side.

ARDM (the shipped model, or --model) at several budgets against the classical peers measured in
the same run: PNG (Pillow, optimize), WebP lossless (Pillow, method 6), JPEG-XL lossless
(imagecodecs, effort 9), each per image; xz and zstd (level 19) over the whole set at once, which
is a lower bar for them than per image. Also the coding overhead (compressed bits minus the
model's exact -log2 p under the same order and policy) and images/s to encode and decode.

    python benchmarks/bench_compress.py --limit 200 --budgets 784,200,100,50,20

On 2 CPU cores the whole test set at budget 784 takes hours; --limit takes the first N images
(the classical codecs still run on the same N, so ratios stay side by side).
"""

from __future__ import annotations

import argparse
import io
import lzma
import time

import numpy as np
import torch
from PIL import Image

import ardm
from ardm.data import load_dataset
from ardm.evaluate import policy_calls


def png_bytes(image: np.ndarray) -> int:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.tell()


def webp_bytes(image: np.ndarray) -> int:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="WEBP", lossless=True, quality=100, method=6)
    return buffer.tell()


def jpegxl_bytes(image: np.ndarray) -> int:
    import imagecodecs

    return len(imagecodecs.jpegxl_encode(image, lossless=True, effort=9))


def zstd_bytes(data: bytes) -> int:
    import zstandard

    return len(zstandard.ZstdCompressor(level=19).compress(data))


def classical(images: np.ndarray) -> dict[str, float]:
    """Bits per dimension of every classical peer on uint8 images (N, H, W)."""
    dims = images.size
    per_image = {
        "PNG": sum(png_bytes(im) for im in images),
        "WebP": sum(webp_bytes(im) for im in images),
        "JPEG-XL": sum(jpegxl_bytes(im) for im in images),
    }
    whole = images.tobytes()
    per_set = {"xz (whole set)": len(lzma.compress(whole, preset=9 | lzma.PRESET_EXTREME))}
    per_set["zstd -19 (whole set)"] = zstd_bytes(whole)
    return {name: 8 * n / dims for name, n in {**per_image, **per_set}.items()}


def ardm_row(model, x: torch.Tensor, budget: int, batch: int) -> dict[str, float]:
    """Compress x in batches; verify every round trip; measure sizes, overhead and speed."""
    blob_bits = stream_bits = nll_bits = 0.0
    encode_s = decode_s = 0.0
    order = ardm.random_order(model.num_vars, getattr(model, "order_seed", 0))
    policy = model.policy(budget)
    for start in range(0, len(x), batch):
        items = x[start : start + batch]
        t0 = time.perf_counter()
        blob = ardm.compress(items, model, budget=budget)
        t1 = time.perf_counter()
        back = ardm.decompress(blob, model)
        t2 = time.perf_counter()
        if not torch.equal(back, items):
            raise SystemExit(f"round trip failed at budget {budget}, items {start}..")
        encode_s += t1 - t0
        decode_s += t2 - t1
        blob_bits += 8 * len(blob)
        stream_bits += 8 * sum(len(s) for s in ardm.container.unpack(blob).streams)
        with torch.no_grad():
            nll_bits += float(model.exact_nll_bits(items, order, policy).sum())
    n, dims = len(x), x[0].numel()
    return {
        "bpd": blob_bits / (n * dims),
        "nll_bpd": nll_bits / (n * dims),
        "overhead_bits": (stream_bits - nll_bits) / n,
        "encode_ips": n / encode_s,
        "decode_ips": n / decode_s,
    }


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="shipped model name or run directory")
    parser.add_argument("--budgets", default="784,200,100,50,20")
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    parser.add_argument("--batch", type=int, default=64, help="images per compress call")
    args = parser.parse_args(argv)

    model = ardm.load(args.model)
    x = load_dataset("fashion-mnist", "test")
    if args.limit:
        x = x[: args.limit]
    lines = [f"Fashion-MNIST test images: {len(x)}, each its own stream; torch threads "
             f"{torch.get_num_threads()}"]
    peers = classical(x.numpy().reshape(len(x), *x.shape[-2:]))
    best_image_codec = min(peers[k] for k in ("PNG", "WebP", "JPEG-XL"))
    lines.append(f"{'codec':<24}{'bits/dim':>10}{'vs best per-image':>20}")
    for name, bpd in peers.items():
        lines.append(f"{name:<24}{bpd:>10.3f}{bpd / best_image_codec:>19.3f}x")
    lines.append(
        f"{'ARDM budget':<12}{'calls':>6}{'bits/dim':>10}{'vs best':>9}{'NLL bpd':>9}"
        f"{'overhead bits/img':>19}{'enc img/s':>11}{'dec img/s':>11}"
    )
    for budget in [int(b) for b in args.budgets.split(",")]:
        row = ardm_row(model, x, budget, args.batch)
        lines.append(
            f"{budget:<12}{policy_calls(model.policy(budget)):>6}{row['bpd']:>10.3f}"
            f"{row['bpd'] / best_image_codec:>8.3f}x{row['nll_bpd']:>9.3f}"
            f"{row['overhead_bits']:>19.1f}{row['encode_ips']:>11.2f}{row['decode_ips']:>11.2f}"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
