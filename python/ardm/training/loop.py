"""Training loop for ARDMs of any kind, net and modality (paper Algorithm 1 and Section 3.2), one
process or DDP.

AdamW with linear warm-up, gradient-norm clipping and EMA weights; periodic test bpd with the
unbiased estimator on a held-out subset; atomic checkpoints every ``ckpt_every`` steps and at the
end; ``resume`` continues from the last checkpoint exactly (batch order and noise are functions of
the seed and the step; optimizer, EMA and RNG states are restored). At the end the per-step losses
are estimated on held-out training images and saved with the model (needed for budgets): L_t for
an order-agnostic model (``model="oa"``), one row per stage (S x D) for an upscale model
(``model="upscale"``, S = ceil(log_b K) stages for branching factor b).

Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DistributedDataParallel and a run
is the one-process run with the same global batch: the batch's items and every item's noise (t and
order) are drawn for the global batch from (seed, step) on every rank, rank r takes rows r, r + W,
... (``ardm.distributed.shard``), and DDP's mean of the per-rank mean gradients is the gradient
of the global mean loss (the batch size must be a multiple of W). The periodic test bpd is sharded
the same way; the per-step losses at the end are estimated by every rank alike; only rank 0
writes. Nets with dropout draw it from each rank's own generator, so they match one process in
distribution only.

Example (command line):
    ardm train --data fashion-mnist --preset small --steps 20000 --batch-size 32 --out runs/fm
    ardm train --model upscale --branch-factor 4 --preset small --out runs/fm-up
    torchrun --nproc_per_node=4 -m ardm.training --data fashion-mnist --preset base --out runs/b
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ardm.checkpoint import (
    TRAIN_STATE_FILE,
    atomic_write_bytes,
    load_train_state,
    model_config,
    remove_temp_files,
    save_model,
    save_train_state,
)
from ardm.distributed import (
    Dist,
    all_mean,
    barrier,
    gather_in_order,
    keyed_generator,
    process_group,
    shard,
)
from ardm.modalities import get_modality
from ardm.models import ARDM, MODEL_KINDS
from ardm.models.timesteps import make_sampler
from ardm.nets import build_net
from ardm.subsets import evenly_spaced
from ardm.training.config import FIXED_ON_RESUME, TrainConfig

__all__ = ["train", "evaluate_bpd", "build_for_training", "METRICS_FILE"]

METRICS_FILE = "metrics.jsonl"


def _batch_indices(step: int, num_items: int, cfg: TrainConfig) -> torch.Tensor:
    """The indices of the global batch for ``step``: a pure function of seed and step.

    Each epoch is a fresh permutation seeded by (seed, epoch); the last incomplete batch of an
    epoch is dropped.
    """
    per_epoch = num_items // cfg.batch_size
    if per_epoch < 1:
        raise ValueError(f"batch size {cfg.batch_size} exceeds the {num_items} training items")
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    perm = torch.randperm(num_items, generator=gen)
    return perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]


def _step_generator(cfg: TrainConfig, step: int) -> torch.Generator:
    # The global batch's noise (t and the orders) is a function of (seed, step): resume is exact
    # and the split over ranks does not change it.
    return torch.Generator().manual_seed((cfg.seed + 1) * 7_919_993 + step)


def _drop_metrics_after(path: Path, step: int) -> None:
    """Keep the lines of ``metrics.jsonl`` up to ``step``: those of steps a killed run made after
    its last checkpoint are made again (and a line torn by the kill is dropped)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass
    if kept != lines:
        atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


def _lr_at(step: int, cfg: TrainConfig) -> float:
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
    if cfg.lr_schedule == "cosine" and step >= cfg.warmup:
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        lr *= 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


@torch.no_grad()
def _update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    ema_params = list(ema_model.parameters())
    torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)


@torch.no_grad()
def evaluate_bpd(
    model: ARDM, data: torch.Tensor, batch_size: int = 64, seed: int = 0
) -> float:
    """Mean unbiased test bpd estimate: one random t and order per item, drawn for each chunk of
    ``batch_size`` items from (seed, chunk), so under torchrun each rank takes its share of the
    chunks and the mean (float64, item order) is the one-process one.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import OrderAgnosticARDM
        >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
        >>> x = torch.randint(0, 4, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0))
        >>> evaluate_bpd(m, x, batch_size=2) == evaluate_bpd(m, x, batch_size=2) > 0
        True
    """
    bits: dict[int, torch.Tensor] = {}
    for chunk in shard(range(math.ceil(data.shape[0] / batch_size))):
        x = data[chunk * batch_size : (chunk + 1) * batch_size].to(model.device, torch.long)
        bpd = model.nll_bpd(x, generator=keyed_generator(seed, chunk))
        bits[chunk] = bpd.double().cpu()
    values = gather_in_order(bits)
    return float(torch.cat(values).mean()) if values else float("nan")


