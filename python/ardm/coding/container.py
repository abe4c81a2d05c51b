"""The compressed container, format version 3 (``docs/format.md`` byte by byte).

A blob is one rANS stream, or several behind a small frame:

- **one stream** (the first byte is not 0): the whole blob is a compact stream
  (``ardm.AnsCoder.to_compact_bytes``: it ends at a byte). Its first symbols are the header
  fields (:class:`StreamHeader`, coded under fixed tables by :mod:`ardm.coding.fields`), then the
  data. One item, or a joint batch or sequence decoded in lockstep.
- **independent streams** (first byte 0): ``0x00``, the frame's kind (2: the items are
  stacked into a batch, 3: their values are concatenated into one sequence), a varint count n,
  the byte lengths of the first n - 1 streams (Rice coded, see :func:`pack_streams`), the n
  streams (*pieces*, one item each), then a CRC-32 of all of that and of every item's values
  (:func:`check_frame`). A piece decoded alone is the one-stream blob :func:`mark_piece` makes
  of it (its header marked: 4 bits more).

The integrity check of a stream costs no bits of its own: its coder starts in the state
``2^31 + CRC-32(model fingerprint, header fields, the item values)``, and the decoder requires
that it ends exactly there with every byte consumed. A piece, whose frame carries a 32-bit check
of its own, starts lower, at ``2^16 + (that CRC mod 2^24)`` (a 24-bit check that costs about 22.6
bits instead of 32: the coder's floor is ``PIECE_FLOOR``).

Example:
    >>> frame = pack_streams([b"\\x01abcd", b"\\x02efgh"], joiner=JOIN_STACK)
    >>> frame[:6], unpack_streams(frame)
    (b'\\x00\\x04\\x02\\x05\\x00\\x00', (0, [b'\\x01abcd', b'\\x02efgh']))
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

import numpy as np

from ardm import _core
from ardm.coding.fields import FieldReader, FieldWriter

__all__ = [
    "DTYPES",
    "JOIN_CONCAT",
    "JOIN_STACK",
    "LAYOUT_BATCH",
    "LAYOUT_ONE",
    "LAYOUT_SEQUENCE",
    "PIECE_FLOOR",
    "SHIPPED_MODELS",
    "StreamHeader",
    "check_frame",
    "check_state",
    "looks_like_version_1",
    "mark_piece",
    "open_frame_stream",
    "open_stream",
    "pack_streams",
    "unpack_streams",
]

FRAME_MARKER = 0x00
JOIN_STACK, JOIN_CONCAT = 0, 1
# The frame's kind byte is FRAME_KIND + joiner; 0 and 1 were the kinds of an earlier development
# version of format 2 (32-bit checks per stream, no check of the frame), 2 and 3 those of format 2
# (its network evaluated in plain float32), neither read any more.
FRAME_KIND = 4
FORMAT_2_KIND = 2
#: What to do with a blob of format 2 (both the frame's message and the codec's hint say it).
FORMAT_2_REMEDY = (
    "decompress it with ardm at git revision 7fd5f54 or earlier, on the machine that made it "
    "(docs/format.md, 'Format version 2')"
)
FORMAT_2_BLOB = (
    "this blob is of format 2, whose network ran in plain float32 and so decodes only where torch "
    f"runs the same CPU kernels; this release reads format 3: {FORMAT_2_REMEDY}, and compress the "
    "data again"
)
MAX_VARINT_BYTES = 10
MAX_RICE = 40
STATE_LOW = 1 << 31
# A piece's coder starts at PIECE_FLOOR + its 24-bit check (rust/src/ans.rs: "Streams that start
# below L"); every stream is opened with this floor, which only a piece's check can end on.
PIECE_FLOOR = 1 << 16
PIECE_CHECK = (1 << 24) - 1

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
# The budget: the model's default, one of the round numbers users pick (an index into
# COMMON_BUDGETS, 6.3 bits), or any other (a uint after 3.3 bits). As a uint a budget of 64
# would cost 13 bits, 0.05 bits a byte of a 256-byte text record.
BUDGET_DEFAULT, BUDGET_COMMON, BUDGET_OTHER = 0, 1, 2
BUDGET_TABLE = (0.6, 0.3, 0.1)
COMMON_BUDGETS = (1, 2, 3, 4, 5, 8, 10, 16, 20, 25, 32, 40, 50, 64, 128, 200, 250, 256, 500, 512,
                  784, 1000, 1024, 2000)
COMMON_TABLE = (1.0,) * len(COMMON_BUDGETS)
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
    pay for it) and ``sample_rate`` that rate where it is not the modality's; ``piece`` whether
    the stream is a piece of an independent frame (its check is 24 bits: see
    :meth:`initial_state`).
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
    piece: bool = False

    def write(self, w: FieldWriter) -> None:
        """Write the fields in reading order (the raw flags last), as a stream inside a blob of
        its own or inside a frame (a piece there is not marked: the frame says what it is)."""
        self.write_prefix(w)
        if self.has_rate:
            w.flag(self.sample_rate is not None, P_RATE)
            if self.sample_rate is not None:
                w.uint(self.sample_rate)
        summary = RAW_ALL if all(self.raw) else RAW_SOME if any(self.raw) else RAW_NONE
        w.choice(summary, RAW_TABLE)
        if summary == RAW_SOME:
            for raw in self.raw:
                w.flag(raw, 0.5)

    def write_prefix(self, w: FieldWriter, marked: bool = False) -> None:
        """The fields :meth:`read_prefix` reads; ``marked``: those of a piece decoded alone,
        whose layout is preceded by "a batch of no items", a layout no blob has otherwise."""
        w.flag(False, P_REVISION)
        if self.model is None:
            w.choice(CUSTOM_MODEL, MODEL_TABLE)
            w.bits(self.fingerprint16 & 0xFFFF, 16)
        else:
            w.choice(SHIPPED_MODELS.index(self.model), MODEL_TABLE)
        if marked:
            w.choice(LAYOUT_BATCH, LAYOUT_TABLE)
            w.uint(0)
        w.choice(self.layout, LAYOUT_TABLE)
        if self.layout != LAYOUT_ONE:
            w.uint(self.count)
        if self.budget is None:
            w.choice(BUDGET_DEFAULT, BUDGET_TABLE)
        elif self.budget in COMMON_BUDGETS:
            w.choice(BUDGET_COMMON, BUDGET_TABLE)
            w.choice(COMMON_BUDGETS.index(self.budget), COMMON_TABLE)
        else:
            w.choice(BUDGET_OTHER, BUDGET_TABLE)
            w.uint(self.budget)
        w.flag(self.order_seed is not None, P_SEED)
        if self.order_seed is not None:
            w.uint(self.order_seed)
        w.flag(self.dtype is not None, P_DTYPE)
        if self.dtype is not None:
            w.choice(DTYPES.index(self.dtype), DTYPE_TABLE)

    @classmethod
    def read_prefix(cls, r: FieldReader) -> StreamHeader:
        """Read everything but the sample rate and the raw flags (whether they are there and
        their number depend on the model); ``piece`` is set where the stream is marked as a
        piece decoded alone (:meth:`write_prefix`)."""
        if r.flag(P_REVISION):
            raise ValueError(
                "this blob was made by a newer ardm (a later revision of format 3); upgrade ardm"
            )
        ref = r.choice(MODEL_TABLE)
        model = None if ref == CUSTOM_MODEL else SHIPPED_MODELS[ref]
        fingerprint16 = r.bits(16) if model is None else 0
        layout = r.choice(LAYOUT_TABLE)
        count = 1 if layout == LAYOUT_ONE else r.uint()
        piece = layout == LAYOUT_BATCH and count == 0
        if piece:
            layout = r.choice(LAYOUT_TABLE)
            if layout == LAYOUT_BATCH:
                raise ValueError("corrupted blob: a piece of an independent frame holds one item")
            count = 1 if layout == LAYOUT_ONE else r.uint()
        header = cls(model, fingerprint16, layout, count, piece=piece)
        budget_kind = r.choice(BUDGET_TABLE)
        if budget_kind == BUDGET_COMMON:
            header.budget = COMMON_BUDGETS[r.choice(COMMON_TABLE)]
        elif budget_kind == BUDGET_OTHER:
            header.budget = r.uint()
            if header.budget in COMMON_BUDGETS:  # the writer never codes one so
                raise ValueError("corrupted blob: a common budget coded as another")
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
        (little-endian bytes of their dtype, C order): where the stream's coder starts. A
        piece starts at ``PIECE_FLOOR + (CRC-32 mod 2^24)``: its frame has a check of its own,
        and a state below 2^31 costs only the bits it holds."""
        fields = [self.model, self.fingerprint16, self.layout, self.count, self.dtype,
                  self.budget, self.order_seed, [int(r) for r in self.raw]]
        if self.has_rate:
            fields.append(self.sample_rate)
        crc = zlib.crc32(fingerprint.to_bytes(4, "little"))
        crc = _crc_items(zlib.crc32(json.dumps(fields).encode(), crc), items)
        return PIECE_FLOOR + (crc & PIECE_CHECK) if self.piece else STATE_LOW + crc


