"""The compressed container, format version 2 (``docs/format.md`` byte by byte).

A blob is one rANS stream, or several behind a small frame:

- **one stream** (the first byte is not 0): the whole blob is a compact stream
  (``ardm.AnsCoder.to_compact_bytes``: it ends at a byte). Its first symbols are the header
  fields (:class:`StreamHeader`, coded under fixed tables by :mod:`ardm.coding.fields`), then the
  data. One item, or a joint batch or sequence decoded in lockstep.
- **independent streams** (first byte 0): ``0x00``, the joiner byte (0: the items are stacked
  into a batch, 1: their values are concatenated into one sequence), a varint count n, the
  byte lengths of the first n - 1 streams (Rice coded, see :func:`pack_streams`), then the n
  streams, each a complete one-stream blob of one item: :func:`split` is slicing. No check
  covers the frame, so the codec records the joiner again in the last stream's checked layout
  (``LAYOUT_SEQUENCE`` there for a concatenation, ``LAYOUT_ONE`` everywhere for a stack) and
  requires the two to agree.

The integrity check costs no bits of its own: every stream's coder starts in the state
``2^31 + CRC-32(model fingerprint, header fields, the item values)``, and the decoder requires
that it ends exactly there with every byte consumed.

Example:
    >>> frame = pack_streams([b"\\x01abcd", b"\\x02efgh"], joiner=JOIN_STACK)
    >>> frame[:6], unpack_streams(frame)
    (b'\\x00\\x00\\x02\\x05\\x00\\x00', (0, [b'\\x01abcd', b'\\x02efgh']))
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

import numpy as np

from ardm.coding.fields import FieldReader, FieldWriter

__all__ = [
    "DTYPES",
    "JOIN_CONCAT",
    "JOIN_STACK",
    "LAYOUT_BATCH",
    "LAYOUT_ONE",
    "LAYOUT_SEQUENCE",
    "SHIPPED_MODELS",
    "StreamHeader",
    "check_state",
    "looks_like_version_1",
    "pack_streams",
    "unpack_streams",
]

FRAME_MARKER = 0x00
JOIN_STACK, JOIN_CONCAT = 0, 1
MAX_VARINT_BYTES = 10
MAX_RICE = 40
STATE_LOW = 1 << 31

# dtype codes: decompress returns exactly the dtype that was compressed.
DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]

# ---- the fixed tables of the header fields (part of the format) --------------------------------

P_REVISION = 2.0**-12  # a later revision of the layout (this release reads revision 0)
# The shipped models by number; anything else is "custom" and stores 16 fingerprint bits.
SHIPPED_MODELS = ("fashion-mnist", "kjv", "speech")
MODEL_TABLE = (0.5, 0.25, 0.125, 0.125)
CUSTOM_MODEL = len(SHIPPED_MODELS)
LAYOUT_ONE, LAYOUT_BATCH, LAYOUT_SEQUENCE = 0, 1, 2
LAYOUT_TABLE = (0.75, 0.125, 0.125)
P_BUDGET = 0.25  # the budget differs from the model's default
P_SEED = 2.0**-6  # the order seed differs from the model's
P_DTYPE = 2.0**-5  # the dtype differs from the modality's
DTYPE_TABLE = (1.0,) * len(DTYPES)
P_RATE = 2.0**-4  # audio only: the sample rate differs from the modality's (8,000 Hz)
# Items stored as their raw values (the model would code them worse): none, all, or some (then
# one flag of P = 1/2 per item).
RAW_TABLE = (0.9, 0.05, 0.05)
RAW_NONE, RAW_ALL, RAW_SOME = 0, 1, 2


@dataclass
class StreamHeader:
    """The header fields of one stream (see the module docstring and ``docs/format.md``).

    ``model`` is a shipped model's name or None (custom: ``fingerprint16`` names it);
    ``count`` is the number of items (``LAYOUT_BATCH``) or of values (``LAYOUT_SEQUENCE``);
    ``dtype``, ``budget`` and ``order_seed`` are None where they are the defaults (the
    modality's dtype, the model's default budget and order seed);
    ``raw`` says for every item whether it is stored raw; ``has_rate`` whether the model's
    modality carries a sample rate (audio: the field exists only there, so other blobs do not
    pay for it) and ``sample_rate`` that rate where it is not the modality's.
    """

    model: str | None
    fingerprint16: int
    layout: int
    count: int
    dtype: str | None = None
    budget: int | None = None
    order_seed: int | None = None
    raw: list[bool] = field(default_factory=list)
    has_rate: bool = False
    sample_rate: int | None = None

    def write(self, w: FieldWriter) -> None:
        """Write the fields in reading order (the raw flags last)."""
        w.flag(False, P_REVISION)
        if self.model is None:
            w.choice(CUSTOM_MODEL, MODEL_TABLE)
            w.bits(self.fingerprint16 & 0xFFFF, 16)
        else:
            w.choice(SHIPPED_MODELS.index(self.model), MODEL_TABLE)
        w.choice(self.layout, LAYOUT_TABLE)
        if self.layout != LAYOUT_ONE:
            w.uint(self.count)
        w.flag(self.budget is not None, P_BUDGET)
        if self.budget is not None:
            w.uint(self.budget)
        w.flag(self.order_seed is not None, P_SEED)
        if self.order_seed is not None:
            w.uint(self.order_seed)
        w.flag(self.dtype is not None, P_DTYPE)
        if self.dtype is not None:
            w.choice(DTYPES.index(self.dtype), DTYPE_TABLE)
        if self.has_rate:
            w.flag(self.sample_rate is not None, P_RATE)
            if self.sample_rate is not None:
                w.uint(self.sample_rate)
        summary = RAW_ALL if all(self.raw) else RAW_SOME if any(self.raw) else RAW_NONE
        w.choice(summary, RAW_TABLE)
        if summary == RAW_SOME:
            for raw in self.raw:
                w.flag(raw, 0.5)

    @classmethod
    def read_prefix(cls, r: FieldReader) -> StreamHeader:
        """Read everything but the raw flags (their number depends on the model's item size)."""
        if r.flag(P_REVISION):
            raise ValueError(
                "this blob was made by a newer ardm (a later revision of format 2); upgrade ardm"
            )
        ref = r.choice(MODEL_TABLE)
        model = None if ref == CUSTOM_MODEL else SHIPPED_MODELS[ref]
        fingerprint16 = r.bits(16) if model is None else 0
        layout = r.choice(LAYOUT_TABLE)
        count = 1 if layout == LAYOUT_ONE else r.uint()
        header = cls(model, fingerprint16, layout, count)
        if r.flag(P_BUDGET):
            header.budget = r.uint()
        if r.flag(P_SEED):
            header.order_seed = r.uint()
        if r.flag(P_DTYPE):
            header.dtype = DTYPES[r.choice(DTYPE_TABLE)]
        return header

    def read_raw_flags(self, r: FieldReader, num_items: int, has_rate: bool = False) -> None:
        """Read the fields whose presence or number depends on the model: the sample rate
        (``has_rate``: the model's modality carries one) and the raw flags."""
        self.has_rate = has_rate
        if has_rate and r.flag(P_RATE):
            self.sample_rate = r.uint()
        summary = r.choice(RAW_TABLE)
        if summary == RAW_SOME:
            self.raw = [r.flag(0.5) for _ in range(num_items)]
        else:
            self.raw = [summary == RAW_ALL] * num_items

    def initial_state(self, fingerprint: int, items: list[np.ndarray]) -> int:
        """``2^31 + CRC-32`` of the model fingerprint, these fields and the items' values
        (little-endian bytes of their dtype, C order): where the stream's coder starts."""
        fields = [self.model, self.fingerprint16, self.layout, self.count, self.dtype,
                  self.budget, self.order_seed, [int(r) for r in self.raw]]
        if self.has_rate:
            fields.append(self.sample_rate)
        crc = zlib.crc32(fingerprint.to_bytes(4, "little"))
        crc = zlib.crc32(json.dumps(fields).encode(), crc)
        for item in items:
            canonical = np.ascontiguousarray(item).astype(item.dtype.newbyteorder("<"), copy=False)
            crc = zlib.crc32(canonical.tobytes(), crc)
        return STATE_LOW + (crc & 0xFFFFFFFF)


def check_state(state: int, words_left: int, expected: int) -> None:
    """The decoder's end: every word consumed and the state back at ``expected``."""
    if words_left or state != expected:
        raise ValueError(
            "corrupted blob, or one made by a different model or ardm version: its integrity "
            "check fails; no data is returned"
        )


# ---- independent streams behind a frame ---------------------------------------------------------


def _write_varint(out: bytearray, value: int) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _read_varint(blob: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos >= len(blob):
            raise ValueError(f"truncated blob: it ends inside the {what}")
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise ValueError(f"corrupted blob: non-canonical encoding of the {what}")
            return value, pos
    raise ValueError(f"corrupted blob: the {what} is longer than {MAX_VARINT_BYTES} bytes")


def _rice_bits(values: list[int], r: int) -> int:
    return sum((v >> r) + 1 + r for v in values)


def pack_streams(streams: list[bytes], joiner: int | None) -> bytes:
    """One stream as it is (``joiner`` None), or several behind the frame.

    The frame stores the lengths of all streams but the last as ``base`` (their minimum, a
    varint), a Rice parameter r (1 byte) and, bit-packed most significant bit first and padded
    to a byte, each ``length - base`` in Rice form: ``q = v >> r`` ones, a zero, the r low bits.
    """
    if joiner is None:
        if len(streams) != 1:
            raise ValueError("a blob without a frame holds exactly one stream")
        return streams[0]
    if not streams or any(not s or s[0] == FRAME_MARKER for s in streams):
        raise ValueError("a compact stream starts with a non-zero byte")
    out = bytearray([FRAME_MARKER, joiner])
    _write_varint(out, len(streams))
    lengths = [len(s) for s in streams[:-1]]
    if lengths:
        base = min(lengths)
        deltas = [n - base for n in lengths]
        r = min(range(MAX_RICE + 1), key=lambda k: (_rice_bits(deltas, k), k))
        _write_varint(out, base)
        out.append(r)
        bits: list[int] = []
        for v in deltas:
            bits += [1] * (v >> r) + [0] + [(v >> i) & 1 for i in reversed(range(r))]
        bits += [0] * (-len(bits) % 8)
        out += bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))
    return bytes(out) + b"".join(streams)


