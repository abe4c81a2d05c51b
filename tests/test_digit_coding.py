"""An order-agnostic model over many values codes and samples them as base-16 digits: tables of
16 entries, never K = 65,536 (ardm.models.digit_masses), bit-exact on real speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_audio import assert_chunks_and_threads_decode_alike, real_samples

import ardm
from ardm.modalities.audio import ASTERISK_DIR, values_from_samples
from ardm.models import OrderAgnosticARDM
from ardm.models.order_agnostic import DIGIT_BASE
from ardm.nets import build_net

pytestmark = pytest.mark.skipif(
    not ASTERISK_DIR.is_dir(), reason="apt-get install asterisk-core-sounds-en-wav"
)

LENGTH = 256


def tiny_oa_model(num_classes: int = 65536, length: int = LENGTH) -> OrderAgnosticARDM:
    """An untrained tiny order-agnostic model over real-speech items, its step losses estimated."""
    torch.manual_seed(0)
    net = build_net("tiny", num_classes, (length,), net="dilated")
    model = OrderAgnosticARDM(net, num_classes, (length,), ce_weight=1e-4).eval()
    model.modality = "audio"
    values = values_from_samples(real_samples(4 * length)).astype(np.int64) % num_classes
    model.estimate_step_losses(torch.from_numpy(values).view(4, length),
                               generator=torch.Generator().manual_seed(0))
    return model


def no_full_tables(*_: object) -> torch.Tensor:
    raise AssertionError("a table of all K values was built")


@pytest.fixture(scope="module")
def model() -> OrderAgnosticARDM:
    model = tiny_oa_model()
    model.net.head.log_probs = no_full_tables  # every path below must do without
    return model


def speech(n: int, offset: int = 977) -> np.ndarray:
    return values_from_samples(real_samples(n, offset=offset))


def test_values_are_four_hex_digits_whose_product_is_the_value_probability(
    model: OrderAgnosticARDM,
) -> None:
    assert (model.digits_per_symbol, model.digit_base, model.table_size) == (4, DIGIT_BASE, 16)
    x = torch.from_numpy(speech(2 * LENGTH).astype(np.int64)).view(2, LENGTH)
    levels = torch.ones_like(x)
    levels[:, ::3] = 0  # a third known
    positions = torch.arange(1, LENGTH, 3).expand(2, -1)
    params = model.coding_params(x, levels, positions)
    symbols = x.gather(1, positions)
    total = torch.zeros(symbols.shape, dtype=torch.float64)
    for digit in range(4):
        span = 16 ** (4 - digit)
        table = model.coding_digit_log_probs(params, symbols // span * span, digit)
        assert table.shape == (*symbols.shape, 16)
        assert torch.allclose(table.exp().sum(-1), torch.ones(()), atol=1e-4)
        picked = table.gather(-1, (symbols // 16 ** (3 - digit) % 16).unsqueeze(-1)).squeeze(-1)
        total += picked.double()
    exact = model.net.head.target_log_probs(params, symbols).double()
    assert torch.allclose(total, exact, atol=2e-3)


@pytest.mark.parametrize("mode", ["joint", "independent"])
@pytest.mark.parametrize("length", [0, 1, 255, 256, 1000])
def test_any_length_round_trips_bit_for_bit(model: OrderAgnosticARDM, mode: str, length: int) -> None:
    values = speech(length)
    back = ardm.decompress(ardm.compress(values, model, budget=4, mode=mode), model)
    assert back.dtype == torch.uint16 and np.array_equal(back.numpy(), values)


@pytest.mark.parametrize("budget", [1, 7, 256])
def test_budgets_groupings_and_threads_decode_alike(model: OrderAgnosticARDM, budget: int) -> None:
    assert_chunks_and_threads_decode_alike(model, speech(700, offset=5000), budget)


def test_digits_cost_what_whole_values_cost() -> None:
    """The same model coding each value whole (K-entry tables, 80x slower here) and as digits:
    the blobs differ by the rounding of the tables alone, and both are near the exact NLL."""
    model = tiny_oa_model()
    values = speech(LENGTH, offset=12000)
    x = torch.from_numpy(values.astype(np.int64)).view(1, LENGTH)
    order = ardm.random_order(LENGTH, model.order_seed)  # the codec's order and policy
    nll = float(model.exact_nll_bits(x, order, model.policy(8)).sum())
    as_digits = 8 * len(ardm.compress(values, model, budget=8))
    model.digits_per_symbol = 1
    whole = ardm.compress(values, model, budget=8)
    assert np.array_equal(ardm.decompress(whole, model).numpy(), values)
    assert abs(as_digits - 8 * len(whole)) <= 8
    # The container with a non-default budget, the byte end and the rounding of the tables of
    # an untrained model (measured: 66 bits over the NLL both ways).
    assert nll - 1 < as_digits <= nll + 90


def test_corrupted_blobs_are_errors(model: OrderAgnosticARDM) -> None:
    values = speech(300)
    blob = ardm.compress(values, model, budget=4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        bad = bytearray(blob)
        bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        try:
            back = ardm.decompress(bytes(bad), model)
        except ValueError:
            continue
        assert np.array_equal(back.numpy(), values)  # a flip the check cannot see changes nothing
    with pytest.raises(ValueError):
        ardm.decompress(blob[:-2], model)


def test_values_that_are_not_a_power_of_16_never_decode_out_of_range() -> None:
    model = tiny_oa_model(num_classes=1000, length=64)
    assert model.digits_per_symbol == 3  # 16^3 = 4096 >= 1000: most first digits are impossible
    values = torch.tensor([0, 999, 998, 512, 1, 255, 256] * 20, dtype=torch.int16)
    assert torch.equal(ardm.decompress(ardm.compress(values, model, budget=5), model), values)
    samples = model.sample(3, budget=4, generator=torch.Generator().manual_seed(1))
    assert int(samples.min()) >= 0 and int(samples.max()) < 1000


def test_sampling_draws_digits_from_one_call_a_step(model: OrderAgnosticARDM) -> None:
    model.network_calls = 0
    samples = model.sample(2, budget=5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, LENGTH) and model.network_calls == 5
    assert int(samples.min()) >= 0 and int(samples.max()) < 65536
    given = torch.from_numpy(speech(LENGTH).astype(np.int64))
    known = torch.arange(LENGTH) % 4 != 0
    filled = model.sample(1, budget=3, given=given, known=known)
    assert torch.equal(filled[0][known], given[known])


def test_small_alphabets_and_categorical_heads_keep_whole_symbols() -> None:
    net = build_net("tiny", 256, (16,), net="dilated")
    assert OrderAgnosticARDM(net, 256, (16,)).digits_per_symbol == 1
    net = build_net("tiny", 1000, (16,), net="dilated", head="categorical")
    assert OrderAgnosticARDM(net, 1000, (16,)).digits_per_symbol == 1


def test_a_count_the_stream_cannot_hold_is_refused_from_the_first_digits(
    model: OrderAgnosticARDM,
) -> None:
    from ardm.coding import codec
    from ardm.coding.container import LAYOUT_BATCH

    blob = ardm.compress(speech(LENGTH), model, budget=4)
    hostile = codec._header(model, LAYOUT_BATCH, 10_000, "uint16", 4, 0)
    hostile.raw = []
    with pytest.raises(ValueError, match="declares 10000 items, more than its"):
        codec._check_first_call(model, blob, hostile, 4, 0)
