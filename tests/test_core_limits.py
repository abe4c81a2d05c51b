"""The core never panics: absurd sizes and bad arguments to ``ardm._core`` are ValueErrors.

Every size is checked before anything is allocated (orders and policies of at most 2**32
entries, at most 2**24 streams in a batch, 2 to 2**20 symbols per distribution), so none of
these calls can abort the process or raise pyo3's PanicException; they all run in this process.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm._core import (
    AnsCoder,
    AnsCoderBatch,
    naive_policy,
    order_ranks,
    quantize_logits,
    random_order,
    random_orders,
    step_positions,
)

MAX_NUM_VARS = 2**32
MAX_STREAMS = 2**24
STATE_LOW = 2**31


def misaligned(values: list[float] | list[int], dtype: type) -> np.ndarray:
    """A C-contiguous array whose data starts one byte past an aligned address."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(itemsize * len(values) + 1, np.uint8)
    array = raw[1:].view(dtype)
    array[:] = values
    assert array.flags.c_contiguous and not array.flags.aligned
    return array


# ---- the cases of issue #12 item 7 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: random_order(2**40, 0), r"num_vars must lie in 0\.\.=4294967296"),
        (lambda: random_order(MAX_NUM_VARS + 1, 0), r"\(2\^32\)"),
        (lambda: random_orders(2**61, [0]), r"num_vars must lie in 0\.\.=4294967296"),
        (lambda: random_orders(2**61, []), r"num_vars must lie in 0\.\.=4294967296"),
        (lambda: random_orders(2**31, [0, 1, 2]), "too many"),
        (lambda: random_orders(2**32, np.arange(2**10)), "too many"),
        (lambda: naive_policy(2**40, 2**40), r"num_steps must lie in 1\.\.=4294967296"),
        (lambda: naive_policy(2**40, 1), r"num_steps must lie in 1\.\.=4294967296"),
        (lambda: AnsCoderBatch(2**34), r"num_streams must lie in 0\.\.=16777216"),
        (lambda: AnsCoderBatch(MAX_STREAMS + 1), r"\(2\^24\)"),
        (
            lambda: AnsCoderBatch(MAX_STREAMS + 1, itertools.repeat(STATE_LOW)),
            "num_streams must lie",
        ),
        (
            lambda: AnsCoderBatch(2**16).pop(np.zeros((0, 2**40, 256), np.float32)),
            "for 0 streams, but the batch has 65536",
        ),
        (
            lambda: AnsCoderBatch(2**16).push(
                np.zeros((0, 2**40), np.int64), np.zeros((0, 2**40, 256), np.float32)
            ),
            "for 0 streams, but the batch has 65536",
        ),
    ],
)
def test_issue_cases_are_value_errors(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_bounds_are_inclusive() -> None:
    assert naive_policy(MAX_NUM_VARS, 3).tolist() == [0, MAX_NUM_VARS // 3, 2 * MAX_NUM_VARS // 3]
    assert random_orders(MAX_NUM_VARS, []).shape == (0, MAX_NUM_VARS)
    assert random_orders(0, [1] * 1000).shape == (1000, 0)
    assert len(AnsCoderBatch(0)) == 0
    # Zero-size logits of huge shapes are fine when they match the batch: nothing to code.
    assert AnsCoderBatch(0).pop(np.zeros((0, 2**40, 256), np.float32)).shape == (0, 2**40)
    AnsCoderBatch(0).push(np.zeros((0, 2**40), np.int64), np.zeros((0, 2**40, 256), np.float32))
    assert AnsCoderBatch(3).pop(np.zeros((3, 0, 2), np.float32)).shape == (3, 0)
    assert AnsCoder().pop(np.zeros((0, 2), np.float32)).shape == (0,)


# ---- beyond the list: every bad argument of the coder -------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # Broadcast symbols of a huge shape: the shape is checked before any copy.
        (
            lambda: AnsCoder().push(
                np.broadcast_to(np.int8(0), (2**40,)), np.zeros((1, 2), np.float32)
            ),
            "1099511627776 symbols but 1 rows",
        ),
        (
            lambda: AnsCoderBatch(1).push(
                np.broadcast_to(np.int8(0), (1, 2**40)), np.zeros((1, 1, 2), np.float32)
            ),
            "do not match",
        ),
        (lambda: AnsCoder().pop(misaligned([0.0] * 4, np.float32).reshape(2, 2)), "aligned"),
        (lambda: quantize_logits(misaligned([0.0] * 4, np.float32).reshape(2, 2)), "aligned"),
        (lambda: AnsCoder().pop(np.zeros((1, 2), ">f4")), "dtype"),
        (lambda: AnsCoder().pop(np.zeros((4, 4), np.float32)[:, ::2]), "C-contiguous"),
        (lambda: AnsCoder().pop(np.zeros((2**40, 0), np.float32)), "K = 0"),
        (lambda: quantize_logits(np.zeros((2**40, 0), np.float32)), "at least 2 symbols"),
        (lambda: quantize_logits(np.zeros((0, 2**20 + 1), np.float32)), "at most 1048576"),
        (lambda: AnsCoder().pop(np.full((1, 3), np.nan, np.float32)), "NaN"),
        (lambda: AnsCoder().pop(np.array([[0.0, np.inf]], np.float32)), "infinity"),
        (lambda: AnsCoder().pop(np.array([[0.0, -np.inf]], np.float32)), "infinity"),
        (lambda: AnsCoder().push_probs([0], np.array([[np.nan, 1.0]], np.float32)), "NaN"),
        (lambda: AnsCoder().push([2**70], np.zeros((1, 2), np.float32)), "integers"),
        (lambda: AnsCoder().push([True], np.zeros((1, 2), np.float32)), "integers"),
        (
            lambda: AnsCoder().push(np.array([2**64 - 1], np.uint64), np.zeros((1, 2), np.float32)),
            "out of range",
        ),
        (lambda: AnsCoderBatch(True), "bool"),
        (lambda: AnsCoderBatch(2**70), "too large"),
        (lambda: AnsCoderBatch(np.float64(2.0)), "integer"),
        # An endless iterator of initial states is an error, not a hang.
        (lambda: AnsCoderBatch(2, itertools.repeat(STATE_LOW)), "more than 2 initial states"),
        (lambda: AnsCoderBatch(3).pop(np.zeros((2, 1, 2), np.float32)), "for 2 streams"),
        (
            lambda: AnsCoderBatch(3).push(
                np.zeros((2, 1), np.int64), np.zeros((2, 1, 2), np.float32)
            ),
            "for 2 streams",
        ),
        (lambda: AnsCoder.from_bytes(b"\x00" * 2**20), "outside"),
        (lambda: AnsCoder.from_compact_bytes(b"\x00" * 2**20), "top byte is zero"),
    ],
)
def test_bad_arguments_are_value_errors(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_misaligned_symbols_are_copied() -> None:
    logits = np.zeros((3, 4), np.float32)
    coder = AnsCoder()
    coder.push(misaligned([3, 0, 2], np.int64), logits)
    assert coder.pop(logits).tolist() == [3, 0, 2]


def test_misaligned_orders_are_copied() -> None:
    assert order_ranks(misaligned([2, 0, 1], np.int64)).tolist() == [1, 2, 0]


# ---- hypothesis: random arguments give a result or a ValueError, nothing else --------------------

HUGE = [2**31, 2**32, 2**32 + 1, 2**40, 2**61, 2**63 - 1, 2**63, 2**64, 2**70]
counts = st.one_of(st.integers(-3, 300), st.sampled_from(HUGE))
seeds = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([-1, 2**64, 2**70]))


