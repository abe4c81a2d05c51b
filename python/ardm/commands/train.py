"""``ardm train``: train an order-agnostic or upscale ARDM on a dataset of any modality.

Example:
    ardm train --data fashion-mnist --preset small --steps 20000 --batch-size 32 --out runs/fm
    ardm train --model upscale --branch-factor 4 --preset small --out runs/fm-up
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ardm.checkpoint import CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE
from ardm.modalities import MODALITIES, Modality
from ardm.models import MODEL_KINDS, PARAMETRIZATIONS
from ardm.models.stage_budget import SPLITS
from ardm.nets import HEADS, NETS

__all__ = ["add_parser", "run", "main"]

DESCRIPTION = """\
Train an order-agnostic ARDM (Hoogeboom et al. 2022), or with --model upscale an upscale ARDM
that generates values coarse to fine, one base-b digit per stage (S = ceil(log_b K) stages).
Writes a run directory with model.safetensors (EMA weights + per-step losses, estimated on
held-out training items at the end: D of them, or S x D for an upscale model), config.json,
train_state.pt (for --resume) and metrics.jsonl. Under torchrun (WORLD_SIZE > 1) it trains with
DistributedDataParallel.

examples:
  ardm train --data fashion-mnist --preset small --steps 20000 --batch-size 32 --out runs/fm
  ardm train --model upscale --branch-factor 4 --parametrization data --out runs/fm-up
  ardm train --data kjv --out runs/text            # text: transformer, order-agnostic
  ardm train --data asterisk --out runs/speech     # audio: dilated net, upscale b = 16
  ardm train --out runs/fm --resume ...            # continue after an interruption
  ardm train --data notes.txt --init kjv --steps 500 --out runs/notes   # fine-tune a shipped model
  torchrun --nproc_per_node=4 -m ardm.training --device cuda --preset base --out runs/base
