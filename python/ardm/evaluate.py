"""Evaluation of trained ARDMs under step budgets: the logic behind ``ardm eval`` and ``ardm sample``.

For each budget (network calls per data point) and each policy, :func:`evaluate_budgets` returns
one :class:`EvalRow` with

* ``bpd``: the mean over test images of the unbiased one-call estimate ``model.nll_bpd`` (random
  orders from generators seeded by (seed, repeat, chunk of ``batch_size`` items), so runs repeat
  exactly), with its standard error;
* ``exact_bpd``: when cheap enough, the exact ``model.exact_nll_bits`` for the fixed coding order
  (``ardm.random_order(D, model.order_seed)``) on a few test images evenly spaced over them: the
  code length that ``ardm.compress`` reaches, up to the quantization of the probabilities;
* ``vs_naive``: for a policy other than the naive one, the mean paired difference of its one-call
  estimates from the naive policy's (the same orders and steps), with its standard error;
* ``predicted_bpd``: what the budget DP predicts from the per-step losses sorted in descending order
  (``budget_curve(sorted L)[budget] / D`` for the optimal policy), for comparison.

Under ``torchrun`` :func:`evaluate_budgets` shards the work: rank r of W takes the chunks of
``batch_size`` items r, r + W, ... (strided), the per-item values are gathered and reduced in item
order in float64, so every rank returns the rows one process returns, to the last bit.

Policies: for an order-agnostic model ``"optimal"`` (the budget DP) and ``"naive"`` (evenly spaced
steps); for an upscale model ``"optimal"`` (the optimal split of the budget across stages, the DP
within each), ``"equal"`` (the paper's equal split per stage, the DP within each) and ``"naive"``
(equal split, evenly spaced steps).

Example:
    >>> import torch
    >>> from ardm.nets import build_net
    >>> from ardm.models import OrderAgnosticARDM
    >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
    >>> x = torch.randint(0, 4, (6, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    >>> _ = m.estimate_step_losses(x)
    >>> rows = evaluate_budgets(m, x, [16, 4], progress=False)
    >>> [(r.budget, r.policy, r.calls <= r.budget) for r in rows]   # fewer where they cost no more
    [(16, 'optimal', True), (16, 'naive', True), (4, 'optimal', True), (4, 'naive', True)]
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ardm import _core
from ardm.distributed import gather_in_order, keyed_generator, shard
from ardm.modalities import get_modality
from ardm.models import ARDM, Policy
from ardm.models.stage_budget import stage_costs
from ardm.subsets import evenly_spaced

__all__ = [
    "EvalRow",
    "PolicySpec",
    "SampleResult",
    "resolve_run",
    "parse_budgets",
    "load_test_images",
    "describe_subset",
    "load_held_out_images",
    "ensure_step_losses",
    "policy_specs",
    "evaluate_budgets",
    "step_loss_curves",
    "sample_images",
]



@dataclass(frozen=True)
class PolicySpec:
    """A named policy for one budget: ``policy`` is the :class:`~ardm.models.Policy` (one array
    of start steps per stage); ``calls`` its network calls; ``predicted_bits`` the DP's expected
    cost on the sorted step losses; ``stage_budgets`` the calls per stage (upscale only).
    """

    name: str
    policy: Policy
    calls: int
    predicted_bits: float
    stage_budgets: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EvalRow:
    """Test bits/dim of one policy at one budget (see the module docstring)."""

    budget: int
    policy: str
    calls: int
    bpd: float
    bpd_sem: float
    predicted_bpd: float
    exact_bpd: float | None = None
    stage_budgets: tuple[int, ...] | None = None
    vs_naive: float | None = None
    vs_naive_sem: float | None = None


@dataclass(frozen=True)
class SampleResult:
    """Samples (n, *data_shape) int64, the network calls made, the calls the policy has, seconds."""

    images: torch.Tensor
    calls: int
    policy_calls: int
    seconds: float


# ---- runs, data and step losses -----------------------------------------------------------------


def resolve_run(name_or_path: str | Path | None) -> tuple[ARDM, dict[str, Any]]:
    """Load a model (shipped name or run directory) and its ``config.json`` (``{}`` if none).

    Example:
        >>> resolve_run("/nonexistent")
        Traceback (most recent call last):
        ...
        ValueError: '/nonexistent' is neither a shipped model (fashion-mnist, kjv, speech) nor a path to a run directory
    """
    from ardm.checkpoint import read_config
    from ardm.pretrained import DEFAULT_MODEL, PRETRAINED, load

    model = load(name_or_path)
    name = DEFAULT_MODEL if name_or_path is None else name_or_path
    path = PRETRAINED[name] if isinstance(name, str) and name in PRETRAINED else Path(name)
    if path.is_file():
        path = path.parent
    try:
        config = read_config(path)
    except ValueError:
        config = {}
    return model, config


def parse_budgets(text: str, model: ARDM) -> list[int]:
    """Comma-separated budgets -> list of ints, each checked against the model's range.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import OrderAgnosticARDM
        >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
        >>> parse_budgets("16, 4,1", m)
        [16, 4, 1]
        >>> parse_budgets("17", m)
        Traceback (most recent call last):
        ...
        ValueError: budget 17 is out of range: this model takes 1..16 network calls
    """
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError as err:
        raise ValueError(f"budgets must be comma-separated integers, got {text!r}") from err
    if not budgets:
        raise ValueError("give at least one budget")
    low, high = _budget_range(model)
    for budget in budgets:
        if not low <= budget <= high:
            raise ValueError(
                f"budget {budget} is out of range: this model takes {low}..{high} network calls"
            )
    return list(dict.fromkeys(budgets))


def _budget_range(model: ARDM) -> tuple[int, int]:
    return model.min_budget, model.max_budget


def _dataset_name(model: ARDM, config: dict[str, Any], data: str | None) -> str:
    if data is not None:
        return data
    default = get_modality(model.modality).default_dataset
    return str(config.get("dataset") or config.get("train", {}).get("data") or default)


def _check_images(images: torch.Tensor, model: ARDM, source: str) -> torch.Tensor:
    if tuple(images.shape[1:]) != tuple(model.data_shape):
        raise ValueError(
            f"{source} has images of shape {tuple(images.shape[1:])}, the model takes "
            f"{tuple(model.data_shape)}"
        )
    return images


def load_test_images(
    model: ARDM, config: dict[str, Any], count: int, data: str | None = None
) -> tuple[torch.Tensor, str]:
    """``count`` test images of the run's dataset (or ``data``), evenly spaced over its test
    split (all of it when ``count`` is at least its size), and where they came from.

    Falls back to the ten bundled Fashion-MNIST test images when the dataset is not installed and
    the model takes 28x28 grey images.
    """
    if count < 1:
        raise ValueError(f"the number of test images must be >= 1, got {count}")
    name = _dataset_name(model, config, data)
    try:
        split = get_modality(model.modality).load(name, "test")
    except ValueError as err:
        if tuple(model.data_shape) != (1, 28, 28):
            raise
        from ardm.pretrained import bundled_images

        images = evenly_spaced(bundled_images(), count)
        return images, f"{len(images)} bundled test images ({err})"
    images = evenly_spaced(split, count)
    return _check_images(images, model, name), describe_subset(len(images), len(split), name)


def describe_subset(count: int, total: int, name: str) -> str:
    """How a subset of a test split is named in a report.

    Example:
        >>> describe_subset(200, 1720, "kjv"), describe_subset(1720, 1720, "kjv")
        ('200 test items of kjv, evenly spaced over its 1720', 'all 1720 test items of kjv')
    """
    if count == total:
        return f"all {total} test items of {name}"
    return f"{count} test items of {name}, evenly spaced over its {total}"


def load_held_out_images(
    model: ARDM, config: dict[str, Any], count: int, data: str | None = None
) -> tuple[torch.Tensor, str]:
    """Up to ``count`` held-out training images: the last ``holdout`` training images of the run
    (never trained on), or the last ``count`` when the run's holdout is unknown."""
    if count < 1:
        raise ValueError(f"the number of held-out images must be >= 1, got {count}")
    name = _dataset_name(model, config, data)
    images = get_modality(model.modality).load(name, "train")
    holdout = int(config.get("train", {}).get("holdout") or count)
    images = images[images.shape[0] - min(holdout, count, images.shape[0]) :]
    return _check_images(images, model, name), f"{len(images)} held-out training items of {name}"