def _use_bf16(device: torch.device, precision: str) -> bool:
    if precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ValueError("--precision bf16 on this CPU needs AVX-512 BF16 or AMX; use fp32")
    # auto: bf16 on CUDA only; on a CPU with AVX-512 BF16 the transformer trains 1.5x faster in
    # bf16, the small U-Net's convolutions do not, so it is asked for by name.
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _autocast(device: torch.device, bf16: bool):  # type: ignore[no-untyped-def]
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def build_for_training(cfg: TrainConfig, num_classes: int, data_shape: tuple[int, ...]) -> ARDM:
    """The model a run trains: ``cfg.model`` around ``cfg.net`` at ``cfg.preset``."""
    net = build_net(cfg.preset, num_classes, data_shape, net=cfg.net, **cfg.net_overrides())
    kind_fields = {
        "branch_factor": cfg.branch_factor,
        "parametrization": cfg.parametrization,
        "budget_split": cfg.budget_split,
    }
    model = MODEL_KINDS[cfg.model].from_kind_config(
        net, num_classes, data_shape, cfg.ce_weight, kind_fields
    )
    model.timestep_sampler = make_sampler(cfg.timestep_sampler, model.num_steps)
    model.modality = cfg.modality
    return model


def warm_start(model: ARDM, source: str) -> None:
    """Start ``model`` (and so its EMA copy) from the weights of ``source`` (``--init``): a
    shipped model's name or a run directory of the same kind, net, preset and data shape. For
    fine-tuning on other data, or for more steps after a run whose train state is gone."""
    from ardm.pretrained import load

    init = load(source)
    mine, theirs = model_config(model), model_config(init)
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
        raise ValueError(
            f"--init {source} is another model than this run builds ({shown}); give this run "
            f"the same --model, --net, --preset, --head and data as {source} was trained with"
        )
    model.load_state_dict(init.state_dict())


