"""Coarse-to-fine transitions of upscale ARDMs (Hoogeboom et al. 2022, Section 3.2, "Upscale ARDMs").

A value ``x`` in ``0..K-1`` is written in base ``b`` (the branching factor) with ``S = ceil(log_b K)``
digits (at least one). The *level* ``l`` of a value is the number of its least significant digits
that are still unknown; the map to level ``l`` zeroes them:

    coarse_l(x) = floor(x / b^l) * b^l,      l = S, S-1, ..., 0.

Level S is the absorbing start (every value is 0) and level 0 is the data itself. Generation runs
in S *stages*; stage ``s`` (``s = 0..S-1``, coarse first) takes every variable from level
``l = S - s`` to level ``l - 1`` by revealing one digit, the *next digit*

    d = floor(x / b^(l-1)) mod b,        coarse_{l-1}(x) = coarse_l(x) + d * b^(l-1).

When K is not a power of b the top digits have fewer allowed values: given the coarse value v at
level l, digit d is allowed iff ``v + d * b^(l-1) < K``. Digit 0 is always allowed (v < K).

Everything here works on digits, never on dense K x K transition matrices, so K = 65536 costs
O(K) memory per variable at most. For the *data parametrization* (paper Section 3.2) a K-way
prediction p(x) is mapped onto the next digit by summing the probability of each digit's group of
values: p(d | v) = sum_{x : coarse_l(x) = v, next digit of x = d} p(x) / sum_{x : coarse_l(x) = v} p(x).

Example:
    >>> import torch
    >>> num_stages(10, 3)                       # 10 classes need 3 ternary digits
    3
    >>> x = torch.tensor([7])                  # 7 = 021 in base 3
    >>> [int(coarse_values(x, level, 3)) for level in (3, 2, 1, 0)]
    [0, 0, 6, 7]
    >>> [int(next_digits(x, level, 3)) for level in (3, 2, 1)]
    [0, 2, 1]
    >>> int(num_allowed_digits(torch.tensor([9]), 2, 3, 10))  # from 9 only 9 itself (digit 0)
    1
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "num_stages",
    "check_classes",
    "stage_level",
    "coarse_values",
    "next_digits",
    "num_allowed_digits",
    "allowed_digits_mask",
    "digit_intervals",
    "parent_intervals",
    "digit_log_probs",
    "direct_digit_log_probs",
]


def check_classes(num_classes: int, branch_factor: int) -> None:
    """Raise ``ValueError`` unless ``K >= 2`` and ``b >= 2`` are integers.

    Example:
        >>> check_classes(256, 4)
    """
    for name, value in (("num_classes", num_classes), ("branch_factor", branch_factor)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if branch_factor < 2:
        raise ValueError(f"branch_factor must be >= 2, got {branch_factor}")


def num_stages(num_classes: int, branch_factor: int) -> int:
    """S = ceil(log_b K): the number of base-b digits of the values 0..K-1 (at least 1).

    Computed with integers, so it is exact where ``math.log`` would round (e.g. K = b^n).

    Example:
        >>> num_stages(256, 2), num_stages(256, 4), num_stages(255, 16), num_stages(65536, 3)
        (8, 4, 2, 11)
    """
    check_classes(num_classes, branch_factor)
    stages, span = 1, branch_factor
    while span < num_classes:
        stages += 1
        span *= branch_factor
    return stages


def stage_level(stage: int, num_stages_: int) -> int:
    """The level ``l = S - stage`` that stage ``stage`` starts from (it ends at ``l - 1``).

    Example:
        >>> [stage_level(s, 3) for s in range(3)]
        [3, 2, 1]
    """
    if not 0 <= stage < num_stages_:
        raise ValueError(f"stage must be in 0..{num_stages_ - 1}, got {stage}")
    return num_stages_ - stage


def _powers(level: int | torch.Tensor, branch_factor: int, like: torch.Tensor) -> torch.Tensor:
    """b ** level as int64, broadcastable against ``like``."""
    if isinstance(level, torch.Tensor):
        if level.dtype.is_floating_point or level.dtype == torch.bool:
            raise ValueError(f"level must be an integer tensor, got {level.dtype}")
        if level.numel() and int(level.min()) < 0:
            raise ValueError("level must be >= 0")
        return torch.pow(torch.full_like(level, branch_factor, dtype=torch.long), level.long()).to(
            like.device
        )
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    return torch.tensor(branch_factor**level, dtype=torch.long, device=like.device)


def coarse_values(x: torch.Tensor, level: int | torch.Tensor, branch_factor: int) -> torch.Tensor:
    """coarse_l(x) = floor(x / b^l) * b^l: ``x`` with its ``l`` lowest base-b digits zeroed.

    ``level`` is an int or an int tensor broadcastable against ``x`` (e.g. one level per item).

    Example:
        >>> coarse_values(torch.tensor([0, 5, 9, 15]), 1, 4).tolist()
        [0, 4, 8, 12]
    """
    x = x.long()
    scale = _powers(level, branch_factor, x)
    return torch.div(x, scale, rounding_mode="floor") * scale


def next_digits(x: torch.Tensor, level: int | torch.Tensor, branch_factor: int) -> torch.Tensor:
    """The digit revealed going from level ``l`` to ``l - 1``: floor(x / b^(l-1)) mod b.

    Example:
        >>> next_digits(torch.tensor([0, 5, 9, 15]), 2, 4).tolist()   # most significant of 2 digits
        [0, 1, 2, 3]
    """
    if isinstance(level, int) and level < 1:
        raise ValueError(f"level must be >= 1 to have a next digit, got {level}")
    if isinstance(level, torch.Tensor) and level.numel() and int(level.min()) < 1:
        raise ValueError("level must be >= 1 to have a next digit")
    x = x.long()
    width = _powers(level - 1, branch_factor, x)
    return torch.div(x, width, rounding_mode="floor") % branch_factor


def _check_coarse(
    coarse: torch.Tensor, level: int | torch.Tensor, branch_factor: int, num_classes: int
) -> torch.Tensor:
    coarse = coarse.long()
    if isinstance(level, int) and level < 1:
        raise ValueError(f"level must be >= 1 (a digit must remain), got {level}")
    if isinstance(level, torch.Tensor) and level.numel() and int(level.min()) < 1:
        raise ValueError("level must be >= 1 (a digit must remain)")
    if coarse.numel():
        if int(coarse.min()) < 0 or int(coarse.max()) >= num_classes:
            raise ValueError(f"coarse values must be in 0..{num_classes - 1}")
        if bool((coarse_values(coarse, level, branch_factor) != coarse).any()):
            raise ValueError("coarse values must have their lowest `level` base-b digits zero")
    return coarse


def num_allowed_digits(
    coarse: torch.Tensor, level: int | torch.Tensor, branch_factor: int, num_classes: int
) -> torch.Tensor:
    """How many next digits d keep ``coarse + d * b^(l-1) < K`` (between 1 and b).

    Example:
        >>> num_allowed_digits(torch.tensor([0, 9]), 2, 3, 10).tolist()   # K = 10, b = 3
        [3, 1]
    """
    coarse = _check_coarse(coarse, level, branch_factor, num_classes)
    width = _powers(level - 1, branch_factor, coarse)
    room = torch.div(num_classes - coarse + width - 1, width, rounding_mode="floor")
    return room.clamp(max=branch_factor)


def allowed_digits_mask(
    coarse: torch.Tensor, level: int | torch.Tensor, branch_factor: int, num_classes: int
) -> torch.Tensor:
    """Bool (..., b): whether each next digit is allowed given the coarse value.

    Example:
        >>> allowed_digits_mask(torch.tensor([9]), 1, 3, 10).tolist()
        [[True, False, False]]
    """
    count = num_allowed_digits(coarse, level, branch_factor, num_classes)
    digits = torch.arange(branch_factor, device=coarse.device)
    return digits < count.unsqueeze(-1)


def digit_intervals(
    coarse: torch.Tensor, level: int | torch.Tensor, branch_factor: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The values of each next digit's group as inclusive intervals: (low, high, allowed), (..., b).

    Digit d of a variable at coarse value v and level l covers ``v + d * b^(l-1)`` up to
    ``min(v + (d + 1) * b^(l-1), K) - 1``. Impossible digits (``allowed`` False) get the
    interval [v, v], a valid placeholder that the caller masks.

    Example:
        >>> low, high, ok = digit_intervals(torch.tensor([9]), 2, 3, 10)   # K = 10, b = 3
        >>> low.tolist(), high.tolist(), ok.tolist()
        ([[9, 9, 9]], [[9, 9, 9]], [[True, False, False]])
        >>> low, high, _ = digit_intervals(torch.tensor([0]), 2, 3, 10)
        >>> low.tolist(), high.tolist()
        ([[0, 3, 6]], [[2, 5, 8]])
    """
    coarse = _check_coarse(coarse, level, branch_factor, num_classes).unsqueeze(-1)
    width = _powers(level - 1, branch_factor, coarse)
    if isinstance(level, torch.Tensor):
        width = width.unsqueeze(-1)
    low = coarse + torch.arange(branch_factor, device=coarse.device) * width
    allowed = low < num_classes
    high = torch.minimum(low + width, torch.tensor(num_classes, device=coarse.device)) - 1
    coarse = coarse.expand_as(low)
    return torch.where(allowed, low, coarse), torch.where(allowed, high, coarse), allowed


