"""The budget DP of the Rust core (paper Sec. 4): optimality, the policy contract, bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm._core import budget_curve, naive_policy, optimal_policy, policy_cost

# Sorted losses take the price search, whose cost matches the curve up to rounding (the same
# least cost, summed over a possibly different policy of equal cost); unsorted ones are exact.
RTOL = 1e-11


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
        assert policy_cost(losses, policy) == cost_left_to_right(losses, policy.tolist())
        layers = optimal_policy(losses, budget, method="layers")
        if all(a >= b for a, b in zip(losses, losses[1:])):  # the price search
            assert policy_cost(losses, policy) == pytest.approx(entry, rel=RTOL, abs=1e-300)
            assert policy_cost(losses, layers) == pytest.approx(entry, rel=RTOL, abs=1e-300)
        else:
            assert policy_cost(losses, policy) == entry
            assert np.array_equal(policy, layers)


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
        if sort:
            assert policy_cost(losses, policy) == pytest.approx(curve[min(budget, 300)], rel=RTOL)
        else:
            assert policy_cost(losses, policy) == curve[min(budget, 300)]


def sorted_loss_cases(rng: np.random.Generator, num_steps: int):
    """Sorted losses of many shapes, each a hard case for the price search in its own way."""
    t = np.arange(num_steps)
    yield "realistic", realistic_losses(num_steps, int(rng.integers(1 << 30)))
    yield "uniform", rng.random(num_steps) * 3
    yield "small integers (exact ties)", rng.integers(0, 4, num_steps).astype(float)
    head = num_steps // 3
    yield "zero tail", np.concatenate([rng.random(head) + 1, np.zeros(num_steps - head)])
    yield "huge dynamic range", 10.0 ** rng.uniform(-100, 100, num_steps)
    # L[t] = D - t: the curve is straight between D/(q+1) and D/q calls (exact integers), so
    # one price fits a whole stretch and the budgets inside it are spliced.
    yield "linear integers (straight curve)", (num_steps - t).astype(float)
    yield "equal", np.full(num_steps, 1.5)
    yield "two levels", np.where(t < num_steps // 5, 2.0, 0.5)


def check_price_policy(losses: np.ndarray, curve: np.ndarray, budget: int, case: str) -> None:
    num_steps = len(losses)
    policy = optimal_policy(losses, budget)
    assert policy.dtype == np.int64 and 1 <= len(policy) <= budget, case
    assert policy[0] == 0 and np.all(np.diff(policy) > 0) and policy[-1] < num_steps, case
    cost, entry = policy_cost(losses, policy), curve[min(budget, num_steps)]
    tolerance = RTOL * entry + 1e-13 * curve[1]
    assert abs(cost - entry) <= tolerance, f"{case}, budget {budget}: {cost} vs {entry}"
    # The fewest calls among equal costs: one call fewer costs more. (Checked where costs are
    # exact; elsewhere rounding can make a real difference vanish, e.g. 1e46 + 1e-69.)
    if len(policy) > 1 and np.all(losses == np.round(losses * 2) / 2):
        assert curve[len(policy) - 1] > entry, f"{case}, budget {budget}"


@pytest.mark.parametrize("num_steps", [1, 2, 3, 17, 64, 250])
def test_price_search_matches_the_curve_at_every_budget(num_steps):
    rng = np.random.default_rng(num_steps)
    for case, losses in sorted_loss_cases(rng, num_steps):
        losses = np.sort(losses)[::-1].copy()
        curve = budget_curve(losses)
        for budget in range(1, num_steps + 2):
            check_price_policy(losses, curve, budget, case)


def test_price_search_matches_the_curve_at_larger_sizes():
    rng = np.random.default_rng(2000)
    for num_steps in (999, 2000):
        for case, losses in sorted_loss_cases(rng, num_steps):
            losses = np.sort(losses)[::-1].copy()
            curve = budget_curve(losses)
            spread = np.geomspace(40, num_steps, 60).astype(int)
            budgets = np.unique(np.concatenate([np.arange(1, 40), spread, [num_steps - 1]]))
            for budget in budgets:
                check_price_policy(losses, curve, int(budget), case)


@settings(max_examples=100, deadline=None)
@given(
    losses=st.lists(
        st.one_of(st.just(0.0), st.integers(0, 5).map(float), st.floats(0.0, 1e6)),
        min_size=1,
        max_size=60,
    )
)
def test_price_search_matches_the_layers(losses):
    losses = sorted(losses, reverse=True)
    curve = budget_curve(losses)
    for budget in range(1, len(losses) + 1):
        price = policy_cost(losses, optimal_policy(losses, budget, method="price"))
        layers = policy_cost(losses, optimal_policy(losses, budget, method="layers"))
        tolerance = RTOL * curve[budget] + 1e-13 * curve[1]
        assert abs(price - layers) <= tolerance and abs(price - curve[budget]) <= tolerance


def test_methods():
    losses = realistic_losses(500)
    for budget in (1, 7, 60, 499):
        auto = optimal_policy(losses, budget)
        assert np.array_equal(auto, optimal_policy(losses, budget, method="price"))
        assert np.array_equal(auto, optimal_policy(losses, budget, "auto"))
        # The same input gives the same policy every time (the codec replans on decode).
        assert np.array_equal(auto, optimal_policy(losses.copy(), budget))
    unsorted = [1.0, 3.0, 2.0]
    assert np.array_equal(optimal_policy(unsorted, 2), optimal_policy(unsorted, 2, method="layers"))
    with pytest.raises(ValueError, match="descending"):
        optimal_policy(unsorted, 2, method="price")
    with pytest.raises(ValueError, match="unknown policy method"):
        optimal_policy(losses, 2, method="fast")
    with pytest.raises(ValueError, match="method must be a string"):
        optimal_policy(losses, 2, method=1)


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


def misaligned(values, dtype) -> np.ndarray:
    """A C-contiguous array whose data starts one byte past an aligned address."""
    raw = np.zeros(np.dtype(dtype).itemsize * len(values) + 1, np.uint8)
    array = raw[1:].view(dtype)
    array[:] = values
    assert array.flags.c_contiguous and not array.flags.aligned
    return array


def test_misaligned_arrays_are_copied():
    losses = misaligned([4.0, 3.0, 2.0, 1.0], np.float64)
    assert budget_curve(losses).tolist() == budget_curve([4.0, 3.0, 2.0, 1.0]).tolist()
    assert optimal_policy(losses, 2).tolist() == [0, 2]
    assert policy_cost(losses, misaligned([0, 2], np.int64)) == 12.0
    assert policy_cost(losses, misaligned([0, 2], np.uint64)) == 12.0


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
