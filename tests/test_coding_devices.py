"""Coding whatever device or dtype the model is on (issue #12, item 9): the codec always evaluates
the network in float32 on the CPU, with a copy where the model is elsewhere, so a blob decodes bit
for bit with the model in any form whose float32 weights are the same; the user's model is never
moved or cast, and a model without weights (meta) is refused."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import perturbed_unet, real_crops

import ardm
from ardm.coding import model_fingerprint
from ardm.coding.cpu_model import cpu_float32
from ardm.models import ARDM, OrderAgnosticARDM

SHAPE = (1, 8, 8)
BUDGET = 6


@pytest.fixture(scope="module")
def model() -> ARDM:
    torch.manual_seed(0)
    m = OrderAgnosticARDM(perturbed_unet(16, SHAPE), 16, SHAPE).eval()
    m.estimate_step_losses(real_crops(16))
    return m


def _snapshot(m: ARDM) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _same_tensors(m: ARDM, before: dict[str, torch.Tensor]) -> bool:
    """Every tensor as it was: values, dtype and device."""
    now = m.state_dict()
    return all(now[k].dtype == v.dtype and now[k].device == v.device and torch.equal(now[k], v)
               for k, v in before.items())


def _bfloat16_representable(m: ARDM) -> ARDM:
    """A float32 model (step losses float64) whose every value bfloat16 holds exactly."""
    rounded = copy.deepcopy(m)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.bfloat16).to(tensor.dtype))
    return rounded


@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_a_float64_model_makes_the_float32_models_blobs(model, mode):
    x = real_crops(3)
    wide = copy.deepcopy(model).double()
    before = _snapshot(wide)
    blob = ardm.compress(x, wide, budget=BUDGET, mode=mode)
    assert blob == ardm.compress(x, model, budget=BUDGET, mode=mode)
    assert torch.equal(ardm.decompress(blob, model), x)
    assert torch.equal(ardm.decompress(blob, wide), x)
    assert _same_tensors(wide, before)  # still float64, not moved, not changed
    assert next(wide.parameters()).dtype == torch.float64


def test_a_bfloat16_model_codes_as_its_float32_weights(model):
    exact = _bfloat16_representable(model)
    narrow = copy.deepcopy(exact).to(torch.bfloat16)
    before = _snapshot(narrow)
    x = real_crops(2)
    blob = ardm.compress(x, narrow, budget=BUDGET)
    assert blob == ardm.compress(x, exact, budget=BUDGET)
    assert torch.equal(ardm.decompress(blob, exact), x)
    assert torch.equal(ardm.decompress(ardm.compress(x, exact, budget=BUDGET), narrow), x)
    assert _same_tensors(narrow, before)
    assert model_fingerprint(narrow) == model_fingerprint(exact)


def test_a_model_already_on_the_cpu_in_float32_is_not_copied(model):
    assert cpu_float32(model) is model


def test_a_model_on_the_meta_device_is_refused(model):
    blob = ardm.compress(real_crops(1)[0], model, budget=BUDGET)
    ghost = copy.deepcopy(model).to("meta")
    with pytest.raises(ValueError, match="meta device and has no weights"):
        ardm.compress(real_crops(1)[0], ghost, budget=BUDGET)
    with pytest.raises(ValueError, match="meta device and has no weights"):
        ardm.decompress(blob, ghost)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_a_gpu_makes_the_cpu_models_blobs(model):
    x = real_crops(3)
    gpu = copy.deepcopy(model).cuda()
    blob = ardm.compress(x, gpu, budget=BUDGET)
    assert blob == ardm.compress(x, model, budget=BUDGET)
    assert torch.equal(ardm.decompress(blob, gpu), x)
    assert all(t.is_cuda for t in gpu.state_dict().values())