@settings(max_examples=150, deadline=None)
@given(num_vars=counts, seed=seeds)
def test_random_order_is_a_permutation_or_an_error(num_vars: int, seed: int) -> None:
    if 0 <= num_vars <= MAX_NUM_VARS and 0 <= seed < 2**64 and num_vars > 10**6:
        return  # valid, but gigabytes
    try:
        order = random_order(num_vars, seed)
    except ValueError:
        assert not (0 <= num_vars <= MAX_NUM_VARS and 0 <= seed < 2**64)
        return
    assert sorted(order.tolist()) == list(range(num_vars))


@settings(max_examples=150, deadline=None)
@given(num_vars=counts, rows=st.integers(0, 40), seed=st.integers(0, 2**64 - 1))
def test_random_orders_are_bounded_in_total(num_vars: int, rows: int, seed: int) -> None:
    total_ok = 0 <= num_vars <= MAX_NUM_VARS and num_vars * rows <= MAX_NUM_VARS
    if total_ok and num_vars * rows > 10**5:
        return  # valid, but large
    try:
        orders = random_orders(num_vars, [seed] * rows)
    except ValueError:
        assert not total_ok
        return
    assert total_ok
    assert orders.shape == (rows, num_vars)
    if rows:
        assert orders[-1].tolist() == random_order(num_vars, seed).tolist()


