"""The fused layers of the portable evaluation give the bits of the torch sequences they replace.

``ardm._core.portable_rescale``, ``portable_softmax`` and ``portable_normalize`` (and the float32
forms of ``portable_math`` and ``portable_grid``) exist for speed only: each must equal, bit for
bit, the sequence of torch operations written out in its docs, which is how the format defines a
network call (docs/format.md, "Network evaluation"). The references below are those sequences,
on random rows and on the edge cases (zeros, huge and tiny magnitudes, infinities, NaN).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ardm import _core


def _grid(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x`` on integer grids: torch's formula of ``portable_grid`` (no NaN inputs)."""
    largest = x.abs().amax(dim=-1, keepdim=True)
    exponent = largest.view(torch.int64) >> 52
    scale = ((2045 + bits - exponent).clamp(1, 2046) << 52).view(torch.float64)
    return (x * scale).round(), scale


def _exact_sum(x: torch.Tensor, bits: int) -> torch.Tensor:
    ints, scale = _grid(x, bits)
    return ints.sum(-1, keepdim=True).div_(scale)


def _bits(n: int) -> int:
    return 52 - math.ceil(math.log2(max(n, 1)))


def _rows(seed: int, shape: tuple[int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x = x * torch.exp(torch.randn(shape[0], 1, generator=g, dtype=torch.float64) * 4)
    x[0] = 0.0
    x[1, :3] = torch.tensor([1e300, -1e-300, 5e-324])[:shape[1]]
    return x


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()].view(torch.int64),
                                                                  b[~b.isnan()].view(torch.int64)))


@pytest.mark.parametrize("multiplier", [None, 0.125, 0.3])
@pytest.mark.parametrize("shared", [True, False])
def test_rescale_equals_divisions_then_product_then_bias(multiplier: float | None, shared: bool) -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.randint(-2**40, 2**40, (3, 5, 7), generator=g).double()
    rows = torch.exp2(torch.randint(-1000, 1000, (3, 5, 1), generator=g).double())
    cols = torch.exp2(torch.randint(-60, 60, (1 if shared else 3, 1, 7), generator=g).double())
    bias = torch.randn(7, generator=g, dtype=torch.float64)
    for b in (None, bias):
        want = y.div(rows).div_(cols)
        want = want if multiplier is None else want * multiplier
        want = want if b is None else want + b
        got = y.clone()
        _core.portable_rescale(got.numpy(), rows.reshape(-1).numpy(), cols.reshape(-1).numpy(),
                               multiplier, None if b is None else b.numpy())
        assert _same(got, want)


@pytest.mark.parametrize("cols", [1, 7, 64, 257])
def test_softmax_equals_max_exp_exact_sum_and_division(cols: int) -> None:
    x = _rows(cols, (6, cols)) * 30
    if cols > 2:
        x[2, 1] = -math.inf
        x[3] = -math.inf
        x[4, 0] = math.inf
        x[5, 1] = math.nan
    top = x.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = torch.from_numpy(_core.portable_math("exp", (x - top).numpy()))
    want = weights / _exact_sum(weights, _bits(cols))
    got = x.clone()
    assert _core.portable_softmax(got.numpy(), _bits(cols)) is None
    assert _same(got, want)
    # With the grid of the probabilities, as the left operand of their product with v.
    grid_bits = _bits(cols) // 2
    ints, scales = _core.portable_grid(want.numpy()[:, :, None], grid_bits)
    got = x.clone()
    got_scales = _core.portable_softmax(got.numpy(), _bits(cols), grid_bits)
    assert _same(got, torch.from_numpy(ints).reshape(got.shape))
    assert _same(torch.from_numpy(got_scales), torch.from_numpy(scales).reshape(-1))


@pytest.mark.parametrize("cols", [1, 9, 256])
@pytest.mark.parametrize("affine", [False, True])
def test_normalize_equals_the_layer_norm_sequence(cols: int, affine: bool) -> None:
    x = _rows(cols, (5, cols))
    x[2] = 3.0  # a constant row: variance 0
    g = torch.Generator().manual_seed(cols)
    weight = torch.randn(cols, generator=g, dtype=torch.float64) if affine else None
    bias = torch.randn(cols, generator=g, dtype=torch.float64) if affine else None
    eps = 1e-5
    centred = x - _exact_sum(x, _bits(cols)) / cols
    want = centred / torch.sqrt(_exact_sum(centred * centred, _bits(cols)) / cols + eps)
    if affine:
        want = want * weight + bias
    got = x.clone()
    _core.portable_normalize(got.numpy(), eps, _bits(cols), *(None if p is None else p.numpy()
                                                               for p in (weight, bias)))
    assert _same(got, want)


@pytest.mark.parametrize("name", ["exp", "gelu", "tanh", "silu", "log"])
def test_float32_math_is_the_float64_result_rounded_once(name: str) -> None:
    x = (torch.randn(3000, generator=torch.Generator().manual_seed(4)) * 5).float()
    x[:4] = torch.tensor([0.0, math.inf, -math.inf, math.nan])
    got = _core.portable_math(name, x.numpy())
    assert got.dtype == np.float32
    want = torch.from_numpy(_core.portable_math(name, x.double().numpy())).float()
    assert _same(torch.from_numpy(got), want)


def test_float32_grid_is_the_grid_of_the_widened_values() -> None:
    x = (torch.randn(4, 33, 2, generator=torch.Generator().manual_seed(5)) * 1e3).float()
    ints, scales = _core.portable_grid(x.numpy(), 20)
    want_ints, want_scales = _core.portable_grid(x.double().numpy(), 20)
    assert np.array_equal(ints, want_ints) and np.array_equal(scales, want_scales)


def test_bad_arguments_are_value_errors() -> None:
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match="written in place"):
        _core.portable_softmax(np.zeros((4, 2)).T, 40)
    with pytest.raises(ValueError, match="2 dimensions"):
        _core.portable_normalize(np.zeros(4), 1e-5, 40)
    with pytest.raises(ValueError, match="float64"):
        _core.portable_softmax(x.astype(np.float32), 40)
    with pytest.raises(ValueError, match="1..52"):
        _core.portable_softmax(x, 60)
    with pytest.raises(ValueError, match="row scales must have 2"):
        _core.portable_rescale(x.reshape(1, 2, 4), np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="col scales"):
        _core.portable_rescale(x.reshape(1, 2, 4), np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="bias must have 4"):
        _core.portable_normalize(x, 1e-5, 40, None, np.ones(3))
    readonly = np.zeros((2, 4))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="written in place"):
        _core.portable_softmax(readonly, 40)
