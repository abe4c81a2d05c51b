"""The container: the frame of independent streams, header fields coded in the stream, the
check carried by the coder's initial state, and format-1 detection."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm import _core
from ardm.coding.container import (
    BUDGET_OTHER,
    BUDGET_TABLE,
    JOIN_CONCAT,
    JOIN_STACK,
    LAYOUT_BATCH,
    LAYOUT_ONE,
    LAYOUT_SEQUENCE,
    LAYOUT_TABLE,
    MODEL_TABLE,
    P_REVISION,
    PIECE_FLOOR,
    SHIPPED_MODELS,
    StreamHeader,
    check_frame,
    check_state,
    looks_like_version_1,
    mark_piece,
    pack_streams,
    unpack_streams,
)
from ardm.coding.fields import FieldReader, FieldWriter


def test_frame_round_trip_and_one_stream_passes_through():
    streams = [b"\x05" + bytes(range(10)), b"\x01abc", b"\xff" * 300]
    rng = np.random.default_rng(0)
    many = [b"\x07" * int(n) for n in rng.integers(250, 350, 100)]
    framed = pack_streams(many, JOIN_STACK)
    assert unpack_streams(framed) == (JOIN_STACK, many)
    # Rice: about a byte a length; 6 bytes of frame and 4 of its check
    assert len(framed) - sum(map(len, many)) <= 100 * 8 / 8 + 6 + 4
    for joiner in (JOIN_STACK, JOIN_CONCAT):
        assert unpack_streams(pack_streams(streams, joiner)) == (joiner, streams)
    short = [b"\x05", b"\x01ab", b"\x07"]  # pieces below 2^24 alone take 1 to 3 bytes
    assert unpack_streams(pack_streams(short, JOIN_STACK)) == (JOIN_STACK, short)
    assert unpack_streams(b"\x07abcd") == (None, [b"\x07abcd"])
    assert pack_streams([b"\x07abcd"], None) == b"\x07abcd"


CRC = b"\x00" * 4  # the frame's check, at its end: not read by unpack_streams


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "empty"),
        (b"\x00", "truncated"),
        (b"\x00\x06\x01\x01abcd" + CRC, "kind"),
        (b"\x00\x02\x01\x01abcd" + CRC, "format 2, whose network"),  # format 2's frames
        (b"\x00\x03\x01\x01abcd" + CRC, "format 2, whose network"),
        (b"\x00\x00\x01\x01abcd", "earlier development version"),  # the frames before the check
        (b"\x00\x01\x02\x05\x00\x00\x01abcd\x02efgh", "earlier development version"),
        (b"\x00\x04\x80", "truncated"),
        (b"\x00\x04\x7f\x01\x01abcd" + CRC, "cannot fit"),
        (b"\x00\x04\x01" + CRC, "do not fit"),  # an empty stream
        (b"\x00\x04\x02\xc8\x01\x00\x00\x01abcd\x02efgh" + CRC, "do not fit"),
        (b"\x00\x04\x02\x05\x00\x00\x01abcd" + CRC, "do not fit"),
        (b"\x00\x04\x02\x05\x50\x00\x01abcd\x02efgh" + CRC, "Rice"),
        (b"\x00\x04\x02\x05\x00\x00\x00abcd\x02efgh" + CRC, "zero byte"),
        (b"\x00\x04\x02\x85\x00\x00\x00\x01abc\x02efgh" + CRC, "non-canonical"),
        (b"\x00\x04\x02\x05\x00\xff\xff\xff\xff" + CRC, "exceeds"),
        (b"\x00\x04\x02\x05\x00\x01\x01abcd\x02efgh" + CRC, "padding"),
    ],
)
def test_bad_frames(blob, message):
    with pytest.raises(ValueError, match=message):
        unpack_streams(blob)


def test_frame_refuses_streams_that_would_look_like_a_frame():
    with pytest.raises(ValueError):
        pack_streams([b"\x00abcd"], JOIN_STACK)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_frame_or_error(blob):
    try:
        joiner, streams = unpack_streams(blob)
    except ValueError:
        return
    assert sum(len(s) for s in streams) <= len(blob) and all(s[0] != 0 for s in streams)


fields = st.lists(
    st.one_of(
        st.tuples(st.just("flag"), st.booleans(), st.floats(0.001, 0.999)),
        st.tuples(st.just("uint"), st.integers(0, 2**61), st.just(0.0)),
        st.tuples(st.just("choice"), st.integers(0, 2), st.just(0.0)),
    ),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(fields)
def test_fields_round_trip(items):
    writer = FieldWriter()
    for kind, value, p in items:
        if kind == "flag":
            writer.flag(value, p)
        elif kind == "uint":
            writer.uint(value)
        else:
            writer.choice(value, (0.2, 0.3, 0.5))
    coder = _core.AnsCoder()
    writer.push_onto(coder)
    coder = _core.AnsCoder.from_compact_bytes(coder.to_compact_bytes())
    reader = FieldReader(coder)
    for kind, value, p in items:
        if kind == "flag":
            assert reader.flag(p) == value
        elif kind == "uint":
            assert reader.uint() == value
        else:
            assert reader.choice((0.2, 0.3, 0.5)) == value
    assert coder.num_words() == 0 and coder.state() == 2**31


def _header_cost_bits(header: StreamHeader) -> float:
    writer = FieldWriter()
    header.write(writer)
    coder = _core.AnsCoder(2**40)  # a large initial state: the size grows by the fields' bits
    writer.push_onto(coder)
    return math.log2(coder.state()) + 32 * coder.num_words() - 40


def test_a_common_budget_coded_as_another_is_rejected():
    writer = FieldWriter()  # a kjv header's first fields, but 64 as a uint (a writer never does that)
    writer.flag(False, P_REVISION)
    writer.choice(SHIPPED_MODELS.index("kjv"), MODEL_TABLE)
    writer.choice(LAYOUT_ONE, LAYOUT_TABLE)
    writer.choice(BUDGET_OTHER, BUDGET_TABLE)
    writer.uint(64)
    coder = _core.AnsCoder()
    writer.push_onto(coder)
    with pytest.raises(ValueError, match="common budget"):
        StreamHeader.read_prefix(FieldReader(coder))


def test_the_usual_header_costs_under_two_bits():
    header = StreamHeader("fashion-mnist", 0, LAYOUT_ONE, 1, raw=[False])
    assert _header_cost_bits(header) < 2.5
    usual = _header_cost_bits(header)
    for common in (20, 64, 256, 784):  # an index into a table of 24 round budgets
        extra = _header_cost_bits(dataclasses.replace(header, budget=common)) - usual
        assert extra < 6.0, (common, extra)
    other = _header_cost_bits(dataclasses.replace(header, budget=77)) - usual
    assert other < 3.0 + 2 * math.log2(78) + 1  # its choice and a uint
    batch = StreamHeader("fashion-mnist", 0, LAYOUT_BATCH, 100, raw=[False] * 100)
    assert _header_cost_bits(batch) < 20.0


@pytest.mark.parametrize(
    "header",
    [
        StreamHeader("kjv", 0, LAYOUT_SEQUENCE, 12345, raw=[False] * 49),
        StreamHeader(None, 0xBEEF, LAYOUT_BATCH, 3, "int16", 77, 5, raw=[True, False, True]),
        StreamHeader("speech", 0, LAYOUT_ONE, 1, "uint8", None, 0, raw=[False]),
        StreamHeader("kjv", 0, LAYOUT_ONE, 1, None, 64, None, raw=[True]),
    ],
)
def test_header_round_trip(header):
    writer = FieldWriter()
    header.write(writer)
    coder = _core.AnsCoder()
    writer.push_onto(coder)
    reader = FieldReader(coder)
    back = StreamHeader.read_prefix(reader)
    back.read_raw_flags(reader, len(header.raw))
    assert back == header


def test_initial_state_covers_fingerprint_header_and_values():
    header = StreamHeader("fashion-mnist", 0, LAYOUT_ONE, 1, raw=[False])
    items = [np.arange(10, dtype=np.uint8)]
    state = header.initial_state(1234, items)
    assert 2**31 <= state < 2**31 + 2**32
    assert header.initial_state(1235, items) != state
    assert header.initial_state(1234, [items[0].astype(np.int8)]) == state  # same bytes...
    other = StreamHeader("fashion-mnist", 0, LAYOUT_ONE, 1, "int8", raw=[False])
    assert other.initial_state(1234, [items[0].astype(np.int8)]) != state  # ...but the dtype is covered
    check_state(state, 0, state)
    with pytest.raises(ValueError, match="integrity"):
        check_state(state + 1, 0, state)
    with pytest.raises(ValueError, match="integrity"):
        check_state(state, 1, state)


def test_coders_of_a_lower_floor():
    """The bindings of streams that start below 2^31 (rust/src/ans.rs): the floor travels with
    the coder, a decoder is given it, and the default stays 2^31."""
    logits = np.zeros((3, 2), np.float32)
    for start in (PIECE_FLOOR, PIECE_FLOOR + 2**24 - 1, 2**40):
        coder = _core.AnsCoder(start, floor=PIECE_FLOOR)
        coder.push([1, 0, 1], logits)
        data = coder.to_compact_bytes()
        assert data[0] != 0
        for decoder in (_core.AnsCoder.from_compact_bytes(data, floor=PIECE_FLOOR),
                        _core.AnsCoderBatch.from_compact_bytes_list([data], floor=PIECE_FLOOR)):
            out = decoder.pop(logits[None] if isinstance(decoder, _core.AnsCoderBatch) else logits)
            assert out.reshape(-1).tolist() == [1, 0, 1]
            assert int(np.asarray(decoder.states() if hasattr(decoder, "states")
                                  else decoder.state()).reshape(-1)[0]) == start
    assert _core.AnsCoder(PIECE_FLOOR + 5, floor=PIECE_FLOOR).to_compact_bytes() == b"\x01\x00\x05"
    with pytest.raises(ValueError, match="2\\^31, 2\\^63"):
        _core.AnsCoder(PIECE_FLOOR)
    with pytest.raises(ValueError, match="floor"):
        _core.AnsCoder(2**31, floor=0)
    with pytest.raises(ValueError, match="floor"):
        _core.AnsCoder(2**31, floor=2**31 + 1)
    with pytest.raises(ValueError, match="initial_states"):
        _core.AnsCoderBatch(2, floor=PIECE_FLOOR)
    with pytest.raises(ValueError):
        _core.AnsCoder.from_compact_bytes(b"\x05\x00\x00")  # below the default floor


def test_a_piece_checks_24_bits_from_a_state_below_2_to_the_31():
    """A piece of a frame starts at 2^16 + (CRC-32 mod 2^24): about 22.6 bits where any state
    of at least 2^31 costs 31 or more."""
    items = [np.arange(10, dtype=np.uint8)]
    whole = StreamHeader("fashion-mnist", 0, LAYOUT_ONE, 1, raw=[False])
    piece = StreamHeader("fashion-mnist", 0, LAYOUT_ONE, 1, raw=[False], piece=True)
    state = piece.initial_state(1234, items)
    assert PIECE_FLOOR <= state < PIECE_FLOOR + 2**24
    assert state - PIECE_FLOOR == (whole.initial_state(1234, items) - 2**31) % 2**24
    assert piece.initial_state(1235, items) != state
    rng = np.random.default_rng(0)
    cost = np.mean([math.log2(PIECE_FLOOR + c) for c in rng.integers(0, 2**24, 10000)])
    assert 22.4 < cost < 22.8


def test_a_piece_alone_is_marked_in_its_header():
    """split marks a piece (4 bits): its decoder then knows its check is 24 bits. Inside a
    frame a marked piece is an error; the mark pops back to the same header."""
    for header in (StreamHeader("kjv", 0, LAYOUT_SEQUENCE, 100, raw=[False], piece=True),
                   StreamHeader(None, 0xBEEF, LAYOUT_ONE, 1, "int16", 77, 5, raw=[True], piece=True)):
        coder = _core.AnsCoder(PIECE_FLOOR + 12345, floor=PIECE_FLOOR)
        coder.push(np.arange(50) % 3, np.zeros((50, 3), np.float32))
        writer = FieldWriter()
        header.write(writer)  # as inside a frame: not marked
        writer.push_onto(coder)
        stream = coder.to_compact_bytes()
        alone = mark_piece(stream)
        cost = 8 * (len(alone) - len(stream))
        assert -8 <= cost <= 16
        reader = FieldReader(_core.AnsCoder.from_compact_bytes(alone, floor=PIECE_FLOOR))
        back = StreamHeader.read_prefix(reader)
        back.read_raw_flags(reader, 1)
        assert back == header and back.piece
        unmarked = StreamHeader.read_prefix(FieldReader(_core.AnsCoder.from_compact_bytes(
            stream, floor=PIECE_FLOOR)))
        assert not unmarked.piece
        with pytest.raises(ValueError, match="marked"):
            mark_piece(alone)
    bare = StreamHeader("fashion-mnist", 0, LAYOUT_ONE, 1, raw=[False])
    marked = FieldWriter()
    bare.write_prefix(marked, marked=True)
    coder = _core.AnsCoder(2**40)
    marked.push_onto(coder)
    unmarked = _header_cost_bits(bare) - 0.152  # the raw summary
    assert 3.5 < math.log2(coder.state()) - 40 - unmarked < 4.5


def test_the_frame_check_covers_its_bytes_and_the_data():
    items = [np.arange(10, dtype=np.uint8), np.arange(3, dtype=np.uint8)]
    streams = [b"\x05" + bytes(range(10)), b"\x01abc", b"\xff" * 30]
    frame = pack_streams(streams, JOIN_CONCAT, items)
    check_frame(frame, items)
    with pytest.raises(ValueError, match="check of its frame"):
        check_frame(frame, [items[0], items[1] + 1])
    with pytest.raises(ValueError, match="check of its frame"):
        check_frame(frame, items[::-1])
    for bit in range(8 * len(frame)):  # a CRC catches every error of up to 32 bits in a row
        bad = bytearray(frame)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ValueError):
            unpack_streams(bytes(bad))
            check_frame(bytes(bad), items)


def test_format_1_detection():
    stream = b"\x00\x00\x00\x80\x00\x00\x00\x00"
    v1 = bytes([0xAD, 1, 0x00, 0x12, 0x34, 5, 0, 2]) + b"\x00\x00\x00\x00" + stream
    assert looks_like_version_1(v1)
    assert not looks_like_version_1(v1[:-1])
    assert not looks_like_version_1(b"\xad\x02" + v1[2:])


# ---- declared sizes: decode memory and time stay bounded ---------------------------------------

# Run in a fresh process: peak RSS (ru_maxrss) after a warm-up decode of real images at the same
# budgets, so the evaluation threads and their allocator arenas already exist; what a hostile
# blob adds on top is what it allocates before its error.
_HOSTILE_DECODES = r"""
import json, resource, sys, time
import numpy as np
import ardm
from ardm import _core
from ardm.coding.container import JOIN_STACK, LAYOUT_BATCH, LAYOUT_ONE, StreamHeader, pack_streams
from ardm.coding.fields import FieldWriter

