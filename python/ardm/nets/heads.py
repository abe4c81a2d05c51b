"""Output heads: per-variable parameters -> K log-probabilities, separate from the trunks.

A net returns head parameters per variable; its ``head`` turns them into all K log-probabilities
(``log_probs``), the log-probability of one target value (``target_log_probs``, the training fast
path) or the mass of value intervals (``interval_log_probs``, what an upscale ARDM's digits need).

The discretized logistic mixture follows PixelCNN++ (Salimans et al., 2017, Section 2.1): the K
classes are the bins of [-1, 1] with centers ``c_k = 2k/(K-1) - 1`` and half width ``1/(K-1)``; the
edge bins absorb the tails. Each bin's log-mass is computed in a form that is exact in float32 for
every bin, with no clamping constants:

    sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a))        (a > b)

so ``log p_k = logsigmoid(z_{k+1}) + logsigmoid(-z_k) + log(-expm1(-2 delta / s))`` where ``z`` are
the standardized bin edges. The last term is the same for every bin of a component.
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F

__all__ = [
    "CategoricalHead",
    "HEADS",
    "Head",
    "LogisticMixtureHead",
    "build_head",
    "log_scale_min",
    "logistic_mixture_adjacent_log_probs",
    "logistic_mixture_interval_log_probs",
    "logistic_mixture_log_probs",
    "logistic_mixture_target_log_prob",
    "split_mixture_params",
]

LOG_SCALE_MIN = -7.0  # PixelCNN++'s floor: a scale of about a tenth of a bin at K = 256


def log_scale_min(num_classes: int) -> float:
    """The floor of a component's log-scale: PixelCNN++'s -7 for K <= 256, and the same floor
    in bins for finer values (16-bit audio must be able to put almost all mass on one value).

    Example:
        >>> log_scale_min(256), round(log_scale_min(65536), 2)
        (-7.0, -12.55)
    """
    if num_classes <= 256:
        return LOG_SCALE_MIN
    return LOG_SCALE_MIN + math.log(255.0 / (num_classes - 1))


def split_mixture_params(
    params: torch.Tensor, num_classes: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``(..., 3M)`` raw parameters into log-weights, means and inverse scales, each (..., M);
    log-scales are floored at :func:`log_scale_min` of ``num_classes``.

    Example:
        >>> w, mu, inv_s = split_mixture_params(torch.zeros(2, 6))
        >>> w.shape, float(inv_s[0, 0])
        (torch.Size([2, 2]), 1.0)
    """
    if params.shape[-1] % 3:
        raise ValueError(f"mixture parameters must have 3M entries, got {params.shape[-1]}")
    logit_w, means, log_scales = params.float().chunk(3, dim=-1)
    log_w = F.log_softmax(logit_w, dim=-1)
    inv_scales = torch.exp(-log_scales.clamp(min=log_scale_min(num_classes)))
    return log_w, means, inv_scales


def _component_constant(inv_scales: torch.Tensor, half_width: float) -> torch.Tensor:
    # log(1 - exp(-2 delta / s)), stable for every scale: log(-expm1(-x)).
    return torch.log(-torch.expm1(-2.0 * half_width * inv_scales))


def logistic_mixture_interval_log_probs(
    params: torch.Tensor, low: torch.Tensor, high: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """log P(low <= value <= high) under the discretized logistic mixture.

    ``params`` (..., 3M); ``low`` and ``high`` (..., R) int, inclusive bounds with
    ``0 <= low <= high < K``. Returns (..., R). Each interval costs two sigmoid evaluations per
    component, whatever its width: an upscale ARDM's digit groups are intervals of values, so
    its data parametrization never needs all K log-probabilities.

    Example:
        >>> p = torch.zeros(1, 3)
        >>> lp = logistic_mixture_interval_log_probs(
        ...     p, torch.tensor([[0, 0, 2]]), torch.tensor([[3, 1, 3]]), 4)
        >>> [round(float(v), 5) for v in lp.exp()[0]]   # everything, bins 0-1, bins 2-3
        [1.0, 0.5, 0.5]
    """
    log_w, means, inv_scales = split_mixture_params(params, num_classes)  # (..., M)
    half_width = 1.0 / (num_classes - 1)
    low_f = low.unsqueeze(-1).float() * (2.0 * half_width) - 1.0 - half_width  # lower edges
    high_f = high.unsqueeze(-1).float() * (2.0 * half_width) - 1.0 + half_width  # upper edges
    means, inv_scales = means.unsqueeze(-2), inv_scales.unsqueeze(-2)  # (..., 1, M)
    upper = (high_f - means) * inv_scales
    lower = (low_f - means) * inv_scales
    # sigmoid(upper) - sigmoid(lower) in the exact product form of the module docstring; the
    # width term depends only on the interval's width, (high - low + 1) bins.
    width = (high - low + 1).unsqueeze(-1).float() * (2.0 * half_width)
    mid = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(-width * inv_scales))
    at_bottom = (low == 0).unsqueeze(-1)
    at_top = (high == num_classes - 1).unsqueeze(-1)
    log_p = torch.where(
        at_bottom & at_top,
        torch.zeros_like(mid),
        torch.where(at_bottom, F.logsigmoid(upper), torch.where(at_top, F.logsigmoid(-lower), mid)),
    )
    return torch.logsumexp(log_w.unsqueeze(-2) + log_p, dim=-1)