class _BitReader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.bit = data, 8 * pos

    def read(self) -> int:
        byte = self.bit >> 3
        if byte >= len(self.data):
            raise ValueError("truncated blob: it ends inside the lengths of its streams")
        value = (self.data[byte] >> (7 - (self.bit & 7))) & 1
        self.bit += 1
        return value


def unpack_streams(blob: bytes) -> tuple[int | None, list[bytes]]:
    """(joiner or None, the streams) of a blob; validates the frame against the blob's length."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected the compressed blob as bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if not blob:
        raise ValueError("empty blob: there is nothing to decompress")
    if blob[0] != FRAME_MARKER:
        return None, [blob]
    if len(blob) < 3:
        raise ValueError("truncated blob: it ends inside its frame")
    joiner = blob[1]
    if joiner not in (JOIN_STACK, JOIN_CONCAT):
        raise ValueError(f"corrupted blob: unknown joiner {joiner} in its frame")
    count, pos = _read_varint(blob, 2, "number of streams")
    # Every stream takes at least 4 bytes: check before allocating anything per stream.
    if count < 1 or 4 * count > len(blob):
        raise ValueError(f"corrupted blob: {count} streams cannot fit in {len(blob)} bytes")
    lengths = []
    if count > 1:
        base, pos = _read_varint(blob, pos, "shortest stream length")
        if pos >= len(blob) or blob[pos] > MAX_RICE:
            raise ValueError("truncated or corrupted blob: bad Rice parameter in its frame")
        r = blob[pos]
        reader = _BitReader(blob, pos + 1)
        for _ in range(count - 1):
            q = 0
            while reader.read():
                q += 1
                if base + (q << r) > len(blob):
                    raise ValueError("corrupted blob: a stream length exceeds the blob")
            low = 0
            for _ in range(r):
                low = (low << 1) | reader.read()
            lengths.append(base + (q << r) + low)
        if reader.bit % 8 and blob[reader.bit // 8] & (0xFF >> (reader.bit % 8)):
            raise ValueError("corrupted blob: the padding after its stream lengths is not zero")
        pos = (reader.bit + 7) // 8
    rest = len(blob) - pos - sum(lengths)
    if rest < 4 or any(n < 4 for n in lengths):
        raise ValueError("truncated or corrupted blob: its stream lengths do not fit its size")
    lengths.append(rest)
    streams = []
    for n in lengths:
        streams.append(blob[pos : pos + n])
        pos += n
    if any(s[0] == FRAME_MARKER for s in streams):
        raise ValueError("corrupted blob: a stream inside the frame starts with a zero byte")
    return joiner, streams


def looks_like_version_1(blob: bytes) -> bool:
    """Whether ``blob`` parses as a format-1 blob (magic 0xAD, version 1, consistent lengths)."""
    if len(blob) < 9 or blob[0] != 0xAD or blob[1] != 1 or blob[2] >> 7:
        return False
    batched = bool(blob[2] >> 6 & 1)
    pos = 5
    try:
        items = 1
        if batched:
            items, pos = _read_varint(blob, pos, "items")
        _, pos = _read_varint(blob, pos, "budget")
        _, pos = _read_varint(blob, pos, "seed")
        if items < 1 or items * 5 > len(blob):
            return False
        total = 0
        for _ in range(items):
            words, pos = _read_varint(blob, pos, "length")
            total += 4 * words
            pos += 4
    except ValueError:
        return False
    return pos + total == len(blob)
