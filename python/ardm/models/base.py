"""What both ARDM kinds share: input checks, orders as ranks, and the device they live on.

``OrderAgnosticARDM`` and ``UpscaleARDM`` derive from ``ARDMBase``; neither derives from the
other, so code that must tell them apart (the codec's coding schedules) can use ``isinstance``.
Subclasses set ``num_classes``, ``data_shape``, ``num_vars`` and a ``step_losses`` buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["ARDMBase"]


class ARDMBase(nn.Module):
    """Shared checks and order bookkeeping of the ARDM models (see the module docstring)."""

    num_classes: int
    data_shape: tuple[int, ...]
    num_vars: int
    step_losses: torch.Tensor
    #: Network evaluations made so far, each one batched call (sampling reports it per budget).
    network_calls: int = 0

    def _run_net(self, fn: Callable[..., torch.Tensor], *args: object, **kwargs: object) -> torch.Tensor:
        """Call the network (``self.net`` or one of its methods) and count the call."""
        self.network_calls += 1
        return fn(*args, **kwargs)

    # ---- checks -------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.step_losses.device

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

    def _check_known(self, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        if not isinstance(known, torch.Tensor) or known.dtype != torch.bool:
            raise ValueError("known must be a bool tensor")
        if known.shape != x.shape:
            raise ValueError(f"known has shape {tuple(known.shape)}, x has {tuple(x.shape)}")
        return known.to(self.device)

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

    def _check_policy(self, policy: np.ndarray | torch.Tensor | list[int]) -> list[int]:
        p = [int(v) for v in np.asarray(policy, dtype=np.int64).reshape(-1)]
        if not p or p[0] != 0 or any(b <= a for a, b in zip(p, p[1:])) or p[-1] >= self.num_vars:
            raise ValueError(
                f"policy must be strictly increasing, start at 0 and stay below D={self.num_vars}"
            )
        return p

    def _arange(self, batch: int) -> torch.Tensor:
        return torch.arange(self.num_vars, device=self.device).unsqueeze(0).expand(batch, -1)

    def random_ranks(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ranks (B, D) of an independent uniformly random order per item, sigma ~ U(S_D).

        Example:
            >>> from ardm.nets import build_net
            >>> from ardm.ardm import OrderAgnosticARDM
            >>> m = OrderAgnosticARDM(build_net("tiny", 2, (1, 4, 4)), 2, (1, 4, 4))
            >>> sorted(m.random_ranks(1)[0].tolist()) == list(range(16))
            True
        """
        noise = torch.rand(batch, self.num_vars, generator=generator).to(self.device)
        order = noise.argsort(dim=1)  # sigma as a random permutation (Algorithm 1, line 3)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, self._arange(batch))
        return ranks

    def _stratified_batches(
        self,
        data: torch.Tensor | Iterable[torch.Tensor],
        num_steps: int,
        evals_per_step: int,
        batch_size: int,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Check held-out data, then yield batches ``(t, x)`` in which every step t in
        0..num_steps-1 appears ``evals_per_step`` times (data items cycle too): the stratified
        sweep behind ``estimate_step_losses``."""
        if evals_per_step < 1 or batch_size < 1:
            raise ValueError("evals_per_step and batch_size must be >= 1")
        if not isinstance(data, torch.Tensor):
            data = torch.cat([torch.as_tensor(d) for d in data])
        data = self._check_x(data)
        if data.shape[0] == 0:
            raise ValueError("need at least one data point to estimate step losses")
        total = num_steps * evals_per_step
        t_all = torch.arange(total, device=self.device) % num_steps
        item_all = torch.arange(total, device=self.device) % data.shape[0]
        for lo in range(0, total, batch_size):
            yield t_all[lo : lo + batch_size], data[item_all[lo : lo + batch_size]]