"""


def _per_modality(describe: Callable[[Modality], str]) -> str:
    """``describe`` of every modality, for a help text built from the registry (a new modality
    shows up in ``--help`` by itself)."""
    return "; ".join(f"{m.name}: {describe(m)}" for m in MODALITIES.values())


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ardm.training.config import LR_SCHEDULES, PRECISIONS, TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    add = parser.add_argument
    add("--out", required=True, help="run directory (created; checkpoints are written here)")
    add("--modality", default=None, choices=sorted(MODALITIES),
        help="kind of data (default: the named dataset's, or a path's by its files: MNIST "
             "IDX or CIFAR-10 batches are image, WAV files audio, any other file text)")
    add("--data", default=None,
        help="dataset: " + _per_modality(lambda m: m.dataset_help)
             + " (default: " + _per_modality(lambda m: m.default_dataset) + ")")
    add("--net", default=None, choices=sorted(NETS),
        help="network: " + "; ".join(f"{n}: {s.description}" for n, s in sorted(NETS.items()))
             + " (default: " + _per_modality(lambda m: m.default_net) + ")")
    add("--model", default=defaults["model"], choices=list(MODEL_KINDS),
        help="oa: order-agnostic ARDM; upscale: coarse-to-fine upscale ARDM (default: "
             + _per_modality(lambda m: m.default_model) + ")")
    add("--branch-factor", type=int, default=defaults["branch_factor"],
        help="upscale: base b of the digits revealed per stage; S = ceil(log_b K) stages "
             "(default: " + _per_modality(lambda m: str(m.default_branch_factor)) + ")")
    add("--parametrization", default=defaults["parametrization"], choices=list(PARAMETRIZATIONS),
        help="upscale: 'data' maps K-way logits to the next digit, 'direct' predicts b logits "
             "(categorical head unless --head is given) (default: %(default)s)")
    add("--budget-split", default=defaults["budget_split"], choices=list(SPLITS),
        help="upscale: how a budget of network calls is split across stages when the model is "
             "used: 'optimal' (least expected loss) or 'equal' (the paper's) (default: %(default)s)")
    presets = sorted({p for spec in NETS.values() for p in spec.presets})
    add("--preset", default=defaults["preset"], choices=presets,
        help="size of the net (see --net) (default: %(default)s)")
    add("--head", default=None, choices=HEADS,
        help="output head; default: the preset's (logistic_mixture for tiny/small/base)")
    add("--steps", type=int, default=defaults["steps"], help="optimizer steps (default: %(default)s)")
    add("--batch-size", type=int, default=defaults["batch_size"],
        help="global batch size, split across ranks (default: %(default)s)")
    add("--lr", type=float, default=defaults["lr"], help="AdamW peak learning rate (default: %(default)s)")
    add("--warmup", type=int, default=defaults["warmup"], help="linear warm-up steps (default: %(default)s)")
    add("--lr-schedule", default=defaults["lr_schedule"], choices=LR_SCHEDULES,
        help="after warm-up: constant, or cosine decay to lr/10 at --steps (default: %(default)s)")
    add("--weight-decay", type=float, default=defaults["weight_decay"], help="AdamW weight decay")
    add("--grad-clip", type=float, default=defaults["grad_clip"], help="gradient-norm clip (default: %(default)s)")
    add("--ema", type=float, default=defaults["ema"], help="EMA decay of the saved weights (default: %(default)s)")
    add("--ce-weight", type=float, default=None,
        help="weight of the auxiliary plain cross-entropy term (default: the paper's: "
             + _per_modality(lambda m: f"{m.default_ce_weight:g}") + ")")
    add("--timestep-sampler", default=defaults["timestep_sampler"], choices=["uniform", "stratified"],
        help="how t is drawn over a batch (default: %(default)s)")
    add("--eval-every", type=int, default=defaults["eval_every"],
        help="steps between test-bpd evaluations (default: %(default)s)")
    add("--eval-size", type=int, default=defaults["eval_size"],
        help="test items used for the periodic evaluation, evenly spaced over the test split "
             "(default: %(default)s)")
    add("--ckpt-every", type=int, default=defaults["ckpt_every"],
        help="steps between checkpoints (default: %(default)s)")
    add("--holdout", type=int, default=defaults["holdout"],
        help="last N training items held out to estimate the per-step losses (default: %(default)s)")
    add("--step-loss-evals", type=int, default=defaults["step_loss_evals"],
        help="evaluations per step t when estimating per-step losses: this many held-out items, "
             "evenly spaced, each seen by every step (default: %(default)s)")
    add("--seed", type=int, default=defaults["seed"], help="random seed (default: %(default)s)")
    add("--init", metavar="MODEL",
        help="start from the weights of a shipped model (e.g. kjv) or run directory with the same "
             "model, net, preset and data shape: fine-tuning, or more steps for a finished run")
    add("--resume", action="store_true", help="continue from OUT/train_state.pt if it exists")
    add("--force", action="store_true",
        help="start afresh in an OUT that holds a run, deleting its files first (without "
             "--resume or --force, ardm train refuses such an OUT)")
    add("--device", default=defaults["device"], help="cpu or cuda (default: %(default)s)")
    add("--precision", default=defaults["precision"], choices=PRECISIONS,
        help="training arithmetic: auto is bf16 autocast on CUDA, fp32 on a CPU; bf16 on a "
             "CPU with AVX-512 BF16 or AMX trains the transformer 1.5x faster (default: %(default)s)")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "train", help="train an order-agnostic or upscale ARDM", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return _configure(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``ardm train`` with parsed arguments; returns the exit status."""
    from ardm.training import TrainConfig, train

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    _check_device(cfg.device)
    if not cfg.out.strip():  # Path("") is the working directory: say it, never assume it
        raise ValueError("--out must name a run directory (use --out . for this one)")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {cfg.threads}")
    _check_out(Path(cfg.out), resume=cfg.resume, force=getattr(args, "force", False))
    train(cfg)
    return 0


def _check_device(device: str) -> None:
    """A ``ValueError`` for a device torch does not know or this machine does not have."""
    import torch

    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device {device}: not a device; use --device cpu or cuda") from err
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: ardm trains on cpu or cuda devices")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available; use --device cpu")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")


#: The files of a run directory; ``--force`` deletes them (and nothing else) before training.
RUN_FILES = (CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, "metrics.jsonl")


def _check_out(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse to train over an existing run unless ``resume`` continues it or ``force`` replaces
    it (then its files are deleted first, so no old checkpoint or metrics mix with the new)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run directory")
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present or resume:
        return
    if not force:
        raise ValueError(
            f"--out {out} already holds a run ({', '.join(present)}); pass --resume to continue "
            "it, --force to replace it, or another --out"
        )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one process deletes
        for name in present:
            (out / name).unlink(missing_ok=True)
        print(f"--force: deleted the run in {out} ({', '.join(present)})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m ardm.training`` (for torchrun): the ``train`` options only."""
    parser = argparse.ArgumentParser(
        prog="python -m ardm.training", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return run(_configure(parser).parse_args(argv))
