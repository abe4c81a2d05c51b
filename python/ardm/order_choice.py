"""Choosing the coding order (paper Sec. 5: "we try a few orders on training data and keep the
best"): a compressor uses one fixed order, so some orders compress better than others.

Example:
    >>> import torch, ardm
    >>> from ardm.nets import build_net
    >>> model = ardm.OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4)).eval()
    >>> seed, bits = choose_order_seed(model, torch.randint(0, 4, (3, 1, 4, 4)), 16, seeds=range(3))
    >>> seed in range(3) and len(bits) == 3
    True
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ardm import _core
from ardm.models import ARDM


@torch.no_grad()
def order_bits(model: ARDM, data: torch.Tensor, budget: int, seed: int) -> float:
    """Exact total -log2 p(data) under the order of ``seed`` and the budget's policy."""
    order = _core.random_order(model.num_vars, seed)
    policy = model.policy(budget)
    return float(model.exact_nll_bits(data.long(), order, policy).sum())


def choose_order_seed(
    model: ARDM,
    data: torch.Tensor,
    budget: int,
    seeds: Iterable[int] = range(8),
) -> tuple[int, dict[int, float]]:
    """The seed whose order gives the fewest exact bits on ``data`` (training images), and the
    bits of every seed tried."""
    bits = {int(seed): order_bits(model, data, budget, int(seed)) for seed in seeds}
    if not bits:
        raise ValueError("give at least one seed to try")
    return min(bits, key=lambda s: (bits[s], s)), bits
