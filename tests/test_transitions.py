"""Upscale transitions (ardm.models.transitions) against brute-force base-b digit arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm.models import transitions as tr

CASES = [(k, b) for k in (2, 3, 10, 100, 255, 256) for b in (2, 3, 4, 16)] + [
    (65536, b) for b in (2, 3, 4, 16)
]


def digits_of(x: int, b: int, n: int) -> list[int]:
    """Base-b digits of x, least significant first, n of them."""
    out = []
    for _ in range(n):
        out.append(x % b)
        x //= b
    return out


@pytest.mark.parametrize("k,b", CASES)
def test_num_stages_is_digit_count(k: int, b: int) -> None:
    s = tr.num_stages(k, b)
    assert s >= 1 and b**s >= k and (s == 1 or b ** (s - 1) < k)
    assert s == max(1, len(digits_of_all(k - 1, b)))


def digits_of_all(x: int, b: int) -> list[int]:
    out = []
    while x:
        out.append(x % b)
        x //= b
    return out


@pytest.mark.parametrize("k,b", CASES)
def test_coarse_and_next_digit_match_brute_force(k: int, b: int) -> None:
    s = tr.num_stages(k, b)
    xs = (
        torch.arange(k)
        if k <= 256
        else torch.randint(0, k, (2000,), generator=torch.Generator().manual_seed(k + b))
    )
    for level in range(s + 1):
        got = tr.coarse_values(xs, level, b).tolist()
        want = []
        for x in xs.tolist():
            d = digits_of(x, b, s)
            want.append(sum(dig * b**i for i, dig in enumerate(d) if i >= level))
        assert got == want
        if level >= 1:
            nd = tr.next_digits(xs, level, b).tolist()
            assert nd == [digits_of(x, b, s)[level - 1] for x in xs.tolist()]
            # coarse_{l-1} = coarse_l + digit * b^(l-1)
            refined = tr.coarse_values(xs, level, b) + tr.next_digits(xs, level, b) * b ** (
                level - 1
            )
            assert torch.equal(refined, tr.coarse_values(xs, level - 1, b))
    assert torch.equal(tr.coarse_values(xs, s, b), torch.zeros_like(xs))  # level S: all absorbing


def test_per_item_levels_broadcast() -> None:
    x = torch.tensor([[7, 7], [7, 7]])
    level = torch.tensor([[2], [1]])
    assert tr.coarse_values(x, level, 3).tolist() == [[0, 0], [6, 6]]
    assert tr.next_digits(x, level, 3).tolist() == [[2, 2], [1, 1]]


@pytest.mark.parametrize("k,b", [c for c in CASES if c[0] <= 256])
def test_allowed_digits_match_brute_force(k: int, b: int) -> None:
    s = tr.num_stages(k, b)
    for level in range(1, s + 1):
        coarse = torch.unique(tr.coarse_values(torch.arange(k), level, b))
        mask = tr.allowed_digits_mask(coarse, level, b, k)
        counts = tr.num_allowed_digits(coarse, level, b, k)
        for v, row, count in zip(coarse.tolist(), mask.tolist(), counts.tolist()):
            reachable = {
                tr.next_digits(torch.tensor(x), level, b).item()
                for x in range(k)
                if tr.coarse_values(torch.tensor(x), level, b).item() == v
            }
            assert row == [d in reachable for d in range(b)]
            assert count == len(reachable) >= 1


@pytest.mark.parametrize("k,b", [c for c in CASES if c[0] <= 256])
def test_digit_and_parent_intervals_match_brute_force(k: int, b: int) -> None:
    for level in range(1, tr.num_stages(k, b) + 1):
        coarse = torch.unique(tr.coarse_values(torch.arange(k), level, b))
        low, high, allowed = tr.digit_intervals(coarse, level, b, k)
        parent_low, parent_high = tr.parent_intervals(coarse, level, b, k)
        for i, v in enumerate(coarse.tolist()):
            group = [x for x in range(k) if tr.coarse_values(torch.tensor(x), level, b) == v]
            assert (parent_low[i].item(), parent_high[i].item()) == (min(group), max(group))
            for d in range(b):
                members = [x for x in group if tr.next_digits(torch.tensor(x), level, b) == d]
                assert allowed[i, d].item() == bool(members)
                if members:  # contiguous, so an interval describes the group exactly
                    assert (low[i, d].item(), high[i, d].item()) == (min(members), max(members))
                    assert len(members) == max(members) - min(members) + 1


def brute_digit_probs(p: torch.Tensor, v: int, level: int, b: int, k: int) -> list[float]:
    mass = [0.0] * b
    for x in range(k):
        if x // b**level * b**level == v:
            mass[x // b ** (level - 1) % b] += float(p[x])
    total = sum(mass)
    return [m / total for m in mass]


@pytest.mark.parametrize("k,b", [(10, 3), (100, 4), (255, 16), (256, 2), (2, 3), (7, 2)])
def test_data_parametrization_matches_brute_force(k: int, b: int) -> None:
    gen = torch.Generator().manual_seed(k * 31 + b)
    s = tr.num_stages(k, b)
    for level in range(1, s + 1):
        coarse = torch.unique(tr.coarse_values(torch.arange(k), level, b))
        logits = torch.randn(coarse.shape[0], k, generator=gen, dtype=torch.float64) * 3
        lp = tr.digit_log_probs(logits, coarse, level, b, k)
        probs = torch.softmax(logits, -1)
        allowed = tr.allowed_digits_mask(coarse, level, b, k)
        for i, v in enumerate(coarse.tolist()):
            want = brute_digit_probs(probs[i], v, level, b, k)
            assert lp[i].exp().tolist() == pytest.approx(want, abs=1e-12)
        assert torch.all(lp[~allowed] == float("-inf"))
        assert torch.allclose(lp.exp().sum(-1), torch.ones(coarse.shape[0], dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(2, 400),
    b=st.integers(2, 17),
    seed=st.integers(0, 2**16),
)
def test_data_parametrization_sums_to_one_with_mixed_levels(k: int, b: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    s = tr.num_stages(k, b)
    x = torch.randint(0, k, (5, 7), generator=gen)
    level = torch.randint(1, s + 1, (5, 1), generator=gen)
    coarse = tr.coarse_values(x, level, b)
    logits = torch.randn(5, 7, k, generator=gen)
    lp = tr.digit_log_probs(logits, coarse, level, b, k)
    assert lp.shape == (5, 7, b)
    allowed = tr.allowed_digits_mask(coarse, level, b, k)
    assert torch.all(torch.isinf(lp[~allowed])) and torch.all(torch.isfinite(lp[allowed]))
    assert torch.allclose(lp.exp().sum(-1), torch.ones(5, 7), atol=1e-5)
    # The true next digit is always allowed, and per-row results match a one-level computation.
    digit = tr.next_digits(x, level, b)
    assert torch.all(allowed.gather(-1, digit.unsqueeze(-1)))
    for i in range(5):
        one = tr.digit_log_probs(logits[i], coarse[i], int(level[i]), b, k)
        assert torch.equal(one, lp[i])


def test_k_65536_fits_and_sums_to_one() -> None:
    k, b = 65536, 3
    s = tr.num_stages(k, b)
    x = torch.tensor([0, 1, 40000, 65535])
    logits = torch.randn(4, k, generator=torch.Generator().manual_seed(0))
    for level in range(1, s + 1):
        lp = tr.digit_log_probs(logits, tr.coarse_values(x, level, b), level, b, k)
        assert torch.allclose(lp.exp().sum(-1), torch.ones(4), atol=1e-5)
        assert torch.all(torch.isfinite(lp.gather(-1, tr.next_digits(x, level, b).unsqueeze(-1))))
    # top level from 0: 65535 = 1 * 3^10 + ..., so the top digit is 0 or 1, never 2
    top = tr.digit_log_probs(logits[:1], torch.tensor([0]), s, b, k)
    assert math.isfinite(float(top[0, 1])) and float(top[0, 2]) == float("-inf")


def test_gradients_stay_finite_with_impossible_digits() -> None:
    # K = 10, b = 3: from coarse 9 at level 2 only digit 0 exists, digits 1 and 2 are all padding.
    logits = torch.randn(2, 10, requires_grad=True)
    lp = tr.digit_log_probs(logits, torch.tensor([9, 0]), 2, 3, 10)
    lp.gather(-1, torch.tensor([[0], [2]])).sum().backward()
    assert torch.all(torch.isfinite(logits.grad))


def test_direct_parametrization_masks_impossible_digits() -> None:
    coarse = torch.tensor([0, 9, 6])
    lp = tr.direct_digit_log_probs(torch.zeros(3, 3), coarse, torch.tensor([3, 2, 1]), 3, 10)
    want = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1 / 3] * 3])
    assert torch.allclose(lp.exp(), want)


@pytest.mark.parametrize(
    "call",
    [
        lambda: tr.num_stages(1, 2),
        lambda: tr.num_stages(10, 1),
        lambda: tr.num_stages(10, 2.0),
        lambda: tr.stage_level(3, 3),
        lambda: tr.next_digits(torch.tensor([1]), 0, 2),
        lambda: tr.num_allowed_digits(torch.tensor([10]), 1, 3, 10),  # not a value
        lambda: tr.num_allowed_digits(torch.tensor([4]), 1, 3, 10),  # digit not zeroed
        lambda: tr.digit_log_probs(torch.zeros(1, 9), torch.tensor([0]), 1, 3, 10),
        lambda: tr.digit_log_probs(torch.zeros(2, 10), torch.tensor([0]), 1, 3, 10),
        lambda: tr.digit_log_probs(
            torch.zeros(1, 10, dtype=torch.long), torch.tensor([0]), 1, 3, 10
        ),
        lambda: tr.direct_digit_log_probs(torch.zeros(1, 4), torch.tensor([0]), 1, 3, 10),
    ],
)
def test_bad_inputs_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