def stream(header, garbage_bits, seed):
    coder = _core.AnsCoder()
    garbage = FieldWriter()
    for bits in np.random.default_rng(seed).integers(0, 2**32, garbage_bits // 32):
        garbage.bits(int(bits), 32)
    garbage.push_onto(coder)
    fields = FieldWriter()
    header.write(fields)
    fields.push_onto(coder)
    return coder.to_compact_bytes()

def batch(n, budget, raw=False, bits=16000):
    return stream(StreamHeader("fashion-mnist", 0, LAYOUT_BATCH, n, budget=budget, raw=[raw] * n),
                  bits, 1)

model = ardm.load()
images = ardm.bundled_images().repeat(4, 1, 1, 1)  # 40: as many chunks in flight as decodes run
for mode in ("joint", "independent"):  # budget 1: the largest evaluation chunks
    ardm.decompress(ardm.compress(images, model, budget=1, mode=mode), model)
one = StreamHeader("fashion-mnist", 0, LAYOUT_ONE, 1, budget=1, raw=[False])
hostile = {
    "160 streams of 13 bytes": pack_streams([stream(one, 64, i) for i in range(160)], JOIN_STACK),
    "1000 items in 70 bytes": batch(1000, 1, bits=512),
    "10^5 items at budget 1": batch(10**5, 1),
    "10^6 items at budget 100": batch(10**6, 100),
    "10^5 raw items": batch(10**5, 100, raw=True),
}
results = {}
for name, blob in hostile.items():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        ardm.decompress(blob, model)
        error = None
    except Exception as err:
        error = type(err).__name__
    results[name] = {
        "bytes": len(blob), "error": error, "seconds": time.perf_counter() - start,
        "grew_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
    }
print(json.dumps(results))
"""


def test_hostile_declared_sizes_fail_before_allocating():
    """Before: the 2 KB frame of 160 streams allocated 530 MB and ran 17 s before its error, a
    70-byte joint blob declaring 1000 items 2 GB and 107 s (every item's logits of a call were
    computed before any was popped); now nothing beyond a real decode's working memory (under
    256 MB)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _HOSTILE_DECODES], capture_output=True, text=True,
                         timeout=600, check=True)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for name, r in results.items():
        assert r["error"] == "ValueError", (name, r)
        # A real decode's working memory: float64 temporaries of the portable evaluation in each
        # evaluation thread's allocator arena, which vary from run to run (48-174 MB measured).
        assert r["grew_mb"] < 256, (name, r)
        assert r["seconds"] < 20, (name, r)


