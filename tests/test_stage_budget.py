"""Budgets across upscale stages (ardm.models.stage_budget) against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm.models import stage_budget as sb


def brute_cost(losses: np.ndarray, calls: int) -> float:
    """Least cost of a policy with at most ``calls`` steps, over every policy (losses sorted)."""
    d = len(losses)
    best = np.inf
    for k in range(1, min(calls, d) + 1):
        for rest in itertools.combinations(range(1, d), k - 1):
            bounds = [0, *rest, d]
            cost = sum((b - a) * losses[a] for a, b in zip(bounds[:-1], bounds[1:]))
            best = min(best, cost)
    return best


def brute_split(step_losses: np.ndarray, budget: int) -> float:
    losses = -np.sort(-step_losses, axis=1)
    s, d = losses.shape
    curves = [[brute_cost(row, k) for k in range(d + 1)] for row in losses]
    best = np.inf
    for split in itertools.product(range(1, d + 1), repeat=s):
        if sum(split) <= budget:
            best = min(best, sum(curves[i][k] for i, k in enumerate(split)))
    return best


loss_tables = st.integers(1, 3).flatmap(
    lambda s: st.integers(1, 6).flatmap(
        lambda d: st.lists(
            st.lists(st.floats(0, 10, allow_nan=False), min_size=d, max_size=d),
            min_size=s,
            max_size=s,
        )
    )
)


@settings(max_examples=80, deadline=None)
@given(table=loss_tables, extra=st.integers(0, 20))
def test_optimal_split_matches_brute_force(table: list[list[float]], extra: int) -> None:
    losses = np.array(table)
    s, d = losses.shape
    budget = s + extra % (s * d + 2)
    plan = sb.plan_stages(losses, budget)
    assert plan.budgets.sum() <= budget and np.all(plan.budgets >= 1) and np.all(plan.budgets <= d)
    assert all(len(p) <= k for p, k in zip(plan.policies, plan.budgets))
    assert plan.cost == pytest.approx(brute_split(losses, budget), rel=1e-9, abs=1e-9)
    # The exact min-plus program (used for non-convex curves) agrees.
    curves = sb.stage_budget_curves(losses)
    other = sb._split_min_plus(curves, budget)
    assert curves[np.arange(s), other].sum() == pytest.approx(plan.cost, rel=1e-9, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(table=loss_tables)
def test_curves_of_sorted_losses_are_convex(table: list[list[float]]) -> None:
    curves = sb.stage_budget_curves(np.array(table))
    assert all(sb._is_convex(c) for c in curves)
    for row, curve in zip(sb.sorted_step_losses(np.array(table)), curves):
        for k in range(1, len(row) + 1):
            assert curve[k] == pytest.approx(brute_cost(row, k), rel=1e-9, abs=1e-9)


def test_optimal_beats_or_ties_equal_split() -> None:
    rng = np.random.default_rng(0)
    losses = np.sort(rng.gamma(2.0, size=(3, 40)), axis=1)[:, ::-1] * np.array(
        [[5.0], [1.0], [0.1]]
    )
    for budget in (3, 7, 20, 60, 120):
        best = sb.plan_stages(losses, budget, "optimal")
        equal = sb.plan_stages(losses, budget, "equal")
        assert best.cost <= equal.cost + 1e-9
        assert equal.budgets.tolist() == sb.split_budget_equal(3, 40, budget).tolist()
    # The coarsest stage carries the most loss, so it gets the most calls.
    assert sb.split_budget_optimal(losses, 20).argmax() == 0


def test_full_budget_gives_all_steps() -> None:
    losses = np.ones((2, 5))
    plan = sb.plan_stages(losses, 100)
    assert plan.budgets.tolist() == [5, 5]
    assert plan.cost == pytest.approx(10.0)
    assert sb.split_budget_equal(2, 5, 100).tolist() == [5, 5]


def test_non_convex_curves_fall_back_to_exact_program() -> None:
    # Unsorted curves can be anything: feed the splitter a non-convex one directly.
    curves = np.array([[np.inf, 10.0, 9.0, 0.0], [np.inf, 5.0, 2.0, 1.0]])
    assert not sb._is_convex(curves[0])
    budgets = sb._split_min_plus(curves, 4)
    assert budgets.tolist() == [3, 1]


@pytest.mark.parametrize(
    "call",
    [
        lambda: sb.plan_stages(np.ones((2, 3)), 1),  # below one call per stage
        lambda: sb.plan_stages(np.ones((2, 3)), 2.5),
        lambda: sb.plan_stages(np.ones((2, 3)), True),
        lambda: sb.plan_stages(np.ones(3), 2),
        lambda: sb.plan_stages(np.full((2, 3), np.nan), 2),
        lambda: sb.plan_stages(-np.ones((2, 3)), 2),
        lambda: sb.plan_stages(np.ones((2, 3)), 2, split="greedy"),
        lambda: sb.stage_policies(np.ones((2, 3)), [1]),
        lambda: sb.stage_policies(np.ones((2, 3)), [1, 0]),
        lambda: sb.stage_costs(np.ones((2, 3)), [[0]]),
    ],
)
def test_bad_inputs_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