@torch.no_grad()
def ensure_step_losses(
    model: ARDM,
    held_out: torch.Tensor,
    evals_per_step: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> bool:
    """Estimate the model's per-step losses on ``held_out`` unless it has them; True if it did.

    The estimate stays in memory (the run directory is not changed).
    """
    if model.has_step_losses():
        return False
    total = model.step_loss_evaluations(evals_per_step)
    with tqdm(total=total, desc="step losses", unit="eval", disable=not progress) as bar:
        model.estimate_step_losses(
            held_out, evals_per_step=evals_per_step, batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed), progress=bar.update,
        )
    return True


# ---- policies and their predicted costs ---------------------------------------------------------


def policy_specs(model: ARDM, budget: int) -> list[PolicySpec]:
    """The policies compared at ``budget`` (see the module docstring), with predicted costs.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import UpscaleARDM
        >>> m = UpscaleARDM(build_net("tiny", 16, (1, 4, 4)), 16, (1, 4, 4), branch_factor=4)
        >>> _ = m.step_losses.copy_(torch.linspace(2, 1, 32, dtype=torch.float64).view(2, 16))
        >>> [(s.name, s.stage_budgets) for s in policy_specs(m, 5)]
        [('optimal', (3, 2)), ('equal', (3, 2)), ('naive', (3, 2))]
    """
    low, high = _budget_range(model)
    if not low <= budget <= high:
        raise ValueError(f"budget {budget} is out of range: this model takes {low}..{high} calls")
    model._require_step_losses()
    splits = ("optimal", "equal") if model.num_stages > 1 else ("optimal",)
    specs = []
    for split in splits:
        plan = model.plan(budget, split)
        policy = Policy(tuple(plan.policies))
        specs.append(PolicySpec(split, policy, policy.calls, plan.cost, _stage_budgets(policy)))
    naive = model.naive_policy(budget)
    cost = float(stage_costs(model.stage_step_losses.cpu().numpy(), list(naive.stages)).sum())
    specs.append(PolicySpec("naive", naive, naive.calls, cost, _stage_budgets(naive)))
    return specs


