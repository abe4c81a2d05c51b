"""Lossless compression of Fashion-MNIST test images side by side, with the container's overhead.

ARDM (the shipped model, or --model) at several budgets against the classical peers measured in
the same run: PNG (Pillow, optimize), WebP lossless (Pillow, method 6), JPEG-XL lossless
(imagecodecs, effort 9), each per image; xz and zstd (level 19) over the whole set at once, which
is a lower bar for them than per image. ARDM runs three ways, every round trip verified:

- "single": each image compressed alone (one call of ``ardm.compress`` per image, one stream);
- "independent": --batch images per call, each its own stream (``mode="independent"``);
- "joint": --batch images per call in one stream (``mode="joint"``, the default).

For each it prints the exact -log2 p of the images under the coding order and policy ("NLL"),
what the blob costs, and the overhead per image (blob minus NLL), split into the bytes outside
the streams (the frame of independent streams: its stream lengths and its 32-bit check) and what
the streams add (the check carried by the coder's initial state, 32 bits, or 24 for a piece of an
independent frame; the header fields, the byte ending, quantization).

    python benchmarks/bench_compress.py --subset 2000 --budgets 200,100,50,20
    torchrun --nproc_per_node=4 benchmarks/bench_compress.py --subset 2000   # sharded

--subset N takes N test images evenly spaced over the whole test split (never the first N).
Under torchrun every process takes its share of the compress calls and of the per-image work
(``ardm.distributed``: strided shares, results gathered in item order) and rank 0 prints the
table one process prints, bit for bit but for the speeds, which are per process.
"""

from __future__ import annotations

import argparse
import io
import lzma
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

import ardm
from ardm.coding.container import unpack_streams
from ardm.data import load_dataset
from ardm.distributed import gather_in_order, process_group, shard
from ardm.subsets import evenly_spaced


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
    """Bits per dimension of every classical peer on uint8 images (N, H, W); the per-image
    codecs run on this process's share of the images."""
    dims = images.size
    mine = {i: (png_bytes(images[i]), webp_bytes(images[i]), jpegxl_bytes(images[i]))
            for i in shard(range(len(images)))}
    png, webp, jpegxl = (sum(column) for column in zip(*gather_in_order(mine)))
    per_image = {"PNG": png, "WebP": webp, "JPEG-XL": jpegxl}
    whole = images.tobytes()
    per_set = {"xz (whole set)": len(lzma.compress(whole, preset=9 | lzma.PRESET_EXTREME))}
    per_set["zstd -19 (whole set)"] = zstd_bytes(whole)
    return {name: 8 * n / dims for name, n in {**per_image, **per_set}.items()}


def policy_bits(model, x: torch.Tensor, policy, batch: int = 100) -> np.ndarray:
    """Exact -log2 p of every item under the codec's coding order (``random_order(D,
    model.order_seed)``) and ``policy``."""
    order = ardm.random_order(model.num_vars, model.order_seed)
    x = x.long()
    with torch.no_grad():  # batches, not items, are shared out: each is the batch one process makes
        mine = {i: model.exact_nll_bits(x[i : i + batch], order, policy)
                for i in shard(range(0, len(x), batch))}
    return torch.cat(gather_in_order(mine)).numpy()


def exact_bits(model, x: torch.Tensor, budget: int, batch: int = 100) -> np.ndarray:
    """Exact -log2 p of every image under the coding order and the budget's policy."""
    return policy_bits(model, x, model.policy(budget), batch)


def compress_calls(x: torch.Tensor, batch: int, way: str) -> list[torch.Tensor]:
    """The items of every ``ardm.compress`` call of one way: an image alone, or ``batch``."""
    if way == "single":
        return list(x)
    return [x[start : start + batch] for start in range(0, len(x), batch)]


def measure_call(model, items: torch.Tensor, budget: int, way: str) -> tuple[int, int, float, float]:
    """(blob bytes, frame bytes, encode s, decode s) of one compress call, its round trip
    verified."""
    mode = "joint" if way == "joint" else "independent"
    t0 = time.perf_counter()
    blob = ardm.compress(items, model, budget=budget, mode=mode)
    t1 = time.perf_counter()
    back = ardm.decompress(blob, model)
    t2 = time.perf_counter()
    if not torch.equal(back, items):
        raise SystemExit(f"round trip failed at budget {budget} ({way})")
    frame = len(blob) - sum(len(s) for s in unpack_streams(blob)[1])
    return len(blob), frame, t1 - t0, t2 - t1


