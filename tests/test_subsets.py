"""ardm.subsets: the evenly spaced subsets that evaluations and benchmarks measure on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ardm.subsets import evenly_spaced, evenly_spaced_indices


@given(st.integers(0, 5000), st.integers(0, 6000))
def test_indices_span_the_whole_range(total: int, count: int) -> None:
    picked = evenly_spaced_indices(total, count)
    assert len(picked) == (total if count == 0 else min(count, total))
    assert np.all(np.diff(picked) > 0)  # increasing, so distinct
    if len(picked) > 1:
        assert picked[0] == 0 and picked[-1] == total - 1  # never only the start of a split
    if 1 < count < total:  # gaps differ by at most one
        gaps = np.diff(picked)
        assert gaps.max() - gaps.min() <= 1


def test_tensors_arrays_and_lists_give_the_same_items() -> None:
    items = torch.arange(100) * 3
    picked = evenly_spaced(items, 7)
    assert picked.tolist() == evenly_spaced(items.numpy(), 7).tolist() == evenly_spaced(items.tolist(), 7)
    assert picked.tolist() == (items[evenly_spaced_indices(100, 7)]).tolist()
    assert evenly_spaced(items, None) is items


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="count >= 0"):
        evenly_spaced_indices(10, -1)
    with pytest.raises(TypeError, match="tensor, an array or a list"):
        evenly_spaced({1: 2, 3: 4}, 1)  # type: ignore[type-var]
