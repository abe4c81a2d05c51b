"""Upscale ARDM (Hoogeboom et al., *Autoregressive Diffusion Models*, ICLR 2022, Section 3.2).

An upscale ARDM generates values coarse to fine. With branching factor b, a value in ``0..K-1`` has
``S = ceil(log_b K)`` base-b digits (see :mod:`ardm.transitions`). Generation runs in S stages,
coarsest first: stage ``s`` (``s = 0..S-1``) starts with every variable at level ``l = S - s`` (its
``l`` lowest digits unknown, i.e. the value ``coarse_l(x)``) and refines every variable by one digit
to level ``l - 1``. Each stage is an order-agnostic ARDM over all D variables, conditioned on the
previous stage's output (paper Section 3.2), so the model has ``S * D`` steps in all and

    -log p(x) <= sum_s E_{t, sigma} [ D/(D - t) * sum_{i not yet refined} -log p(d_i | state) ],

where ``d_i`` is the next digit of ``x_i`` at stage s (paper Eq. 4, once per stage).

Network. The network is the order-agnostic one, ``net(x_in, known, t) -> (B, *data_shape, K)``:

* ``x_in`` holds every variable at its current resolution: ``coarse_{l-1}(x)`` for the variables
  refined so far in this stage, ``coarse_l(x)`` for the others. Nothing finer ever reaches the
  network: :meth:`UpscaleARDM.predict_digit_log_probs` is the one place where inputs are coarsened.
* ``known`` is the mask of the variables already refined in this stage (level ``l - 1``), so the
  network can tell refined from unrefined variables; the unrefined ones still carry their coarse
  value in ``x_in`` (the image U-Net zeroes only absorbing values, ``x_in == K``, never values
  where ``known`` is False, and no value here is ever K).
* ``t = s * D + t_within`` in ``0..S*D - 1`` gives the stage and the within-stage step, so the time
  input of the network must cover ``S * D`` steps (the U-Net embeds ``t / D`` sinusoidally, which
  works for any range).

Parametrizations (paper Section 3.2). ``"data"``: the K outputs are logits of the full value, and
the probability of a digit is the mass of its group of values given the coarse value (exact, no
K x K matrices). A network with ``interval_log_probs`` (the image U-Net) gives the mass of each
digit's value interval directly, so the data parametrization costs b intervals per variable (two
in training) instead of K values. ``"direct"``: the first b outputs are the logits of the next
digit (a network built with exactly b outputs also works); impossible digits (when K is not a
power of b) are masked.

Variables are flattened in C order; an order is a permutation of ``0..D-1``; a variable is refined
at within-stage step t iff its rank is < t. A policy per stage is a list of start steps as for the
order-agnostic model, and ``policy(budget)`` splits the budget across stages
(:mod:`ardm.stage_budget`).

Example:
    >>> import torch
    >>> from ardm.nets import build_net
    >>> net = build_net("tiny", 10, (1, 4, 4), head="categorical")
    >>> model = UpscaleARDM(net, num_classes=10, data_shape=(1, 4, 4), branch_factor=3)
    >>> model.num_stages, model.num_steps
    (3, 48)
    >>> loss, stats = model.training_loss(torch.randint(0, 10, (2, 1, 4, 4)))
    >>> loss.ndim, sorted(stats)
    (0, ['bpd', 'ce_bpd'])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ardm.base import ARDMBase
from ardm.stage_budget import SPLITS, StagePlan, plan_stages, split_budget_equal
from ardm.timesteps import StratifiedSampler, TimestepSampler
from ardm.transitions import (
    check_classes,
    coarse_values,
    digit_intervals,
    digit_log_probs,
    direct_digit_log_probs,
    next_digits,
    num_stages,
    parent_intervals,
)

__all__ = ["UpscaleARDM", "UpscaleSchedule", "upscale_schedule", "PARAMETRIZATIONS"]

LN2 = math.log(2.0)
PARAMETRIZATIONS = ("data", "direct")
# Log-probability given to impossible digits for coding: the quantizer rejects -inf and gives every
# symbol a frequency >= 1 anyway, so any large finite negative number codes the same.
IMPOSSIBLE_LOG_PROB = -1.0e4


class UpscaleARDM(ARDMBase):
    """Upscale ARDM around an order-agnostic network ``net(x_in, known, t) -> (B, *shape, K)``.

    Args:
        net: the network (see the module docstring for its inputs). Its time input must cover
            ``t`` in ``0..S*D - 1``.
        num_classes: K, the number of values of each variable.
        data_shape: shape of one data point, e.g. (1, 28, 28).
        branch_factor: b >= 2; S = ceil(log_b K) stages.
        parametrization: ``"data"`` (K logits, summed per digit group) or ``"direct"`` (b logits).
        ce_weight: weight of the auxiliary plain cross-entropy term on every variable's next digit.
        timestep_sampler: how training draws the step in ``0..S*D - 1``; default stratified.
        budget_split: how :meth:`policy` splits a budget across stages, ``"optimal"`` or
            ``"equal"`` (the paper's fixed budget per stage).

    ``step_losses`` (float64 (S, D), a buffer saved with the weights) holds, in bits, the expected
    -log2 p of one variable's digit refined at within-stage step t of stage s; NaN until
    :meth:`estimate_step_losses` runs.
    """

    step_losses: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        data_shape: tuple[int, ...],
        branch_factor: int,
        parametrization: str = "data",
        ce_weight: float = 1e-3,
        timestep_sampler: TimestepSampler | None = None,
        budget_split: str = "optimal",
    ) -> None:
        super().__init__()
        check_classes(num_classes, branch_factor)
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"unknown parametrization {parametrization!r}; choose one of {list(PARAMETRIZATIONS)}"
            )
        if budget_split not in SPLITS:
            raise ValueError(f"unknown budget split {budget_split!r}; choose one of {list(SPLITS)}")
        data_shape = tuple(int(s) for s in data_shape)
        if not data_shape or min(data_shape) < 1:
            raise ValueError(f"data_shape must be non-empty and positive, got {data_shape}")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.net = net
        self.num_classes = int(num_classes)
        self.data_shape = data_shape
        self.num_vars = int(np.prod(data_shape))
        self.branch_factor = int(branch_factor)
        self.num_stages = num_stages(self.num_classes, self.branch_factor)
        self.num_steps = self.num_stages * self.num_vars
        self.parametrization = parametrization
        self.ce_weight = float(ce_weight)
        self.budget_split = budget_split
        # Seed of the coding order (ardm.codec reads it); saved in config.json by ardm.checkpoint.
        self.order_seed = 0
        self.timestep_sampler = timestep_sampler or StratifiedSampler(self.num_steps)
        if self.timestep_sampler.num_steps != self.num_steps:
            raise ValueError("timestep_sampler.num_steps must equal S * D, the number of steps")
        self.register_buffer(
            "step_losses",
            torch.full((self.num_stages, self.num_vars), float("nan"), dtype=torch.float64),
        )

    @property
    def min_budget(self) -> int:
        """The fewest network calls that generate a data point: one per stage."""
        return self.num_stages

    @property
    def max_budget(self) -> int:
        """S * D: one call per variable per stage."""
        return self.num_steps

    # ---- levels: what is known of each variable ------------------------------------------------

    def _check_levels(self, levels: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-variable levels (B, D) or (B, *data_shape) -> (levels (B, D), stage level l (B,)).

        A valid row has every variable at level l (not yet refined in this stage) or l - 1
        (refined), with at least one at l, for some l in 1..S.
        """
        if not isinstance(levels, torch.Tensor) or levels.dtype.is_floating_point:
            raise ValueError("levels must be an integer tensor")
        if levels.dtype == torch.bool:
            raise ValueError("levels must be an integer tensor of per-variable levels, not a mask")
        levels = levels.to(self.device, torch.long).reshape(levels.shape[0], -1)
        if levels.shape != (batch, self.num_vars):
            raise ValueError(
                f"levels must have shape ({batch}, {self.num_vars}) or (B, *data_shape)"
            )
        level = levels.max(1).values
        low = levels.min(1).values
        if bool((level < 1).any() | (level > self.num_stages).any() | (low < level - 1).any()):
            raise ValueError(
                f"each row of levels must hold a stage level l in 1..{self.num_stages} and l - 1"
            )
        return levels, level

    def _levels(
        self, ranks: torch.Tensor, start: torch.Tensor, level: torch.Tensor
    ) -> torch.Tensor:
        """Levels (B, D) before within-stage step ``start`` of the stage at level ``level``."""
        refined = ranks < start.view(-1, 1)
        return level.view(-1, 1) - refined.long()

    def stage_level(self, stage: int) -> int:
        """The level l = S - stage that stage ``stage`` refines from."""
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage must be in 0..{self.num_stages - 1}, got {stage}")
        return self.num_stages - stage

    # ---- the one place where inputs are coarsened ----------------------------------------------

    def _net_inputs(
        self, x_flat: torch.Tensor, levels: torch.Tensor, level: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Each variable's unknown low digits are zeroed before the network sees it.
        x_in = coarse_values(x_flat, levels, self.branch_factor)
        stage = self.num_stages - level
        refined = levels < level.view(-1, 1)  # refined in this stage: known to level l - 1
        t = stage * self.num_vars + refined.sum(1)
        known = refined.view(x_flat.shape[0], *self.data_shape)
        return x_in, known, t

    def _digit_log_probs(
        self, x_flat: torch.Tensor, levels: torch.Tensor, level: torch.Tensor, row_by_row: bool
    ) -> torch.Tensor:
        batch = x_flat.shape[0]
        x_in, known, t = self._net_inputs(x_flat, levels, level)
        coarse = coarse_values(x_in, level.view(-1, 1), self.branch_factor)  # coarse_l(x)
        if self._interval_net() is not None:
            low, high, allowed = digit_intervals(
                coarse, level.view(-1, 1), self.branch_factor, self.num_classes
            )
            lp = self._interval_log_probs(x_in, known, t, low, high, per_row=row_by_row)
            lp = lp.masked_fill(~allowed, -math.inf)
            return lp - torch.logsumexp(lp, dim=-1, keepdim=True)
        out = self._run_net(self.net, x_in.view(batch, *self.data_shape), known, t)
        out = out.reshape(batch, self.num_vars, out.shape[-1]).float()
        if self.parametrization == "data":
            if out.shape[-1] != self.num_classes:
                raise ValueError(
                    f"the data parametrization needs K = {self.num_classes} outputs per variable, "
                    f"the network gives {out.shape[-1]}"
                )
            mapping = digit_log_probs
        else:
            if out.shape[-1] < self.branch_factor:
                raise ValueError(
                    f"the direct parametrization needs at least b = {self.branch_factor} outputs "
                    f"per variable, the network gives {out.shape[-1]}"
                )
            out = out[..., : self.branch_factor]
            mapping = direct_digit_log_probs
        b, k = self.branch_factor, self.num_classes
        if row_by_row:
            # Each row alone, so its result cannot depend on which rows share the call (coding).
            return torch.stack(
                [mapping(out[i], coarse[i], int(level[i]), b, k) for i in range(batch)]
            )
        return mapping(out, coarse, level.view(-1, 1), b, k)

    def predict_digit_log_probs(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, *data_shape, b) of every variable's next digit.

        ``levels`` (int, (B, D) or (B, *data_shape)) says what is known of each variable: its
        value with the ``levels`` lowest base-b digits zeroed. ``x`` may hold the full data: it is
        coarsened here, so finer digits cannot leak into the prediction. Impossible digits get
        ``-inf``.

        Example:
            >>> from ardm.nets import build_net
            >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
            >>> x = torch.full((2, 1, 4, 4), 9)
            >>> lp = m.predict_digit_log_probs(x, torch.full((2, 16), 2))   # stage 1, from 9
            >>> lp.shape, lp.exp()[0, 0, 0, 0].tolist()
            (torch.Size([2, 1, 4, 4, 3]), [1.0, 0.0, 0.0])
        """
        x = self._check_x(x)
        levels, level = self._check_levels(levels, x.shape[0])
        out = self._digit_log_probs(x.flatten(1), levels, level, row_by_row=False)
        return out.reshape(*x.shape, self.branch_factor)

    def _interval_net(self) -> Callable[..., torch.Tensor] | None:
        """The network's ``interval_log_probs`` when the data parametrization can use it."""
        if self.parametrization != "data":
            return None
        return getattr(self.net, "interval_log_probs", None)

    def _interval_log_probs(
        self,
        x_in: torch.Tensor,
        known: torch.Tensor,
        t: torch.Tensor,
        low: torch.Tensor,
        high: torch.Tensor,
        per_row: bool = False,
    ) -> torch.Tensor:
        """The network's log-mass of each (B, D, R) value interval, (B, D, R)."""
        interval_net = self._interval_net()
        assert interval_net is not None
        batch, num_intervals = x_in.shape[0], low.shape[-1]
        shape = (batch, *self.data_shape, num_intervals)
        lp = self._run_net(
            interval_net,
            x_in.view(batch, *self.data_shape), known, t, low.view(shape), high.view(shape),
            per_row=per_row,
        )
        return lp.reshape(batch, self.num_vars, num_intervals).float()

    def _target_log_probs(
        self, x_flat: torch.Tensor, levels: torch.Tensor, level: torch.Tensor
    ) -> torch.Tensor:
        """log p(next digit of x_i) for every variable, (B, D), nats.

        With an interval-capable network (the data parametrization on the image U-Net), the
        digit's probability is the mass of its value interval over the mass of the values that
        share the coarse value: two intervals per variable instead of all K values.
        """
        lev = level.view(-1, 1)
        digit = next_digits(x_flat, lev, self.branch_factor)
        if self._interval_net() is None:
            lp = self._digit_log_probs(x_flat, levels, level, row_by_row=False)
            return lp.gather(-1, digit.unsqueeze(-1)).squeeze(-1)
        x_in, known, t = self._net_inputs(x_flat, levels, level)
        coarse = coarse_values(x_flat, lev, self.branch_factor)
        digit_lows, digit_highs, _ = digit_intervals(
            coarse, lev, self.branch_factor, self.num_classes
        )
        parent_low, parent_high = parent_intervals(
            coarse, lev, self.branch_factor, self.num_classes
        )
        pick = digit.unsqueeze(-1)  # the data's own digit is always allowed
        low = torch.cat([digit_lows.gather(-1, pick), parent_low.unsqueeze(-1)], dim=-1)
        high = torch.cat([digit_highs.gather(-1, pick), parent_high.unsqueeze(-1)], dim=-1)
        lp = self._interval_log_probs(x_in, known, t, low, high)
        return lp[..., 0] - lp[..., 1]

    # ---- objective ----------------------------------------------------------------------------

    def training_loss(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The upscale ARDM training loss, a scalar in bits per dimension.

        A step ``t ~ U{0..S*D-1}`` picks the stage ``s = t // D`` and the within-stage step
        ``t_w = t mod D``; with a random order, the first t_w variables are refined. The estimate
        of the bound is ``S * D/(D - t_w) * sum_{not refined} -log p(d_i)`` (Eq. 4 per stage; the
        factor S because one of the S stage terms is drawn uniformly), plus ``ce_weight`` times
        the plain cross-entropy of every variable's next digit (bits per dimension).

        Returns the loss and ``{"bpd": the unbiased bound estimate, "ce_bpd": the auxiliary term}``
        (both detached).

        Example:
            >>> from ardm.nets import build_net
            >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
            >>> loss, stats = m.training_loss(torch.zeros(3, 1, 4, 4, dtype=torch.long))
            >>> bool(loss > 0)
            True
        """
        x = self._check_x(x)
        batch, num_vars = x.shape[0], self.num_vars
        t, weights = self.timestep_sampler.sample(batch, device=self.device, generator=generator)
        stage, t_within = t // num_vars, t % num_vars
        level = self.num_stages - stage
        levels = self._levels(self.random_ranks(batch, generator), t_within, level)
        log_p = self._target_log_probs(x.flatten(1), levels, level)
        unrefined = levels == level.view(-1, 1)
        nll = -(log_p * unrefined).sum(1)
        bound = nll * (self.num_stages * num_vars / (num_vars - t_within).to(log_p.dtype))
        bpd = bound / (num_vars * LN2)
        ce_bpd = -log_p.mean(1) / LN2
        loss = (weights * bpd).mean() + self.ce_weight * ce_bpd.mean()
        return loss, {"bpd": bpd.detach().mean(), "ce_bpd": ce_bpd.detach().mean()}

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Same as :meth:`training_loss` (so that DistributedDataParallel can wrap the model)."""
        return self.training_loss(x, generator)

    # ---- policies ------------------------------------------------------------------------------

    def _check_policies(self, policies: Sequence | None) -> list[list[int]]:
        if policies is None:
            return [list(range(self.num_vars)) for _ in range(self.num_stages)]
        if len(policies) != self.num_stages:
            raise ValueError(
                f"need one policy per stage (S = {self.num_stages}), got {len(policies)}"
            )
        return [self._check_policy(p) for p in policies]

    def _resolve_policies(self, budget: int | None, policies: Sequence | None) -> list[list[int]]:
        if policies is not None:
            return self._check_policies(policies)
        return self._check_policies(self.policy(budget))

    def has_step_losses(self) -> bool:
        """Whether :meth:`estimate_step_losses` (or a loaded checkpoint) has set the losses."""
        return bool(torch.isfinite(self.step_losses).all())

    def plan(self, budget: int, split: str | None = None) -> StagePlan:
        """Per-stage budgets, policies and expected cost (bits) for at most ``budget`` calls.

        ``split`` is ``"optimal"`` (least expected loss) or ``"equal"``; default
        ``self.budget_split``. Needs the step losses.
        """
        if not self.has_step_losses():
            raise ValueError(
                "step losses are not estimated; run estimate_step_losses(held_out_data) first"
            )
        return plan_stages(self.step_losses.cpu().numpy(), budget, split or self.budget_split)

    def policy(self, budget: int | None = None, split: str | None = None) -> list[np.ndarray]:
        """Per-stage budget-optimal policies (start steps, int64) for at most ``budget`` calls.

        Budget None or >= S * D gives every stage all D steps (no step losses needed); a budget
        below S (one call per stage) is a ``ValueError``.

        Example:
            >>> from ardm.nets import build_net
            >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
            >>> [len(p) for p in m.policy()]   # S = 3 stages of D = 16 steps
            [16, 16, 16]
        """
        if budget is None or budget >= self.num_steps:
            return [np.arange(self.num_vars, dtype=np.int64) for _ in range(self.num_stages)]
        if budget < self.num_stages:
            raise ValueError(
                f"budget must be at least S = {self.num_stages} (one call per stage), got {budget}"
            )
        return self.plan(budget, split).policies

    def naive_policy(self, budget: int) -> list[np.ndarray]:
        """The paper's fixed budget per stage, evenly spaced steps within each stage.

        Example:
            >>> from ardm.nets import build_net
            >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
            >>> [p.tolist() for p in m.naive_policy(4)]
            [[0, 8], [0], [0]]
        """
        from ardm import _core

        budgets = split_budget_equal(self.num_stages, self.num_vars, budget)
        return [
            np.asarray(_core.naive_policy(self.num_vars, int(k)), dtype=np.int64) for k in budgets
        ]

    # ---- likelihood ---------------------------------------------------------------------------

    @torch.no_grad()
    def nll_bpd(
        self,
        x: torch.Tensor,
        budget: int | None = None,
        order: np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        policies: Sequence | None = None,
    ) -> torch.Tensor:
        """Unbiased one-call estimate of the negative ELBO in bits per dimension, per item (B,).

        The model is the parallel one of ``policies`` (default ``self.policy(budget)``). A stage s
        and one of its k_s policy steps are drawn uniformly, so

            -log p(x) = sum_s sum_i (step i's bits) = E_{s, i} [ S * k_s * (step i's bits) ].

        With a random order (``order`` None) the step's variables are a random subset of the
        unrefined ones, so their sum is replaced by its expectation ``n_i / (D - t_i) * sum``
        (as in the order-agnostic model). With a fixed ``order`` (shared by all stages) it
        estimates what :meth:`exact_nll_bits` computes (divided by D).

        Example:
            >>> from ardm.nets import build_net
            >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
            >>> m.nll_bpd(torch.zeros(2, 1, 4, 4, dtype=torch.long)).shape
            torch.Size([2])
        """
        x = self._check_x(x)
        batch, num_vars = x.shape[0], self.num_vars
        plans = self._resolve_policies(budget, policies)
        counts = torch.tensor([len(p) for p in plans], device=self.device)
        width = int(counts.max())
        starts = torch.full((self.num_stages, width), num_vars, device=self.device)
        ends = torch.full((self.num_stages, width), num_vars, device=self.device)
        for s, p in enumerate(plans):
            starts[s, : len(p)] = torch.tensor(p)
            ends[s, : len(p)] = torch.tensor(p[1:] + [num_vars])
        stage = torch.randint(0, self.num_stages, (batch,), generator=generator).to(self.device)
        u = torch.rand(batch, generator=generator, dtype=torch.float64).to(self.device)
        step = (u * counts[stage]).long().clamp(max=counts[stage] - 1)
        t_i, end_i = starts[stage, step], ends[stage, step]
        level = self.num_stages - stage
        ranks = (
            self.random_ranks(batch, generator)
            if order is None
            else self._check_order(order, batch)
        )
        levels = self._levels(ranks, t_i, level)
        log_p = self._target_log_probs(x.flatten(1), levels, level).double()
        t_col, end_col = t_i.view(-1, 1), end_i.view(-1, 1)
        if order is None:
            frac = (end_col - t_col).double() / (num_vars - t_col).double()
            nll = -(log_p * (ranks >= t_col)).sum(1, keepdim=True) * frac
        else:
            in_step = (ranks >= t_col) & (ranks < end_col)
            nll = -(log_p * in_step).sum(1, keepdim=True)
        weight = (self.num_stages * counts[stage]).double()
        return (weight * nll.squeeze(1) / (num_vars * LN2)).float()

    @torch.no_grad()
    def exact_nll_bits(
        self,
        x: torch.Tensor,
        order: np.ndarray | torch.Tensor,
        policies: Sequence | None = None,
    ) -> torch.Tensor:
        """Exact -log2 p(x | order, policies) per item (B,), float64: one call per policy step.

        ``order`` ((D,) or (B, D)) is used in every stage; ``policies`` (one per stage, None: all
        D steps each) fixes the steps. This is the code length of lossless compression with the
        same order and policies, up to the quantization of the probabilities.

        Example:
            >>> from ardm.nets import build_net
            >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
            >>> x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
            >>> m.exact_nll_bits(x, list(range(16)), [[0, 8], [0], [0, 4, 12]]).shape
            torch.Size([2])
        """
        x = self._check_x(x)
        batch = x.shape[0]
        ranks = self._check_order(order, batch)
        plans = self._check_policies(policies)
        x_flat = x.flatten(1)
        total = torch.zeros(batch, dtype=torch.float64, device=self.device)
        for stage, plan in enumerate(plans):
            level = torch.full((batch,), self.stage_level(stage), device=self.device)
            bounds = plan + [self.num_vars]
            for start, end in zip(bounds[:-1], bounds[1:]):
                levels = self._levels(ranks, torch.full_like(level, start), level)
                log_p = self._target_log_probs(x_flat, levels, level).double()
                in_step = (ranks >= start) & (ranks < end)
                total -= (log_p * in_step).sum(1)
        return total / LN2

    # ---- generation ---------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        n: int,
        budget: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        policies: Sequence | None = None,
        order: np.ndarray | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate ``n`` data points, coarse to fine, in ``sum_s len(policies[s])`` network calls.

        Stage s draws, at each of its policy steps, the next digit of the variables of ranks
        t_i .. t_{i+1}-1 in parallel. Orders are fresh and random per item and stage unless
        ``order`` is given (then it is used in every stage).

        Example:
            >>> from ardm.nets import build_net
            >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
            >>> x = m.sample(2, policies=[[0], [0, 8], [0]])
            >>> x.shape, bool((x < 10).all())
            (torch.Size([2, 1, 4, 4]), True)
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        plans = self._resolve_policies(budget, policies)
        fixed_ranks = None if order is None else self._check_order(order, n)
        state = torch.zeros(n, self.num_vars, dtype=torch.long, device=self.device)
        for stage, plan in enumerate(plans):
            lev = self.stage_level(stage)
            level = torch.full((n,), lev, device=self.device)
            ranks = self.random_ranks(n, generator) if fixed_ranks is None else fixed_ranks
            bounds = plan + [self.num_vars]
            for start, end in zip(bounds[:-1], bounds[1:]):
                levels = self._levels(ranks, torch.full_like(level, start), level)
                lp = self._digit_log_probs(state, levels, level, row_by_row=False)
                in_step = (ranks >= start) & (ranks < end)
                probs = F.softmax(lp[in_step] / temperature, dim=-1)  # impossible digits: 0
                digits = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1)
                state[in_step] += digits.to(self.device) * self.branch_factor ** (lev - 1)
        return state.reshape(n, *self.data_shape)

    # ---- per-step losses ----------------------------------------------------------------------

    @torch.no_grad()
    def estimate_step_losses(
        self,
        data: torch.Tensor | Iterable[torch.Tensor],
        evals_per_step: int = 1,
        batch_size: int = 64,
        generator: torch.Generator | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Estimate the (S, D) per-step losses (bits) on held-out data; store and return them.

        Entry [s, t] is the mean -log2 p of the next digit over the D - t variables not yet
        refined at within-stage step t of stage s. Stratified: every (stage, step) gets
        ``evals_per_step`` evaluations, each with a fresh random order.

        Example:
            >>> from ardm.nets import build_net
            >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
            >>> m.estimate_step_losses(torch.zeros(3, 1, 4, 4, dtype=torch.long)).shape
            torch.Size([3, 16])
        """
        num_vars = self.num_vars
        sums = torch.zeros(self.num_steps, dtype=torch.float64, device=self.device)
        batches = self._stratified_batches(data, self.num_steps, evals_per_step, batch_size)
        for t, x in batches:
            level = self.num_stages - t // num_vars
            t_within = t % num_vars
            levels = self._levels(self.random_ranks(x.shape[0], generator), t_within, level)
            log_p = self._target_log_probs(x.flatten(1), levels, level).double()
            unrefined = levels == level.view(-1, 1)
            mean = -(log_p * unrefined).sum(1) / (num_vars - t_within).double()
            sums.index_add_(0, t, mean / LN2)
            if progress is not None:
                progress(x.shape[0])
        self.step_losses.copy_((sums / evals_per_step).view(self.num_stages, num_vars))
        return self.step_losses.clone()


# ---- coding schedule (ardm.codec) ---------------------------------------------------------------


@dataclass
class UpscaleSchedule:
    """Coding schedule of an :class:`UpscaleARDM` (the ``CodingSchedule`` protocol of
    ``ardm.codec``): the global steps are the policy steps of stage 0, then stage 1, and so on.

    Step j of stage s (level l = S - s) codes the next digit (0..b-1) of the variables
    ``order[t_i : t_{i+1}]``. The state is the data at its current resolution. ``known(j)`` is
    not a bool mask but the int64 level of every variable before step j (l for variables not yet
    refined in the stage, l - 1 for refined ones): it carries the stage and the within-stage step,
    so ``logits`` can serve rows of different steps in one call, as ``codec.compress`` batches
    them. Impossible digits get the finite log-probability ``IMPOSSIBLE_LOG_PROB``.
    """

    model: UpscaleARDM
    order: np.ndarray
    policies: list[np.ndarray]

    def __post_init__(self) -> None:
        from ardm import _core
        from ardm.container import KIND_UPSCALE

        self.kind = KIND_UPSCALE
        self.order = np.asarray(self.order, dtype=np.int64)
        ranks = torch.from_numpy(np.asarray(_core.order_ranks(self.order), dtype=np.int64))
        plans = self.model._check_policies(self.policies)
        self._level: list[int] = []
        self._positions: list[np.ndarray] = []
        self._known: list[torch.Tensor] = []
        for stage, plan in enumerate(plans):
            level = self.model.stage_level(stage)
            policy = np.asarray(plan, dtype=np.int64)
            for i, start in enumerate(plan):
                self._level.append(level)
                self._positions.append(
                    np.asarray(_core.step_positions(self.order, policy, i), dtype=np.int64)
                )
                self._known.append(level - (ranks < start).long())
        self.num_steps = len(self._level)

    def positions(self, step: int) -> np.ndarray:
        return self._positions[step]

    def symbols(self, x_flat: torch.Tensor, step: int) -> np.ndarray:
        values = x_flat[:, self._positions[step]]
        return next_digits(values, self._level[step], self.model.branch_factor).numpy()

    def state_before(self, x_flat: torch.Tensor, step: int) -> torch.Tensor:
        return coarse_values(x_flat, self._known[step].unsqueeze(0), self.model.branch_factor)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.model.num_vars, dtype=torch.long)

    def apply(self, state: torch.Tensor, step: int, symbols: np.ndarray) -> torch.Tensor:
        scale = self.model.branch_factor ** (self._level[step] - 1)
        state[:, self._positions[step]] += torch.from_numpy(np.asarray(symbols, np.int64)) * scale
        return state

    def known(self, step: int) -> torch.Tensor:
        return self._known[step]

    @torch.no_grad()
    def logits(
        self, state: torch.Tensor, known: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        levels, level = self.model._check_levels(known, state.shape[0])
        out = self.model._digit_log_probs(state.long(), levels, level, row_by_row=True)
        out = out.gather(1, positions.unsqueeze(-1).expand(-1, -1, out.shape[-1]))
        return out.clamp(min=IMPOSSIBLE_LOG_PROB)


def upscale_schedule(model: UpscaleARDM, budget: int, order_seed: int) -> UpscaleSchedule:
    """The coding schedule of ``model`` for ``budget`` calls and the order of ``order_seed``.

    One seeded order (``ardm._core.random_order``) serves every stage; the budget is split across
    stages by ``model.policy`` (needs ``S <= budget``).

    Example:
        >>> from ardm.nets import build_net
        >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4), head="categorical"), 10, (1, 4, 4), 3)
        >>> _ = m.estimate_step_losses(torch.zeros(2, 1, 4, 4, dtype=torch.long))
        >>> schedule = upscale_schedule(m, 6, order_seed=0)
        >>> 3 <= schedule.num_steps <= 6, schedule.known(0).tolist()[:4]   # stage 0: level 3
        (True, [3, 3, 3, 3])
    """
    from ardm import _core

    if not isinstance(model, UpscaleARDM):
        raise ValueError(f"expected an UpscaleARDM, got {type(model).__name__}")
    order = np.asarray(_core.random_order(model.num_vars, int(order_seed)), dtype=np.int64)
    return UpscaleSchedule(model, order, model.policy(budget))