# ---- what compress accepts: dense integer data, anything else a ValueError ---------------------


@pytest.mark.parametrize("make, what", [
    (lambda: torch.zeros(4, dtype=torch.uint8, device="meta"), "meta"),              # was RuntimeError
    (lambda: torch.zeros(4, dtype=torch.uint8).to_sparse(), "sparse"),               # was RuntimeError
    (lambda: torch.nested.nested_tensor([torch.zeros(4, dtype=torch.uint8)] * 2), "nested"),
    (lambda: np.array([1, 2, 3, 4], dtype=object), "integers"),
    (lambda: np.array(["a", "b", "c", "d"]), "integers"),
    (lambda: np.zeros(4, dtype=[("a", "u1")]), "integers"),
    (lambda: np.ma.masked_array(np.arange(4), mask=[0, 1, 0, 0]), "mask"),
    (lambda: "abcd", "bytes"),
    (lambda: [1, 2, 3, 4], "bytes"),
    (lambda: torch.zeros(4), "integer dtype"),
    (lambda: torch.zeros(4, dtype=torch.bool), "integer dtype"),
])
def test_compress_takes_dense_integer_data_only(make, what):
    import warnings

    from ardm.coding.items import to_items

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's prototype warnings for nested/sparse tensors
        x = make()
    with pytest.raises(ValueError, match=what):
        to_items(x, (4,), 256)


