"""`ardm step-losses RUN`: estimate a run's per-step losses again, on its held-out items.

The per-step losses are what the budget DP plans policies with; training estimates them once at
its end. This re-estimates them (with more evaluations, or after the estimator changed) on the
same held-out training items the run set aside, and writes them into ``RUN/model.safetensors``.
The weights are not touched, but the model's fingerprint covers the step losses, so blobs made
with the old ones no longer decode with it (they are refused, never decoded wrongly).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from ardm.checkpoint import load_model, read_config, save_model
from ardm.modalities import get_modality


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "step-losses",
        help="estimate a run's per-step losses again on its held-out training items",
        description=__doc__.split("\n\n", 1)[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", help="run directory written by `ardm train`")
    p.add_argument("--evals", type=int, default=32,
                   help="evaluations per step: this many held-out items, evenly spaced, each "
                        "seen by every step (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the orders drawn (default: 0)")
    p.add_argument("--batch-size", type=int, default=64, help="items per network call")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    if args.evals < 1 or args.batch_size < 1:
        raise ValueError("--evals and --batch-size must be at least 1")
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    config = read_config(run_dir)
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    data, holdout = train.get("data"), train.get("holdout")
    if not isinstance(data, str) or not isinstance(holdout, int) or holdout < 1:
        raise ValueError(f"{run_dir}/config.json does not name its training data and held-out "
                         "items (train.data, train.holdout >= 1): was it written by `ardm train`?")
    model = load_model(run_dir)
    items = get_modality(model.modality).load(data, "train")
    held = items[len(items) - holdout :]
    before = float(model.step_losses.sum()) / model.num_vars
    with tqdm(total=model.step_loss_evaluations(args.evals), desc="step losses", unit="eval",
              disable=args.no_progress, dynamic_ncols=True) as bar:
        model.estimate_step_losses(held, evals_per_step=args.evals, batch_size=args.batch_size,
                                   generator=torch.Generator().manual_seed(args.seed),
                                   progress=bar.update)
    after = float(model.step_losses.sum()) / model.num_vars
    metrics = config.get("metrics") if isinstance(config.get("metrics"), dict) else {}
    metrics.update(step_losses_sum_bits=float(model.step_losses.sum()),
                   step_losses_evals=args.evals, step_losses_seed=args.seed)
    stage = model.stage_step_losses.sum(1) / model.num_vars
    metrics["step_losses_stage_bpd"] = [round(float(v), 5) for v in stage]
    config["metrics"] = metrics
    save_model(model, config, run_dir)
    print(f"{run_dir}: step losses re-estimated on {min(args.evals, holdout)} of its {holdout} "
          f"held-out items ({args.evals} evaluation(s) a step); their sum {before:.4f} -> "
          f"{after:.4f} bits per variable")
    return 0
