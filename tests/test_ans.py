"""The rANS coder and the logits quantization of the Rust core (rust/src/ans.rs, quantize.rs)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm._core import AnsCoder, AnsCoderBatch, quantize_logits

TOTAL = 1 << 24


def sample(freqs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One symbol per row, drawn from the quantized tables."""
    cum = np.cumsum(freqs, axis=1)
    slots = rng.integers(0, TOTAL, size=(len(freqs), 1))
    return (slots >= cum).sum(axis=1)


def make_logits(rng: np.random.Generator, n: int, k: int, style: str) -> np.ndarray:
    if style == "arbitrary":
        logits = rng.normal(0, 3, size=(n, k))
    elif style == "peaky":
        logits = rng.normal(0, 0.01, size=(n, k))
        logits[np.arange(n), rng.integers(0, k, n)] += 50.0
    elif style == "uniform":
        logits = rng.normal(0, 1e-4, size=(n, k))
    else:  # near-zero probabilities: a huge spread
        logits = rng.uniform(-100, 100, size=(n, k))
    return np.ascontiguousarray(logits, dtype=np.float32)


def ideal_bits(symbols: np.ndarray, logits: np.ndarray) -> float:
    freqs = quantize_logits(logits).astype(np.float64)
    return float(np.sum(24 - np.log2(freqs[np.arange(len(symbols)), symbols])))


STYLES = ["arbitrary", "peaky", "uniform", "tiny"]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("k,n", [(2, 500), (3, 300), (16, 300), (256, 200), (1000, 40), (65536, 3)])
def test_round_trip(style: str, k: int, n: int) -> None:
    rng = np.random.default_rng(k * 7 + len(style))
    logits = make_logits(rng, n, k, style)
    symbols = sample(quantize_logits(logits), rng)
    symbols[::5] = rng.integers(0, k, size=len(symbols[::5]))  # improbable symbols too
    coder = AnsCoder()
    coder.push(symbols, logits)
    decoder = AnsCoder.from_bytes(coder.to_bytes())
    assert decoder.pop(logits).tolist() == symbols.tolist()
    assert decoder.is_empty()
    ideal = ideal_bits(symbols, logits)
    assert ideal <= coder.num_bits() <= ideal * 1.001 + 64


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(2, 300),
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    style=st.sampled_from(STYLES),
)
def test_stack_order_across_pushes(seed: int, k: int, sizes: list[int], style: str) -> None:
    rng = np.random.default_rng(seed)
    coder = AnsCoder()
    pushed = []
    for n in sizes:
        logits = make_logits(rng, n, k, style)
        symbols = rng.integers(0, k, size=n)
        coder.push(symbols, logits)
        pushed.append((symbols, logits))
    coder = AnsCoder.from_bytes(coder.to_bytes())
    for symbols, logits in reversed(pushed):
        assert coder.pop(logits).tolist() == symbols.tolist()
    assert coder.is_empty()


def test_probs_path() -> None:
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    coder = AnsCoder()
    coder.push_probs([2, 2, 0], probs)
    assert coder.pop_probs(probs).tolist() == [2, 2, 0]
    assert coder.is_empty()


def test_empty_coder_serializes() -> None:
    data = AnsCoder().to_bytes()
    assert len(data) == 8
    coder = AnsCoder.from_bytes(data)
    assert coder.is_empty() and coder.num_bits() == 64
    assert AnsCoder.from_bytes(bytearray(data)).is_empty()


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
)
def test_any_integer_dtype(dtype: type) -> None:
    logits = np.zeros((3, 5), dtype=np.float32)
    coder = AnsCoder()
    coder.push(np.array([4, 0, 2], dtype=dtype), logits)
    assert coder.pop(logits).tolist() == [4, 0, 2]


