"""Portable generation orders of the Rust core: pinned vectors, permutations, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm._core import order_ranks, random_order, random_orders, step_positions

# Format vectors: SplitMix64-seeded xoshiro256**, Lemire's bounded integers, Fisher-Yates from
# the back. They must never change (the same vectors are pinned in rust/src/order.rs).
PINNED = {
    (10, 0): [7, 8, 3, 1, 5, 4, 2, 0, 9, 6],
    (10, 1): [3, 6, 1, 5, 0, 9, 2, 8, 4, 7],
}
PINNED_PREFIX = {
    (1000, 42): [904, 125, 916, 256, 881, 584, 665, 223],
    (3072, 2**64 - 1): [1227, 1505, 2075, 336, 1922, 103, 1490, 969],
}


def test_pinned_vectors():
    for (num_vars, seed), expected in PINNED.items():
        assert random_order(num_vars, seed).tolist() == expected
    for (num_vars, seed), expected in PINNED_PREFIX.items():
        assert random_order(num_vars, seed)[: len(expected)].tolist() == expected
    assert random_order(1, 123).tolist() == [0]
    assert random_order(0, 5).shape == (0,)


@settings(max_examples=100, deadline=None)
@given(num_vars=st.integers(0, 500), seed=st.integers(0, 2**64 - 1))
def test_random_order_is_a_deterministic_permutation(num_vars, seed):
    order = random_order(num_vars, seed)
    assert order.dtype == np.int64 and order.shape == (num_vars,)
    assert sorted(order.tolist()) == list(range(num_vars))
    np.testing.assert_array_equal(order, random_order(num_vars, seed))


def test_seeds_give_different_orders():
    orders = {tuple(random_order(50, seed)) for seed in range(100)}
    assert len(orders) == 100


def test_first_position_is_uniform():
    counts = np.bincount([random_order(4, seed)[0] for seed in range(4000)], minlength=4)
    assert np.all(np.abs(counts - 1000) < 150), counts


def test_batched_orders_match_single():
    seeds = [0, 1, 2, 99, 2**64 - 1]
    orders = random_orders(33, np.array(seeds, dtype=np.uint64))
    assert orders.shape == (5, 33) and orders.dtype == np.int64
    for row, seed in zip(orders, seeds):
        np.testing.assert_array_equal(row, random_order(33, seed))
    assert random_orders(10, []).shape == (0, 10)


def test_ranks_invert_the_order():
    order = random_order(100, 7)
    ranks = order_ranks(order)
    assert ranks.dtype == np.int64
    np.testing.assert_array_equal(ranks[order], np.arange(100))
    np.testing.assert_array_equal(order_ranks(order.astype(np.int32)), ranks)
    assert order_ranks([]).shape == (0,)


def test_step_positions_partition_the_order():
    order = random_order(20, 3)
    policy = [0, 5, 6, 12]
    parts = [step_positions(order, policy, step) for step in range(len(policy))]
    assert [len(p) for p in parts] == [5, 1, 6, 8]
    np.testing.assert_array_equal(np.concatenate(parts), order)
    assert step_positions([4, 2, 0, 1, 3], [0, 2], 1).tolist() == [0, 1, 3]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: random_order(5, -1), "seed must be at least 0"),
        (lambda: random_order(5, 2**64), "seed is too large"),
        (lambda: random_order(5, 1.0), "seed must be an integer"),
        (lambda: random_order(-2, 0), "num_vars must be at least 0"),
        (lambda: random_order(2.5, 0), "num_vars must be an integer"),
        (lambda: random_order(None, 0), "num_vars must be an integer"),
        (lambda: random_orders(5, [1, -1]), "negative"),
        (lambda: random_orders(5, [[1]]), "1-D"),
        (lambda: order_ranks([0, 2]), "out of range"),
        (lambda: order_ranks([1, 1]), "twice"),
        (lambda: order_ranks([0, -1]), "negative"),
        (lambda: order_ranks([0.0, 1.0]), "integers"),
        (lambda: order_ranks([[0, 1]]), "1-D"),
        (lambda: order_ranks("01"), "string"),
        (lambda: step_positions([], [0], 0), "empty"),
        (lambda: step_positions([1, 0], [0], 1), "out of range"),
        (lambda: step_positions([1, 0], [0], -1), "step must be at least 0"),
        (lambda: step_positions([1, 0], [1], 0), "start at 0"),
        (lambda: step_positions([1, 0], [0, 2], 0), "below"),
        (lambda: step_positions([1, 1], [0], 0), "twice"),
        (lambda: step_positions([1, 0], [], 0), "policy is empty"),
    ],
)
def test_bad_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
