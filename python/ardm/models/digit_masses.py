"""One base-b digit of a value at a time, from the value intervals of a head.

A head over K values (:mod:`ardm.nets.heads`) gives the mass of any interval of values in a few
sigmoid evaluations, so the distribution of a value's next base-b digit given its coarser digits
(the mass of each digit's interval over that of the coarse value's) costs b + 1 edges, never K
entries. The upscale ARDM's data parametrization predicts its digits this way, and an
order-agnostic model over many values (16-bit audio: K = 65,536) codes and samples its values
as digits this way: the product of a value's digit probabilities is its own probability, so
nothing is lost.

Example:
    >>> import torch
    >>> from ardm.nets.heads import LogisticMixtureHead
    >>> head = LogisticMixtureHead(256, num_mixtures=2)
    >>> params = torch.zeros(1, 3, head.params_per_var)
    >>> first = interval_digit_log_probs(head, params, torch.zeros(1, 3), 2, 16, 256)
    >>> first.shape, round(float(first.exp().sum(-1)[0, 0]), 4)
    (torch.Size([1, 3, 16]), 1.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ardm.models.transitions import digit_intervals

__all__ = ["MASS_BLOCK_ELEMENTS", "interval_digit_log_probs"]

MASS_BLOCK_ELEMENTS = 1 << 17  # digit masses are computed for this many (position, digit, param)


def interval_digit_log_probs(
    head: Any,
    params: torch.Tensor,
    coarse: torch.Tensor,
    level: int | torch.Tensor,
    branch_factor: int,
    num_classes: int,
    per_row: bool = False,
) -> torch.Tensor:
    """log p(next digit | coarse value), normalized, (..., b); impossible digits ``-inf``.

    ``params`` (B, n, P) are the head's parameters of n variables, ``coarse`` (B, n) their
    values with the ``level`` lowest base-b digits zeroed (:func:`~ardm.models.transitions.
    coarse_values`), ``level`` an int or (B, 1). ``per_row`` evaluates every row alone, so that
    its result cannot depend on which rows share the call (what coding needs).
    """
    b, k = branch_factor, num_classes
    low, high, allowed = digit_intervals(coarse, level, b, k)

    def masses(p: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        # Every digit possible (always when K is a power of b): the intervals are adjacent and
        # each shared edge is evaluated once. Blocks of positions keep the (n, b, M)
        # intermediates in cache (each position's result does not depend on the blocking).
        fn = head.adjacent_interval_log_probs if bool(ok.all()) else head.interval_log_probs
        block = max(1, MASS_BLOCK_ELEMENTS // (b * p.shape[-1]))
        return torch.cat([fn(*r) for r in zip(p.split(block, -2), lo.split(block, -2),
                                                  hi.split(block, -2))], dim=-2)

    if per_row:
        lp = torch.stack([masses(*r) for r in zip(params, low, high, allowed)])
    else:
        lp = masses(params, low, high, allowed)
    lp = lp.masked_fill(~allowed, -math.inf)
    return lp - torch.logsumexp(lp, dim=-1, keepdim=True)
