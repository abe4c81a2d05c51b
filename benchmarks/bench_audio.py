"""Lossless compression of speech (16-bit WAV files) side by side: ARDM against FLAC and WavPack.

Each file alone, every round trip verified byte for byte (ARDM and the peers):

- FLAC -8 --no-padding (``flac`` from Debian), WavPack -hh -x6 (``wavpack``), and the order-0
  entropy of each file's samples (no table cost: a bound, not a codec), on every test file of
  the asterisk split (56 files, every tenth file of the 568);
- ARDM at each of --budgets (network calls per 8,000-sample chunk), joint mode per file (a file
  is one blob, its chunks decoded in lockstep; header, sample rate and check included), on
  --subset test files evenly spaced over the split (never the first N), with the peers'
  figures on the same files beside it; encode and decode in CPU seconds per second of audio;
- the exact -log2 p of full test chunks under the coding order and policy ("NLL", bits/sample)
  at each budget, on --nll-chunks chunks evenly spaced over the test split, against what the
  blobs cost;
- --heldout DIR: another speaker and language (default: fr_CA_f_June of the Debian package
  asterisk-core-sounds-fr-wav, when installed), --heldout-subset files evenly spaced (--subset
  unless given), the same codecs, ARDM at --heldout-budgets (the middle of --budgets unless
  given); --heldout-only measures only these.

    python benchmarks/bench_audio.py --model speech --subset 8 --budgets 20,50,100
    python benchmarks/bench_audio.py --heldout-only --heldout-subset 8 --heldout-budgets 50,100

--model is a shipped model name or a run directory of an audio model.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compress import policy_bits  # noqa: E402

import ardm  # noqa: E402
from ardm.modalities import get_modality  # noqa: E402
from ardm.modalities.audio import (  # noqa: E402
    ASTERISK_DIR,
    audio_files,
    read_wav,
    split_files,
    values_from_samples,
)
from ardm.subsets import evenly_spaced  # noqa: E402

HELDOUT_DIR = Path("/usr/share/asterisk/sounds/fr_CA_f_June")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is missing: apt-get install {package}")
    return path


def flac_bytes(path: Path, work: Path) -> int:
    """FLAC -8 --no-padding of ``path``; decoded back and compared byte for byte."""
    out, back = work / "x.flac", work / "back.wav"
    subprocess.run([_tool("flac", "flac"), "-8", "--no-padding", "-s", "-f", "-o", str(out),
                    str(path)], check=True)
    subprocess.run([_tool("flac", "flac"), "-d", "-s", "-f", "-o", str(back), str(out)], check=True)
    if back.read_bytes() != path.read_bytes():
        raise SystemExit(f"flac round trip differs on {path}")
    return out.stat().st_size


def wavpack_bytes(path: Path, work: Path) -> int:
    """WavPack -hh -x6 of ``path``; decoded back and compared byte for byte."""
    out, back = work / "x.wv", work / "back.wav"
    subprocess.run([_tool("wavpack", "wavpack"), "-hh", "-x6", "-q", "-y", str(path), "-o",
                    str(out)], check=True)
    subprocess.run([_tool("wvunpack", "wavpack"), "-q", "-y", str(out), "-o", str(back)], check=True)
    if back.read_bytes() != path.read_bytes():
        raise SystemExit(f"wavpack round trip differs on {path}")
    return out.stat().st_size


def order0_bits(samples: np.ndarray) -> float:
    """The empirical order-0 entropy of the samples times their number (bits)."""
    _, counts = np.unique(samples, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def peers(files: list[Path], desc: str) -> dict[str, float]:
    """Bits per sample of each peer over ``files`` (total bits / total samples)."""
    totals = {"FLAC -8": 0.0, "WavPack -hh -x6": 0.0, "order-0 entropy": 0.0}
    samples = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in tqdm(files, desc=desc, unit="file", leave=False):
            x, _ = read_wav(path)
            samples += x.size
            totals["FLAC -8"] += 8 * flac_bytes(path, Path(tmp))
            totals["WavPack -hh -x6"] += 8 * wavpack_bytes(path, Path(tmp))
            totals["order-0 entropy"] += order0_bits(x)
    return {k: v / samples for k, v in totals.items()}


def ardm_files(model, files: list[Path], budget: int, desc: str) -> dict[str, float]:
    """ARDM over ``files``, each alone, joint per file: bits/sample and CPU s per audio s."""
    bits = samples = 0
    encode = decode = 0.0
    for path in tqdm(files, desc=desc, unit="file", leave=False):
        x, rate = read_wav(path)
        values = values_from_samples(x)
        start = time.process_time()
        blob = ardm.compress(values, model, budget=budget, sample_rate=rate)
        encode += time.process_time() - start
        start = time.process_time()
        back = ardm.decompress(blob, model)
        decode += time.process_time() - start
        if not np.array_equal(back.numpy(), values) or ardm.coding.blob_sample_rate(blob, model) != rate:
            raise SystemExit(f"ARDM round trip differs on {path}")
        bits += 8 * len(blob)
        samples += x.size
    seconds = samples / 8000
    return {"bps": bits / samples, "enc": encode / seconds, "dec": decode / seconds}


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="speech", help="shipped name or run directory")
    parser.add_argument("--subset", type=int, default=8,
                        help="ARDM test files, evenly spaced (0: all 56)")
    parser.add_argument("--budgets", default="20,50,100", help="network calls per chunk")
    parser.add_argument("--nll-chunks", type=int, default=8,
                        help="test chunks for the exact NLL, evenly spaced")
    parser.add_argument("--heldout", default=str(HELDOUT_DIR),
                        help="a directory of WAVs of another speaker (skipped if missing)")
    parser.add_argument("--heldout-subset", type=int, default=None,
                        help="held-out files, evenly spaced (default: --subset; 0: all)")
    parser.add_argument("--heldout-budgets", default=None,
                        help="ARDM budgets on the held-out files (default: the middle of --budgets)")
    parser.add_argument("--heldout-only", action="store_true",
                        help="measure only the held-out files (not the test split)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = ardm.load(args.model).eval()
    budgets = [int(b) for b in args.budgets.split(",")]
    heldout_budgets = ([int(b) for b in args.heldout_budgets.split(",")] if args.heldout_budgets
                       else [budgets[len(budgets) // 2]])
    test = split_files(audio_files(ASTERISK_DIR), "test")
    subset = evenly_spaced(test, args.subset)
    lines = [f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"]

    if not args.heldout_only:
        everything = peers(test, "peers (all test files)")
        lines.append(f"all {len(test)} test files, each alone (bits/sample): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in everything.items()))
        on_subset = peers(subset, "peers (subset)")
        lines.append(f"ARDM on {len(subset)} test files evenly spaced; peers on the same files: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in on_subset.items()))
        wavpack = on_subset["WavPack -hh -x6"]
        lines.append(f"{'budget':>6} {'bits/sample':>11} {'vs WavPack':>10} {'vs FLAC':>8} "
                     f"{'enc CPU s/s':>11} {'dec CPU s/s':>11}")
        for budget in budgets:
            r = ardm_files(model, subset, budget, f"ARDM budget {budget}")
            lines.append(f"{budget:>6} {r['bps']:>11.3f} {r['bps'] / wavpack:>9.3f}x "
                         f"{r['bps'] / on_subset['FLAC -8']:>7.3f}x {r['enc']:>11.2f} {r['dec']:>11.2f}")
            print(lines[-1], flush=True)

        chunks = get_modality("audio").load(ASTERISK_DIR, "test")
        picked = evenly_spaced(chunks, args.nll_chunks)
        for budget in budgets:
            nll = policy_bits(model, picked.long(), model.policy(budget), batch=4)
            naive = policy_bits(model, picked.long(), model.naive_policy(budget), batch=4)
            lines.append(f"exact NLL at budget {budget} on {len(picked)} test chunks: "
                         f"{nll.mean() / model.num_vars:.3f} bits/sample (optimal policy), "
                         f"{naive.mean() / model.num_vars:.3f} (equal split, even steps)")
            print(lines[-1], flush=True)

    heldout = Path(args.heldout)
    if heldout.is_dir():
        count = args.subset if args.heldout_subset is None else args.heldout_subset
        files = evenly_spaced(audio_files(heldout), count)
        other = peers(files, "peers (held out)")
        lines.append(f"held out ({heldout.name}, {len(files)} files evenly spaced): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in other.items()))
        for budget in heldout_budgets:
            r = ardm_files(model, files, budget, f"ARDM held out, budget {budget}")
            lines.append(f"  ARDM budget {budget}: {r['bps']:.3f} bits/sample, "
                         f"{r['bps'] / other['WavPack -hh -x6']:.3f}x WavPack, "
                         f"{r['bps'] / other['FLAC -8']:.3f}x FLAC")
            print(lines[-1], flush=True)
    else:
        lines.append(f"held out: {heldout} is missing (apt-get install asterisk-core-sounds-fr-wav)")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
