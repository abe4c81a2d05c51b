"""``ardm sample``: samples drawn under a budget of network calls, saved as the modality
previews them (a PNG grid of images, a text file of text that is printed too, a WAV file per
audio sample).

Example:
    ardm sample runs/fm --budget 50 --n 64 -o samples.png
    ardm sample kjv --budget 64 --n 4
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch

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
printed), audio as one WAV file per sample (NAME-0.wav, NAME-1.wav, ...) and a PNG of their
waveforms. The preview is written in a directory that exists; a file that exists is replaced only
with --force; the files are written under a temporary name and renamed when complete. If the
model has no per-step losses (needed to plan a budget below the maximum) they are estimated first
on held-out training data.

examples:
  ardm sample runs/fm --budget 50 --n 64 -o samples.png
  ardm sample fashion-mnist --budget 20 --temperature 0.9 --seed 3
  ardm sample kjv --budget 64 --n 4
  ardm sample speech --budget 64 --n 2 -o speech.wav   # speech-0.wav, speech-1.wav, speech.png
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sample`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "sample", help="generate samples (images, text, audio as WAV files) under a budget of "
        "network calls",
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
        help="preview file, in a directory that exists (default: samples.png for images, "
             "samples.txt for text, samples.wav for audio: samples-0.wav, ...)")
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
    _check_options(args)  # before a model is loaded
    model, config = resolve_run(args.run)
    modality = get_modality(model.modality)
    _check_size(model, args.n, args.scale)  # before anything is sampled
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
    target = Path(args.output or f"samples{modality.preview_suffix}")
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


def _check_options(args: argparse.Namespace) -> None:
    """A ``ValueError`` for a setting out of range or a preview that cannot be written where
    ``-o`` says (in a directory that exists, as ``ardm compress -o`` does)."""
    for name in ("n", "budget", "scale", "holdout_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0.0 < args.temperature < math.inf:
        raise ValueError(f"--temperature must be a positive number, got {args.temperature}")
    if args.output is None:
        return
    output = Path(args.output)
    if output.is_dir() or args.output.endswith(("/", os.sep)):
        raise ValueError(f"-o {args.output} is a directory; give the preview file's name")
    if not output.parent.is_dir():
        raise ValueError(f"-o {args.output}: the directory {output.parent} does not exist")


def memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_size(model, n: int, scale: int) -> None:
    """Refuse ``n`` samples whose sampling cannot fit in memory, and a ``scale`` that makes an
    image grid too large to write, before any network call.

    One network call over the batch holds each item's values (int64) and a float32
    probability of every entry of every variable's table: a lower bound of what sampling needs.
    """
    per_item = model.num_vars * (8 + 4 * model.table_size)
    memory = memory_bytes()
    if memory is not None and n * per_item > memory:
        raise ValueError(
            f"--n {n:,} samples of shape {tuple(model.data_shape)} need at least "
            f"{n * per_item / 2**30:,.1f} GiB while sampling, more than this machine's "
            f"{memory / 2**30:,.1f} GiB of memory; use a smaller --n (at most "
            f"{max(1, memory // per_item):,}), and another --seed for more samples"
        )
    if model.modality == "image":
        from ardm.modalities.image import MAX_GRID_PIXELS, image_grid

        grid = image_grid(torch.zeros((n, *model.data_shape), dtype=torch.uint8), 2)
        height, width = grid.shape[0] * scale, grid.shape[1] * scale
        if height * width > MAX_GRID_PIXELS:
            raise ValueError(
                f"--scale {scale} makes a grid of {width}x{height} pixels for {n} samples, more "
                f"than {MAX_GRID_PIXELS:,}; use a smaller scale (or --n)"
            )