def parent_intervals(
    coarse: torch.Tensor, level: int | torch.Tensor, branch_factor: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The values that share each coarse value, as an inclusive interval (low, high), (...).

    Example:
        >>> parent_intervals(torch.tensor([0, 9]), 2, 3, 10)
        (tensor([0, 9]), tensor([8, 9]))
    """
    coarse = _check_coarse(coarse, level, branch_factor, num_classes)
    span = _powers(level, branch_factor, coarse)
    return coarse, torch.clamp(coarse + span, max=num_classes) - 1


def _digit_log_probs_one_level(
    logits: torch.Tensor, coarse: torch.Tensor, level: int, branch_factor: int, num_classes: int
) -> torch.Tensor:
    """Unnormalized digit log-masses for one level: logits (N, K), coarse (N,) -> (N, b)."""
    width = branch_factor ** (level - 1)  # values per digit group
    block = width * branch_factor  # values sharing one coarse value at this level
    num_blocks = -(-num_classes // block)
    pad = num_blocks * block - num_classes
    if pad:
        # Values >= K do not exist. Pad with the most negative finite number rather than -inf so
        # that the backward pass of logsumexp over an all-padding group stays finite; such
        # impossible digits are set to -inf by the caller.
        logits = F.pad(logits, (0, pad), value=torch.finfo(logits.dtype).min)
    blocks = logits.view(logits.shape[0], num_blocks, block)
    index = (coarse // block).view(-1, 1, 1).expand(-1, 1, block)
    mine = blocks.gather(1, index).view(-1, branch_factor, width)
    return torch.logsumexp(mine, dim=-1)


def digit_log_probs(
    logits: torch.Tensor,
    coarse: torch.Tensor,
    level: int | torch.Tensor,
    branch_factor: int,
    num_classes: int,
) -> torch.Tensor:
    """Map a K-way prediction onto the next digit (the data parametrization, paper Section 3.2).

    Args:
        logits: (..., K) finite logits or log-probabilities of the full value (any normalization:
            the groups are renormalized, so an additive constant per row cancels).
        coarse: (...) the current coarse value of each variable, at level ``level``.
        level: int, or an int tensor broadcastable to ``coarse`` (one level per variable).

    Returns:
        (..., b) float log-probabilities of the next digit: log of the summed probability of
        each digit's group of values, renormalized over the allowed digits; ``-inf`` for impossible
        digits. Each row's result depends only on that row.

    Example:
        >>> lp = digit_log_probs(torch.zeros(1, 10), torch.tensor([0]), 3, 3, 10)  # uniform p(x)
        >>> [round(float(v), 4) for v in lp.exp()[0]]   # digit 0: 0..8, digit 1: 9, digit 2: none
        [0.9, 0.1, 0.0]
    """
    if not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    if logits.shape[-1] != num_classes:
        raise ValueError(f"logits must have K = {num_classes} entries last, got {logits.shape[-1]}")
    if logits.shape[:-1] != coarse.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and coarse {tuple(coarse.shape)} disagree: "
            "expected logits of shape (*coarse.shape, K)"
        )
    check_classes(num_classes, branch_factor)
    coarse = _check_coarse(coarse, level, branch_factor, num_classes)
    lead = coarse.shape
    flat_logits = logits.reshape(-1, num_classes)
    flat_coarse = coarse.reshape(-1)
    if isinstance(level, torch.Tensor):
        flat_level = torch.broadcast_to(level.to(coarse.device), lead).reshape(-1)
        out = flat_logits.new_empty(flat_coarse.shape[0], branch_factor)
        for lev in torch.unique(flat_level).tolist():
            rows = flat_level == lev
            out[rows] = _digit_log_probs_one_level(
                flat_logits[rows], flat_coarse[rows], int(lev), branch_factor, num_classes
            )
    else:
        out = _digit_log_probs_one_level(
            flat_logits, flat_coarse, level, branch_factor, num_classes
        )
    out = out.reshape(*lead, branch_factor)
    out = out.masked_fill(
        ~allowed_digits_mask(coarse, level, branch_factor, num_classes), -math.inf
    )
    return out - torch.logsumexp(out, dim=-1, keepdim=True)


def direct_digit_log_probs(
    digit_logits: torch.Tensor,
    coarse: torch.Tensor,
    level: int | torch.Tensor,
    branch_factor: int,
    num_classes: int,
) -> torch.Tensor:
    """The direct parametrization: b logits per variable, impossible digits masked, renormalized.

    Example:
        >>> lp = direct_digit_log_probs(torch.zeros(1, 3), torch.tensor([9]), 2, 3, 10)
        >>> lp.exp().tolist()
        [[1.0, 0.0, 0.0]]
    """
    if digit_logits.shape[-1] != branch_factor:
        raise ValueError(f"digit_logits must have b = {branch_factor} entries last")
    if digit_logits.shape[:-1] != coarse.shape:
        raise ValueError(
            f"digit_logits {tuple(digit_logits.shape)} and coarse {tuple(coarse.shape)} disagree"
        )
    allowed = allowed_digits_mask(coarse, level, branch_factor, num_classes)
    masked = digit_logits.float().masked_fill(~allowed, float("-inf"))
    return F.log_softmax(masked, dim=-1)
