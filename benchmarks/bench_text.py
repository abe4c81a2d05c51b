"""Lossless compression of text (KJV bytes) side by side: ARDM against the classical peers.

Three parts, all measured in the same run, every round trip (ARDM and classical) verified:

1. Per 256-byte chunk, each alone, on --subset chunks evenly spaced over the KJV test split
   (never the first N): zstd -19; zstd -19 with a 110 KB dictionary (112640 bytes, zstd's
   default) trained on the training split cut into 256-byte chunks, whose own size is not
   charged per chunk (the decoder is assumed to have it, as ARDM's decoder has the model); brotli
   -11; xz -9e (FORMAT_XZ with its CRC64, the standard tool's output, headers included); and ARDM
   at each of --budgets in independent mode (every chunk its own stream; sizes of the per-item
   blobs of ``ardm.coding.split``, each decodable alone, its header and check included; the
   frame that joins them is printed apart and not charged). zstd frames are the library's
   default (content size written, no checksum; with the dictionary, its id). For ARDM also the
   exact -log2 p under the coding order and policy ("NLL"), the same under the naive policy
   (even steps) at the same budget, which the optimal policy should beat, and the encode and
   decode speed of one pass (no repeats: the model is slow).
2. The whole test split as one file (~440 KB): xz -9e, bzip2 -9, zstd -19 with long distance
   matching (window log 27), brotli -11, PPMd var. I order 6 with 16 MiB (pyppmd, a raw stream:
   the decoder is given order and memory), and ARDM in joint mode at --joint-budget over the
   whole split as one sequence (its last, shorter item coded exactly). The ARDM pass is slow on
   a CPU (every network call runs the net over all ~1720 chunks): --skip-joint leaves it out.
3. English text that is not KJV, /usr/share/common-licenses/GPL-3, per 256-byte chunk (--subset
   of its whole chunks, evenly spaced; the short tail is left out): zstd -19, zstd -19 with the
   KJV dictionary, brotli -11, ARDM at budget 64 (independent).
4. Infilling: on the part-1 test chunks, 75 % of each chunk's bytes given (a seeded random 64 of
   the 256 unknown), the exact -log2 p of the 64 unknown bytes given the rest, per filled byte,
   at --budgets (clipped to 64) with the optimal policy planned on the last 64 step losses, and
   one chunk filled in at 20 calls, printed beside the original.

--parts chooses among chunks,whole,heldout,infill (default: all four).

    python benchmarks/bench_text.py --model kjv --subset 64 --budgets 256,64,20 --joint-budget 64

--model is a shipped model name or a run directory of a text model (256-byte items, K = 256).
--subset 0 takes every chunk.
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compress import policy_bits  # noqa: E402

import ardm  # noqa: E402
from ardm.coding import coding_steps, decoding_steps, split  # noqa: E402
from ardm.modalities import get_modality  # noqa: E402
from ardm.modalities.text import chunk_bytes, load_text_bytes, printable, split_bytes  # noqa: E402
from ardm.subsets import evenly_spaced  # noqa: E402

CHUNK = 256
DICT_BYTES = 112640  # zstd --train's default: 110 KB
HELDOUT = Path("/usr/share/common-licenses/GPL-3")
HELDOUT_BUDGET = 64

Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


# ---- classical codecs: (compress, decompress) pairs ---------------------------------------------


def zstd_codec(dictionary=None, params=None) -> Codec:
    import zstandard

    if params is not None:
        cctx = zstandard.ZstdCompressor(compression_params=params)
    else:
        cctx = zstandard.ZstdCompressor(level=19, dict_data=dictionary)
    dctx = zstandard.ZstdDecompressor(dict_data=dictionary)
    return cctx.compress, dctx.decompress


def zstd_ldm_codec() -> Codec:
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(19, enable_ldm=True, window_log=27)
    return zstd_codec(params=params)


def brotli_codec() -> Codec:
    import brotli

    return (lambda data: brotli.compress(data, quality=11)), brotli.decompress


def xz_codec() -> Codec:
    return (
        lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME),
        lzma.decompress,
    )


def bzip2_codec() -> Codec:
    return (lambda data: bz2.compress(data, 9)), bz2.decompress


def ppmd_codec() -> Codec:
    import pyppmd

    settings = {"max_order": 6, "mem_size": 16 << 20, "variant": "I"}
    return (lambda data: pyppmd.compress(data, **settings)), (
        lambda blob: pyppmd.decompress(blob, **settings)
    )


def train_dictionary(train: bytes):
    """zstd's dictionary of DICT_BYTES trained on ``train`` cut into 256-byte chunks."""
    import zstandard

    samples = [bytes(row) for row in chunk_bytes(train, CHUNK).numpy()]
    return zstandard.train_dictionary(DICT_BYTES, samples)