def test_batch_matches_single_streams() -> None:
    rng = np.random.default_rng(0)
    b, n, k = 6, 50, 20
    logits = make_logits(rng, b * n, k, "arbitrary").reshape(b, n, k)
    symbols = rng.integers(0, k, size=(b, n))
    batch = AnsCoderBatch(b)
    assert len(batch) == b
    batch.push(symbols, logits)
    streams = batch.to_bytes_list()
    for i in range(b):
        single = AnsCoder()
        single.push(symbols[i], logits[i])
        assert streams[i] == single.to_bytes()
    assert batch.num_bits().tolist() == [8 * len(s) for s in streams]
    back = AnsCoderBatch.from_bytes_list(streams)
    assert back.pop(logits).tolist() == symbols.tolist()


def test_batch_is_all_or_nothing() -> None:
    logits = np.zeros((2, 3, 4), dtype=np.float32)
    batch = AnsCoderBatch(2)
    batch.push(np.ones((2, 3), dtype=np.int64), logits)
    before = batch.to_bytes_list()
    bad = logits.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError):
        batch.push(np.ones((2, 3), dtype=np.int64), bad)
    with pytest.raises(ValueError):
        batch.pop(bad)
    assert batch.to_bytes_list() == before


def test_quantize_logits_is_pinned() -> None:
    """The cross-platform contract: these frequencies never change."""
    logits = np.array(
        [[0.0, 1.0, -1.0, 2.5], [3.0, 3.0, -20.0, 0.125], [-100.0, 50.0, 0.0, 1e-3]], np.float32
    )
    freqs = quantize_logits(logits)
    assert freqs.dtype == np.uint32 and freqs.shape == (3, 4)
    assert freqs.sum(axis=1).tolist() == [TOTAL] * 3
    assert freqs.tolist() == PINNED


PINNED = [
    [1031067, 2803227, 379379, 12563543],
    [8158605, 8158349, 1, 460261],
    [1, 16777213, 1, 1],
]


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 2000), st.integers(0, 2**32 - 1))
def test_quantized_tables_are_valid(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, rng.uniform(0, 30), size=(2, k)).astype(np.float32)
    freqs = quantize_logits(logits)
    assert (freqs >= 1).all()
    assert (freqs.sum(axis=1, dtype=np.int64) == TOTAL).all()
    assert (quantize_logits(logits) == freqs).all()


def test_truncated_stream_is_a_value_error() -> None:
    rng = np.random.default_rng(1)
    logits = make_logits(rng, 400, 16, "arbitrary")
    symbols = rng.integers(0, 16, size=400)
    coder = AnsCoder()
    coder.push(symbols, logits)
    data = coder.to_bytes()
    for cut in (4, 40, len(data) - 8):
        truncated = AnsCoder.from_bytes(data[cut:])
        with pytest.raises(ValueError, match="past the end"):
            truncated.pop(logits)
    with pytest.raises(ValueError):
        AnsCoder.from_bytes(data[:-1])
    with pytest.raises(ValueError):
        AnsCoder.from_bytes(b"\0" * 8)
    with pytest.raises(ValueError):
        AnsCoder().pop(logits[:1])


LOGITS = np.zeros((3, 4), dtype=np.float32)


@pytest.mark.parametrize(
    "symbols,logits,match",
    [
        ([0, 1, 2], LOGITS.astype(np.float64), "float32"),
        ([0, 1, 2], LOGITS.tolist(), "numpy array"),
        ([0, 1, 2], LOGITS[None], "shape"),
        ([0, 1, 2], np.zeros((8, 4), np.float32)[::2], "C-contiguous"),
        ([0, 1, 2], np.zeros((3, 1), np.float32), "K = 1"),
        (np.array([0.0, 1.0, 2.0]), LOGITS, "integers"),
        ([0, 1], LOGITS, "2 symbols but 3 rows"),
        ([[0, 1, 2]], LOGITS, "shape"),
        ([0, 1, 4], LOGITS, "out of range"),
        ([0, -1, 2], LOGITS, "out of range"),
        (np.array([0, 2**63 + 1, 0], np.uint64), LOGITS, "out of range"),
        ("012", LOGITS, "symbols"),
        ([0, 1, 2], np.full((3, 4), np.nan, np.float32), "NaN"),
        ([0, 1, 2], np.full((3, 4), np.inf, np.float32), "infinity"),
    ],
)
def test_bad_input_is_a_value_error(symbols: object, logits: object, match: str) -> None:
    coder = AnsCoder()
    coder.push([1], np.zeros((1, 4), np.float32))
    before = coder.to_bytes()
    with pytest.raises(ValueError, match=match):
        coder.push(symbols, logits)
    assert coder.to_bytes() == before
    if isinstance(logits, np.ndarray) and logits.dtype != np.float32:
        with pytest.raises(ValueError):
            coder.pop(logits)
        with pytest.raises(ValueError):
            quantize_logits(logits)


