"""Budgets across upscale stages (ardm.models.stage_budget) against brute force."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm import _core
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


def greedy_split(curves: np.ndarray, budget: int) -> np.ndarray:
    """The previous splitter, kept as the reference: from one call per stage, give each further
    call to the stage whose curve drops most (exact for convex curves); ties to earlier stages."""
    num_stages, num_steps = curves.shape[0], curves.shape[1] - 1
    budgets = np.ones(num_stages, dtype=np.int64)
    heap = [(-(curves[s, 1] - curves[s, 2]), s) for s in range(num_stages) if num_steps > 1]
    heapq.heapify(heap)
    for _ in range(budget - num_stages):
        if not heap:
            break
        _, s = heapq.heappop(heap)
        budgets[s] += 1
        k = budgets[s]
        if k < num_steps:
            heapq.heappush(heap, (-(curves[s, k] - curves[s, k + 1]), s))
    return budgets


def min_plus_cost(curves: np.ndarray, budget: int) -> float:
    """The least sum of curve entries over all splits with at most ``budget`` calls, for any
    curves (convex or not): min-plus convolution stage by stage."""
    best = np.zeros(1)
    for curve in curves:
        nxt = np.full(len(best) + len(curve) - 1, np.inf)
        for k in range(1, len(curve)):
            nxt[k : k + len(best)] = np.minimum(nxt[k : k + len(best)], best + curve[k])
        best = nxt
    return float(best[: budget + 1].min())


def is_convex(curve: np.ndarray) -> bool:
    """Whether the marginal gains c(k) - c(k+1), k >= 1, never increase (up to rounding)."""
    gains = curve[1:-1] - curve[2:]
    slack = 1e-9 * max(1.0, float(curve[1]))
    return bool(np.all(gains[1:] <= gains[:-1] + slack))


def check_plan(losses: np.ndarray, budget: int, plan: sb.StagePlan) -> None:
    s, d = losses.shape
    assert plan.budgets.dtype == np.int64 and plan.budgets.shape == (s,)
    assert plan.budgets.sum() == min(budget, s * d)
    assert np.all(plan.budgets >= 1) and np.all(plan.budgets <= d)
    for p, k in zip(plan.policies, plan.budgets):
        assert p.dtype == np.int64 and 1 <= len(p) <= k
        assert p[0] == 0 and np.all(np.diff(p) > 0) and p[-1] < d
    assert plan.cost == pytest.approx(sb.stage_costs(losses, plan.policies).sum(), rel=1e-12)


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
    check_plan(losses, budget, plan)
    assert plan.cost == pytest.approx(brute_split(losses, budget), rel=1e-9, abs=1e-9)
    # The greedy split over whole curves (the previous method) and the min-plus program agree.
    curves = sb.stage_budget_curves(losses)
    greedy = greedy_split(curves, budget)
    assert curves[np.arange(s), greedy].sum() == pytest.approx(plan.cost, rel=1e-9, abs=1e-9)
    assert min_plus_cost(curves, budget) == pytest.approx(plan.cost, rel=1e-9, abs=1e-9)
    assert np.array_equal(sb.split_budget_optimal(losses, budget), plan.budgets)


@settings(max_examples=80, deadline=None)
@given(table=loss_tables)
def test_curves_of_sorted_losses_are_convex(table: list[list[float]]) -> None:
    curves = sb.stage_budget_curves(np.array(table))
    assert all(is_convex(c) for c in curves)
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


def stage_tables(rng: np.random.Generator, num_stages: int, num_steps: int):
    """(S, D) loss tables of many shapes: coarse stages heavier, ties, zeros, straight curves."""
    t = np.arange(num_steps)
    scales = 0.4 ** np.arange(num_stages)[:, None]
    known = t / num_steps
    noise = 0.02 * rng.random((num_stages, num_steps))
    yield "realistic", scales * (0.3 + 4.5 * (1 - known) ** 2 + noise)
    yield "uniform", rng.random((num_stages, num_steps))
    yield "small integers", rng.integers(0, 4, (num_stages, num_steps)).astype(float)
    yield "linear integers", np.tile((num_steps - t).astype(float), (num_stages, 1))
    zero = rng.random((num_stages, 1)) < 0.5
    yield "zeros in some stages", np.where(zero, 0.0, rng.random((num_stages, num_steps)))
    yield "equal stages", np.tile(np.sort(rng.random(num_steps))[::-1], (num_stages, 1))


@pytest.mark.parametrize(
    ("num_stages", "num_steps"), [(1, 40), (2, 30), (3, 25), (4, 120), (8, 60)]
)
def test_common_price_split_matches_the_greedy_split(num_stages: int, num_steps: int) -> None:
    rng = np.random.default_rng(num_stages * 1000 + num_steps)
    for case, losses in stage_tables(rng, num_stages, num_steps):
        curves = sb.stage_budget_curves(losses)
        total = num_stages * num_steps
        budgets = {num_stages, num_stages + 1, total // 7, total // 3, total // 2, total - 1}
        budgets |= {total, total + 5, *rng.integers(num_stages, total + 1, 12).tolist()}
        for budget in sorted(b for b in budgets if b >= num_stages):
            plan = sb.plan_stages(losses, budget)
            check_plan(losses, budget, plan)
            reference = curves[np.arange(num_stages), greedy_split(curves, budget)].sum()
            scale = curves[:, 1].sum()
            assert abs(plan.cost - reference) <= 1e-11 * reference + 1e-13 * scale, (case, budget)
            # Each stage's policy is optimal for the calls it was given.
            for s, (p, k) in enumerate(zip(plan.policies, plan.budgets)):
                stage_cost = _core.policy_cost(sb.sorted_step_losses(losses)[s], p)
                assert stage_cost == pytest.approx(curves[s, k], rel=1e-11, abs=1e-13 * scale)


def test_split_at_audio_sizes_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    num_steps = 8000
    known = np.arange(num_steps) / num_steps
    noise = 0.02 * rng.random((8, num_steps))
    losses = (0.5 ** np.arange(8))[:, None] * (0.3 + 4.5 * (1 - known) ** 2 + noise)
    for budget in (8, 100, 2000, 30_000):
        plan = sb.plan_stages(losses, budget)
        again = sb.plan_stages(losses.copy(), budget)
        assert np.array_equal(plan.budgets, again.budgets)
        assert all(np.array_equal(a, b) for a, b in zip(plan.policies, again.policies))
        check_plan(losses, budget, plan)
    # Coarse stages carry more loss, so they get more calls.
    assert np.all(np.diff(sb.split_budget_optimal(losses, 2000)) <= 0)


def test_core_stage_policies_errors() -> None:
    with pytest.raises(ValueError, match="descending"):
        _core.optimal_stage_policies([[1.0, 2.0]], 1)
    with pytest.raises(ValueError, match="2-D"):
        _core.optimal_stage_policies([1.0, 2.0], 1)
    with pytest.raises(ValueError, match=r"stage 1: step_losses\[0\] is NaN"):
        _core.optimal_stage_policies([[1.0], [np.nan]], 2)
    with pytest.raises(ValueError, match="S = 2"):
        _core.optimal_stage_policies([[1.0], [1.0]], 1)
    with pytest.raises(ValueError, match="no stages"):
        _core.optimal_stage_policies(np.zeros((0, 3)), 1)
    with pytest.raises(ValueError, match="empty"):
        _core.optimal_stage_policies(np.zeros((2, 0)), 2)
    with pytest.raises(ValueError, match="budget must be an integer"):
        _core.optimal_stage_policies([[1.0]], 1.5)
    with pytest.raises(ValueError, match="dtype"):
        _core.optimal_stage_policies([["a"]], 1)


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
        lambda: sb.decreasing_fit([1.0, 2.0], [1.0]),
        lambda: sb.decreasing_fit([1.0, 2.0], [1.0, 0.0]),
        lambda: sb.decreasing_fit([[1.0, 2.0]], [[1.0, 1.0]]),
        lambda: sb.centered_decreasing_fit([1.0, 2.0], [1.0, -1.0]),
        lambda: sb.centered_decreasing_fit([1.0, 2.0], [1.0, 1.0], [0, 0]),
        lambda: sb.centered_decreasing_fit([1.0, 2.0], [1.0, 1.0], [0, 1, 2]),
        lambda: sb.smoothed_decreasing_fit([1.0, 2.0], [1.0, 0.0]),
        lambda: sb.smoothed_decreasing_fit([1.0, 2.0], [1.0]),
    ],
)
def test_bad_inputs_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 10), st.floats(0.1, 10)), min_size=1, max_size=7),
)
def test_decreasing_fit_is_the_nearest_non_increasing_sequence(pairs: list[tuple[float, float]]) -> None:
    values, weights = (np.array(v) for v in zip(*pairs))
    fit = sb.decreasing_fit(values, weights)
    assert fit.shape == values.shape and np.all(np.diff(fit) <= 1e-12)
    assert float(weights @ fit) == pytest.approx(float(weights @ values))  # pooling keeps the mass
    best = float(weights @ (fit - values) ** 2)
    # No other non-increasing sequence is nearer: try those made of the values' own levels.
    for levels in itertools.combinations_with_replacement(sorted(set(values), reverse=True), len(values)):
        assert float(weights @ (np.array(levels) - values) ** 2) >= best - 1e-9
    already = -np.sort(-values)
    assert np.array_equal(sb.decreasing_fit(already, weights), already)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 10), st.floats(0.1, 10), st.floats(0.5, 4)), min_size=1,
             max_size=12),
)
def test_centered_fit_is_non_increasing_through_the_pooled_means(
    triples: list[tuple[float, float, float]],
) -> None:
    values, weights, gaps = (np.array(v) for v in zip(*triples))
    positions = np.cumsum(gaps)
    fit = sb.centered_decreasing_fit(values, weights, positions)
    pooled = sb.decreasing_fit(values, weights)
    assert fit.shape == values.shape and np.all(fit >= 0) and np.all(np.diff(fit) <= 1e-9)
    # Between the first and the last block it never leaves the range of the pooled means, and
    # a block of one value keeps it.
    assert fit.max() <= pooled.max() + 1e-9 or fit.argmax() == 0
    blocks = np.flatnonzero(np.diff(pooled) != 0)
    for i in range(1, len(values) - 1):
        alone = (i - 1 in blocks) and (i in blocks)
        if alone:
            assert fit[i] == pytest.approx(pooled[i])


def test_centered_fit_has_no_flat_stretch_where_the_losses_fall() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(256)
    values = 4.5 - 2.5 * steps / 255 + rng.normal(0, 0.15, 256)
    weights = 256.0 - steps
    assert np.sum(np.diff(sb.decreasing_fit(values, weights)) == 0) > 100
    assert np.sum(np.diff(sb.centered_decreasing_fit(values, weights, steps)) == 0) == 0


STEPS = np.arange(256)
TRUE_CURVES = {  # per-step losses of D = 256 steps, in bits: shapes trained models have
    "straight": 4.5 - 2.5 * STEPS / 255,
    "convex": 1.5 + 3.0 * np.exp(-STEPS / 60),
    "late drop": 4.5 - 2.0 * STEPS / 255 - np.exp(-(255 - STEPS) / 5),
    "sharp start": 0.6 + np.exp(-STEPS / 40) + 0.4 * np.exp(-STEPS / 2),
}


@pytest.mark.parametrize("evals", [64, 4])
@pytest.mark.parametrize("shape", sorted(TRUE_CURVES))
def test_policies_planned_on_the_smoothed_fit_lose_less(shape: str, evals: int) -> None:
    # The estimator's noise: ``evals`` evaluations a step, each the mean of D - t losses whose
    # spread is a third of their mean times 2.5. What matters is each policy's cost on the true
    # curve, above that of the true curve's own policy.
    truth = TRUE_CURVES[shape]
    weights = 256.0 - STEPS

    def excess(curve: np.ndarray, budget: int) -> float:
        policies = [np.asarray(sb.stage_policies(c[None], [budget])[0]) for c in (curve, truth)]
        planned, best = (float(sb.stage_costs(truth[None], [p]).sum()) for p in policies)
        return planned - best

    totals = {"pooled": 0.0, "smoothed": 0.0}
    for seed in range(10):
        noise = np.random.default_rng(seed).normal(0, 2.5 / np.sqrt(evals), 256) * truth / 3
        noisy = np.maximum(truth + noise / np.sqrt(weights), 0.0)
        fits = {"pooled": sb.decreasing_fit(noisy, weights),
                "smoothed": sb.smoothed_decreasing_fit(noisy, weights)}
        for name, curve in fits.items():
            assert np.all(np.diff(curve) <= 1e-12)
            totals[name] += sum(excess(curve, budget) for budget in (5, 10, 20, 64))
    assert totals["smoothed"] < 0.8 * totals["pooled"], totals
