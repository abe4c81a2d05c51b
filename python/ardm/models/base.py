"""The ARDM interface (Hoogeboom et al., *Autoregressive Diffusion Models*, ICLR 2022): what every
model kind shares, and the one walk over the step schedule.

An ARDM has D variables (the entries of ``data_shape``) with K classes each, generated in S
stages (one for an order-agnostic model, S = ceil(log_b K) for an upscale one), each stage an
order-agnostic pass over all D variables (paper Sections 3 and 3.2). A model kind implements five
hooks over *levels* (see :mod:`ardm.models.schedule`):

- ``_symbol_log_probs(x_flat, levels, positions)``: log-probabilities (B, n, k) of the next symbol
  of the variables at ``positions`` given what ``levels`` says is known of ``x`` (the one place
  where a kind masks or coarsens its inputs);
- ``_target_log_probs(x_flat, levels)``: log p of every variable's own next symbol (B, D);
- ``next_symbols(values, level)`` and ``apply_symbols(state, level, positions, symbols)``: the
  symbol a value reveals at a stage, and the state after it is revealed;
- ``kind_config()`` / ``from_kind_config(net, ...)``: its own fields in ``config.json``.

A kind whose symbols have too many values for one table (an order-agnostic model over 65,536)
codes and samples them as digits instead: ``digits_per_symbol`` > 1, ``coding_params`` (one
network call), ``coding_digit_log_probs`` (each digit's table) and ``_draw_symbols``.

Everything else, the training loss (paper Eq. 4, once per stage), the unbiased likelihood
estimate, exact likelihoods, sampling, per-step losses and budget policies, is written once here,
so no caller ever branches on the kind of model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ardm.models.schedule import Policy, StepSchedule
from ardm.models.stage_budget import (
    SPLITS,
    StagePlan,
    plan_stages,
    smoothed_decreasing_fit,
    split_budget_equal,
)
from ardm.models.timesteps import StratifiedSampler, TimestepSampler
from ardm.subsets import evenly_spaced_indices

__all__ = ["ARDM", "LN2", "sample_categorical"]

LN2 = math.log(2.0)
#: Bits a step by which fitted step losses fall at least (see estimate_step_losses).
FIT_TILT = 1e-9
#: Step losses of models with more steps per stage are measured on a grid of this many steps.
STEP_LOSS_GRID = 256
_HEAD_METHODS = ("log_probs", "target_log_probs", "interval_log_probs", "adjacent_interval_log_probs")


def sample_categorical(
    log_probs: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """One draw (B, n), on the CPU, from each row of log-probabilities (B, n, k) at
    ``temperature`` (impossible symbols, ``-inf``, are never drawn).

    Example:
        >>> sample_categorical(torch.tensor([[[0.0, -math.inf]]]), 1.0, None).tolist()
        [[0]]
    """
    probs = F.softmax(log_probs.float() / temperature, dim=-1)
    draws = torch.multinomial(probs.flatten(0, 1).cpu(), 1, generator=generator)
    return draws.view(log_probs.shape[:-1])


class ARDM(nn.Module):
    """Base class of the ARDM kinds (see the module docstring).

    Args:
        net: the network ``net(x_in, known, t) -> head parameters (B, *data_shape, P)`` with a
            ``head`` attribute (:mod:`ardm.nets.heads`).
        num_classes: K, the number of values of each variable (``0..K-1``).
        data_shape: the shape of one data point, e.g. (1, 28, 28).
        num_stages: S.
        ce_weight: weight of the auxiliary plain cross-entropy term (paper: 1e-3 images).
        timestep_sampler: how training draws the step in ``0..S*D - 1``; default stratified.
        budget_split: how :meth:`policy` splits a budget across stages (``"optimal"``/``"equal"``).

    ``step_losses`` (float64, a buffer saved with the weights, NaN until estimated) holds in bits
    the expected -log2 p of one variable's symbol at each within-stage step of each stage;
    :attr:`stage_step_losses` is its (S, D) view.
    """

    kind: ClassVar[str]
    #: Classes of the coded symbols: K for an order-agnostic model, b for an upscale one.
    symbols_per_step: int
    #: Digits each symbol is coded (and sampled) as, most significant first, each under its own
    #: table of ``digit_base`` entries: 1 (the symbol whole, ``digit_base`` unused) but for an
    #: order-agnostic model over many values (see :mod:`ardm.models.digit_masses`).
    digits_per_symbol: int = 1
    digit_base: int = 0
    step_losses: torch.Tensor
    #: Network evaluations made so far, each one batched call (sampling reports it per budget).
    network_calls: int = 0
    #: Set by ``ardm.load`` for a shipped model: its name and the fingerprint of its weights
    #: (a blob names a shipped model by number only while its weights are these).
    shipped_name: str | None = None
    shipped_fingerprint: int | None = None

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        data_shape: tuple[int, ...],
        num_stages: int,
        ce_weight: float = 1e-3,
        timestep_sampler: TimestepSampler | None = None,
        budget_split: str = "optimal",
        step_losses_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        data_shape = tuple(int(s) for s in data_shape)
        if not data_shape or min(data_shape) < 1:
            raise ValueError(f"data_shape must be non-empty and positive, got {data_shape}")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        if budget_split not in SPLITS:
            raise ValueError(f"unknown budget split {budget_split!r}; choose one of {list(SPLITS)}")
        head = getattr(net, "head", None)
        if not all(hasattr(head, name) for name in _HEAD_METHODS):
            raise ValueError(
                f"{type(net).__name__} has no output head: a net must have a `head` attribute "
                "from ardm.nets.heads"
            )
        self.net = net
        self.num_classes = int(num_classes)
        self.data_shape = data_shape
        self.num_vars = int(np.prod(data_shape))
        self.num_stages = int(num_stages)
        self.num_steps = self.num_stages * self.num_vars
        self.ce_weight = float(ce_weight)
        self.budget_split = budget_split
        #: Seed of the coding order (the codec reads it; ``ardm choose-order`` picks it).
        self.order_seed = 0
        #: The modality of the data (``ardm.modalities``): how files become items.
        self.modality = "image"
        self.timestep_sampler = timestep_sampler or StratifiedSampler(self.num_steps)
        if self.timestep_sampler.num_steps != self.num_steps:
            raise ValueError("timestep_sampler.num_steps must equal S * D, the number of steps")
        shape = step_losses_shape or (self.num_stages, self.num_vars)
        self.register_buffer("step_losses", torch.full(shape, float("nan"), dtype=torch.float64))

    # ---- hooks of a model kind ------------------------------------------------------------------

    def _symbol_log_probs(
        self, x_flat: torch.Tensor, levels: torch.Tensor, positions: torch.Tensor, per_row: bool
    ) -> torch.Tensor:
        raise NotImplementedError

    def _target_log_probs(self, x_flat: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def next_symbols(self, values: torch.Tensor, level: int | torch.Tensor) -> torch.Tensor:
        """The symbols that ``values`` reveal going from ``level`` to ``level - 1``."""
        raise NotImplementedError

    def apply_symbols(
        self, state: torch.Tensor, level: int, positions: torch.Tensor, symbols: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def kind_config(self) -> dict[str, Any]:
        """This kind's own fields of ``config.json``."""
        raise NotImplementedError

    # ---- the shared surface ---------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.step_losses.device

    @property
    def min_budget(self) -> int:
        """The fewest network calls that generate a data point: one per stage."""
        return self.num_stages

    @property
    def max_budget(self) -> int:
        """S * D: one call per variable and stage."""
        return self.num_steps

    @property
    def stage_step_losses(self) -> torch.Tensor:
        """The per-step losses as an (S, D) table (a view of the ``step_losses`` buffer)."""
        return self.step_losses.view(self.num_stages, self.num_vars)

    def has_step_losses(self) -> bool:
        """Whether :meth:`estimate_step_losses` (or a loaded checkpoint) has set the losses."""
        return bool(torch.isfinite(self.step_losses).all())

    def _run_net(self, fn: Callable[..., torch.Tensor], *args: object) -> torch.Tensor:
        """Call the network (or one of its methods) and count the call."""
        self.network_calls += 1
        return fn(*args)

    def coding_log_probs(
        self, state: torch.Tensor, levels: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Log-probabilities (B, n, k) for coding the symbols at ``positions`` (B, n): each row
        evaluated on its own, impossible symbols at a large finite negative value (the quantizer
        gives every symbol a frequency >= 1 anyway)."""
        lp = self._symbol_log_probs(state.long(), levels, positions, per_row=True)
        return lp.float().clamp(min=-1.0e4)

    @property
    def table_size(self) -> int:
        """Entries of one coding or sampling table of one variable: ``symbols_per_step``, or
        ``digit_base`` where symbols are split into digits."""
        return self.digit_base if self.digits_per_symbol > 1 else self.symbols_per_step

    def coding_params(
        self, state: torch.Tensor, levels: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """What one network call gives the coder for the symbols at ``positions`` (B, n): their
        :meth:`coding_log_probs` (B, n, k) when a symbol is one digit; otherwise parameters
        (B, n, P) that :meth:`coding_digit_log_probs` turns into each digit's table."""
        return self.coding_log_probs(state, levels, positions)

    def coding_digit_log_probs(
        self, params: torch.Tensor, prefix: torch.Tensor, digit: int
    ) -> torch.Tensor:
        """Log-probabilities (B, n, ``digit_base``) of digit ``digit`` (0: the most significant)
        of each symbol, given :meth:`coding_params` and ``prefix`` (B, n): the symbols with
        digits ``digit`` and below zeroed; each row on its own, impossible digits at a large
        finite negative value. Only for models with ``digits_per_symbol > 1``."""
        raise ValueError(f"a {self.kind} model codes each symbol whole (digits_per_symbol = 1)")

    def _draw_symbols(
        self,
        state: torch.Tensor,
        levels: torch.Tensor,
        positions: torch.Tensor,
        temperature: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Sample the next symbols (B, n) of the variables at ``positions``."""
        lp = self._symbol_log_probs(state, levels, positions, per_row=False)
        return sample_categorical(lp, temperature, generator).to(self.device)

    # ---- checks ---------------------------------------------------------------------------------

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise ValueError(f"x must be an integer tensor, got {x.dtype}")
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"x must have shape (B, *{self.data_shape}), got {tuple(x.shape)}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.num_classes):
            raise ValueError(f"x values must be in 0..{self.num_classes - 1}")
        return x.to(self.device, torch.long)

    def _check_order(self, order: np.ndarray | torch.Tensor, batch: int) -> torch.Tensor:
        """An order (D,) shared by the batch or (B, D) per item -> ranks (B, D) int64."""
        order_t = torch.as_tensor(np.asarray(order) if not isinstance(order, torch.Tensor) else order)
        if order_t.dtype.is_floating_point or order_t.dtype == torch.bool:
            raise ValueError(f"order must be integer, got {order_t.dtype}")
        order_t = order_t.to(self.device, torch.long)
        if order_t.ndim == 1:
            order_t = order_t.unsqueeze(0).expand(batch, -1)
        if order_t.shape != (batch, self.num_vars):
            raise ValueError(f"order must have shape ({self.num_vars},) or ({batch}, {self.num_vars})")
        ranks = torch.full_like(order_t, -1)
        ranks.scatter_(1, order_t.clamp(0, self.num_vars - 1), self._arange(batch))
        if (order_t.min() < 0) or (order_t.max() >= self.num_vars) or (ranks < 0).any():
            raise ValueError(f"order must be a permutation of 0..{self.num_vars - 1}")
        return ranks

    def _check_levels(self, levels: torch.Tensor, batch: int) -> torch.Tensor:
        """Per-variable levels (B, D) or (B, *data_shape): each row at some stage level l in
        1..S holds only l (not yet refined in the stage) and l - 1 (refined), at least one l."""
        if not isinstance(levels, torch.Tensor) or levels.dtype.is_floating_point:
            raise ValueError("levels must be an integer tensor")
        if levels.dtype == torch.bool:
            raise ValueError("levels must be an integer tensor of per-variable levels, not a mask")
        levels = levels.to(self.device, torch.long).reshape(levels.shape[0], -1)
        if levels.shape != (batch, self.num_vars):
            raise ValueError(f"levels must have shape ({batch}, {self.num_vars}) or (B, *data_shape)")
        level = levels.max(1).values
        low = levels.min(1).values
        if bool((level < 1).any() | (level > self.num_stages).any() | (low < level - 1).any()):
            raise ValueError(
                f"each row of levels must hold a stage level l in 1..{self.num_stages} and l - 1"
            )
        return levels

    def _policy(self, budget: int | None, policy: Any, num_vars: int | None = None) -> Policy:
        """``policy`` checked over ``num_vars`` steps (default D), else the optimal one for
        ``budget`` (None: every step)."""
        m = self.num_vars if num_vars is None else num_vars
        if policy is not None:
            return Policy.from_stages(policy, self.num_stages, m)
        return self.policy(budget, num_vars=m)

    def _arange(self, batch: int) -> torch.Tensor:
        return torch.arange(self.num_vars, device=self.device).unsqueeze(0).expand(batch, -1)

    def random_ranks(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ranks (B, D) of an independent uniformly random order per item, sigma ~ U(S_D).

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 2, (1, 4, 4)), 2, (1, 4, 4))
            >>> sorted(m.random_ranks(1)[0].tolist()) == list(range(16))
            True
        """
        noise = torch.rand(batch, self.num_vars, generator=generator).to(self.device)
        order = noise.argsort(dim=1)  # sigma as a random permutation (Algorithm 1, line 3)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, self._arange(batch))
        return ranks

    def _random_levels(
        self, t: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For global steps t (B,) in 0..S*D-1: (levels (B, D), unrefined mask, within-stage t)
        under a fresh random order per item."""
        return self._levels(t, self.random_ranks(t.shape[0], generator))

    def _levels(
        self, t: torch.Tensor, ranks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t_within = t % self.num_vars
        level = self.num_stages - t // self.num_vars
        refined = ranks < t_within.unsqueeze(1)
        return level.unsqueeze(1) - refined.long(), ~refined, t_within

    # ---- objective ------------------------------------------------------------------------------

    def training_noise(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The random draws of one training step for ``batch`` items (Algorithm 1, lines 2-3):
        steps ``t`` (B,), their loss weights (B,) and the ranks (B, D) of a random order each.

        Under DDP every rank draws them for the global batch and passes its share of the rows
        to :meth:`training_loss`, so the split over ranks does not change an item's draws.

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> t, weights, ranks = m.training_noise(3, torch.Generator().manual_seed(0))
            >>> t.shape, weights.shape, ranks.shape
            (torch.Size([3]), torch.Size([3]), torch.Size([3, 16]))
        """
        t, weights = self.timestep_sampler.sample(batch, device=self.device, generator=generator)
        return t, weights, self.random_ranks(batch, generator)

    def training_loss(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The ARDM training loss (paper Algorithm 1, Eq. 4 once per stage), bits per dimension.

        A step ``t ~ U{0..S*D-1}`` picks the stage ``s = t // D`` and the within-stage step
        ``t_w = t mod D``; with a random order the first t_w variables are refined. The bound
        estimate is ``S * D/(D - t_w) * sum_{not refined} -log p(symbol)`` (the factor S because
        one of the S stage terms is drawn), plus ``ce_weight`` times the plain cross-entropy of
        every variable's symbol, known ones included (the paper's small auxiliary term).

        ``noise`` (from :meth:`training_noise`) gives the draws instead of ``generator``.
        Returns the loss and ``{"bpd": the unbiased bound estimate, "ce_bpd": the auxiliary
        term}`` (both detached).

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> loss, stats = m.training_loss(torch.zeros(3, 1, 4, 4, dtype=torch.long))
            >>> bool(loss > 0), sorted(stats)
            (True, ['bpd', 'ce_bpd'])
        """
        x = self._check_x(x)
        batch, num_vars = x.shape[0], self.num_vars
        t, weights, ranks = self.training_noise(batch, generator) if noise is None else noise
        if t.shape != (batch,) or weights.shape != (batch,) or ranks.shape != (batch, num_vars):
            raise ValueError(f"noise for {batch} items must be t ({batch},), weights ({batch},) "
                             f"and ranks ({batch}, {num_vars})")
        levels, unrefined, t_within = self._levels(t, ranks)
        log_p = self._target_log_probs(x.flatten(1), levels).float()  # (B, D) nats
        nll = -(log_p * unrefined).sum(1)
        bound = nll * (self.num_stages * num_vars / (num_vars - t_within).to(log_p.dtype))
        bpd = bound / (num_vars * LN2)
        ce_bpd = -log_p.mean(1) / LN2
        loss = (weights * bpd).mean() + self.ce_weight * ce_bpd.mean()
        return loss, {"bpd": bpd.detach().mean(), "ce_bpd": ce_bpd.detach().mean()}

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Same as :meth:`training_loss` (so that DistributedDataParallel can wrap the model)."""
        return self.training_loss(x, generator, noise)

    # ---- likelihood -----------------------------------------------------------------------------

    @torch.no_grad()
    def nll_bpd(
        self,
        x: torch.Tensor,
        budget: int | None = None,
        order: np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        policy: Any = None,
        step_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unbiased one-call estimate of the negative ELBO in bits per dimension, per item (B,).

        The model is the parallel one of ``policy`` (default ``self.policy(budget)``; budget None:
        every step), whose calls g generate n_g of the S * D variable steps each. One variable
        step t is drawn uniformly per item, and the call g(t) that generates it is evaluated:

            -log p(x) = sum_g (bits of call g) = E_t [ S * D * (bits of call g(t)) / n_g(t) ].

        With a random order (``order`` None) the call's variables are a uniformly random subset
        of size n_g of the D - t_g not yet refined, so their sum is replaced by its expectation
        ``n_g / (D - t_g) * sum``: the estimate is S times the mean loss of the D - t_g
        variables left at the call's context, and with every step it is the training bound.
        Drawing a step rather than a call keeps the variance low when calls differ in size, and
        lets two policies be compared on common random numbers: with one generator seed both get
        the same order and step t, and differ only in the context their call for t sees. With
        a fixed ``order`` it estimates what :meth:`exact_nll_bits` computes (divided by D).
        ``step_index`` (B,) fixes t per item (0 .. S * D - 1, stage by stage) instead of drawing it.

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> m.nll_bpd(torch.zeros(2, 1, 4, 4, dtype=torch.long)).shape
            torch.Size([2])
        """
        x = self._check_x(x)
        batch, num_vars = x.shape[0], self.num_vars
        schedule = StepSchedule(self._policy(budget, policy), self.num_stages, num_vars)
        total = self.num_stages * num_vars
        if step_index is None:
            t = torch.randint(0, total, (batch,), generator=generator).to(self.device)
        else:
            t = torch.as_tensor(step_index, dtype=torch.long, device=self.device)
            if t.shape != (batch,) or int(t.min()) < 0 or int(t.max()) >= total:
                raise ValueError(f"step_index must have shape ({batch},) and values in 0..{total - 1}")
        steps = torch.tensor([[s.start, s.end, s.level] for s in schedule.steps], device=self.device)
        # The calls cover each stage's steps in order, stage after stage: step t's call is the
        # one whose run of end - start steps holds it.
        call_of = torch.repeat_interleave(steps[:, 1] - steps[:, 0])
        table = steps[call_of[t]]
        start, end, level = table[:, :1], table[:, 1:2], table[:, 2:]
        ranks = self.random_ranks(batch, generator) if order is None else self._check_order(order, batch)
        levels = level - (ranks < start).long()
        log_p = self._target_log_probs(x.flatten(1), levels).double()
        if order is None:
            nll = -(log_p * (ranks >= start)).sum(1, keepdim=True) / (num_vars - start).double()
        else:
            in_call = (ranks >= start) & (ranks < end)
            nll = -(log_p * in_call).sum(1, keepdim=True) / (end - start).double()
        return (self.num_stages * nll.squeeze(1) / LN2).float()

    @torch.no_grad()
    def exact_nll_bits(
        self,
        x: torch.Tensor,
        order: np.ndarray | torch.Tensor,
        policy: Any = None,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Exact -log2 p(x | order, policy) per item (B,), float64: one network call per step.

        ``order`` ((D,) or (B, D)) is used in every stage; ``policy`` None means every step. This
        is the code length that lossless compression with the same order and policy reaches (up
        to the quantization of the probabilities). With ``known`` (bool, the shape of ``x``, the
        same number of unknown variables m in every row) it is -log2 p(x_unknown | x_known):
        the unknown variables in ``order``'s relative order, ``policy`` a policy over m steps
        (the infilling :meth:`sample` does with ``given``).

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> x = torch.zeros(1, 1, 4, 4, dtype=torch.long)
            >>> m.exact_nll_bits(x, list(range(16))[::-1], [0, 2, 9]).shape
            torch.Size([1])
        """
        x = self._check_x(x)
        batch = x.shape[0]
        ranks = self._check_order(order, batch)
        m = self.num_vars
        if known is not None:
            known = self._check_known(known, batch)
            m = self._unknown_count(known)
            ranks = self._ranks_among_unknown(ranks, known)
        schedule = StepSchedule(self._policy(None, policy, m), self.num_stages, m)
        x_flat = x.flatten(1)
        total = torch.zeros(batch, dtype=torch.float64, device=self.device)
        for step in schedule:
            log_p = self._target_log_probs(x_flat, schedule.levels_before(step, ranks)).double()
            total -= (log_p * schedule.in_step(step, ranks)).sum(1)
        return total / LN2

    # ---- generation -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        n: int,
        budget: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        policy: Any = None,
        order: np.ndarray | torch.Tensor | None = None,
        given: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate ``n`` data points in ``len(policy)`` network calls (paper Section 3.2).

        Each call draws the symbols of its step's variables in parallel from the network's
        prediction given what is known. Orders are fresh and random per item and stage unless
        ``order`` is given (then it is used in every stage).

        Infilling (inpainting for images): with ``given`` (the shape of one data point or
        ``(n, *data_shape)``) and ``known`` (bool, the same shape), the known values are kept
        and only the m unknown ones are generated, in a random order, under ``budget`` calls
        planned on the last m step losses (or ``policy``, over m steps). Rows with different m
        are generated in groups, each under its own policy.

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> m.sample(2, policy=[0, 8]).shape
            torch.Size([2, 1, 4, 4])
            >>> x, mask = torch.full((1, 4, 4), 3), torch.rand(1, 4, 4) < 0.75
            >>> bool((m.sample(1, given=x, known=mask)[0][mask] == 3).all())
            True
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if given is not None or known is not None:
            if order is not None:
                raise ValueError("sample: pass either order or given/known, not both")
            return self._infill(n, budget, temperature, generator, policy, given, known)
        schedule = StepSchedule(self._policy(budget, policy), self.num_stages, self.num_vars)
        fixed_ranks = None if order is None else self._check_order(order, n)
        state = torch.zeros(n, self.num_vars, dtype=torch.long, device=self.device)
        ranks_of = (lambda: self.random_ranks(n, generator)) if fixed_ranks is None else (
            lambda: fixed_ranks
        )
        return self._generate(state, schedule, ranks_of, temperature, generator)

    def _generate(
        self,
        state: torch.Tensor,
        schedule: StepSchedule,
        ranks_of: Callable[[], torch.Tensor],
        temperature: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Walk ``schedule`` from ``state`` (B, D), drawing each stage's order from ``ranks_of``
        (rank -1: known from the start); returns the data points (B, *data_shape)."""
        n = state.shape[0]
        for stage in range(self.num_stages):
            ranks = ranks_of()
            # by_rank[:, r] = the variable of rank r (variables of rank -1 sort first: skip them)
            by_rank = ranks.argsort(dim=1)[:, self.num_vars - schedule.num_vars :]
            for step in schedule.stage_steps(stage):
                positions = by_rank[:, step.start : step.end]  # only this step's variables
                levels = schedule.levels_before(step, ranks)
                symbols = self._draw_symbols(state, levels, positions, temperature, generator)
                state = self.apply_symbols(state, step.level, positions, symbols)
        return state.reshape(n, *self.data_shape)

    def _check_known(self, known: torch.Tensor, batch: int) -> torch.Tensor:
        if not isinstance(known, torch.Tensor) or known.dtype != torch.bool:
            raise ValueError("known must be a bool tensor (True where the value is given)")
        if tuple(known.shape) == self.data_shape:
            known = known.unsqueeze(0).expand(batch, *self.data_shape)
        if tuple(known.shape) != (batch, *self.data_shape):
            raise ValueError(
                f"known must have shape {self.data_shape} or ({batch}, *{self.data_shape}), got "
                f"{tuple(known.shape)}"
            )
        return known.to(self.device).reshape(batch, self.num_vars)

    @staticmethod
    def _unknown_count(known: torch.Tensor) -> int:
        counts = (~known).sum(1)
        if bool((counts != counts[0]).any()):
            raise ValueError("every row of known must leave the same number of variables unknown")
        if int(counts[0]) == 0:
            raise ValueError("known leaves nothing unknown: there is nothing to generate or score")
        return int(counts[0])

    def _ranks_among_unknown(self, ranks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Ranks 0..m-1 of the unknown variables in the relative order of ``ranks``; -1 for the
        known ones (refined from the first step on in every stage). Every row of ``known`` holds
        the same number of known variables (the callers group or check rows so)."""
        shifted = torch.where(known, ranks - self.num_vars, ranks)  # known ones sort first
        order = shifted.argsort(dim=1)
        new = torch.empty_like(order)
        new.scatter_(1, order, self._arange(ranks.shape[0]))
        return torch.where(known, torch.full_like(new, -1), new - int(known[0].sum()))

    def _infill(
        self,
        n: int,
        budget: int | None,
        temperature: float,
        generator: torch.Generator | None,
        policy: Any,
        given: torch.Tensor | None,
        known: torch.Tensor | None,
    ) -> torch.Tensor:
        if given is None or known is None:
            raise ValueError("infilling needs both given (the values) and known (where they hold)")
        if isinstance(given, torch.Tensor) and tuple(given.shape) == self.data_shape:
            given = given.unsqueeze(0).expand(n, *self.data_shape)
        given = self._check_x(given).flatten(1)
        if given.shape[0] != n:
            raise ValueError(f"given holds {given.shape[0]} data points, n is {n}")
        known = self._check_known(known, n)
        out = given.clone()
        counts = (~known).sum(1)
        for m in counts.unique().tolist():
            if m == 0:
                continue  # fully known rows come back as given
            rows = (counts == m).nonzero().squeeze(1)
            known_rows = known[rows]
            schedule = StepSchedule(self._policy(budget, policy, m), self.num_stages, m)
            state = torch.where(known_rows, given[rows], torch.zeros_like(given[rows]))

            def ranks_of(count: int = rows.numel(), mask: torch.Tensor = known_rows) -> torch.Tensor:
                return self._ranks_among_unknown(self.random_ranks(count, generator), mask)

            out[rows] = self._generate(state, schedule, ranks_of, temperature, generator).flatten(1)
        return out.view(n, *self.data_shape)

    # ---- per-step losses and policies -----------------------------------------------------------

    def step_loss_grid(self) -> torch.Tensor:
        """The within-stage steps :meth:`estimate_step_losses` evaluates: every step for
        D <= ``STEP_LOSS_GRID`` (256), else that many evenly spaced ones (0 and D - 1 among them),
        between which the losses are interpolated: a step's loss changes slowly with t, and
        every step of an 8,000-sample audio item would cost hours of evaluations.

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4)).step_loss_grid().numel()
            16
        """
        d = self.num_vars
        if d <= STEP_LOSS_GRID:
            return torch.arange(d, device=self.device)
        return torch.from_numpy(evenly_spaced_indices(d, STEP_LOSS_GRID)).to(self.device)

    def step_loss_evaluations(self, evals_per_step: int = 1) -> int:
        """How many (item, step) evaluations :meth:`estimate_step_losses` makes (its progress)."""
        return self.num_stages * int(self.step_loss_grid().numel()) * evals_per_step

    def _stratified_batches(
        self, data: torch.Tensor | Iterable[torch.Tensor], evals_per_step: int, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(t, x)`` in which every global step t of the grid appears
        ``evals_per_step`` times, round r on one item for every step."""
        if evals_per_step < 1 or batch_size < 1:
            raise ValueError("evals_per_step and batch_size must be >= 1")
        if not isinstance(data, torch.Tensor):
            data = torch.cat([torch.as_tensor(d) for d in data])
        data = self._check_x(data)
        if data.shape[0] == 0:
            raise ValueError("need at least one data point to estimate step losses")
        grid = self.step_loss_grid()
        stages = torch.arange(self.num_stages, device=self.device)
        steps = (stages[:, None] * self.num_vars + grid[None]).flatten()
        total = steps.numel() * evals_per_step
        t_all = steps.repeat(evals_per_step)
        n, rounds = data.shape[0], torch.arange(evals_per_step, device=self.device)
        items = rounds * n // evals_per_step if evals_per_step <= n else rounds % n  # spread out
        item_all = items.repeat_interleave(steps.numel())
        for lo in range(0, total, batch_size):
            yield t_all[lo : lo + batch_size], data[item_all[lo : lo + batch_size]]

    @torch.no_grad()
    def estimate_step_losses(
        self,
        data: torch.Tensor | Iterable[torch.Tensor],
        evals_per_step: int = 1,
        batch_size: int = 64,
        generator: torch.Generator | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Estimate the per-step losses (bits) on held-out data; store and return them.

        Entry [s, t] is the mean -log2 p of the symbol over the D - t variables not yet refined
        at within-stage step t of stage s (paper Section 3.2). Stratified: every (stage, step) of
        :meth:`step_loss_grid` gets ``evals_per_step`` evaluations, each a fresh random order;
        evaluation r of every step is of the same item (``evals_per_step`` items evenly spaced
        over ``data``, or all of them in turn), so steps differ by the orders' noise, not by
        the items they happened to get. Each stage's estimates are then fitted to a
        smooth non-increasing curve (a step's loss cannot rise with more context, and the fit
        pools the noise of neighbouring steps;
        :func:`~ardm.models.stage_budget.smoothed_decreasing_fit`, its kernel width chosen by
        cross-validation), and steps between grid points are interpolated linearly.

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> m.estimate_step_losses(torch.zeros(3, 1, 4, 4, dtype=torch.long)).shape
            torch.Size([16])
        """
        sums = torch.zeros(self.num_steps, dtype=torch.float64, device=self.device)
        for t, x in self._stratified_batches(data, evals_per_step, batch_size):
            levels, unrefined, t_within = self._random_levels(t, generator)
            log_p = self._target_log_probs(x.flatten(1), levels).double()
            mean = -(log_p * unrefined).sum(1) / (self.num_vars - t_within).double()
            sums.index_add_(0, t, mean / LN2)
            if progress is not None:
                progress(x.shape[0])
        per_stage = (sums / evals_per_step).view(self.num_stages, self.num_vars).cpu()
        grid = self.step_loss_grid().cpu().numpy()
        # Each estimate averages D - t losses: smooth and fit the rows with those weights to a
        # non-increasing curve with no flat stretch (smoothed_decreasing_fit: the DP reads the
        # curve's shape, and a flat stretch looks like steps to merge for free), then
        # interpolate between the evaluated steps. A tilt of FIT_TILT bits a step breaks what
        # ties remain (a floor of 0), so a policy spends its whole budget.
        weights = (self.num_vars - grid).astype(np.float64)
        fitted = [np.maximum(smoothed_decreasing_fit(row[grid].numpy(), weights) - FIT_TILT * grid,
                             0.0)
                  for row in per_stage]
        every = np.arange(self.num_vars)
        per_stage = torch.from_numpy(np.stack([np.interp(every, grid, row) for row in fitted]))
        self.step_losses.copy_(per_stage.reshape(self.step_losses.shape))
        return self.step_losses.clone()

    def _require_step_losses(self) -> None:
        if not self.has_step_losses():
            raise ValueError(
                "step losses are not estimated; run estimate_step_losses(held_out_data) first"
            )

    def plan(self, budget: int, split: str | None = None, num_vars: int | None = None) -> StagePlan:
        """Per-stage budgets, policies and expected cost (bits) for at most ``budget`` calls.

        ``split`` is ``"optimal"`` (least expected loss) or ``"equal"`` (the paper's fixed
        budget per stage); default ``self.budget_split``. ``num_vars`` m < D plans an item whose
        last D - m variables are padding known from the start: the losses of steps D - m .. D - 1.
        """
        self._require_step_losses()
        losses = self.stage_step_losses.cpu().numpy()
        m = self.num_vars if num_vars is None else int(num_vars)
        if not 1 <= m <= self.num_vars:
            raise ValueError(f"num_vars must be in 1..{self.num_vars}, got {num_vars}")
        losses = losses[:, self.num_vars - m :]
        return plan_stages(losses, min(int(budget), self.num_stages * m), split or self.budget_split)

    def policy(
        self, budget: int | None = None, split: str | None = None, num_vars: int | None = None
    ) -> Policy:
        """The budget-optimal policy for at most ``budget`` network calls.

        Each stage runs the DP of ``ardm._core.optimal_policy`` on its step losses sorted in
        descending order, as the paper does (Section 3.2), so that estimation noise is not
        exploited; the budget is split across stages by ``split`` (see :meth:`plan`). Budget None
        or >= S * D gives every step (no step losses needed); below S (one call per stage) is a
        ``ValueError``.

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> _ = m.step_losses.copy_(torch.linspace(2, 0.1, 16, dtype=torch.float64))
            >>> p = m.policy(3)
            >>> len(p), p.stages[0].tolist()
            (3, [0, 5, 11])
        """
        m = self.num_vars if num_vars is None else int(num_vars)
        if not 1 <= m <= self.num_vars:
            raise ValueError(f"num_vars must be in 1..{self.num_vars}, got {num_vars}")
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, (int, np.integer))
        ):
            raise ValueError(f"budget must be an integer number of network calls, got {budget!r}")
        if budget is None or budget >= self.num_stages * m:
            return Policy.full(self.num_stages, m)
        if budget < self.num_stages:
            raise ValueError(
                f"budget must be at least S = {self.num_stages} (one call per stage), got {budget}"
            )
        return Policy(tuple(self.plan(int(budget), split, m).policies))

    def naive_policy(self, budget: int) -> Policy:
        """The paper's baseline: a fixed budget per stage, evenly spaced steps within each.

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.models import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> m.naive_policy(4).stages[0].tolist()
            [0, 4, 8, 12]
        """
        from ardm import _core

        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ValueError(f"budget must be a positive integer, got {budget!r}")
        budgets = split_budget_equal(self.num_stages, self.num_vars, int(budget))
        return Policy(
            tuple(np.asarray(_core.naive_policy(self.num_vars, int(k)), np.int64) for k in budgets)
        )