def _stage_budgets(policy: Policy) -> tuple[int, ...] | None:
    return tuple(len(p) for p in policy.stages) if len(policy.stages) > 1 else None


# ---- likelihood under budgets -------------------------------------------------------------------


@torch.no_grad()
def evaluate_budgets(
    model: ARDM,
    images: torch.Tensor,
    budgets: Sequence[int],
    *,
    seed: int = 0,
    repeats: int = 1,
    batch_size: int = 64,
    exact_images: int = 8,
    exact_max_calls: int = 100,
    progress: bool = True,
) -> list[EvalRow]:
    """Test bits/dim of every policy of :func:`policy_specs` at every budget, one row each.

    ``repeats`` one-call estimates per image (each a fresh random order and step, drawn from a
    generator seeded by (seed, repeat, chunk) for each chunk of ``batch_size`` images: policies
    are compared on common random numbers, and under torchrun each rank computes its share of
    the chunks). A policy other than the naive one also gets the mean paired difference of its
    estimates from the naive policy's (``vs_naive``, negative where it is better) and that
    difference's standard error: on common random numbers it is far smaller than either
    policy's own, so it tells whether the DP's policy really codes better. The exact
    fixed-order value is computed on ``exact_images`` images evenly spaced over ``images`` when
    a policy has at most ``exact_max_calls`` calls (0 images: never). Needs the step losses.
    """
    if repeats < 1 or batch_size < 1 or exact_images < 0:
        raise ValueError("repeats and batch_size must be >= 1, exact_images >= 0")
    if not model.has_step_losses():
        raise ValueError(
            "step losses are not estimated; run ensure_step_losses(model, held_out) first"
        )
    x_all = model._check_x(images)
    if x_all.shape[0] == 0:
        raise ValueError("need at least one test image")
    num_vars = model.num_vars
    order = np.asarray(_core.random_order(num_vars, model.order_seed))
    x_exact = evenly_spaced(x_all, exact_images) if exact_images else x_all[:0]
    chunks = range(math.ceil(x_all.shape[0] / batch_size))
    exact_chunks = range(math.ceil(x_exact.shape[0] / batch_size))
    groups = [(budget, policy_specs(model, budget)) for budget in budgets]
    plans = [(budget, spec) for budget, specs in groups for spec in specs]
    mine = _share_size(x_all.shape[0], batch_size)  # this rank's items (all in one process)
    mine_exact = _share_size(x_exact.shape[0], batch_size)
    work = sum(
        mine * repeats + (spec.calls * mine_exact if spec.calls <= exact_max_calls else 0)
        for _, spec in plans
    )
    rows = []
    with tqdm(total=work, desc="eval", unit="img", disable=not progress, leave=False) as bar:
        for budget, specs in groups:
            estimates, exacts = {}, {}
            for spec in specs:
                bar.set_postfix(budget=budget, policy=spec.name, refresh=False)
                values: dict[int, torch.Tensor] = {}
                for repeat in range(repeats):
                    for chunk in shard(chunks):
                        x = x_all[chunk * batch_size : (chunk + 1) * batch_size]
                        gen = keyed_generator(seed, repeat, chunk)
                        bpd = model.nll_bpd(x, policy=spec.policy, generator=gen)
                        values[repeat * len(chunks) + chunk] = bpd.double().cpu()
                        bar.update(x.shape[0])
                estimates[spec.name] = torch.cat(gather_in_order(values))
                if x_exact.shape[0] and spec.calls <= exact_max_calls:
                    exact_bits: dict[int, torch.Tensor] = {}
                    for chunk in shard(exact_chunks):
                        x = x_exact[chunk * batch_size : (chunk + 1) * batch_size]
                        exact_bits[chunk] = model.exact_nll_bits(x, order, spec.policy).cpu()
                        bar.update(spec.calls * x.shape[0])
                    exacts[spec.name] = float(torch.cat(gather_in_order(exact_bits)).mean())
            naive = estimates["naive"]
            for spec in specs:
                mean, sem = _mean_sem(estimates[spec.name])
                gain = None if spec.name == "naive" else _mean_sem(estimates[spec.name] - naive)
                exact = exacts.get(spec.name)
                rows.append(
                    EvalRow(
                        budget=int(budget), policy=spec.name, calls=spec.calls,
                        bpd=mean, bpd_sem=sem,
                        predicted_bpd=spec.predicted_bits / num_vars,
                        exact_bpd=None if exact is None else exact / num_vars,
                        stage_budgets=spec.stage_budgets,
                        vs_naive=None if gain is None else gain[0],
                        vs_naive_sem=None if gain is None else gain[1],
                    )
                )
    return rows