@pytest.mark.parametrize(
    "call",
    [
        lambda: AnsCoder.from_bytes("abc"),
        lambda: AnsCoder.from_bytes(12),
        lambda: AnsCoderBatch(-1),
        lambda: AnsCoderBatch(1.5),
        lambda: AnsCoderBatch.from_bytes_list(b"abcd"),
        lambda: AnsCoderBatch.from_bytes_list([b"\0" * 8]),
        lambda: AnsCoderBatch(2).push(np.zeros((2, 3), np.int64), np.zeros((2, 4, 5), np.float32)),
        lambda: AnsCoderBatch(2).push(np.zeros((3, 3), np.int64), np.zeros((3, 3, 5), np.float32)),
        lambda: AnsCoderBatch(2).pop(np.zeros((2, 3, 5), np.float64)),
        lambda: AnsCoder().push_probs([0], np.array([[-1.0, 2.0]], np.float32)),
        lambda: AnsCoder().push_probs([0], np.zeros((1, 2), np.float32)),
        lambda: quantize_logits(np.zeros((1, (1 << 20) + 1), np.float32)),
    ],
)
def test_other_bad_input_is_a_value_error(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


DOCUMENTED = [
    quantize_logits,
    AnsCoder,
    AnsCoder.push,
    AnsCoder.pop,
    AnsCoder.push_probs,
    AnsCoder.to_bytes,
    AnsCoder.from_bytes,
    AnsCoder.to_compact_bytes,
    AnsCoder.from_compact_bytes,
    AnsCoder.state,
    AnsCoderBatch,
]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda o: o.__qualname__)
def test_doc_examples(obj: object) -> None:
    import doctest

    doc = obj.__doc__ or ""
    assert ">>>" in doc
    globs = {"AnsCoder": AnsCoder, "AnsCoderBatch": AnsCoderBatch, "np": np}
    test = doctest.DocTestParser().get_doctest(doc, globs, obj.__qualname__, None, 0)  # type: ignore[attr-defined]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0


