"""Order-agnostic ARDM (Hoogeboom et al., *Autoregressive Diffusion Models*, ICLR 2022, Section 3).

An OA-ARDM generates the D variables of x one step at a time in a uniformly random order sigma. At
step t the network sees the t known variables (the others replaced by an absorbing class, plus the
mask) and predicts a categorical distribution for every unknown variable. The objective is

    L = D/(D - t) * sum_{i unknown} -log p(x_i | x_known),   t ~ U{0..D-1}, sigma ~ U(S_D)

(paper Eq. 4 / Algorithm 1), whose expectation bounds -log p(x) averaged over orders. With a step
budget, a policy [t_0 = 0 < t_1 < ... < t_{k-1}] generates variables t_i .. t_{i+1}-1 of the order
in one network call (Section 3.2); the policy of least expected loss comes from the budget dynamic
program in ``ardm._core`` applied to the per-step losses L_t.

Conventions: variables are the entries of x in ``data_shape`` (for images (C, H, W): every
subpixel). An order is a permutation of ``0..D-1`` over the flattened variables; the *rank* of a
variable is its position in the order. A variable is known at step t iff its rank is < t.

Example:
    >>> import torch
    >>> from ardm.nets import build_net
    >>> model = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
    >>> loss, stats = model.training_loss(torch.randint(0, 4, (2, 1, 4, 4)))
    >>> loss.ndim, sorted(stats)
    (0, ['bpd', 'ce_bpd'])
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ardm.base import ARDMBase
from ardm.timesteps import StratifiedSampler, TimestepSampler

__all__ = ["OrderAgnosticARDM"]

LN2 = math.log(2.0)


class OrderAgnosticARDM(ARDMBase):
    """Order-agnostic ARDM around a network ``net(x_in, known, t) -> logits (B, *data_shape, K)``.

    Args:
        net: the network. ``x_in`` is int64 with unknown variables set to ``absorbing_state``,
            ``known`` the bool mask, ``t`` (B,) the number of known variables. A network may also
            offer ``target_log_probs(x_in, known, t, target) -> (B, *data_shape)`` (log p of the
            target at every variable), which training uses to avoid computing all K logits.
        num_classes: K, the number of values of each variable (values are ``0..K-1``).
        data_shape: shape of one data point, e.g. (1, 28, 28).
        absorbing_state: input value of unknown variables; default K (an extra class).
        ce_weight: weight of the auxiliary plain cross-entropy term (paper: 1e-3 for images).
        timestep_sampler: how training draws t; default stratified over the batch.

    ``step_losses`` (float64[D], a buffer saved with the weights) holds L_t in **bits**: the
    expected -log2 p of the one variable generated at step t, NaN until
    :meth:`estimate_step_losses` runs.
    """

    step_losses: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        data_shape: tuple[int, ...],
        absorbing_state: int | None = None,
        ce_weight: float = 1e-3,
        timestep_sampler: TimestepSampler | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        data_shape = tuple(int(s) for s in data_shape)
        if not data_shape or min(data_shape) < 1:
            raise ValueError(f"data_shape must be non-empty and positive, got {data_shape}")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.net = net
        self.num_classes = int(num_classes)
        self.data_shape = data_shape
        self.num_vars = int(np.prod(data_shape))
        self.absorbing_state = self.num_classes if absorbing_state is None else int(absorbing_state)
        self.ce_weight = float(ce_weight)
        self.timestep_sampler = timestep_sampler or StratifiedSampler(self.num_vars)
        if self.timestep_sampler.num_steps != self.num_vars:
            raise ValueError("timestep_sampler.num_steps must equal the number of variables D")
        self.register_buffer(
            "step_losses", torch.full((self.num_vars,), float("nan"), dtype=torch.float64)
        )

    # ---- the one place where inputs are masked -----------------------------------------------

    def _net_inputs(self, x: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Unknown variables never reach the network: they are replaced by the absorbing state.
        x_in = torch.where(known, x, torch.full_like(x, self.absorbing_state))
        t = known.flatten(1).sum(1)
        return x_in, t

    def predict_logits(
        self, x: torch.Tensor, known: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, *data_shape, K) of every variable given the known ones.

        With ``positions`` (B, n) of flat variable indices, only those variables' logits come back,
        shape (B, n, K) (cheaper with a network that supports it, such as the U-Net).

        This is where masking happens: values of ``x`` where ``known`` is False are replaced by the
        absorbing state before the network sees them, so they cannot leak into the prediction.

        Example:
            >>> from ardm.nets import build_net
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> x = torch.zeros(1, 1, 4, 4, dtype=torch.long)
            >>> m.predict_logits(x, torch.zeros_like(x, dtype=torch.bool)).shape
            torch.Size([1, 1, 4, 4, 4])
        """
        x = self._check_x(x)
        known = self._check_known(x, known)
        x_in, t = self._net_inputs(x, known)
        if positions is None:
            return self._run_net(self.net, x_in, known, t)
        if positions.ndim != 2 or positions.shape[0] != x.shape[0]:
            raise ValueError(f"positions must have shape (B, n), got {tuple(positions.shape)}")
        positions = positions.to(self.device, torch.long)
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.num_vars):
            raise ValueError(f"positions must be in 0..{self.num_vars - 1}")
        if "positions" in inspect.signature(self.net.forward).parameters:
            return self._run_net(self.net, x_in, known, t, positions=positions)
        logits = self._run_net(self.net, x_in, known, t).flatten(1, -2)  # a net without the fast path
        return logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))

    def _target_log_probs(self, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """log p(x_i | x_known) at every variable, (B, *data_shape), in nats, float32.

        Uses the network's ``target_log_probs`` fast path when it has one; otherwise
        ``log_softmax`` of :meth:`predict_logits`. Both mask through ``_net_inputs``.
        """
        fast = getattr(self.net, "target_log_probs", None)
        if fast is None:
            logits = self.predict_logits(x, known)
            return F.log_softmax(logits.float(), dim=-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        x_in, t = self._net_inputs(x, known)
        return self._run_net(fast, x_in, known, t, x).float()

    # ---- objective ----------------------------------------------------------------------------

    def training_loss(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The OA-ARDM training loss (paper Algorithm 1), a scalar in bits per dimension.

        ``loss = mean_b w_b * L_b / (D ln 2) + ce_weight * CE`` where ``L_b = D/(D-t) * sum over
        unknown of -log p`` (Eq. 4) and ``CE`` is the plain cross-entropy in bits per dimension
        averaged over *all* variables, known ones included (the paper's small auxiliary term; the
        known ones are trivial to predict from the input and mostly keep the outputs sharp).

        Returns the loss and ``{"bpd": the unbiased ARDM bound estimate (detached),
        "ce_bpd": the auxiliary term (detached)}``.

        Example:
            >>> from ardm.nets import build_net
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> loss, stats = m.training_loss(torch.zeros(3, 1, 4, 4, dtype=torch.long))
            >>> bool(loss > 0)
            True
        """
        x = self._check_x(x)
        batch = x.shape[0]
        t, weights = self.timestep_sampler.sample(batch, device=self.device, generator=generator)
        ranks = self.random_ranks(batch, generator)
        known = (ranks < t.unsqueeze(1)).reshape(x.shape)  # known = sigma(0..t-1)
        log_p = self._target_log_probs(x, known).flatten(1)  # (B, D) nats
        unknown = ~known.flatten(1)
        nll_unknown = -(log_p * unknown).sum(1)
        # Eq. 4: D / (D - t) reweights the sum over the D - t unknown variables.
        bound = nll_unknown * (self.num_vars / (self.num_vars - t).to(log_p.dtype))
        bpd = bound / (self.num_vars * LN2)
        ce_bpd = -log_p.mean(1) / LN2
        loss = (weights * bpd).mean() + self.ce_weight * ce_bpd.mean()
        return loss, {"bpd": bpd.detach().mean(), "ce_bpd": ce_bpd.detach().mean()}

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Same as :meth:`training_loss` (so that DistributedDataParallel can wrap the model)."""
        return self.training_loss(x, generator)

    # ---- likelihood ---------------------------------------------------------------------------

    @torch.no_grad()
    def nll_bpd(
        self,
        x: torch.Tensor,
        budget: int | None = None,
        order: np.ndarray | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        policy: np.ndarray | list[int] | None = None,
        step_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unbiased one-call estimate of the negative ELBO in bits per dimension, per item (B,).

        The model is the k-step parallel one of ``policy`` (default: ``self.policy(budget)``; budget
        None means all D steps). Pick a policy step i uniformly (one of k); its ``n_i`` variables
        are predicted in parallel given the ``t_i`` known ones, so

            -log p(x) = sum_i sum_{v in step i} -log p(x_v | x_known_i)
                      = E_i [ k * sum_{v in step i} -log p(x_v | x_known_i) ].

        With a random order (``order`` None), the step's variables are a uniformly random subset of
        size n_i of the D - t_i unknown ones, so averaging over that subset gives the lower-variance
        ``k * n_i / (D - t_i) * sum_{unknown} -log p``; for k = D this is the training bound
        D/(D-t) * sum. With a fixed ``order`` it estimates -log2 p(x | order, policy), the number of
        bits that :meth:`exact_nll_bits` computes exactly (divided by D). ``step_index`` (B,) fixes
        i per item instead of drawing it (to enumerate the expectation exactly).

        Example:
            >>> from ardm.nets import build_net
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> m.nll_bpd(torch.zeros(2, 1, 4, 4, dtype=torch.long)).shape
            torch.Size([2])
        """
        x = self._check_x(x)
        batch = x.shape[0]
        steps = self._check_policy(policy if policy is not None else self.policy(budget))
        k = len(steps)
        starts = torch.tensor(steps, device=self.device)
        ends = torch.tensor(steps[1:] + [self.num_vars], device=self.device)
        if step_index is None:
            i = torch.randint(0, k, (batch,), generator=generator).to(self.device)
        else:
            i = torch.as_tensor(step_index, dtype=torch.long, device=self.device)
            if i.shape != (batch,) or int(i.min()) < 0 or int(i.max()) >= k:
                raise ValueError(f"step_index must have shape ({batch},) and values in 0..{k - 1}")
        t_i, end_i = starts[i].unsqueeze(1), ends[i].unsqueeze(1)
        if order is None:
            ranks = self.random_ranks(batch, generator)
        else:
            ranks = self._check_order(order, batch)
        known = ranks < t_i
        log_p = self._target_log_probs(x, known.reshape(x.shape)).flatten(1).double()
        if order is None:
            frac = (end_i - t_i).double() / (self.num_vars - t_i).double()
            nll = -(log_p * ~known).sum(1, keepdim=True) * frac
        else:
            in_step = (ranks >= t_i) & (ranks < end_i)
            nll = -(log_p * in_step).sum(1, keepdim=True)
        return (k * nll.squeeze(1) / (self.num_vars * LN2)).float()

    @torch.no_grad()
    def exact_nll_bits(
        self,
        x: torch.Tensor,
        order: np.ndarray | torch.Tensor,
        policy: np.ndarray | list[int] | None = None,
    ) -> torch.Tensor:
        """Exact -log2 p(x | order, policy) per item (B,), float64: one network call per policy step.

        This is the code length that lossless compression with the same order and policy achieves
        (up to quantization of the probabilities). ``policy`` None means all D steps.

        Example:
            >>> from ardm.nets import build_net
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> x = torch.zeros(1, 1, 4, 4, dtype=torch.long)
            >>> bits = m.exact_nll_bits(x, list(range(16))[::-1], [0, 2, 9])
            >>> bits.shape
            torch.Size([1])
        """
        x = self._check_x(x)
        batch = x.shape[0]
        ranks = self._check_order(order, batch)
        steps = self._check_policy(policy if policy is not None else list(range(self.num_vars)))
        bounds = steps + [self.num_vars]
        total = torch.zeros(batch, dtype=torch.float64, device=self.device)
        for start, end in zip(bounds[:-1], bounds[1:]):
            known = (ranks < start).reshape(x.shape)
            log_p = self._target_log_probs(x, known).flatten(1)
            in_step = (ranks >= start) & (ranks < end)
            total -= (log_p.double() * in_step).sum(1)
        return total / LN2

    # ---- generation ---------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        n: int,
        budget: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        policy: np.ndarray | list[int] | None = None,
        order: np.ndarray | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate ``n`` data points in ``len(policy)`` network calls (paper Section 3.2).

        Step i draws the variables of ranks t_i .. t_{i+1}-1 of each item's order in parallel from
        the network's prediction given the t_i known ones. Orders are random per item unless given.

        Example:
            >>> from ardm.nets import build_net
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> m.sample(2, policy=[0, 8]).shape
            torch.Size([2, 1, 4, 4])
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        steps = self._check_policy(policy if policy is not None else self.policy(budget))
        bounds = steps + [self.num_vars]
        ranks = self.random_ranks(n, generator) if order is None else self._check_order(order, n)
        x = torch.zeros(n, self.num_vars, dtype=torch.long, device=self.device)
        order = ranks.argsort(dim=1)  # order[:, r] = the variable generated r-th
        for start, end in zip(bounds[:-1], bounds[1:]):
            known = (ranks < start).reshape(n, *self.data_shape)
            positions = order[:, start:end]  # only this step's variables need logits
            logits = self.predict_logits(x.reshape(n, *self.data_shape), known, positions)
            probs = F.softmax(logits.float() / temperature, dim=-1)  # (n, end - start, K)
            draws = torch.multinomial(probs.flatten(0, 1).cpu(), 1, generator=generator)
            x.scatter_(1, positions, draws.view(n, end - start).to(self.device))
        return x.reshape(n, *self.data_shape)

    # ---- per-step losses and policies ----------------------------------------------------------

    @torch.no_grad()
    def estimate_step_losses(
        self,
        data: torch.Tensor | Iterable[torch.Tensor],
        evals_per_step: int = 1,
        batch_size: int = 64,
        generator: torch.Generator | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Estimate L_t for every t in 0..D-1 on held-out data; store and return it (bits, float64).

        L_t = E[-log2 p(x_v | x_known)] for the variable v generated at step t, i.e. the mean over
        the D - t unknown variables given t known ones (paper Section 3.2). Stratified: t cycles
        over all D values, so every step gets ``evals_per_step`` evaluations (data items cycle
        too), each a fresh random order.

        Example:
            >>> from ardm.nets import build_net
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> m.estimate_step_losses(torch.zeros(3, 1, 4, 4, dtype=torch.long)).shape
            torch.Size([16])
        """
        sums = torch.zeros(self.num_vars, dtype=torch.float64, device=self.device)
        batches = self._stratified_batches(data, self.num_vars, evals_per_step, batch_size)
        for t, x in batches:
            ranks = self.random_ranks(x.shape[0], generator)
            known = ranks < t.unsqueeze(1)
            log_p = self._target_log_probs(x, known.reshape(x.shape)).flatten(1).double()
            mean_unknown = -(log_p * ~known).sum(1) / (self.num_vars - t).double()
            sums.index_add_(0, t, mean_unknown / LN2)
            if progress is not None:
                progress(x.shape[0])
        self.step_losses.copy_(sums / evals_per_step)
        return self.step_losses.clone()

    def has_step_losses(self) -> bool:
        """Whether :meth:`estimate_step_losses` (or a loaded checkpoint) has set the losses."""
        return bool(torch.isfinite(self.step_losses).all())

    def policy(self, budget: int | None = None) -> np.ndarray:
        """The budget-optimal policy (start steps, int64) for at most ``budget`` network calls.

        Runs the DP of ``ardm._core.optimal_policy`` on the step losses sorted in descending order,
        as the paper does (Section 3.2), so that estimation noise in L_t is not exploited. Budget
        None or >= D gives all D steps (no step losses needed).

        Example:
            >>> from ardm.nets import build_net
            >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
            >>> m.policy().tolist() == list(range(16))
            True
        """
        if budget is None or budget >= self.num_vars:
            return np.arange(self.num_vars, dtype=np.int64)
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        if not self.has_step_losses():
            raise ValueError(
                "step losses are not estimated; run estimate_step_losses(held_out_data) first"
            )
        from ardm import _core

        losses = np.sort(self.step_losses.cpu().numpy())[::-1].copy()
        return np.asarray(_core.optimal_policy(losses, int(budget)), dtype=np.int64)

    def naive_policy(self, budget: int) -> np.ndarray:
        """Evenly spaced policy with ``budget`` steps (the paper's baseline), via ``ardm._core``."""
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        from ardm import _core

        return np.asarray(_core.naive_policy(self.num_vars, min(int(budget), self.num_vars)))
