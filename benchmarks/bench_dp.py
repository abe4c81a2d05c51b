"""The budget DP of the Rust core against the plain dynamic program of the reference
implementation of Hoogeboom et al. (ICLR 2022, Sec. 4), which fills an O(D^2) table in O(D^3) time
with NumPy, and against the core's own previous methods, at the sizes the models use:

* the whole curve (`ardm.budget_curve`, every budget, O(D^2)) vs the NumPy O(D^3) reference;
* one policy at D = 16,000 (two seconds of 8 kHz audio): the price search that `optimal_policy`
  runs on sorted losses (O(D) per try) vs the exact layer DP it replaces (O(budget * D));
* the split of a budget across 8 upscale stages of D = 8,000 (`plan_stages`, one common price
  per call) vs the greedy merging of marginal gains over every stage's whole curve.

Every comparison checks that both sides agree (costs to 1e-11 relative) and prints median times
and ratios. The greedy splitter is the reference of ``tests/test_stage_budget.py`` (imported from
there, so the test extras must be installed).

    python benchmarks/bench_dp.py
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from ardm._core import budget_curve, optimal_policy, policy_cost
from ardm.models.stage_budget import plan_stages, stage_budget_curves

# The previous stage splitter is kept once, as the reference the tests check plan_stages against.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_stage_budget import greedy_split  # noqa: E402


def realistic_losses(num_steps: int, seed: int = 0) -> np.ndarray:
    """A smooth decreasing per-step loss plus a little noise, sorted descending as the models
    sort their measured step losses before planning."""
    rng = np.random.default_rng(seed)
    known = np.arange(num_steps) / num_steps
    losses = 0.3 + 4.5 * (1.0 - known) ** 2 + 0.02 * rng.random(num_steps)
    return np.sort(losses)[::-1].copy()


def numpy_budget_curve(losses: np.ndarray) -> np.ndarray:
    """The reference DP: cost[k, e] = min_s cost[k-1, s] + (e - s) * L[s], one (D+1) x (D+1)
    table per layer vectorized over (start, end); O(D^3) time, O(D^2) memory."""
    num_steps = len(losses)
    positions = np.arange(num_steps + 1)
    # step_cost[s, e] = (e - s) * L[s] for s < e, inf otherwise.
    lengths = positions[None, :] - positions[:-1, None]
    step_cost = np.where(lengths > 0, lengths * losses[:, None], np.inf)
    layers = np.full((num_steps + 1, num_steps + 1), np.inf)
    layers[0, 0] = 0.0
    for k in range(1, num_steps + 1):
        layers[k] = np.min(layers[k - 1, :-1, None] + step_cost, axis=0)
    return np.minimum.accumulate(layers[:, num_steps])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_close(ours: float, reference: float, what: str) -> None:
    if not abs(ours - reference) <= 1e-11 * abs(reference):
        raise AssertionError(f"{what}: {ours!r} vs {reference!r}")


def main() -> list[str]:
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    emit(f"machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_model()}")
    emit("whole curve (every budget): ardm.budget_curve vs the reference O(D^3) NumPy DP")
    for num_steps in (200, 400, 600):
        losses = realistic_losses(num_steps)
        ours = budget_curve(losses)
        reference = numpy_budget_curve(losses)
        if not np.allclose(ours[1:], reference[1:], rtol=1e-12, atol=0.0):
            raise AssertionError(f"budget_curve disagrees with the NumPy DP at D = {num_steps}")
        ours_s = median_seconds(lambda losses=losses: budget_curve(losses), 7)
        reference_s = median_seconds(lambda losses=losses: numpy_budget_curve(losses), 3)
        emit(
            f"  D = {num_steps:5d}: ours {ours_s * 1e3:9.3f} ms, numpy {reference_s * 1e3:9.1f} ms, "
            f"speedup x{reference_s / ours_s:,.0f} (curves agree to 1e-12)"
        )
    curves = {}
    times = {}
    for num_steps in (3072, 8000, 16000):
        losses = realistic_losses(num_steps)
        curves[num_steps] = budget_curve(losses)
        times[num_steps] = median_seconds(lambda losses=losses: budget_curve(losses), 3)
        emit(f"  D = {num_steps:5d}: ours {times[num_steps]:8.3f} s (whole curve)")
    emit(
        f"  time(D = 16000) / time(D = 8000) = {times[16000] / times[8000]:.2f} "
        "(quadratic scaling gives 4)"
    )

    num_steps = 16000
    losses = realistic_losses(num_steps)
    curve = curves[num_steps]
    emit(f"one policy at D = {num_steps}: price search (default) vs the exact layer DP")
    for budget in (20, 100, 1000, 8000):
        policy = optimal_policy(losses, budget)
        check_close(policy_cost(losses, policy), curve[budget], f"price search, budget {budget}")
        price_s = median_seconds(lambda b=budget: optimal_policy(losses, b), 15)
        if budget <= 1000:
            layers = optimal_policy(losses, budget, method="layers")
            check_close(policy_cost(losses, layers), curve[budget], f"layers, budget {budget}")
            layers_s = median_seconds(
                lambda b=budget: optimal_policy(losses, b, method="layers"), 3 if budget < 1000 else 1
            )
            versus = f"layers {layers_s * 1e3:9.1f} ms, speedup x{layers_s / price_s:,.0f}"
        else:
            versus = "layers (O(budget * D): about 10 s here, not run)"
        emit(f"  budget {budget:5d}: price {price_s * 1e3:7.2f} ms, {versus}")

    num_stages, num_steps = 8, 8000
    rng = np.random.default_rng(1)
    known = np.arange(num_steps) / num_steps
    noise = 0.02 * rng.random((num_stages, num_steps))
    table = (0.5 ** np.arange(num_stages))[:, None] * (0.3 + 4.5 * (1 - known) ** 2 + noise)
    emit(f"split across {num_stages} stages x D = {num_steps}: plan_stages (common price) vs "
         "greedy over whole curves")
    start = time.perf_counter()
    stage_curves = stage_budget_curves(table)
    curves_s = time.perf_counter() - start
    for budget in (64, 800, 8000, 32000):
        plan = plan_stages(table, budget)
        greedy = greedy_split(stage_curves, budget)
        check_close(plan.cost, stage_curves[np.arange(num_stages), greedy].sum(), f"split {budget}")
        ours_s = median_seconds(lambda b=budget: plan_stages(table, b), 7)
        greedy_s = curves_s + median_seconds(lambda b=budget: greedy_split(stage_curves, b), 1)
        emit(
            f"  budget {budget:5d}: ours {ours_s * 1e3:7.1f} ms (budgets and policies), greedy "
            f"{greedy_s:6.2f} s (curves {curves_s:.2f} s), speedup x{greedy_s / ours_s:,.0f}"
        )
    return lines


if __name__ == "__main__":
    main()
