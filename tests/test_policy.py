"""The budget DP of the Rust core (paper Sec. 4): optimality, the policy contract, bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm._core import budget_curve, naive_policy, optimal_policy, policy_cost


def cost_left_to_right(losses, policy) -> float:
    """The cost exactly as the core accumulates it: left to right from 0.0."""
    ends = list(policy[1:]) + [len(losses)]
    cost = 0.0
    for start, end in zip(policy, ends):
        cost += (end - start) * float(losses[start])
    return cost


def brute_force_curve(losses) -> list[float]:
    """Least cost with at most k calls, by enumerating every policy."""
    n = len(losses)
    exact = [math.inf] * (n + 1)
    for k in range(1, n + 1):
        for rest in itertools.combinations(range(1, n), k - 1):
            exact[k] = min(exact[k], cost_left_to_right(losses, (0, *rest)))
    return list(itertools.accumulate(exact, min))


losses_lists = st.lists(
    st.one_of(
        st.just(0.0),
        st.integers(0, 3).map(float),
        st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(losses=losses_lists, sort=st.booleans())
def test_dp_matches_brute_force(losses, sort):
    if sort:
        losses = sorted(losses, reverse=True)
    curve = budget_curve(losses)
    expected = brute_force_curve(losses)
    assert curve.dtype == np.float64 and curve.shape == (len(losses) + 1,)
    assert curve[0] == math.inf
    np.testing.assert_allclose(curve[1:], expected[1:], rtol=1e-12, atol=0.0)
    for budget in range(1, len(losses) + 2):
        policy = optimal_policy(losses, budget)
        assert policy.dtype == np.int64
        assert 1 <= len(policy) <= budget
        assert policy[0] == 0 and np.all(np.diff(policy) > 0) and policy[-1] < len(losses)
        entry = curve[min(budget, len(losses))]
        assert policy_cost(losses, policy) == entry
        assert cost_left_to_right(losses, policy.tolist()) == entry


def realistic_losses(num_steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    known = np.arange(num_steps) / num_steps
    losses = 0.3 + 4.5 * (1.0 - known) ** 2 + 0.02 * rng.random(num_steps)
    return np.sort(losses)[::-1]


def test_curve_is_non_increasing_and_ends_at_the_sum():
    losses = realistic_losses(400)
    curve = budget_curve(losses)
    assert np.all(np.diff(curve[1:]) <= 0)
    assert curve[1] == 400 * losses[0]
    assert curve[-1] == pytest.approx(losses.sum(), rel=1e-12)


def test_unsorted_curve_is_non_increasing():
    losses = np.random.default_rng(1).random(200)
    curve = budget_curve(losses)
    assert np.all(np.diff(curve[1:]) <= 0)


@pytest.mark.parametrize("sort", [True, False])
def test_policies_are_exact_for_many_budgets(sort):
    losses = np.random.default_rng(2).random(300) * 3
    if sort:
        losses = np.sort(losses)[::-1]
    curve = budget_curve(losses)
    for budget in (1, 2, 5, 20, 50, 299, 300, 10_000):
        policy = optimal_policy(losses, budget)
        assert len(policy) <= budget
        assert policy_cost(losses, policy) == curve[min(budget, 300)]


def test_optimal_beats_naive():
    losses = realistic_losses(1000)
    for budget in (10, 50, 100):
        optimal = policy_cost(losses, optimal_policy(losses, budget))
        naive = policy_cost(losses, naive_policy(1000, budget))
        assert optimal <= naive


def test_accepts_any_real_array_like():
    expected = budget_curve([3.0, 2.0, 1.0])
    for like in (
        [3, 2, 1],
        (3.0, 2.0, 1.0),
        np.array([3, 2, 1], np.int32),
        np.array([3, 2, 1], np.float32),
        np.array([3.0, 0, 2.0, 0, 1.0])[::2],
    ):
        np.testing.assert_array_equal(budget_curve(like), expected)
    assert optimal_policy([4.0, 1.0, 1.0, 1.0], np.int64(2)).tolist() == [0, 1]
    assert policy_cost([3.0, 2.0, 1.0], np.array([0, 2], np.uint8)) == 7.0


def test_naive_policy():
    assert naive_policy(10, 1).tolist() == [0]
    assert naive_policy(10, 4).tolist() == [0, 2, 5, 7]
    assert naive_policy(10, 10).tolist() == list(range(10))
    assert naive_policy(4, 100).tolist() == [0, 1, 2, 3]
    for num_steps, budget in [(3072, 20), (3072, 3071), (7, 3)]:
        policy = naive_policy(num_steps, budget)
        assert policy.dtype == np.int64
        assert len(policy) == min(budget, num_steps)
        assert policy[0] == 0 and np.all(np.diff(policy) > 0) and policy[-1] < num_steps


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: budget_curve([]), "empty"),
        (lambda: budget_curve([1.0, float("nan")]), r"step_losses\[1\] is NaN"),
        (lambda: budget_curve([1.0, float("inf")]), "not finite"),
        (lambda: budget_curve([-float("inf")]), "not finite"),
        (lambda: budget_curve([1.0, 2.0, -0.5]), r"step_losses\[2\] = -0.5 is negative"),
        (lambda: budget_curve([1e308, 1e308]), "overflow"),
        (lambda: budget_curve("abc"), "string"),
        (lambda: budget_curve([[1.0, 2.0]]), "1-D"),
        (lambda: budget_curve(3.0), "1-D"),
        (lambda: budget_curve([1.0, None]), "dtype object"),
        (lambda: budget_curve(np.array([1 + 1j])), "complex"),
        (lambda: budget_curve([True, False]), "dtype bool"),
        (lambda: budget_curve([1.0, [2.0]]), "step_losses"),
        (lambda: optimal_policy([1.0], 0), "budget must be at least 1"),
        (lambda: optimal_policy([1.0], -3), "budget must be at least 1"),
        (lambda: optimal_policy([1.0], 1.5), "budget must be an integer"),
        (lambda: optimal_policy([1.0], "2"), "budget must be an integer"),
        (lambda: optimal_policy([1.0], True), "budget must be an integer"),
        (lambda: optimal_policy([1.0], 2**70), "budget is too large"),
        (lambda: policy_cost([1.0, 1.0], []), "policy is empty"),
        (lambda: policy_cost([1.0, 1.0], [1]), "start at 0"),
        (lambda: policy_cost([1.0, 1.0, 1.0], [0, 2, 1]), "strictly increasing"),
        (lambda: policy_cost([1.0, 1.0, 1.0], [0, 0]), "strictly increasing"),
        (lambda: policy_cost([1.0, 1.0], [0, 2]), "below"),
        (lambda: policy_cost([1.0, 1.0], [0, -1]), "negative"),
        (lambda: policy_cost([1.0, 1.0], [0.0, 1.0]), "integers"),
        (lambda: naive_policy(0, 1), "num_steps must be at least 1"),
        (lambda: naive_policy(5, 0), "budget must be at least 1"),
        (lambda: naive_policy(5.0, 2), "num_steps must be an integer"),
    ],
)
def test_bad_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_docstrings_have_examples():
    for fn in (budget_curve, optimal_policy, policy_cost, naive_policy):
        assert fn.__doc__ and ">>>" in fn.__doc__