def _run_config(cfg: TrainConfig, step: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "preset": cfg.preset,
        "dataset": cfg.data,
        "step": step,
        "train": dataclasses.asdict(cfg),
        **extra,
    }


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) a run; returns the run directory. Under torchrun every process calls it.

    Example:
        >>> train(TrainConfig(out="runs/x", steps=10))  # doctest: +SKIP
    """
    with process_group(cfg.device) as d:
        return _train(cfg, d)


def _train(cfg: TrainConfig, d: Dist) -> Path:
    if cfg.batch_size % d.world:
        raise ValueError(
            f"batch size {cfg.batch_size} must be a multiple of the {d.world} processes"
        )
    device = d.device(cfg.device)
    bf16 = _use_bf16(device, cfg.precision)  # once, and before any data is loaded
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_temp_files(out)  # left by a writer that was killed; never read
    torch.manual_seed(cfg.seed)  # the same initial weights (and EMA copy) on every rank

    modality = get_modality(cfg.modality)
    images = modality.load(cfg.data, "train")
    if cfg.holdout >= images.shape[0]:
        raise ValueError(f"holdout {cfg.holdout} leaves no training data ({images.shape[0]} items)")
    train_x = images[: images.shape[0] - cfg.holdout]
    held_x = images[images.shape[0] - cfg.holdout :] if cfg.holdout else train_x[:1000]
    test_x = evenly_spaced(modality.load(cfg.data, "test"), cfg.eval_size)
    data_shape = tuple(train_x.shape[1:])

    model = build_for_training(cfg, modality.num_classes, data_shape).to(device)
    ema_model = copy.deepcopy(model).eval().requires_grad_(False)
    if d.rank:
        torch.manual_seed(cfg.seed * 1_000_003 + d.rank * 7_919)  # dropout: a stream per rank
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
    )
    step = 0
    metrics: dict[str, Any] = {}
    resuming = cfg.resume and (out / TRAIN_STATE_FILE).is_file()
    if cfg.init and not resuming:  # a resumed run has its own weights by now
        warm_start(model, cfg.init)
        ema_model.load_state_dict(model.state_dict())

    if resuming:
        state = load_train_state(out)
        saved = state["config"]
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        # A setting missing from an older train_state had its default value then.
        changed = [k for k in FIXED_ON_RESUME if saved.get(k, defaults[k]) != getattr(cfg, k)]
        if changed:
            raise ValueError(f"cannot resume {out}: these settings changed: {changed}")
        model.load_state_dict(state["model"])
        ema_model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        metrics = json.loads(state.get("metrics", "{}"))
        # One state per rank that wrote it; a rank new to the run reseeds from (seed, rank, step).
        rng_states = state["rng_cpu"]
        cuda_states = state.get("rng_cuda", [])
        if isinstance(cuda_states, torch.Tensor):  # written by one process before 0.1
            cuda_states = [cuda_states]
        if d.rank < len(rng_states):
            torch.set_rng_state(rng_states[d.rank])
        else:
            torch.manual_seed(cfg.seed * 1_000_003 + d.rank * 7_919 + step)
        if device.type == "cuda" and d.rank < len(cuda_states):
            torch.cuda.set_rng_state(cuda_states[d.rank])
    elif cfg.resume and d.is_main:
        print(f"no {TRAIN_STATE_FILE} in {out}; starting from scratch", file=sys.stderr)
    if d.is_main:
        _drop_metrics_after(out / METRICS_FILE, step)

    train_model: nn.Module = model
    if d.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def checkpoint() -> None:  # every rank calls it: the RNG states are gathered to rank 0
        cuda_rng = torch.cuda.get_rng_state() if device.type == "cuda" else None
        rng_states = gather_in_order({d.rank: (torch.get_rng_state(), cuda_rng)})
        if not d.is_main:
            return
        state = {
            "config": dataclasses.asdict(cfg),
            "model": model.state_dict(),
            "ema": ema_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "metrics": json.dumps(metrics),
            "rng_cpu": [cpu for cpu, _ in rng_states],
        }
        if device.type == "cuda":
            state["rng_cuda"] = [cuda for _, cuda in rng_states]
        save_train_state(out, state)
        save_model(ema_model, _run_config(cfg, step, {"metrics": metrics}), out)

    bar = tqdm(
        total=cfg.steps, initial=step, disable=not (cfg.progress and d.is_main),
        dynamic_ncols=True, desc="train",
    )
    model.train()
    avg_loss = avg_bpd = float("nan")
    started, start_step = time.time(), step
    mine = slice(d.rank, None, d.world)  # this rank's rows of every global batch
    while step < cfg.steps:
        idx = _batch_indices(step, train_x.shape[0], cfg)[mine]
        x = train_x[idx].to(device, torch.long, non_blocking=True)
        t, weights, ranks = model.training_noise(cfg.batch_size, _step_generator(cfg, step))
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        with _autocast(device, bf16):
            loss, stats = train_model(x, noise=(t[mine], weights[mine], ranks[mine]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        # EMA warm-up: short runs should not average in the random initialization.
        _update_ema(ema_model, model, min(cfg.ema, (1.0 + step) / (10.0 + step)))
        step += 1

        # The global batch's means (equal shares: the mean of the ranks' means).
        loss_v, bpd_v = all_mean(torch.stack([loss.detach().float(), stats["bpd"].float()])).tolist()
        avg_loss = loss_v if math.isnan(avg_loss) else 0.98 * avg_loss + 0.02 * loss_v
        avg_bpd = bpd_v if math.isnan(avg_bpd) else 0.98 * avg_bpd + 0.02 * bpd_v
        postfix = {"loss": f"{avg_loss:.3f}", "bpd": f"{avg_bpd:.3f}", "gnorm": f"{float(grad_norm):.2f}"}
        if "test_bpd" in metrics:
            postfix["test_bpd"] = f"{metrics['test_bpd']:.3f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

        if test_x.shape[0] and (step % cfg.eval_every == 0 or step == cfg.steps):
            metrics["test_bpd"] = evaluate_bpd(ema_model, test_x, seed=cfg.seed)  # every rank
            metrics["test_bpd_step"] = step
            metrics["train_bpd_avg"] = avg_bpd
            metrics["images_per_s"] = (step - start_step) * cfg.batch_size / (time.time() - started)
            if d.is_main:
                with open(out / METRICS_FILE, "a") as f:
                    f.write(json.dumps({"step": step, **metrics}) + "\n")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()
    bar.close()

    if metrics.get("step_losses_step") != step:
        # D steps (order-agnostic) or S * D steps (upscale: one row of D per stage). Every rank
        # estimates them alike (same generator), so none waits on rank 0 at a collective.
        with tqdm(
            total=ema_model.step_loss_evaluations(cfg.step_loss_evals), disable=not (cfg.progress and d.is_main),
            dynamic_ncols=True, desc="step losses", unit="eval",
        ) as loss_bar:
            ema_model.estimate_step_losses(
                held_x, evals_per_step=cfg.step_loss_evals,
                generator=torch.Generator().manual_seed(cfg.seed + 12345),
                progress=loss_bar.update,
            )
        metrics["step_losses_step"] = step
        metrics["step_losses_sum_bits"] = float(ema_model.step_losses.sum())
        stage_bpd = ema_model.stage_step_losses.sum(1) / ema_model.num_vars
        metrics["step_losses_stage_bpd"] = [round(float(v), 5) for v in stage_bpd]
        checkpoint()
        if d.is_main:
            print(
                f"saved {out}: step {step}, test bpd {metrics.get('test_bpd', float('nan')):.4f}, "
                f"sum of step losses {metrics['step_losses_sum_bits'] / ema_model.num_vars:.4f} bpd",
                file=sys.stderr,
            )
    barrier()  # rank 0 has written everything when train() returns on any rank
    return out