def _mean_sem(v: torch.Tensor) -> tuple[float, float]:
    """The mean of ``v`` and its standard error (NaN for a single value)."""
    sem = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return float(v.mean()), sem


def _share_size(count: int, batch_size: int) -> int:
    """How many of ``count`` items, in chunks of ``batch_size``, this rank's chunks hold."""
    items = range(count)
    return sum(len(items[c * batch_size : (c + 1) * batch_size])
               for c in shard(range(math.ceil(count / batch_size))))


def step_loss_curves(model: ARDM) -> tuple[np.ndarray, np.ndarray]:
    """The per-step losses as stored (raw) and sorted in descending order, float64 (S, D) each
    (S = 1 for an order-agnostic model), in bits.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import OrderAgnosticARDM
        >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
        >>> _ = m.step_losses.copy_(torch.arange(16.0) % 3)
        >>> raw, ordered = step_loss_curves(m)
        >>> raw.shape, raw[0, :4].tolist(), ordered[0, :4].tolist()
        ((1, 16), [0.0, 1.0, 2.0, 0.0], [2.0, 2.0, 2.0, 2.0])
    """
    raw = model.stage_step_losses.detach().cpu().double().numpy()
    return raw, -np.sort(-raw, axis=1)


# ---- sampling -----------------------------------------------------------------------------------


@torch.no_grad()
def sample_images(
    model: ARDM, budget: int, n: int, temperature: float = 1.0, seed: int = 0
) -> SampleResult:
    """Draw ``n`` samples with the model's budget-optimal policy, counting the network calls.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import OrderAgnosticARDM
        >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
        >>> _ = m.step_losses.copy_(torch.linspace(2, 0.1, 16, dtype=torch.float64))
        >>> r = sample_images(m, budget=5, n=3)
        >>> r.images.shape, r.calls, r.policy_calls
        (torch.Size([3, 1, 4, 4]), 5, 5)
    """
    low, high = _budget_range(model)
    if not low <= budget <= high:
        raise ValueError(f"budget {budget} is out of range: this model takes {low}..{high} calls")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    policy = model.policy(budget)
    calls_before = model.network_calls
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    images = model.sample(n, temperature=temperature, generator=gen, policy=policy)
    if images.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return SampleResult(
        images.cpu(), model.network_calls - calls_before, policy.calls, seconds
    )
