"""The portable network evaluation (ardm.coding.portable): exact in any order, close to float32.

The end-to-end check, blobs made on other CPU kernels, is tests/test_portability.py; these test
the parts: order-free products and sums, rows independent of their neighbours, every net kind
covered, anything else refused, and the elementwise functions.
"""

from __future__ import annotations

import pytest
import torch

from ardm.coding.codec import _Group
from ardm.coding.portable import PortabilityError, exact_matmul, exact_sum, portable_evaluation
from ardm.pretrained import load


def _coding_call(name: str, rows: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    model = load(name)
    x = torch.randint(0, 256, (rows, model.num_vars), generator=torch.Generator().manual_seed(2))
    group = _Group.build(model, list(range(rows)), model.num_vars, 20, 0)
    call = len(group.levels) // 2
    return model, (x, group.levels[call].expand(rows, -1), group.padded[call].expand(rows, -1))


def test_a_row_does_not_depend_on_the_rows_beside_it() -> None:
    model, (x, levels, positions) = _coding_call("kjv", 8)
    with torch.inference_mode(), portable_evaluation():
        together = model.coding_params(x, levels, positions)
        alone = model.coding_params(x[3:4], levels[3:4], positions[3:4])
    assert torch.equal(together[3:4], alone)


def test_it_stays_close_to_float32() -> None:
    model, (x, levels, positions) = _coding_call("kjv", 8)
    with torch.inference_mode():
        native = model.coding_params(x, levels, positions)
        with portable_evaluation():
            portable = model.coding_params(x, levels, positions)
    assert portable.dtype == native.dtype
    assert float((portable - native).abs().max()) < 1e-3


def test_products_and_sums_do_not_depend_on_the_order() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 300, generator=g) * 7, torch.randn(300, 4, generator=g)
    whole = exact_matmul(a, b)
    reordered = exact_matmul(a[:, torch.arange(299, -1, -1)], b[torch.arange(299, -1, -1)])
    assert torch.equal(whole, reordered)
    assert torch.allclose(whole, a.double() @ b.double(), rtol=0, atol=1e-3)  # 21-bit operands
    x = torch.randn(7, 1000, generator=g, dtype=torch.float64) * 1e3
    assert torch.equal(exact_sum(x, [1]), exact_sum(x.flip(1), [1]))
    assert torch.allclose(exact_sum(x, [1]), x.sum(1), rtol=1e-12)


@pytest.mark.parametrize("preset_net", [("transformer", (16,)), ("unet", (1, 8, 8)), ("dilated", (64,))])
def test_every_net_kind_runs_under_it(preset_net: tuple[str, tuple[int, ...]]) -> None:
    from ardm.nets import build_net

    kind, shape = preset_net
    net = build_net("tiny", 16, shape, net=kind).eval()
    x = torch.randint(0, 17, (2, *shape))
    known = torch.zeros_like(x, dtype=torch.bool)
    t = torch.tensor([0, 3])
    with torch.inference_mode():
        native = net(x, known, t)
        with portable_evaluation():
            portable = net(x, known, t)
    assert torch.allclose(portable, native, atol=1e-3)


def test_a_function_without_a_portable_form_is_refused() -> None:
    with portable_evaluation(), pytest.raises(PortabilityError, match="no portable form"):
        torch.cumsum(torch.ones(3), 0)


def test_portable_math_matches_torch() -> None:
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    with portable_evaluation():
        got = [f(x) for f in (torch.exp, torch.tanh, torch.sigmoid, torch.nn.functional.gelu, torch.sin)]
    want = [f(x) for f in (torch.exp, torch.tanh, torch.sigmoid, torch.nn.functional.gelu, torch.sin)]
    for g_, w in zip(got, want):
        assert torch.allclose(g_, w, rtol=1e-13, atol=1e-15)