def coded_bytes(name: str, codec: Codec, data: bytes) -> int:
    """Compressed size of ``data``, the round trip verified."""
    encode, decode = codec
    blob = encode(data)
    if decode(blob) != data:
        raise SystemExit(f"{name}: round trip failed")
    return len(blob)


def per_chunk_bpb(name: str, codec: Codec, chunks: torch.Tensor) -> float:
    """Bits per byte, each chunk compressed alone (a mean over the chunks, all 256 bytes)."""
    total = sum(coded_bytes(name, codec, bytes(row)) for row in chunks.numpy())
    return 8 * total / chunks.numel()


# ---- ARDM -----------------------------------------------------------------------------------


def bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="call", leave=False, file=sys.stderr)


def timed_round_trip(model, x: torch.Tensor, budget: int, mode: str, label: str):
    """Compress and decompress ``x`` once each way with progress bars, verified; returns the
    blob and the encode and decode seconds."""
    with bar(coding_steps(x, model, budget, mode=mode), f"{label} encode budget {budget}") as b:
        t0 = time.perf_counter()
        blob = ardm.compress(x, model, budget=budget, mode=mode, progress=b.update)
        encode_s = time.perf_counter() - t0
    with bar(decoding_steps(blob, model), f"{label} decode budget {budget}") as b:
        t0 = time.perf_counter()
        back = ardm.decompress(blob, model, progress=b.update)
        decode_s = time.perf_counter() - t0
    if not torch.equal(back, x):
        raise SystemExit(f"ARDM round trip failed at budget {budget} ({label})")
    return blob, encode_s, decode_s


def ardm_chunks(model, x: torch.Tensor, budget: int) -> dict[str, float]:
    """Compress the chunks x (n, 256) in independent mode: one pass each way, verified."""
    n_bytes = x.numel()
    blob, encode_s, decode_s = timed_round_trip(model, x, budget, "independent", "chunks")
    items = split(blob)
    if len(items) != len(x):
        raise SystemExit(f"split gave {len(items)} blobs for {len(x)} chunks (budget {budget})")
    middle = len(items) // 2  # one per-item blob decoded alone
    if not torch.equal(ardm.decompress(items[middle], model), x[middle]):
        raise SystemExit(f"ARDM: chunk {middle}'s own blob does not decode alone (budget {budget})")
    item_bytes = sum(len(s) for s in items)
    return {
        "bpb": 8 * item_bytes / n_bytes,
        "frame_bpb": 8 * (len(blob) - item_bytes) / n_bytes,
        "encode_kbs": n_bytes / 1e3 / encode_s,
        "decode_kbs": n_bytes / 1e3 / decode_s,
    }


def ardm_joint(model, data: bytes, budget: int) -> dict[str, float]:
    """Compress ``data`` as one sequence in one joint stream: one pass each way, verified."""
    x = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())
    blob, encode_s, decode_s = timed_round_trip(model, x, budget, "joint", "whole split")
    return {"bytes": len(blob), "encode_s": encode_s, "decode_s": decode_s}


# ---- the three parts --------------------------------------------------------------------------


def subset_of(chunks: torch.Tensor, count: int, what: str) -> tuple[torch.Tensor, str]:
    x = evenly_spaced(chunks, count)
    if len(x) == len(chunks):
        return x, f"all {len(x)} chunks of {what}"
    return x, f"evenly spaced {len(x)} of {len(chunks)} chunks of {what}"


