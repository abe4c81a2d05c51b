"""Work split over the processes ``torchrun`` starts: which share is mine, and everyone's results.

Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`process_group` joins the job through
``torch.distributed`` (NCCL on CUDA, gloo on a CPU); in one process every function here is the
identity, so the same code runs both ways.

Shares are strided, like torch's ``DistributedSampler``: with W processes rank r takes items
r, r + W, r + 2W, ... (:func:`shard`). What must not depend on the split is keyed by the item's
global index, never by the rank: random draws come from :func:`keyed_generator` (seed, index)
and results come back in item order (:func:`gather_in_order`), so every number a sharded run
prints is the one a single process prints.

Example (one process: all items are mine):
    >>> shard(list("abcde"))
    ['a', 'b', 'c', 'd', 'e']
    >>> shard(range(5), Dist(rank=1, world=2))
    range(1, 5, 2)
    >>> gather_in_order({0: "x", 1: "y"})
    ['x', 'y']
    >>> float(torch.rand(1, generator=keyed_generator(0, 3))) == float(
    ...     torch.rand(1, generator=keyed_generator(0, 3)))
    True
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Dist", "current", "process_group", "barrier", "shard", "keyed_generator",
           "gather_in_order", "all_mean", "sum_over_ranks"]

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world`` processes (one process: 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """``name`` ("cpu", "cuda"), on a CUDA machine the GPU of this process (its local rank)."""
        if name.startswith("cuda") and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return torch.device(name)


def current() -> Dist:
    """The job this process belongs to now (0 of 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


@contextmanager
def process_group(device: str = "cpu") -> Iterator[Dist]:
    """Join the torchrun job for the body (``WORLD_SIZE`` > 1), else do nothing. The body starts
    on every rank once all have joined.

    NCCL when ``device`` is CUDA (each process on the GPU of its ``LOCAL_RANK``), gloo otherwise.
    A group that is already up (a caller's own) is used and left up.

    Example:
        >>> with process_group() as d:
        ...     d.rank, d.world
        (0, 1)
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Dist()
        return
    if dist.is_initialized():
        barrier()
        yield current()
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        barrier()  # the body starts once every process has joined (and done what came first)
        yield current()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank is here (one process: return)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "nccl":  # on this process's GPU, not a guessed one
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def shard(items: Sequence[T], d: Dist | None = None) -> Sequence[T]:
    """This rank's share of ``items``: every world-th one from its rank (strided)."""
    d = d or current()
    return items[d.rank :: d.world]


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of non-negative ints (e.g. seed, repeat, chunk index):
    draws that depend on what is computed, not on which process computes it."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed)


def gather_in_order(mine: dict[int, T], d: Dist | None = None) -> list[T]:
    """Every rank's ``{index: result}`` merged, as a list in index order, on every rank.

    Objects go through ``all_gather_object`` (pickled; move tensors to the CPU first), so results
    are the very values each rank computed: sums over them in a fixed order are the same as in
    one process.
    """
    d = d or current()
    if d.world > 1:
        parts: list[Any] = [None] * d.world
        dist.all_gather_object(parts, mine)
        mine = {k: v for part in parts for k, v in part.items()}
    return [mine[k] for k in sorted(mine)]


def all_mean(values: torch.Tensor, d: Dist | None = None) -> torch.Tensor:
    """The mean over ranks of ``values`` (same shape everywhere); one process: ``values``.

    Example:
        >>> all_mean(torch.tensor([1.0, 3.0])).tolist()
        [1.0, 3.0]
    """
    d = d or current()
    if d.world == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / d.world


def sum_over_ranks(*values: int) -> tuple[int, ...]:
    """Each of ``values`` summed over the ranks, on every rank (exact for ints; one process:
    ``values``).

    Example:
        >>> sum_over_ranks(3, 4)
        (3, 4)
    """
    d = current()
    if d.world == 1:
        return values
    parts = gather_in_order({d.rank: values}, d)
    return tuple(sum(column) for column in zip(*parts))
