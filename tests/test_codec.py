"""ardm.compress / ardm.decompress: bit-exact round trips on real images, across every budget,
batch groupings and thread counts; and every bad input is a ValueError that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ardm
from ardm.codec import compress, decompress, split
from ardm.container import unpack
from ardm.nets import build_net

SHAPE = (1, 8, 8)  # an 8x8 crop of real images, 16 gray levels: small enough for every budget
K = 16


def real_crops(n: int) -> torch.Tensor:
    """Real Fashion-MNIST test images (bundled), 8x8 crops at 16 levels (x >> 4)."""
    images = ardm.bundled_images()
    crops = [images[i % 10, :, 10 + i // 10 : 18 + i // 10, 10:18] for i in range(n)]
    return (torch.stack(crops) >> 4).to(torch.uint8)


@pytest.fixture(scope="module")
def model() -> ardm.OrderAgnosticARDM:
    torch.manual_seed(0)
    m = ardm.OrderAgnosticARDM(build_net("tiny", K, SHAPE), K, SHAPE).eval()
    m.estimate_step_losses(real_crops(20), evals_per_step=2)
    return m


def test_round_trip_every_budget(model):
    x = real_crops(3)
    for budget in range(1, model.num_vars + 1):
        blob = compress(x, model, budget=budget)
        assert torch.equal(decompress(blob, model), x), budget


def test_single_item_keeps_shape_and_dtype(model):
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        x = real_crops(1)[0].to(dtype)
        back = decompress(compress(x, model, budget=5), model)
        assert back.dtype == dtype and back.shape == x.shape and torch.equal(back, x)


def test_numpy_input(model):
    x = real_crops(2).numpy()
    assert torch.equal(decompress(compress(x, model, budget=4), model), torch.from_numpy(x))


def test_encode_many_decode_each_alone(model):
    x = real_crops(21)  # not a multiple of the evaluation chunk
    blob = compress(x, model, budget=7)
    parts = split(blob)
    assert len(parts) == len(x)
    for i in (0, 8, 20):
        assert torch.equal(decompress(parts[i], model), x[i])


def test_groupings_give_the_same_streams(model):
    x = real_crops(12)
    together = unpack(compress(x, model, budget=9)).streams
    alone = [unpack(compress(x[i], model, budget=9)).streams[0] for i in range(len(x))]
    assert together == alone


def test_thread_counts_do_not_matter(model):
    x = real_crops(5)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        blob = compress(x, model, budget=6)
        torch.set_num_threads(1)
        assert torch.equal(decompress(blob, model), x)
        assert compress(x, model, budget=6) == blob
    finally:
        torch.set_num_threads(previous)


def test_size_is_close_to_the_exact_nll(model):
    x = real_crops(10)
    budget = 8
    blob = compress(x, model, budget=budget)
    streams = unpack(blob).streams
    order = ardm.random_order(model.num_vars, 0)
    with torch.no_grad():
        nll = model.exact_nll_bits(x.long(), order, model.policy(budget))
    for stream, bits in zip(streams, nll.tolist()):
        assert 8 * len(stream) <= bits + 64 + 0.01 * bits + 32  # rANS flush and word rounding


def test_order_seed_is_recorded(model):
    x = real_crops(2)
    blob = compress(x, model, budget=3, order_seed=12345)
    assert unpack(blob).order_seed == 12345
    assert torch.equal(decompress(blob, model), x)


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(2, 1, 8, 5, dtype=torch.uint8), "shape"),
        (torch.zeros(8, 8, dtype=torch.uint8), "shape"),
        (torch.zeros(1, 8, 8), "dtype"),
        (torch.full((1, 8, 8), 16, dtype=torch.uint8), "values"),
        (torch.full((1, 8, 8), -1, dtype=torch.int32), "values"),
        (torch.zeros(0, 1, 8, 8, dtype=torch.uint8), "no items"),
        ([[1, 2]], "tensor"),
    ],
)
def test_bad_data(model, x, message):
    with pytest.raises(ValueError, match=message):
        compress(x, model, budget=3)


@pytest.mark.parametrize("budget", [0, -1, 65, 2.5, "10", True])
def test_bad_budget(model, budget):
    with pytest.raises(ValueError, match="budget"):
        compress(real_crops(1), model, budget=budget)


def test_truncated_and_corrupted_blobs(model):
    x = real_crops(2)
    blob = compress(x, model, budget=5)
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            decompress(blob[:cut], model)
    rng = np.random.default_rng(0)
    for _ in range(40):
        bad = bytearray(blob)
        bad[rng.integers(len(bad))] ^= int(rng.integers(1, 256))
        try:
            back = decompress(bytes(bad), model)
        except ValueError:
            continue
        assert torch.equal(back, x)  # a flip that still decodes must give the exact data


def test_blob_from_another_model(model):
    other = ardm.OrderAgnosticARDM(build_net("tiny", K, SHAPE), K, SHAPE).eval()
    other.step_losses.copy_(model.step_losses)
    blob = compress(real_crops(1), model, budget=4)
    with pytest.raises(ValueError, match="another model"):
        decompress(blob, other)


def test_model_without_step_losses_needs_a_budget_of_d(model):
    fresh = ardm.OrderAgnosticARDM(build_net("tiny", K, SHAPE), K, SHAPE).eval()
    with pytest.raises(ValueError, match="step losses"):
        compress(real_crops(1), fresh, budget=4)
    x = real_crops(1)
    assert torch.equal(decompress(compress(x, fresh, budget=64), fresh), x)