@settings(max_examples=150, deadline=None)
@given(num_steps=counts, budget=counts)
def test_naive_policy_is_valid_or_an_error(num_steps: int, budget: int) -> None:
    valid = 1 <= num_steps <= MAX_NUM_VARS and budget >= 1 and budget < 2**64
    if valid and min(num_steps, budget) > 10**5:
        return  # valid, but large
    try:
        policy = naive_policy(num_steps, budget)
    except ValueError:
        assert not valid
        return
    assert valid
    assert len(policy) == min(num_steps, budget)
    assert policy[0] == 0 and (np.diff(policy) > 0).all() and policy[-1] < num_steps


DTYPES = [np.float32, np.float64, np.float16, np.int32, np.uint8, np.bool_, ">f4", np.complex64]
dims = st.one_of(st.integers(0, 5), st.sampled_from([0, 1, 2, 2**20 + 1, 2**40]))


def build(shape: tuple[int, ...], dtype: object, layout: str, fill: float) -> np.ndarray | None:
    """An array of `shape` that exists without gigabytes, or None."""
    try:
        size = int(np.prod(shape, dtype=object))
    except OverflowError:
        return None
    if size > 10**5:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # casts of NaN or -3e38 to integers
            array = np.full(shape, fill, dtype=dtype)  # type: ignore[call-overload]
        if layout == "fortran":
            array = np.asfortranarray(array)
        elif layout == "strided" and array.ndim:
            array = np.repeat(array, 2, axis=-1)[..., ::2]
        elif layout == "readonly":
            array.flags.writeable = False
    except (ValueError, OverflowError, TypeError, MemoryError):
        return None  # numpy itself refuses the shape
    return array


arrays = st.builds(
    build,
    st.lists(dims, min_size=0, max_size=4).map(tuple),
    st.sampled_from(DTYPES),
    st.sampled_from(["c", "fortran", "strided", "readonly"]),
    st.sampled_from([0.0, 1.5, -3e38, float("nan"), float("inf")]),
)


@settings(max_examples=300, deadline=None)
@given(logits=arrays, stream=st.binary(max_size=64), compact=st.booleans())
def test_pop_gives_symbols_or_a_value_error(
    logits: np.ndarray | None, stream: bytes, compact: bool
) -> None:
    if logits is None:
        return
    try:
        coder = AnsCoder.from_compact_bytes(stream) if compact else AnsCoder.from_bytes(stream)
    except ValueError:
        coder = AnsCoder(STATE_LOW + len(stream))
    before = coder.to_bytes()
    try:
        symbols = coder.pop(logits)
    except ValueError:
        assert coder.to_bytes() == before
    else:
        assert symbols.shape == (logits.shape[0],)
        assert ((symbols >= 0) & (symbols < logits.shape[1])).all()
    try:
        tables = quantize_logits(logits)
    except ValueError:
        pass
    else:
        assert (tables.sum(axis=1) == 2**24).all()


@settings(max_examples=300, deadline=None)
@given(
    num_streams=st.one_of(st.integers(0, 4), st.sampled_from([2**16, MAX_STREAMS + 1, 2**40])),
    logits=arrays,
    symbols=arrays,
)
def test_batch_gives_symbols_or_a_value_error(
    num_streams: int, logits: np.ndarray | None, symbols: np.ndarray | None
) -> None:
    if logits is None or symbols is None:
        return
    try:
        batch = AnsCoderBatch(num_streams)
    except ValueError:
        assert num_streams > MAX_STREAMS
        return
    before = batch.to_bytes_list() if num_streams < 100 else None
    try:
        batch.push(symbols, logits)
    except ValueError:
        if before is not None:
            assert batch.to_bytes_list() == before
    try:
        out = batch.pop(logits)
    except ValueError:
        pass
    else:
        assert out.shape == logits.shape[:2]


@settings(max_examples=100, deadline=None)
@given(
    order=st.one_of(
        st.lists(st.integers(-2, 12), max_size=12),
        st.builds(lambda n, s: random_order(n, s), st.integers(0, 12), st.integers(0, 99)),
    ),
    policy=st.lists(st.integers(-1, 14), max_size=5),
    step=st.one_of(st.integers(-1, 6), st.sampled_from([2**63, 2**64])),
)
def test_order_bookkeeping_gives_a_result_or_a_value_error(
    order: object, policy: list[int], step: int
) -> None:
    try:
        ranks = order_ranks(order)
    except ValueError:
        pass
    else:
        assert len(ranks) == len(order)  # type: ignore[arg-type]
    try:
        positions = step_positions(order, policy, step)
    except ValueError:
        pass
    else:
        assert len(positions) >= 1
