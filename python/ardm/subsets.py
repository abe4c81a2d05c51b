"""Evenly spaced subsets: how evaluations and benchmarks pick part of a split.

Never the first N items: the start of a split is not like the rest of it (the first 100
Fashion-MNIST test images compress 4% better than the last 500; the KJV test split starts in one
book and ends in another), so a subset spans the whole split, first and last item included.

Example:
    >>> evenly_spaced_indices(10, 4).tolist()
    [0, 3, 6, 9]
    >>> evenly_spaced(list("abcdefghij"), 3)
    ['a', 'e', 'j']
    >>> import torch
    >>> evenly_spaced(torch.arange(5), None).tolist()   # None, 0 or too many: all of it
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

__all__ = ["evenly_spaced_indices", "evenly_spaced"]

Items = TypeVar("Items", torch.Tensor, np.ndarray, list)


def evenly_spaced_indices(total: int, count: int | None) -> np.ndarray:
    """``count`` indices evenly spaced over ``range(total)``, 0 and ``total - 1`` among them,
    increasing and distinct (all of ``range(total)`` when ``count`` is None, 0 or >= total)."""
    if total < 0 or (count is not None and count < 0):
        raise ValueError(f"need total >= 0 and count >= 0, got total {total}, count {count}")
    if not count or count >= total:
        return np.arange(total, dtype=np.int64)
    return np.linspace(0, total - 1, count).round().astype(np.int64)


def evenly_spaced(items: Items, count: int | None) -> Items:
    """``count`` items evenly spaced over ``items`` (a tensor or array along its first axis, or
    a list), in order; ``items`` itself when ``count`` is None, 0 or >= ``len(items)``."""
    picked = evenly_spaced_indices(len(items), count)
    if len(picked) == len(items):
        return items
    if isinstance(items, torch.Tensor):
        return items[torch.from_numpy(picked)]
    if isinstance(items, np.ndarray):
        return items[picked]
    if isinstance(items, Sequence):
        return [items[i] for i in picked]
    raise TypeError(f"evenly_spaced takes a tensor, an array or a list, not {type(items).__name__}")
