"""The compressed container: a small header, per-item stream lengths and checksums, then streams.

The byte layout is specified in ``docs/format.md``; this module is its only reader and writer.
Parsing validates every field and the total length before anything is decoded, so a truncated,
corrupted or foreign blob is a ``ValueError`` that says what is wrong.

Example:
    >>> header = Header(kind=0, dtype="uint8", batched=False, fingerprint=0xBEEF, budget=100,
    ...                 order_seed=3, checksums=[0x12345678], streams=[b"\\x01\\x02\\x03\\x04"])
    >>> blob = pack(header)
    >>> len(blob) - 4   # bytes besides the stream of a single item
    12
    >>> unpack(blob) == header
    True
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

MAGIC = 0xAD
FORMAT_VERSION = 1

# Model kinds recorded in the header (2 bits).
KIND_ORDER_AGNOSTIC = 0
KIND_UPSCALE = 1
KIND_NAMES = {KIND_ORDER_AGNOSTIC: "order-agnostic", KIND_UPSCALE: "upscale"}

# dtype codes (4 bits): decompress returns exactly the dtype that was compressed.
DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]
DTYPE_CODES = {name: code for code, name in enumerate(DTYPES)}

# Streams are sequences of 32-bit words; lengths are stored in words.
WORD_BYTES = 4
MAX_VARINT_BYTES = 10


@dataclass
class Header:
    """Everything in a blob. ``streams[i]`` is item i's rANS stream, ``checksums[i]`` its CRC-32."""

    kind: int
    dtype: str
    batched: bool
    fingerprint: int
    budget: int
    order_seed: int
    checksums: list[int] = field(default_factory=list)
    streams: list[bytes] = field(default_factory=list)

    @property
    def num_items(self) -> int:
        return len(self.streams)


def data_checksum(item: np.ndarray) -> int:
    """CRC-32 of one item's values as little-endian bytes of its dtype (C order)."""
    canonical = np.ascontiguousarray(item).astype(item.dtype.newbyteorder("<"), copy=False)
    return zlib.crc32(canonical.tobytes()) & 0xFFFFFFFF


def _write_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"cannot store a negative number ({value}) in the container")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


class _Reader:
    """Cursor over a blob whose every read is bounds-checked."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.blob):
            raise ValueError(
                f"truncated blob: it ends inside the {what} "
                f"(needs {self.pos + n} bytes, has {len(self.blob)})"
            )
        chunk = self.blob[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i > 0 and byte == 0:
                    raise ValueError(f"corrupted blob: non-canonical encoding of the {what}")
                return value
        raise ValueError(f"corrupted blob: the {what} is longer than {MAX_VARINT_BYTES} bytes")


def pack(header: Header) -> bytes:
    """Serialize a header and its streams (layout: docs/format.md)."""
    if header.dtype not in DTYPE_CODES:
        raise ValueError(f"dtype {header.dtype} cannot be stored; supported: {', '.join(DTYPES)}")
    if len(header.checksums) != len(header.streams) or not header.streams:
        raise ValueError("a blob needs one checksum per stream and at least one stream")
    if not header.batched and header.num_items != 1:
        raise ValueError("an unbatched blob holds exactly one item")
    out = bytearray([MAGIC, FORMAT_VERSION])
    out.append(DTYPE_CODES[header.dtype] | (header.kind & 0x3) << 4 | int(header.batched) << 6)
    out += (header.fingerprint & 0xFFFF).to_bytes(2, "little")
    if header.batched:
        _write_varint(out, header.num_items)
    _write_varint(out, header.budget)
    _write_varint(out, header.order_seed)
    for stream, checksum in zip(header.streams, header.checksums):
        if len(stream) % WORD_BYTES:
            raise ValueError("a stream must be a whole number of 32-bit words")
        _write_varint(out, len(stream) // WORD_BYTES)
        out += (checksum & 0xFFFFFFFF).to_bytes(4, "little")
    for stream in header.streams:
        out += stream
    return bytes(out)


def unpack(blob: bytes) -> Header:
    """Parse and validate a blob; raises ``ValueError`` naming the first problem found."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected the compressed blob as bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if not blob:
        raise ValueError("empty blob: there is nothing to decompress")
    reader = _Reader(blob)
    if reader.take(1, "magic byte")[0] != MAGIC:
        raise ValueError("not an ardm blob (wrong magic byte)")
    version = reader.take(1, "format version")[0]
    if version != FORMAT_VERSION:
        raise ValueError(
            f"blob has format version {version}; this release reads version {FORMAT_VERSION}"
        )
    flags = reader.take(1, "flags byte")[0]
    dtype_code, kind, batched = flags & 0xF, (flags >> 4) & 0x3, bool(flags >> 6 & 1)
    if flags >> 7 or dtype_code >= len(DTYPES) or kind not in KIND_NAMES:
        raise ValueError(f"corrupted blob: invalid flags byte 0x{flags:02x}")
    fingerprint = int.from_bytes(reader.take(2, "model fingerprint"), "little")
    num_items = reader.varint("number of items") if batched else 1
    if num_items < 1:
        raise ValueError("corrupted blob: it claims to hold no items")
    # Each item needs at least 5 header bytes; reject absurd counts before allocating.
    if num_items * 5 > len(blob):
        raise ValueError(f"corrupted blob: {num_items} items cannot fit in {len(blob)} bytes")
    budget = reader.varint("budget")
    if budget < 1:
        raise ValueError("corrupted blob: budget 0")
    order_seed = reader.varint("order seed")
    lengths, checksums = [], []
    for i in range(num_items):
        lengths.append(reader.varint(f"stream length of item {i}") * WORD_BYTES)
        checksums.append(int.from_bytes(reader.take(4, f"checksum of item {i}"), "little"))
    remaining = len(blob) - reader.pos
    if sum(lengths) != remaining:
        problem = "truncated" if sum(lengths) > remaining else "corrupted (trailing bytes)"
        raise ValueError(
            f"{problem} blob: streams should take {sum(lengths)} bytes, {remaining} are left"
        )
    streams = [reader.take(n, f"stream of item {i}") for i, n in enumerate(lengths)]
    return Header(
        kind=kind,
        dtype=DTYPES[dtype_code],
        batched=batched,
        fingerprint=fingerprint,
        budget=budget,
        order_seed=order_seed,
        checksums=checksums,
        streams=streams,
    )