def pinned_rows(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits that are exact float32 values on every platform (multiples of 2^-12 in [-8, 8))."""
    i = np.arange(n * k, dtype=np.int64)
    logits = (((i * 2654435761) % 65536) / 4096.0 - 8.0).astype(np.float32).reshape(n, k)
    symbols = (np.arange(n) * 40503) % k
    return symbols, logits


@pytest.mark.parametrize(
    "k,n,digest",
    [
        (2, 3000, "9fa70fbb535e0075"),
        (5, 1000, "a0ebafa584de550c"),
        (16, 1000, "6f2f0480ee32ccfd"),
        (100, 300, "b7a0ecf2b0f7d3be"),
        (256, 300, "9604f7296610c01c"),
        (1000, 50, "cf55d8654707d5ea"),
    ],
)
def test_streams_are_pinned(k: int, n: int, digest: str) -> None:
    """The cross-platform contract for the coder: these streams never change (the vector,
    scalar and size-specific paths all give them)."""
    import hashlib

    symbols, logits = pinned_rows(n, k)
    coder = AnsCoder()
    coder.push(symbols, logits)
    data = coder.to_bytes()
    assert hashlib.sha256(data).hexdigest()[:16] == digest
    assert AnsCoder.from_bytes(data).pop(logits).tolist() == symbols.tolist()
    # The same rows at other positions of a batch give the same stream.
    batch = AnsCoderBatch(2)
    batch.push(np.stack([symbols, symbols[::-1]]), np.stack([logits, logits[::-1]]))
    assert batch.to_bytes_list()[0] == data


# ---- initial states and the compact format (container v2) ---------------------------------------

STATE_LOW = 1 << 31


def checksum_state(payload: bytes) -> int:
    import zlib

    return STATE_LOW + zlib.crc32(payload)


def compact_reference(data: bytes) -> bytes:
    """The compact format computed from `to_bytes()` output (words in write order, then the
    state as two little-endian words): state big endian in its minimal 4..7 bytes (an 8-byte
    state flushes its low word first), then the words, the last written first."""
    words = [data[i : i + 4] for i in range(0, len(data) - 8, 4)]
    state = int.from_bytes(data[-8:], "little")
    if state >= 1 << 56:
        head = (state >> 32).to_bytes(4, "big")
        words.append((state & 0xFFFFFFFF).to_bytes(4, "little"))
    else:
        head = state.to_bytes(max(4, (state.bit_length() + 7) // 8), "big")
    return head + b"".join(reversed(words))


@pytest.mark.parametrize(
    "k,n", [(2, 0), (2, 300), (16, 1), (16, 200), (256, 100), (1000, 30), (65536, 3)]
)
@pytest.mark.parametrize(
    "start", [STATE_LOW, checksum_state(b"ardm"), (1 << 56) - 1, 1 << 56, (1 << 63) - 1]
)
def test_initial_state_round_trip(k: int, n: int, start: int) -> None:
    rng = np.random.default_rng(k + n)
    logits = make_logits(rng, n, k, STYLES[n % 4])
    symbols = rng.integers(0, k, size=n)
    coder = AnsCoder(start)
    assert (coder.state(), coder.num_words()) == (start, 0)
    coder.push(symbols, logits)
    compact = coder.to_compact_bytes()
    assert compact == compact_reference(coder.to_bytes())
    assert len(compact) <= len(coder.to_bytes())
    words_bits = 32 * coder.num_words()
    assert coder.state().bit_length() + words_bits <= 8 * len(compact)
    assert 8 * len(compact) <= coder.state().bit_length() + 7 + words_bits
    for decoder in [AnsCoder.from_compact_bytes(compact), AnsCoder.from_bytes(coder.to_bytes())]:
        assert decoder.pop(logits).tolist() == symbols.tolist()
        assert (decoder.state(), decoder.num_words()) == (start, 0)
        assert decoder.is_empty() == (start == STATE_LOW)


def test_state_verification_detects_corruption() -> None:
    """A decoder back at the initial state with no words left and the right symbols can only
    have read the very stream that was written."""
    rng = np.random.default_rng(17)
    logits = make_logits(rng, 400, 16, "arbitrary")
    symbols = sample(quantize_logits(logits), rng)
    start = checksum_state(symbols.astype(np.uint8).tobytes())
    coder = AnsCoder(initial_state=start)
    coder.push(symbols, logits)
    compact = coder.to_compact_bytes()
    for i in range(0, len(compact), 7):
        bad = bytearray(compact)
        bad[i] ^= 1 << (i % 8)
        try:
            decoder = AnsCoder.from_compact_bytes(bad)
            out = decoder.pop(logits).tolist()
        except ValueError:
            continue
        assert (out, decoder.state(), decoder.num_words()) != (symbols.tolist(), start, 0)
    # Dropping or adding bytes is caught too.
    for bad in [compact[:-4], compact[:-1], compact + b"\x00\x00\x00\x01"]:
        try:
            decoder = AnsCoder.from_compact_bytes(bad)
            out = decoder.pop(logits).tolist()
        except ValueError:
            continue
        assert (out, decoder.state(), decoder.num_words()) != (symbols.tolist(), start, 0)


def test_compact_empty_and_flush() -> None:
    assert AnsCoder().to_compact_bytes() == b"\x80\x00\x00\x00"
    assert AnsCoder.from_compact_bytes(b"\x80\x00\x00\x00").is_empty()
    assert AnsCoder(1 << 32).to_compact_bytes() == b"\x01" + bytes(4)
    big = (1 << 62) + 5
    flushed = (big >> 32).to_bytes(4, "big") + (5).to_bytes(4, "little")
    assert AnsCoder(big).to_compact_bytes() == flushed
    assert AnsCoder.from_compact_bytes(bytearray(AnsCoder(big).to_compact_bytes())).state() == big


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=40))
def test_arbitrary_compact_bytes(data: bytes) -> None:
    try:
        coder = AnsCoder.from_compact_bytes(data)
    except ValueError:
        return
    assert coder.to_compact_bytes() == data
    assert STATE_LOW <= coder.state() < 1 << 63


def test_batch_with_initial_states_equals_singles() -> None:
    rng = np.random.default_rng(23)
    b, n, k = 4, 60, 256
    logits = np.stack([make_logits(rng, n, k, "arbitrary") for _ in range(b)])
    symbols = rng.integers(0, k, size=(b, n))
    starts = [checksum_state(bytes([i])) for i in range(b - 1)] + [(1 << 63) - 1]
    for initial in [starts, np.array(starts, dtype=np.uint64), tuple(starts)]:
        batch = AnsCoderBatch(b, initial)
        assert batch.states().dtype == np.uint64
        assert batch.states().tolist() == starts
        batch.push(symbols, logits)
        streams = batch.to_compact_bytes_list()
        for i in range(b):
            single = AnsCoder(starts[i])
            single.push(symbols[i], logits[i])
            assert streams[i] == single.to_compact_bytes()
            assert batch.states()[i] == single.state()
            assert batch.num_words()[i] == single.num_words()
        back = AnsCoderBatch.from_compact_bytes_list(streams)
        assert back.pop(logits).tolist() == symbols.tolist()
        assert back.states().tolist() == starts
        assert back.num_words().tolist() == [0] * b
    assert AnsCoderBatch(2, None).states().tolist() == [STATE_LOW] * 2
    assert AnsCoderBatch(0, []).to_compact_bytes_list() == []


@pytest.mark.parametrize(
    "state",
    [-1, 0, STATE_LOW - 1, 1 << 63, (1 << 64) - 1, 1 << 64, 1 << 100, -(1 << 70), 1.5, "1", True],
)
def test_bad_initial_state(state: object) -> None:
    with pytest.raises(ValueError, match="initial_state"):
        AnsCoder(state)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"initial_states\[1\]"):
        AnsCoderBatch(2, [STATE_LOW, state])


@pytest.mark.parametrize(
    "states",
    [
        [STATE_LOW],
        [STATE_LOW] * 3,
        "ab",
        b"ab",
        5,
        [[STATE_LOW], [STATE_LOW]],
        np.array([2.5e9, 3e9]),
    ],
)
def test_bad_initial_states(states: object) -> None:
    with pytest.raises(ValueError):
        AnsCoderBatch(2, states)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x80\x00\x00",
        b"\x00\x80\x00\x00",
        bytes(8),
        b"\x7f\xff\xff\xff",
        "abcd",
        [0x80, 0, 0, 0],
        None,
    ],
)
def test_bad_compact_bytes(data: object) -> None:
    with pytest.raises(ValueError):
        AnsCoder.from_compact_bytes(data)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AnsCoderBatch.from_compact_bytes_list([b"\x80\x00\x00\x00", data])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        AnsCoderBatch.from_compact_bytes_list(b"\x80\x00\x00\x00")