def test_compress_takes_big_endian_and_strided_arrays():
    from ardm.coding.items import to_items

    big = np.arange(8, dtype=">u2")[::2]
    items = to_items(big, (4,), 256)
    assert items.dtype == "uint16" and items.values.tolist() == [[0, 2, 4, 6]]


def test_a_real_blob_of_more_items_than_bits_decodes():
    """The check of a declared count is sound: a model sure of every value packs a thousand
    items into a few bytes, and that blob still decodes."""
    from conftest import SequenceNet

    import ardm
    from ardm.coding import codec
    from ardm.models import OrderAgnosticARDM

    torch.manual_seed(0)
    model = OrderAgnosticARDM(SequenceNet(16, bias=30.0), 256, (16,)).eval()
    model.modality = "text"
    model.step_losses.fill_(0.01)
    x = torch.zeros(1000, 16, dtype=torch.uint8)
    blob = ardm.compress(x, model, budget=1)
    assert 1000 > 8 * len(blob)  # more items than bits: decode checks the count against the model
    assert torch.equal(ardm.decompress(blob, model), x)
    hostile = codec._header(model, LAYOUT_BATCH, 10**9, "uint8", 1, 0)
    hostile.raw = []
    with pytest.raises(ValueError, match="declares"):
        codec._check_first_call(model, blob, hostile, 1, 0)