def logistic_mixture_adjacent_log_probs(
    params: torch.Tensor, low: torch.Tensor, high: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """:func:`logistic_mixture_interval_log_probs` for adjacent intervals: ``high[..., r] + 1 ==
    low[..., r + 1]`` (an upscale ARDM's digits), evaluating each shared edge once.

    R intervals cost R + 1 log-sigmoids per component instead of 2R (and one width term when
    all widths are equal), which is most of the time an audio model spends coding. The caller
    guarantees adjacency; the result equals the general function's up to float rounding.

    Example:
        >>> p = torch.tensor([[0.0, 0.1, 0.5]])
        >>> low, high = torch.tensor([[0, 2, 4]]), torch.tensor([[1, 3, 7]])
        >>> a = logistic_mixture_adjacent_log_probs(p, low, high, 8)
        >>> b = logistic_mixture_interval_log_probs(p, low, high, 8)
        >>> bool(torch.allclose(a, b, atol=1e-6))
        True
    """
    log_w, means, inv_scales = split_mixture_params(params, num_classes)  # (..., M)
    half_width = 1.0 / (num_classes - 1)
    edges = torch.cat([low, high[..., -1:] + 1], dim=-1)  # (..., R + 1) in bins
    edge_f = edges.unsqueeze(-1).float() * (2.0 * half_width) - 1.0 - half_width
    z = (edge_f - means.unsqueeze(-2)) * inv_scales.unsqueeze(-2)  # (..., R + 1, M)
    below = F.logsigmoid(z)  # log P(value < edge)
    above = below - z  # log P(value > edge) = logsigmoid(-z)
    widths = (high - low + 1).float() * (2.0 * half_width)  # (..., R)
    if bool((widths == widths[..., :1]).all()):
        widths = widths[..., :1]
    width_term = torch.log(-torch.expm1(-widths.unsqueeze(-1) * inv_scales.unsqueeze(-2)))
    mid = below[..., 1:, :] + above[..., :-1, :] + width_term  # (..., R, M)
    # Only the first interval can start at value 0 and only the last end at K - 1 (they are
    # adjacent), so the tails are patched there alone instead of masking every interval.
    first, last = mid[..., :1, :], mid[..., -1:, :]
    at_bottom = (low[..., :1] == 0).unsqueeze(-1)
    at_top = (high[..., -1:] == num_classes - 1).unsqueeze(-1)
    if low.shape[-1] == 1:  # one interval: it is first and last
        log_p = torch.where(
            at_bottom & at_top, torch.zeros_like(first),
            torch.where(at_bottom, below[..., 1:, :], torch.where(at_top, above[..., :1, :], first)),
        )
    else:
        first = torch.where(at_bottom, below[..., 1:2, :], first)
        last = torch.where(at_top, above[..., -2:-1, :], last)
        log_p = torch.cat([first, mid[..., 1:-1, :], last], dim=-2)
    return torch.logsumexp(log_w.unsqueeze(-2) + log_p, dim=-1)


def logistic_mixture_target_log_prob(
    params: torch.Tensor, target: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """log p(target) under the discretized logistic mixture; params (..., 3M), target (...) int.

    Only the target bin is evaluated, which is what training needs (the distribution is normalized
    by construction, so no partition function is required).

    Example:
        >>> p = torch.zeros(4, 3)
        >>> lp = logistic_mixture_target_log_prob(p, torch.tensor([0, 1, 2, 3]), 4)
        >>> round(float(lp.exp().sum()), 5)
        1.0
    """
    bounds = target.unsqueeze(-1)
    return logistic_mixture_interval_log_probs(params, bounds, bounds, num_classes).squeeze(-1)


def logistic_mixture_log_probs(
    params: torch.Tensor, num_classes: int, chunk_elements: int = 1 << 24
) -> torch.Tensor:
    """All K log-probabilities: params (..., 3M) -> (..., K), normalized up to float rounding.

    Works in chunks of the leading variables so that memory stays bounded for big batches.

    Example:
        >>> lp = logistic_mixture_log_probs(torch.zeros(5, 6), 256)
        >>> lp.shape, round(float(lp.exp().sum(-1)[0]), 4)
        (torch.Size([5, 256]), 1.0)
    """
    lead = params.shape[:-1]
    flat = params.reshape(-1, params.shape[-1])
    num_mix = flat.shape[-1] // 3
    per_chunk = max(1, chunk_elements // max(1, num_mix * num_classes))
    half_width = 1.0 / (num_classes - 1)
    # Interior bin edges e_j between bin j-1 and bin j, j = 1..K-1.
    edges = torch.arange(1, num_classes, device=params.device, dtype=torch.float32)
    edges = edges * (2.0 * half_width) - 1.0 - half_width  # e_j = c_{j-1} + delta
    out = []
    for chunk in flat.split(per_chunk):
        log_w, means, inv_scales = split_mixture_params(chunk, num_classes)  # (n, M)
        z = (edges - means.unsqueeze(-1)) * inv_scales.unsqueeze(-1)  # (n, M, K-1)
        below = F.logsigmoid(z)  # log P(value < edge)
        above = below - z  # logsigmoid(-z) = log P(value > edge)
        const = _component_constant(inv_scales, half_width).unsqueeze(-1)
        mid = below[..., 1:] + above[..., :-1] + const
        log_p = torch.cat([below[..., :1], mid, above[..., -1:]], dim=-1)  # (n, M, K)
        out.append(torch.logsumexp(log_w.unsqueeze(-1) + log_p, dim=1))
    return torch.cat(out).reshape(*lead, num_classes)


# ---- heads: per-variable parameters -> distributions over the K values ---------------------------


class CategoricalHead:
    """K free logits per variable.

    Example:
        >>> head = CategoricalHead(4)
        >>> head.params_per_var, head.log_probs(torch.zeros(2, 4)).exp()[0].tolist()
        (4, [0.25, 0.25, 0.25, 0.25])
    """

    name = "categorical"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.params_per_var = self.num_classes

    def log_probs(self, params: torch.Tensor) -> torch.Tensor:
        """All K log-probabilities, (..., K)."""
        return F.log_softmax(params.float(), dim=-1)

    def target_log_probs(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """log p(target), (...)."""
        return self.log_probs(params).gather(-1, target.unsqueeze(-1)).squeeze(-1)

    def interval_log_probs(
        self, params: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        """log P(low <= value <= high) for (..., R) inclusive bounds, (..., R)."""
        log_p = self.log_probs(params).unsqueeze(-2)  # (..., 1, K)
        values = torch.arange(self.num_classes, device=params.device)
        inside = (values >= low.unsqueeze(-1)) & (values <= high.unsqueeze(-1))  # (..., R, K)
        return torch.logsumexp(log_p.masked_fill(~inside, float("-inf")), dim=-1)

    def adjacent_interval_log_probs(
        self, params: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`interval_log_probs` of adjacent intervals (the same computation here)."""
        return self.interval_log_probs(params, low, high)


class LogisticMixtureHead:
    """A discretized logistic mixture of M components per variable (3M parameters).

    Example:
        >>> head = LogisticMixtureHead(256, num_mixtures=5)
        >>> head.params_per_var, head.log_probs(torch.zeros(1, 15)).shape
        (15, torch.Size([1, 256]))
    """

    name = "logistic_mixture"

    def __init__(self, num_classes: int, num_mixtures: int) -> None:
        if num_classes < 2 or num_mixtures < 1:
            raise ValueError("a mixture head needs K >= 2 and at least one component")
        self.num_classes = int(num_classes)
        self.num_mixtures = int(num_mixtures)
        self.params_per_var = 3 * self.num_mixtures

    def log_probs(self, params: torch.Tensor) -> torch.Tensor:
        return logistic_mixture_log_probs(params, self.num_classes)

    def target_log_probs(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logistic_mixture_target_log_prob(params, target, self.num_classes)

    def interval_log_probs(
        self, params: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        return logistic_mixture_interval_log_probs(params, low, high, self.num_classes)

    def adjacent_interval_log_probs(
        self, params: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        """Adjacent intervals (``high[r] + 1 == low[r + 1]``), each shared edge evaluated once."""
        return logistic_mixture_adjacent_log_probs(params, low, high, self.num_classes)


Head = Union[CategoricalHead, LogisticMixtureHead]
HEADS = ("logistic_mixture", "categorical")


def build_head(name: str, num_classes: int, num_mixtures: int = 5) -> Head:
    """A head by name (``HEADS``).

    Example:
        >>> build_head("categorical", 10).params_per_var
        10
    """
    if name == "categorical":
        return CategoricalHead(num_classes)
    if name == "logistic_mixture":
        return LogisticMixtureHead(num_classes, num_mixtures)
    raise ValueError(f"unknown head {name!r}; choose one of {list(HEADS)}")
