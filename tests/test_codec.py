"""ardm.compress / ardm.decompress: bit-exact round trips on real data across budgets, modes,
groupings and thread counts, items of any length; sizes at the entropy limit; every bad input,
flipped bit, truncation or foreign blob a ValueError."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SequenceNet, real_crops, real_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ardm
from ardm.coding import compress, decompress, split
from ardm.coding.container import unpack_streams
from ardm.models import OrderAgnosticARDM
from ardm.nets import build_net

SHAPE = (1, 8, 8)  # an 8x8 crop of real images, 16 gray levels: small enough for every budget
K = 16


@pytest.fixture(scope="module")
def model() -> OrderAgnosticARDM:
    torch.manual_seed(0)
    m = OrderAgnosticARDM(build_net("tiny", K, SHAPE), K, SHAPE).eval()
    m.estimate_step_losses(real_crops(20), evals_per_step=2)
    return m


HALF = (1, 4, 8)  # the top half of the crops: every budget of a joint stream in a quarter the calls


@pytest.fixture(scope="module")
def half_model() -> OrderAgnosticARDM:
    torch.manual_seed(0)
    m = OrderAgnosticARDM(build_net("tiny", K, HALF), K, HALF).eval()
    m.estimate_step_losses(real_crops(20)[:, :, :4], evals_per_step=2)
    return m


def test_round_trip_every_budget(half_model):
    """Budgets 1..32 of a 32-variable model: every policy length and shape of its steps."""
    x = real_crops(3)[:, :, :4]
    for budget in range(1, half_model.num_vars + 1):
        blob = compress(x, half_model, budget=budget)
        assert torch.equal(decompress(blob, half_model), x), budget


def test_round_trip_independent_budgets(model):
    x = real_crops(3)
    for budget in (1, 2, 3, 5, 8, 13, 21, 34, 55, 64):
        blob = compress(x, model, budget=budget, mode="independent")
        assert torch.equal(decompress(blob, model), x), budget


@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_upscale_round_trip(upscale_model, mode):
    x = real_crops(5)
    for budget in (2, 3, 7, 40, upscale_model.max_budget):
        blob = compress(x, upscale_model, budget=budget, mode=mode)
        assert torch.equal(decompress(blob, upscale_model), x), budget


def test_single_item_keeps_shape_and_dtype(model):
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        x = real_crops(1)[0].to(dtype)
        back = decompress(compress(x, model, budget=5), model)
        assert back.dtype == dtype and back.shape == x.shape and torch.equal(back, x)


def test_numpy_and_batch_of_one(model):
    x = real_crops(2).numpy()
    assert torch.equal(decompress(compress(x, model, budget=4), model), torch.from_numpy(x))
    one = real_crops(1)
    for mode in ("joint", "independent"):
        assert decompress(compress(one, model, budget=4, mode=mode), model).shape == (1, *SHAPE)


def test_independent_items_decode_alone_and_do_not_depend_on_the_grouping(model):
    x = real_crops(21)  # not a multiple of the evaluation chunk
    blob = compress(x, model, budget=7, mode="independent")
    parts = split(blob)
    assert len(parts) == len(x)
    for i in (0, 8, 20):
        alone = compress(x[i : i + 1], model, budget=7, mode="independent")
        assert parts[i] == split(alone)[0]  # grouping does not change a stream
        assert torch.equal(decompress(parts[i], model), x[i])
        # a piece alone is marked (4 bits) and checked by 24 bits, not by the frame's 32
        assert torch.equal(decompress(alone, model), x[i : i + 1])


def test_joint_groupings_and_threads_give_the_same_blob(model):
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
    with pytest.raises(ValueError, match="joint"):
        split(blob)


def _nll_bits(model, x: torch.Tensor, budget: int) -> torch.Tensor:
    order = ardm.random_order(model.num_vars, model.order_seed)
    with torch.no_grad():
        return model.exact_nll_bits(x.long(), order, model.policy(budget))


def test_sizes_are_at_the_entropy_limit():
    """The shipped model at its default budget: one image alone costs its exact -log2 p plus
    the 32-bit check, about 2 bits of header and the byte end; a joint batch pays that once."""
    model = ardm.load()
    x = ardm.bundled_images()[::3]
    nll = _nll_bits(model, x, 100)
    for i in range(len(x)):
        assert 8 * len(compress(x[i], model)) <= nll[i] * 1.001 + 32 + 2 + 8
    assert 8 * len(compress(x, model)) <= float(nll.sum()) * 1.001 + 32 + 8 + 8


@pytest.mark.slow
def test_independent_items_cost_at_most_40_bits_more_than_their_information(fashion_mnist_test):
    """Issue #9's target, on 32 real test images (evenly spaced over the split) with the shipped
    model at its default budget: an independent blob costs at most 40 bits an image more than
    the images' exact -log2 p. Measured: 37.3 (37.1 on 64 images; was 46.5 with a 32-bit check
    in every stream); each piece's 24-bit check costs about 22.6, its header 2 and byte end 4,
    its length in the frame about 8.8, the frame's 32-bit check and 6 bytes of frame 2.5 (1.2
    on 64 images)."""
    model = ardm.load()
    x = fashion_mnist_test[np.linspace(0, len(fashion_mnist_test) - 1, 32).round().astype(np.int64)]
    nll = _nll_bits(model, x, 100)
    blob = compress(x, model, mode="independent")
    overhead = (8 * len(blob) - float(nll.sum())) / len(x)
    assert overhead <= 40, f"{overhead:.2f} bits an image"
    pieces = split(blob)  # one piece decodes alone (the whole frame round-trips in other tests)
    assert torch.equal(decompress(pieces[17], model), x[17])


def test_custom_model_sizes(model):
    """A model of your own stores 16 bits of its fingerprint; a budget other than the
    default costs its flag and a number."""
    x = real_crops(6)
    nll = _nll_bits(model, x, 8)
    header = 2 + 16 + 2 + 2 * math.log2(9) + 1 + 1
    for i in range(len(x)):
        assert 8 * len(compress(x[i], model, budget=8)) <= nll[i] * 1.002 + 32 + header + 8
    independent = compress(x, model, budget=8, mode="independent")
    frame = len(independent) - sum(len(s) for s in unpack_streams(independent)[1])
    assert 8 * (len(independent) - frame) <= float(nll.sum()) * 1.002 + len(x) * (32 + header + 8)


def test_order_seed_and_budget_are_recorded(model):
    x = real_crops(2)
    blob = compress(x, model, budget=3, order_seed=12345)
    assert blob != compress(x, model, budget=3)
    assert torch.equal(decompress(blob, model), x)


# ---- sequences of any length ----------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 31, 32, 33, 101])
@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_sequences_of_any_length(text_model, length, mode):
    data = real_text(length)
    blob = compress(data, text_model, budget=10, mode=mode)
    back = decompress(blob, text_model)
    assert back.dtype == torch.uint8 and bytes(back.numpy()) == data
    if mode == "independent" and length > 32:
        assert len(split(blob)) == math.ceil(length / 32)


def test_an_untrained_model_never_costs_much_more_than_the_input(text_model):
    data = real_text(32 * 6 + 7)
    blob = compress(data, text_model, budget=32)
    # chunks it codes worse than raw are raw: the input, the check and a custom model's header
    assert len(blob) <= len(data) + 12
    assert bytes(decompress(blob, text_model).numpy()) == data


def test_an_item_the_model_codes_badly_is_stored_raw():
    torch.manual_seed(3)
    wrong = OrderAgnosticARDM(SequenceNet(32, bias=12.0), 256, (32,)).eval()
    wrong.step_losses.fill_(1.0)
    data = bytes(range(1, 256)) * 2  # never the value the model expects
    for mode in ("joint", "independent"):
        blob = compress(data, wrong, budget=8, mode=mode)
        assert bytes(decompress(blob, wrong).numpy()) == data
        # the raw values; per stream the check, the header of a model of one's own (2.4
        # bytes), the budget and the sequence's length, the byte end and the frame
        streams = 1 if mode == "joint" else math.ceil(len(data) / 32)
        assert len(blob) <= len(data) + 12 * streams, mode


# ---- shipped model --------------------------------------------------------------------------


def test_blob_names_the_shipped_model_and_decodes_without_it():
    x = ardm.bundled_images()[:2]
    blob = compress(x, budget=5)
    assert ardm.coding.blob_model(blob) == "fashion-mnist"
    assert torch.equal(decompress(blob), x)


def test_a_changed_shipped_model_is_custom():
    model = ardm.load()
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    blob = compress(ardm.bundled_images()[0], model, budget=5)
    assert ardm.coding.blob_model(blob) is None
    with pytest.raises(ValueError, match="model of your own"):
        decompress(blob)
    assert torch.equal(decompress(blob, model), ardm.bundled_images()[0])


# ---- bad input ------------------------------------------------------------------------------


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
        (b"bytes", "shape"),
    ],
)
def test_bad_data(model, x, message):
    with pytest.raises(ValueError, match=message):
        compress(x, model, budget=3)


@pytest.mark.parametrize("budget", [0, -1, 65, 2.5, "10", True])
def test_bad_budget(model, budget):
    with pytest.raises(ValueError, match="budget"):
        compress(real_crops(1), model, budget=budget)


def test_bad_mode_and_model(model):
    with pytest.raises(ValueError, match="mode"):
        compress(real_crops(1), model, mode="fast")
    with pytest.raises(ValueError, match="ARDM"):
        compress(real_crops(1), object())


@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_every_truncation_is_an_error(model, mode):
    blob = compress(real_crops(3), model, budget=5, mode=mode)
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            decompress(blob[:cut], model)


_BLOBS: dict[str, bytes] = {}


def _blob(model, mode: str) -> bytes:
    if mode not in _BLOBS:
        _BLOBS[mode] = compress(real_crops(3), model, budget=6, mode=mode)
    return _BLOBS[mode]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(["joint", "independent"]), where=st.floats(0, 1), bit=st.integers(0, 7))
def test_every_flipped_bit_is_an_error(model, mode, where, bit):
    blob = bytearray(_blob(model, mode))
    blob[min(int(where * len(blob)), len(blob) - 1)] ^= 1 << bit
    with pytest.raises(ValueError):
        decompress(bytes(blob), model)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1), other_cut=st.floats(0, 1))
def test_spliced_blobs_are_errors(model, cut, other_cut):
    a = _blob(model, "joint")
    b = compress(real_crops(4)[1:], model, budget=6)
    i, j = int(cut * len(a)), int(other_cut * len(b))
    spliced = a[:i] + b[j:]
    if spliced in (a, b):
        return
    with pytest.raises(ValueError):
        decompress(spliced, model)


def test_blob_from_another_model(model):
    other = OrderAgnosticARDM(build_net("tiny", K, SHAPE), K, SHAPE).eval()
    other.step_losses.copy_(model.step_losses)
    blob = compress(real_crops(1), model, budget=4)
    with pytest.raises(ValueError, match="another model"):
        decompress(blob, other)


def test_format_1_blobs_are_named():
    stream = b"\x00\x00\x00\x80\x00\x00\x00\x00"  # an empty v1 stream: state 2^31 in two words
    v1 = bytes([0xAD, 1, 0x00, 0x12, 0x34, 5, 0, 2]) + b"\x00\x00\x00\x00" + stream
    with pytest.raises(ValueError, match="format-1"):
        decompress(v1)


def test_garbage_is_an_error(model):
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 9, 64, 500):
        with pytest.raises(ValueError):
            decompress(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), model)
    with pytest.raises(ValueError, match="empty"):
        decompress(b"", model)
    with pytest.raises(ValueError, match="bytes"):
        decompress("not bytes", model)


def test_model_without_step_losses_needs_a_budget_of_d():
    fresh = OrderAgnosticARDM(build_net("tiny", K, SHAPE), K, SHAPE).eval()
    with pytest.raises(ValueError, match="step losses"):
        compress(real_crops(1), fresh, budget=4)
    x = real_crops(1)
    assert torch.equal(decompress(compress(x, fresh, budget=64), fresh), x)
