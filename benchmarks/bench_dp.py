"""The budget DP: `ardm.budget_curve` (Rust, convex hull trick, O(D^2) time, O(D) memory)
against the plain dynamic program of the reference implementation of Hoogeboom et al. (ICLR
2022, Sec. 4), which fills an O(D^2) table in O(D^3) time with NumPy. Both compute the least
cost for every budget; the script checks they agree and prints median times and ratios.

    python benchmarks/bench_dp.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from ardm._core import budget_curve


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


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> list[str]:
    lines = ["budget DP over all budgets: ardm.budget_curve vs the reference O(D^3) NumPy DP"]
    print(lines[-1], flush=True)

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    for num_steps in (200, 400, 600):
        losses = realistic_losses(num_steps)
        ours = budget_curve(losses)
        reference = numpy_budget_curve(losses)
        if not np.allclose(ours[1:], reference[1:], rtol=1e-12, atol=0.0):
            raise AssertionError(f"budget_curve disagrees with the NumPy DP at D = {num_steps}")
        ours_s = median_seconds(lambda losses=losses: budget_curve(losses), 7)
        reference_s = median_seconds(lambda losses=losses: numpy_budget_curve(losses), 3)
        emit(
            f"D = {num_steps:5d}: ours {ours_s * 1e3:9.3f} ms, numpy {reference_s * 1e3:9.1f} ms, "
            f"speedup x{reference_s / ours_s:,.0f} (curves agree to 1e-12)"
        )

    times = {}
    for num_steps in (3072, 8000, 16000):
        losses = realistic_losses(num_steps)
        times[num_steps] = median_seconds(lambda losses=losses: budget_curve(losses), 3)
        emit(f"D = {num_steps:5d}: ours {times[num_steps] * 1e3:9.1f} ms (whole curve)")
    emit(
        f"time(D = 16000) / time(D = 8000) = {times[16000] / times[8000]:.2f} "
        "(quadratic scaling gives 4)"
    )
    return lines


if __name__ == "__main__":
    main()