def _crc_items(crc: int, items: list[np.ndarray]) -> int:
    """``crc`` continued over the items' values, little-endian bytes of their dtype, C order."""
    for item in items:
        canonical = np.ascontiguousarray(item).astype(item.dtype.newbyteorder("<"), copy=False)
        crc = zlib.crc32(canonical.tobytes(), crc)
    return crc


def open_stream(stream: bytes) -> tuple[_core.AnsCoder, FieldReader, StreamHeader]:
    """The coder of a compact stream (of floor ``PIECE_FLOOR``, which every stream may be
    decoded with: only a piece's check can end below 2^31), its field reader and header prefix."""
    coder = _core.AnsCoder.from_compact_bytes(stream, floor=PIECE_FLOOR)
    reader = FieldReader(coder)
    return coder, reader, StreamHeader.read_prefix(reader)


def open_frame_stream(stream: bytes) -> tuple[_core.AnsCoder, FieldReader, StreamHeader]:
    """:func:`open_stream` for a stream inside its frame, which is never marked: only a piece
    split out to be decoded alone is (:func:`mark_piece`)."""
    coder, reader, header = open_stream(stream)
    if header.piece:
        raise ValueError("corrupted blob: a stream inside its frame is marked as a piece alone")
    return coder, reader, header


def mark_piece(stream: bytes) -> bytes:
    """A piece of a frame as a blob of its own: its header prefix popped and pushed back marked
    (:meth:`StreamHeader.write_prefix`), so that a decoder knows its check is 24 bits. No network
    call: the header is the top of the stack, the data below it is left as it is."""
    coder, _, header = open_frame_stream(stream)
    writer = FieldWriter()
    header.write_prefix(writer, marked=True)
    writer.push_onto(coder)
    return coder.to_compact_bytes()


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