def part_chunks(model, test: torch.Tensor, args, zdict) -> list[str]:
    x, said = subset_of(test, args.subset, "the KJV test split")
    lines = [f"1. Per {CHUNK}-byte chunk, each alone: {said}; bits/byte, mean over the chunks",
             f"{'codec':<44}{'bits/byte':>10}"]
    print("\n".join(lines), flush=True)
    peers = {
        "zstd -19": zstd_codec(),
        f"zstd -19 + KJV dict ({DICT_BYTES} B, not charged)": zstd_codec(zdict),
        "brotli -11": brotli_codec(),
        "xz -9e (FORMAT_XZ)": xz_codec(),
    }
    for name, codec in peers.items():
        lines.append(f"{name:<44}{per_chunk_bpb(name, codec, x):>10.3f}")
        print(lines[-1], flush=True)
    lines.append(
        f"{'ARDM (independent)':<24}{'budget':>7}{'calls':>6}{'bits/byte':>10}{'frame':>7}"
        f"{'NLL':>8}{'over':>7}{'naive NLL':>10}{'opt<naive':>10}{'enc kB/s':>10}{'dec kB/s':>10}"
    )
    print(lines[-1], flush=True)
    for budget in args.budgets:
        policy, naive = model.policy(budget), model.naive_policy(budget)
        nll = policy_bits(model, x, policy).sum() / x.numel()
        naive_nll = nll if policy == naive else policy_bits(model, x, naive).sum() / x.numel()
        verdict = "same" if policy == naive else ("yes" if nll < naive_nll else "NO")
        row = ardm_chunks(model, x, budget)
        lines.append(
            f"{'':<24}{budget:>7}{len(policy):>6}{row['bpb']:>10.3f}{row['frame_bpb']:>7.3f}"
            f"{nll:>8.4f}{row['bpb'] - nll:>7.3f}{naive_nll:>10.4f}{verdict:>10}"
            f"{row['encode_kbs']:>10.3f}{row['decode_kbs']:>10.3f}"
        )
        print(lines[-1], flush=True)
        if verdict == "NO":
            lines.append(f"  WARNING: at budget {budget} the optimal policy codes these chunks "
                         f"worse than the naive one ({nll:.4f} > {naive_nll:.4f} bits/byte)")
            print(lines[-1], flush=True)
    lines.append("  bits/byte: per-item blobs (split), header and check included; frame: the "
                 "independent blob's frame, not charged; NLL: exact -log2 p, bits/byte; over: bits/byte - NLL")
    print(lines[-1], flush=True)
    return lines


def part_whole(model, test_bytes: bytes, args) -> list[str]:
    n = len(test_bytes)
    lines = [f"2. The whole KJV test split as one file ({n} bytes)",
             f"{'codec':<44}{'bytes':>10}{'bits/byte':>10}"]
    print("\n".join(lines), flush=True)
    peers = {
        "xz -9e": xz_codec(),
        "bzip2 -9": bzip2_codec(),
        "zstd -19 --long=27": zstd_ldm_codec(),
        "brotli -11": brotli_codec(),
        "PPMd var.I order 6, 16 MiB": ppmd_codec(),
    }
    for name, codec in peers.items():
        size = coded_bytes(name, codec, test_bytes)
        lines.append(f"{name:<44}{size:>10}{8 * size / n:>10.3f}")
        print(lines[-1], flush=True)
    name = f"ARDM joint, budget {args.joint_budget}"
    if args.skip_joint:
        lines.append(f"{name:<44}  (skipped: --skip-joint)")
    else:
        row = ardm_joint(model, test_bytes, args.joint_budget)
        lines.append(
            f"{name:<44}{row['bytes']:>10}{8 * row['bytes'] / n:>10.3f}"
            f"  (encode {row['encode_s']:.1f} s = {n / 1e3 / row['encode_s']:.2f} kB/s, "
            f"decode {row['decode_s']:.1f} s = {n / 1e3 / row['decode_s']:.2f} kB/s)"
        )
    print(lines[-1], flush=True)
    return lines


def part_heldout(model, args, zdict) -> list[str]:
    chunks = chunk_bytes(HELDOUT.read_bytes(), CHUNK)
    x, said = subset_of(chunks, args.subset, str(HELDOUT))
    lines = [f"3. Held-out English, not KJV, per {CHUNK}-byte chunk: {said}",
             f"{'codec':<44}{'bits/byte':>10}"]
    print("\n".join(lines), flush=True)
    peers = {
        "zstd -19": zstd_codec(),
        "zstd -19 + KJV dict": zstd_codec(zdict),
        "brotli -11": brotli_codec(),
    }
    for name, codec in peers.items():
        lines.append(f"{name:<44}{per_chunk_bpb(name, codec, x):>10.3f}")
        print(lines[-1], flush=True)
    policy = model.policy(HELDOUT_BUDGET)
    nll = policy_bits(model, x, policy).sum() / x.numel()
    row = ardm_chunks(model, x, HELDOUT_BUDGET)
    lines.append(f"{f'ARDM independent, budget {HELDOUT_BUDGET}':<44}{row['bpb']:>10.3f}"
                 f"  (NLL {nll:.3f})")
    print(lines[-1], flush=True)
    return lines


