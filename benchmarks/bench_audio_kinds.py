"""Audio model kinds at equal compute: upscale ARDMs (b = 4 / 16 / 256, data and direct
parametrizations) against the order-agnostic ARDM, the same net, data and training.

Each run directory is a model trained by the same command but for its kind (``--model``,
``--branch-factor``, ``--parametrization``), so training compute is equal; each row then gives,
at equal network calls per 8,000-sample chunk (the budgets), the exact -log2 p of --chunks test
chunks evenly spaced over the asterisk test split under the coding order and the budget's
optimal policy, in bits per sample, and the sum of the model's per-step losses (every step:
S x D calls for an upscale model, D for the order-agnostic one; estimated on held-out training
items). "trained on" is steps x batch, equal for every row when the commands below made them.

The runs in README were trained with::

    common="--data asterisk --net dilated --preset small --steps 400 --batch-size 8 --lr 5e-3 \\
      --warmup 20 --lr-schedule cosine --ema 0.99 --precision bf16 --eval-every 100 \\
      --eval-size 8 --ckpt-every 50 --holdout 16 --step-loss-evals 1 --threads 1"
    ardm train $common --model oa --out runs/kinds400/oa
    ardm train $common --model upscale --branch-factor 256 --out runs/kinds400/u256
    ardm train $common --model upscale --branch-factor 16 --out runs/kinds400/u16
    ardm train $common --model upscale --branch-factor 4 --out runs/kinds400/u4
    ardm train $common --model upscale --branch-factor 16 --parametrization direct \\
      --out runs/kinds400/d16

and measured with::

    python benchmarks/bench_audio_kinds.py --runs runs/kinds400/{oa,u256,u16,u4,d16} \\
      --budgets 20,50,100 --chunks 8

(The earlier table, at 100 steps, came from the same commands with ``--steps 100 --ckpt-every
20 --threads 2``.)

--plot PATH saves bits/sample against budget as a PNG (the README's figure of the shipped model:
``--runs speech --budgets 4,8,20,50,100,200,500 --plot docs/figures/speech-bits-vs-budget.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compress import policy_bits  # noqa: E402

import ardm  # noqa: E402
from ardm.modalities import get_modality  # noqa: E402
from ardm.modalities.audio import ASTERISK_DIR  # noqa: E402
from ardm.pretrained import PRETRAINED  # noqa: E402
from ardm.subsets import evenly_spaced  # noqa: E402


def describe(model) -> str:
    """The model's kind in a few words: 'OA' or 'upscale b=16 (direct)'."""
    if model.kind != "upscale":
        return "order-agnostic"
    return f"upscale b={model.branch_factor} ({model.parametrization})"


def training_items(run: str) -> int | None:
    """Items the run (a directory or a shipped name) trained on, steps x batch (None if its
    config does not say)."""
    try:
        train = json.loads((PRETRAINED.get(run, Path(run)) / "config.json").read_text())["train"]
        return int(train["steps"]) * int(train["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run directories of audio models")
    parser.add_argument("--budgets", default="20,50,100", help="network calls per chunk")
    parser.add_argument("--chunks", type=int, default=8, help="test chunks, evenly spaced")
    parser.add_argument("--plot", default=None, help="save bits/sample against budget as this PNG")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = [int(b) for b in args.budgets.split(",")]
    chunks = get_modality("audio").load(ASTERISK_DIR, "test")
    picked = evenly_spaced(chunks, args.chunks)
    lines = [f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; exact NLL on {len(picked)} "
             f"test chunks of 8,000 samples evenly spaced, bits/sample"]
    header = f"{'model':<26} {'params':>7} {'trained on':>10} {'all steps':>9}"
    lines.append(header + "".join(f" {f'{b} calls':>9}" for b in budgets))
    print(lines[-1], flush=True)
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for run in args.runs:
        model = ardm.load(run).eval()
        if model.modality != "audio":
            raise SystemExit(f"{run} is a {model.modality} model, not an audio one")
        params = sum(p.numel() for p in model.net.parameters())
        items = training_items(run)
        every_step = float(model.step_losses.sum()) / model.num_vars
        row = (f"{describe(model):<26} {params / 1e6:>6.2f}M "
               f"{'?' if items is None else f'{items:,} items':>10} {every_step:>9.3f}")
        for budget in budgets:
            if budget < model.min_budget:
                row += f" {'-':>9}"
                continue
            bits = policy_bits(model, picked.long(), model.policy(budget), batch=4)
            row += f" {bits.mean() / model.num_vars:>9.3f}"
            curve = curves.setdefault(f"{run}: {describe(model)}", ([], []))
            curve[0].append(budget)
            curve[1].append(float(bits.mean()) / model.num_vars)
        lines.append(row)
        print(row, flush=True)
    if args.plot:
        save_plot(curves, Path(args.plot), len(picked))
        print(f"plot: {args.plot}")
    return lines


def save_plot(curves: dict[str, tuple[list[int], list[float]]], path: Path, chunks: int) -> None:
    """Exact bits/sample against network calls per chunk, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (budgets, bits) in curves.items():
        ax.plot(budgets, bits, "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("network calls per 8,000-sample chunk")
    ax.set_ylabel("bits per sample (exact -log2 p)")
    ax.set_title(f"{chunks} asterisk test chunks, optimal policy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
