"""Upscale ARDM (Hoogeboom et al., *Autoregressive Diffusion Models*, ICLR 2022, Section 3.2).

An upscale ARDM generates values coarse to fine. With branching factor b, a value in ``0..K-1`` has
``S = ceil(log_b K)`` base-b digits (see :mod:`ardm.models.transitions`). Generation runs in S stages,
coarsest first: stage ``s`` (``s = 0..S-1``) starts with every variable at level ``l = S - s`` (its
``l`` lowest digits unknown, i.e. the value ``coarse_l(x)``) and refines every variable by one digit
to level ``l - 1``. Each stage is an order-agnostic ARDM over all D variables, conditioned on the
previous stage's output (paper Section 3.2), so the model has ``S * D`` steps in all and

    -log p(x) <= sum_s E_{t, sigma} [ D/(D - t) * sum_{i not yet refined} -log p(d_i | state) ],

where ``d_i`` is the next digit of ``x_i`` at stage s (paper Eq. 4, once per stage).

Network. The network is the order-agnostic one, ``net(x_in, known, t) -> head parameters``:

* ``x_in`` holds every variable at its current resolution: ``coarse_{l-1}(x)`` for the variables
  refined so far in this stage, ``coarse_l(x)`` for the others. Nothing finer ever reaches the
  network: ``UpscaleARDM._net_inputs`` is the one place where inputs are coarsened.
* ``known`` is the mask of the variables already refined in this stage (level ``l - 1``), so the
  network can tell refined from unrefined variables; the unrefined ones still carry their coarse
  value in ``x_in`` (the image U-Net zeroes only absorbing values, ``x_in == K``, never values
  where ``known`` is False, and no value here is ever K).
* ``t = s * D + t_within`` in ``0..S*D - 1`` gives the stage and the within-stage step, so the time
  input of the network must cover ``S * D`` steps (the U-Net embeds ``t / D`` sinusoidally, which
  works for any range).

Parametrizations (paper Section 3.2). ``"data"``: the head predicts the full value, and the
probability of a digit is the mass of its group of values given the coarse value (exact, no K x K
matrices): the head's ``interval_log_probs`` gives the mass of each digit's value interval, so
the data parametrization costs b intervals per variable (two in training) instead of K values.
``"direct"``: the first b logits of a categorical head are the logits of the next digit;
impossible digits (when K is not a power of b) are masked.

Variables are flattened in C order; an order is a permutation of ``0..D-1``; a variable is refined
at within-stage step t iff its rank is < t. A policy per stage is a list of start steps as for the
order-agnostic model, and ``policy(budget)`` splits the budget across stages
(:mod:`ardm.models.stage_budget`).

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

from typing import Any

import torch
from torch import nn

from ardm.models.base import ARDM
from ardm.models.digit_masses import interval_digit_log_probs
from ardm.models.timesteps import TimestepSampler
from ardm.models.transitions import (
    check_classes,
    coarse_values,
    digit_intervals,
    direct_digit_log_probs,
    next_digits,
    num_stages,
    parent_intervals,
)

__all__ = ["UpscaleARDM", "PARAMETRIZATIONS"]

PARAMETRIZATIONS = ("data", "direct")


class UpscaleARDM(ARDM):
    """Upscale ARDM around an order-agnostic network (see the module docstring).

    Args:
        net: the network; its time input must cover ``t`` in ``0..S*D - 1``.
        num_classes: K, the number of values of each variable.
        data_shape: shape of one data point, e.g. (1, 28, 28).
        branch_factor: b >= 2; S = ceil(log_b K) stages.
        parametrization: ``"data"`` (value intervals of the head) or ``"direct"`` (b logits).
        ce_weight: weight of the auxiliary plain cross-entropy term on every variable's next digit.
        timestep_sampler: how training draws the step in ``0..S*D - 1``; default stratified.
        budget_split: how :meth:`policy` splits a budget across stages, ``"optimal"`` or
            ``"equal"`` (the paper's fixed budget per stage).

    ``step_losses`` (float64 (S, D)) holds, in bits, the expected -log2 p of one variable's digit
    refined at within-stage step t of stage s.
    """

    kind = "upscale"

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
        check_classes(num_classes, branch_factor)
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"unknown parametrization {parametrization!r}; choose one of {list(PARAMETRIZATIONS)}"
            )
        head = getattr(net, "head", None)
        if parametrization == "direct" and getattr(head, "name", None) != "categorical":
            raise ValueError("the direct parametrization needs a categorical head (b free logits)")
        if parametrization == "direct" and head.params_per_var < branch_factor:
            raise ValueError(
                f"the direct parametrization needs at least b = {branch_factor} outputs per "
                f"variable, the network gives {head.params_per_var}"
            )
        if parametrization == "data" and getattr(head, "num_classes", num_classes) != num_classes:
            raise ValueError(
                f"the data parametrization needs a head over the K = {num_classes} values, the "
                f"net's head predicts {head.num_classes}"
            )
        super().__init__(
            net, num_classes, data_shape, num_stages(num_classes, branch_factor),
            ce_weight=ce_weight, timestep_sampler=timestep_sampler, budget_split=budget_split,
        )
        self.branch_factor = int(branch_factor)
        self.parametrization = parametrization
        self.symbols_per_step = self.branch_factor

    def kind_config(self) -> dict[str, Any]:
        return {
            "branch_factor": self.branch_factor,
            "parametrization": self.parametrization,
            "budget_split": self.budget_split,
        }

    @classmethod
    def from_kind_config(cls, net: nn.Module, num_classes: int, data_shape: tuple[int, ...],
                         ce_weight: float, config: dict[str, Any]) -> UpscaleARDM:
        return cls(
            net, num_classes, data_shape, branch_factor=int(config["branch_factor"]),
            parametrization=str(config.get("parametrization", "data")), ce_weight=ce_weight,
            budget_split=str(config.get("budget_split", "optimal")),
        )

    def stage_level(self, stage: int) -> int:
        """The level l = S - stage that stage ``stage`` refines from."""
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage must be in 0..{self.num_stages - 1}, got {stage}")
        return self.num_stages - stage

    # ---- the one place where inputs are coarsened ----------------------------------------------

    def _net_inputs(
        self, x_flat: torch.Tensor, levels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_in, known, t, stage level l (B, 1)): each variable's unknown low digits zeroed."""
        level = levels.max(1, keepdim=True).values
        x_in = coarse_values(x_flat, levels, self.branch_factor)
        refined = levels < level  # refined in this stage: known to level l - 1
        t = (self.num_stages - level.squeeze(1)) * self.num_vars + refined.sum(1)
        shape = (x_flat.shape[0], *self.data_shape)
        return x_in.view(shape), refined.view(shape), t, level

    def _params(self, x_flat: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_in, known, t, level = self._net_inputs(x_flat, levels)
        params = self._run_net(self.net, x_in, known, t)
        return params.reshape(x_flat.shape[0], self.num_vars, -1), level

    def _symbol_log_probs(
        self, x_flat: torch.Tensor, levels: torch.Tensor, positions: torch.Tensor, per_row: bool
    ) -> torch.Tensor:
        params, level = self._params(x_flat, levels)
        params = params.gather(1, positions.unsqueeze(-1).expand(-1, -1, params.shape[-1]))
        coarse = coarse_values(x_flat.gather(1, positions), level, self.branch_factor)
        b, k = self.branch_factor, self.num_classes
        if self.parametrization == "direct":
            return direct_digit_log_probs(params[..., :b], coarse, level, b, k)
        return interval_digit_log_probs(self.net.head, params, coarse, level, b, k, per_row)

    def _target_log_probs(self, x_flat: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """log p(next digit of x_i) for every variable, (B, D), nats.

        In the data parametrization the digit's probability is the mass of its value interval
        over the mass of the values that share the coarse value: two intervals per variable.
        """
        params, level = self._params(x_flat, levels)
        b, k = self.branch_factor, self.num_classes
        digit = next_digits(x_flat, level, b)
        coarse = coarse_values(x_flat, level, b)
        if self.parametrization == "direct":
            lp = direct_digit_log_probs(params[..., :b], coarse, level, b, k)
            return lp.gather(-1, digit.unsqueeze(-1)).squeeze(-1)
        digit_lows, digit_highs, _ = digit_intervals(coarse, level, b, k)
        parent_low, parent_high = parent_intervals(coarse, level, b, k)
        pick = digit.unsqueeze(-1)  # the data's own digit is always allowed
        low = torch.cat([digit_lows.gather(-1, pick), parent_low.unsqueeze(-1)], dim=-1)
        high = torch.cat([digit_highs.gather(-1, pick), parent_high.unsqueeze(-1)], dim=-1)
        lp = self.net.head.interval_log_probs(params, low, high)
        return lp[..., 0] - lp[..., 1]

    def next_symbols(self, values: torch.Tensor, level: int | torch.Tensor) -> torch.Tensor:
        return next_digits(values, level, self.branch_factor)

    def apply_symbols(
        self, state: torch.Tensor, level: int, positions: torch.Tensor, symbols: torch.Tensor
    ) -> torch.Tensor:
        return state.scatter_add(1, positions, symbols * self.branch_factor ** (level - 1))

    # ---- the public view ------------------------------------------------------------------------

    @torch.no_grad()
    def predict_digit_log_probs(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, *data_shape, b) of every variable's next digit.

        ``levels`` (int, (B, D) or (B, *data_shape)) says what is known of each variable: its
        value with the ``levels`` lowest base-b digits zeroed. ``x`` may hold the full data: it is
        coarsened first, so finer digits cannot leak into the prediction. Impossible digits get
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
        levels = self._check_levels(levels, x.shape[0])
        every = self._arange(x.shape[0])
        lp = self._symbol_log_probs(x.flatten(1), levels, every, per_row=False)
        return lp.reshape(*x.shape, self.branch_factor)
