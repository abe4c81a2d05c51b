"""``ardm sample``: samples drawn under a budget of network calls, saved as the modality
previews them (a PNG grid of images, a text file of text that is printed too).

Example:
    ardm sample runs/fm --budget 50 --n 64 -o samples.png
    ardm sample kjv --budget 64 --n 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ardm.commands.paths import write_whole
from ardm.evaluate import (
    ensure_step_losses,
    load_held_out_images,
    resolve_run,
    sample_images,
)
from ardm.modalities import get_modality

__all__ = ["add_parser", "run"]

DESCRIPTION = """\
Draw samples from a model (run directory or shipped name) with the budget-optimal policy: exactly
len(policy) network calls for the whole batch (for an upscale model, the sum over stages), each
call generating its step's variables in parallel. Prints the calls made and the time, and saves
the samples as the model's modality shows them: images as a PNG grid, text as a text file (and
printed). A preview file that exists is replaced only with --force; the files are written under
a temporary name and renamed when complete. If the model has no per-step losses (needed to plan
a budget below the maximum) they are estimated first on held-out training data.

examples:
  ardm sample runs/fm --budget 50 --n 64 -o samples.png
  ardm sample fashion-mnist --budget 20 --temperature 0.9 --seed 3
  ardm sample kjv --budget 64 --n 4
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sample`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "sample", help="generate samples (images, text) under a budget of network calls",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("run", nargs="?", default=None,
        help="run directory (from ardm train) or shipped model name (default: the shipped one)")
    add("--budget", type=int, default=50,
        help="network calls for the whole batch (clipped to the model's maximum) "
             "(default: %(default)s)")
    add("--n", type=int, default=64, help="number of samples (default: %(default)s)")
    add("--temperature", type=float, default=1.0,
        help="divides the logits before sampling (default: %(default)s)")
    add("--seed", type=int, default=0, help="seed of orders and draws (default: %(default)s)")
    add("-o", "--output", default=None,
        help="preview file (default: samples.png for images, samples.txt for text)")
    add("--force", action="store_true", help="replace preview files that exist")
    add("--scale", type=int, default=2, help="pixels per image pixel in the PNG (default: %(default)s)")
    add("--data", default=None,
        help="dataset for estimating missing step losses (default: the run's training dataset)")
    add("--holdout-size", type=int, default=200,
        help="held-out training images to estimate missing step losses (default: %(default)s)")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``ardm sample`` with parsed arguments; returns the exit status."""
    if args.output and Path(args.output).is_dir():
        raise ValueError(f"-o {args.output} is a directory; give the preview file's name")
    model, config = resolve_run(args.run)
    high = model.max_budget
    budget = min(args.budget, high)
    if budget < high and not model.has_step_losses():
        held, source = load_held_out_images(model, config, args.holdout_size, args.data)
        print(f"the model has no per-step losses: estimating them on {source} (not saved)")
        ensure_step_losses(model, held, progress=args.progress)
    result = sample_images(model, budget, args.n, args.temperature, args.seed)
    if result.calls != result.policy_calls:
        raise RuntimeError(
            f"sampling made {result.calls} network calls, the policy has {result.policy_calls}"
        )
    modality = get_modality(model.modality)
    target = Path(args.output or f"samples{modality.preview_suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    path = write_whole(
        target,
        lambda staged: modality.save_preview(result.images, model.num_classes, staged,
                                             scale=args.scale),
        force=args.force,
    )
    if modality.preview_suffix == ".txt":
        print(path.read_text(encoding="utf-8"))
    print(
        f"{args.n} samples, budget {budget}: {result.calls} network calls in "
        f"{result.seconds:.2f} s ({args.n / result.seconds:.1f} items/s, "
        f"temperature {args.temperature}, seed {args.seed}) -> {path}"
    )
    return 0