INFILL_UNKNOWN = 64  # of 256 bytes: 75 % given


def part_infill(model, test: torch.Tensor, args) -> list[str]:
    x, said = subset_of(test, args.subset, "the KJV test split")
    gen = torch.Generator().manual_seed(0)
    known = torch.ones(x.shape, dtype=torch.bool)
    for row in known:
        row[torch.randperm(CHUNK, generator=gen)[:INFILL_UNKNOWN]] = False
    order = ardm.random_order(model.num_vars, model.order_seed)
    lines = [f"4. Infilling: {said}; {CHUNK - INFILL_UNKNOWN} of {CHUNK} bytes given, exact "
             f"-log2 p of the {INFILL_UNKNOWN} unknown ones given the rest",
             f"{'budget':>7}{'calls':>7}{'bits per filled byte':>22}"]
    print("\n".join(lines), flush=True)
    for budget in sorted({min(b, INFILL_UNKNOWN) for b in args.budgets}, reverse=True):
        policy = model.policy(budget, num_vars=INFILL_UNKNOWN)
        with torch.no_grad():
            bits = model.exact_nll_bits(x.long(), order, policy=policy, known=known)
        lines.append(f"{budget:>7}{len(policy):>7}{float(bits.sum()) / known.logical_not().sum():>22.3f}")
        print(lines[-1], flush=True)
    filled = model.sample(1, budget=20, given=x[:1], known=known[:1], generator=gen)[0]
    masked = torch.where(known[0], x[0].long(), torch.full_like(x[0].long(), ord("_")))
    for label, row in (("given", masked), ("filled (20 calls)", filled), ("original", x[0])):
        lines.append(f"{label}:\n{printable(row)}")
    print("\n".join(lines[-3:]), flush=True)
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="kjv", help="shipped model name or run directory")
    parser.add_argument("--subset", type=int, default=64,
                        help="chunks evenly spaced over the test split and the held-out file "
                             "(0: all)")
    parser.add_argument("--budgets", default="256,64,20", help="comma list, per-chunk part")
    parser.add_argument("--joint-budget", type=int, default=64,
                        help="budget of the ARDM joint pass over the whole test split")
    parser.add_argument("--skip-joint", action="store_true",
                        help="leave out the (slow) ARDM joint pass over the whole test split")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--parts", default="chunks,whole,heldout,infill",
                        help="which parts to run (comma list of chunks, whole, heldout, infill)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if parts - {"chunks", "whole", "heldout", "infill"}:
        raise SystemExit(f"--parts: unknown parts {sorted(parts - {'chunks', 'whole', 'heldout', 'infill'})}")
    args.budgets = [int(b) for b in args.budgets.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)

    model = ardm.load(args.model)
    if tuple(model.data_shape) != (CHUNK,) or model.num_classes != 256:
        raise SystemExit(f"--model {args.model}: not a text model of {CHUNK}-byte items "
                         f"(data_shape {tuple(model.data_shape)}, K = {model.num_classes})")
    data = load_text_bytes("kjv")
    train_bytes, test_bytes = split_bytes(data, "train"), split_bytes(data, "test")
    test = get_modality("text").load("kjv", "test")
    zdict = train_dictionary(train_bytes)

    lines = [
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} CPUs "
        f"({platform.platform()}); torch threads {torch.get_num_threads()}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        f"model: {args.model} ({model.num_stages} stage(s), order seed {model.order_seed}); "
        f"KJV: {len(train_bytes)} train bytes, {len(test_bytes)} test bytes, {len(test)} test "
        f"chunks",
    ]
    print("\n".join(lines), flush=True)
    if "chunks" in parts:
        lines += part_chunks(model, test, args, zdict)
    if "whole" in parts:
        lines += part_whole(model, test_bytes, args)
    if "heldout" in parts:
        lines += part_heldout(model, args, zdict)
    if "infill" in parts:
        lines += part_infill(model, test, args)
    return lines


if __name__ == "__main__":
    main()
