"""Samplers for the ARDM step t (Hoogeboom et al. 2022, Algorithm 1, line 2: t ~ U(1, ..., D)).

A sampler returns ``(t, weights)`` like the timestep samplers of DiT / improved-diffusion: ``t`` is
the number of already known variables (0-based, so ``t`` in ``0..D-1``) and ``weights`` multiply the
per-item loss so that its expectation stays the uniform-t objective. Both samplers here draw every
item's ``t`` from the uniform marginal, so the weights are all one.

Example:
    >>> import torch
    >>> t, w = StratifiedSampler(784).sample(4, generator=torch.Generator().manual_seed(0))
    >>> t.shape, bool((w == 1).all())
    (torch.Size([4]), True)
"""

from __future__ import annotations

import abc

import torch

__all__ = ["TimestepSampler", "UniformSampler", "StratifiedSampler", "make_sampler"]


class TimestepSampler(abc.ABC):
    """Draws the number of known variables ``t`` for a batch, with importance weights."""

    def __init__(self, num_steps: int) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = int(num_steps)

    @abc.abstractmethod
    def sample(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``t`` (int64, shape (batch_size,), values in 0..num_steps-1) and float32 weights."""


class UniformSampler(TimestepSampler):
    """Independent ``t ~ U{0, ..., D-1}`` per item (the paper's Algorithm 1).

    Example:
        >>> t, w = UniformSampler(10).sample(3, generator=torch.Generator().manual_seed(1))
        >>> bool(((t >= 0) & (t < 10)).all())
        True
    """

    def sample(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.randint(0, self.num_steps, (batch_size,), generator=generator)
        return t.to(device), torch.ones(batch_size, device=device)


class StratifiedSampler(TimestepSampler):
    """Stratified (antithetic) ``t`` over the batch: one shared offset u, item i gets the quantile
    ``(i + u) / B`` of ``U{0..D-1}``, then the assignment to items is shuffled.

    Each item's ``t`` is still marginally uniform (a random stratum, uniform inside it), so the loss
    stays unbiased, but the batch covers the whole range of ``t``, which lowers the variance of the
    batch mean (the per-step losses differ by orders of magnitude between t = 0 and t = D - 1).

    Example:
        >>> t, _ = StratifiedSampler(100).sample(4, generator=torch.Generator().manual_seed(0))
        >>> sorted(int(v) // 25 for v in t)
        [0, 1, 2, 3]
    """

    def sample(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand((), generator=generator, dtype=torch.float64)
        quantiles = (torch.arange(batch_size, dtype=torch.float64) + u) / batch_size
        t = (quantiles * self.num_steps).floor().long().clamp_(0, self.num_steps - 1)
        t = t[torch.randperm(batch_size, generator=generator)]
        return t.to(device), torch.ones(batch_size, device=device)


def make_sampler(name: str, num_steps: int) -> TimestepSampler:
    """Build a sampler by name: ``"uniform"`` or ``"stratified"``.

    Example:
        >>> type(make_sampler("uniform", 5)).__name__
        'UniformSampler'
    """
    samplers: dict[str, type[TimestepSampler]] = {
        "uniform": UniformSampler,
        "stratified": StratifiedSampler,
    }
    if name not in samplers:
        raise ValueError(f"unknown timestep sampler {name!r}; choose one of {sorted(samplers)}")
    return samplers[name](num_steps)