def pack_streams(streams: list[bytes], joiner: int | None, items: list[np.ndarray] = ()) -> bytes:
    """One stream as it is (``joiner`` None), or several behind the frame.

    The frame stores the lengths of all streams but the last as ``base`` (their minimum, a
    varint), a Rice parameter r (1 byte) and, bit-packed most significant bit first and padded
    to a byte, each ``length - base`` in Rice form: ``q = v >> r`` ones, a zero, the r low bits.
    It ends with its check (4 bytes, little endian): CRC-32 of every byte before it, then of the
    values of ``items`` (what the streams decode to, in order; see :func:`check_frame`).
    """
    if joiner is None:
        if len(streams) != 1:
            raise ValueError("a blob without a frame holds exactly one stream")
        return streams[0]
    if not streams or any(not s or s[0] == FRAME_MARKER for s in streams):
        raise ValueError("a compact stream starts with a non-zero byte")
    out = bytearray([FRAME_MARKER, FRAME_KIND + joiner])
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
    out += b"".join(streams)
    return bytes(out) + _frame_crc(out, items).to_bytes(4, "little")


def _frame_crc(data: bytes, items: list[np.ndarray]) -> int:
    return _crc_items(zlib.crc32(data), items) & 0xFFFFFFFF


def check_frame(blob: bytes, items: list[np.ndarray]) -> None:
    """The frame's check against what its streams decoded to (``items``, in order): a
    mismatch is a ``ValueError``. It covers every byte of the frame (a CRC-32: any error of up
    to 32 bits in a row is caught for certain) and the data, beyond each piece's own check."""
    if _frame_crc(blob[:-4], items) != int.from_bytes(blob[-4:], "little"):
        raise ValueError(
            "corrupted blob, or one made by a different model or ardm version: the check of its "
            "frame fails; no data is returned"
        )


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
    if blob[1] in (JOIN_STACK, JOIN_CONCAT):
        raise ValueError(
            "this independent blob has the frame of an earlier development version of ardm "
            "(format 2 before its frame check); this release does not read it: compress the "
            "data again with this release"
        )
    if blob[1] - FORMAT_2_KIND in (JOIN_STACK, JOIN_CONCAT):
        raise ValueError(FORMAT_2_BLOB)
    joiner = blob[1] - FRAME_KIND
    if joiner not in (JOIN_STACK, JOIN_CONCAT):
        raise ValueError(f"corrupted blob: unknown kind {blob[1]} of its frame")
    count, pos = _read_varint(blob, 2, "number of streams")
    # Every stream takes at least a byte, the check 4: see before allocating anything per stream.
    if count < 1 or count + 4 > len(blob):
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
    rest = len(blob) - 4 - pos - sum(lengths)
    if rest < 1 or any(n < 1 for n in lengths):
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
