"""The container parser: round trips, every truncation, and fuzzing with random and mutated bytes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm.container import DTYPES, Header, data_checksum, pack, unpack

words = st.integers(0, 40).map(lambda n: bytes(range(4 * n % 256))[: 4 * n].ljust(4 * n, b"\x07"))


@st.composite
def headers(draw) -> Header:
    batched = draw(st.booleans())
    n = draw(st.integers(1, 5)) if batched else 1
    return Header(
        kind=draw(st.sampled_from([0, 1])),
        dtype=draw(st.sampled_from(DTYPES)),
        batched=batched,
        fingerprint=draw(st.integers(0, 0xFFFF)),
        budget=draw(st.integers(1, 100_000)),
        order_seed=draw(st.integers(0, 2**63)),
        checksums=draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)),
        streams=draw(st.lists(words, min_size=n, max_size=n)),
    )


@given(headers())
def test_round_trip(header):
    assert unpack(pack(header)) == header


def test_single_image_overhead_is_twelve_bytes():
    stream = bytes(4 * 80)
    header = Header(0, "uint8", False, 0x1234, 100, 7, [0xDEADBEEF], [stream])
    assert len(pack(header)) - len(stream) == 12


@given(headers())
@settings(max_examples=30)
def test_every_truncation_is_a_value_error(header):
    blob = pack(header)
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            unpack(blob[:cut])


@given(st.binary(max_size=300))
def test_random_bytes_never_crash(blob):
    try:
        unpack(blob)
    except ValueError:
        pass


@given(headers(), st.data())
def test_mutations_give_value_error_or_a_valid_header(header, data):
    blob = bytearray(pack(header))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
    try:
        parsed = unpack(bytes(blob))
    except ValueError:
        return
    assert isinstance(parsed, Header) and parsed.num_items >= 1  # parsed, to be caught by CRC


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "empty"),
        (b"PK\x03\x04", "magic"),
        (b"\xad\x09", "version"),
        (b"\xad\x01\x8f", "flags"),
        (b"\xad\x01\x00\x00", "truncated"),
    ],
)
def test_foreign_and_broken_blobs_say_what_is_wrong(blob, message):
    with pytest.raises(ValueError, match=message):
        unpack(blob)


def test_trailing_bytes_are_rejected():
    blob = pack(Header(0, "uint8", False, 1, 5, 0, [0], [b"abcd"]))
    with pytest.raises(ValueError, match="trailing"):
        unpack(blob + b"\x00")


def test_not_bytes():
    with pytest.raises(ValueError, match="bytes"):
        unpack("not bytes")  # type: ignore[arg-type]


def test_checksum_depends_on_values_and_dtype_width():
    a = np.arange(10, dtype=np.uint8)
    assert data_checksum(a) != data_checksum(a[::-1])
    assert data_checksum(a) != data_checksum(a.astype(np.int64))
    assert data_checksum(a.astype(">u2")) == data_checksum(a.astype("<u2"))