def ardm_row(model, x: torch.Tensor, nll: np.ndarray, budget: int, batch: int, way: str) -> dict[str, float]:
    """Compress x one way (see the module docstring), this process's share of the calls; verify
    every round trip; measure (speeds: per process)."""
    calls = compress_calls(x, batch, way)
    mine = {i: measure_call(model, calls[i], budget, way) for i in shard(range(len(calls)))}
    blob_bytes, frame_bytes, encode_s, decode_s = (sum(c) for c in zip(*gather_in_order(mine)))
    blob_bits, frame_bits = 8.0 * blob_bytes, 8.0 * frame_bytes
    n, dims, nll_bits = len(x), x[0].numel(), float(nll.sum())
    return {
        "bpd": blob_bits / (n * dims),
        "nll_bits": nll_bits / n,
        "blob_bits": blob_bits / n,
        "frame_bits": frame_bits / n,
        "stream_bits": (blob_bits - frame_bits - nll_bits) / n,
        "encode_ips": n / encode_s,
        "decode_ips": n / decode_s,
    }


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="shipped model name or run directory")
    parser.add_argument("--budgets", default="200,100,50,20")
    parser.add_argument("--subset", type=int, default=None,
                        help="N test images evenly spaced over the test split (default: all)")
    parser.add_argument("--single", type=int, default=100,
                        help="images (evenly spaced over the subset) compressed one per call")
    parser.add_argument("--batch", type=int, default=100, help="images per compress call")
    parser.add_argument("--ways", default="single,independent,joint")
    args = parser.parse_args(argv)
    with process_group("cpu") as d:  # under torchrun: each rank its share, rank 0 prints
        return run(args, print if d.is_main else _quiet, d.world)


def _quiet(*_: object, **__: object) -> None:
    pass


def run(args: argparse.Namespace, say: Callable[..., None], processes: int) -> list[str]:
    """The benchmark's table, each line given to ``say`` as it is made; the lines."""
    model = ardm.load(args.model)
    test = load_dataset("fashion-mnist", "test")
    x = evenly_spaced(test, args.subset)
    subset = "the whole test split" if len(x) == len(test) else "evenly spaced over the test split"
    lines = [f"Fashion-MNIST test images: {len(x)} ({subset}); {processes} process(es) of "
             f"{torch.get_num_threads()} torch thread(s); {time.strftime('%Y-%m-%d')}"]
    peers = classical(x.numpy().reshape(len(x), *x.shape[-2:]))
    best_image_codec = min(peers[k] for k in ("PNG", "WebP", "JPEG-XL"))
    lines.append(f"{'codec':<24}{'bits/dim':>10}{'vs best per-image':>20}")
    for name, bpd in peers.items():
        lines.append(f"{name:<24}{bpd:>10.3f}{bpd / best_image_codec:>19.3f}x")
    say("\n".join(lines), flush=True)
    lines.append(
        f"{'ARDM':<12}{'budget':>7}{'calls':>6}{'images':>7}{'bits/dim':>9}{'vs best':>8}"
        f"{'NLL b/img':>10}{'blob b/img':>11}{'overhead':>9}{'frame':>7}{'stream':>7}"
        f"{'enc img/s':>10}{'dec img/s':>10}"
    )
    say(lines[-1], flush=True)
    for budget in [int(b) for b in args.budgets.split(",")]:
        nll = exact_bits(model, x, budget)
        for way in args.ways.split(","):
            picked = np.arange(len(x))
            if way == "single":
                picked = evenly_spaced(picked, args.single)
            row = ardm_row(model, x[picked], nll[picked], budget, args.batch, way)
            overhead = row["blob_bits"] - row["nll_bits"]
            lines.append(
                f"{way:<12}{budget:>7}{len(model.policy(budget)):>6}{len(picked):>7}"
                f"{row['bpd']:>9.3f}{row['bpd'] / best_image_codec:>7.3f}x"
                f"{row['nll_bits']:>10.1f}{row['blob_bits']:>11.1f}{overhead:>9.1f}"
                f"{row['frame_bits']:>7.1f}{row['stream_bits']:>7.1f}"
                f"{row['encode_ips']:>10.2f}{row['decode_ips']:>10.2f}"
            )
            say(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    main()
