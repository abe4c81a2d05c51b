"""Header fields coded as symbols of the rANS stream itself, under fixed distributions.

A blob's header is not a run of plain bytes: its fields are the first symbols a decoder pops,
each under a distribution fixed by the format (``docs/format.md``), so a field costs its
information and no more: a field at its usual value costs a fraction of a bit. A
:class:`FieldWriter` collects fields in the order a decoder reads them and pushes them in reverse
(ANS is a stack); a :class:`FieldReader` pops them in reading order.

Example:
    >>> from ardm import _core
    >>> w = FieldWriter()
    >>> w.flag(True, p_true=0.9); w.choice(2, (0.5, 0.25, 0.25)); w.uint(1000)
    >>> coder = _core.AnsCoder()
    >>> w.push_onto(coder)
    >>> r = FieldReader(coder)
    >>> r.flag(p_true=0.9), r.choice((0.5, 0.25, 0.25)), r.uint()
    (True, 2, 1000)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["FieldReader", "FieldWriter", "UINT_MAX_BITS"]

# A uint field holds at most this many bits (larger values are corrupted blobs, not data).
UINT_MAX_BITS = 62


class _Coder(Protocol):
    def push(self, symbols: np.ndarray, logits: np.ndarray) -> None: ...
    def pop(self, logits: np.ndarray) -> np.ndarray: ...


def _logits(probs: Sequence[float]) -> np.ndarray:
    """float32 log-probabilities of a fixed table (one row); the quantizer makes them exact."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or np.any(p <= 0):
        raise ValueError("a field's table needs at least two positive probabilities")
    return np.log(p / p.sum()).astype(np.float32).reshape(1, -1)


_HALF = _logits((0.5, 0.5))


class FieldWriter:
    """Fields in reading order; :meth:`push_onto` puts them on top of a stream."""

    def __init__(self) -> None:
        self._symbols: list[tuple[int, np.ndarray]] = []

    def choice(self, value: int, probs: Sequence[float]) -> None:
        """One of ``len(probs)`` values under the table ``probs``."""
        if not 0 <= value < len(probs):
            raise ValueError(f"field value {value} outside 0..{len(probs) - 1}")
        self._symbols.append((int(value), _logits(probs)))

    def flag(self, value: bool, p_true: float) -> None:
        self.choice(int(bool(value)), (1.0 - p_true, p_true))

    def bits(self, value: int, count: int) -> None:
        """``count`` raw bits (most significant first), one bit of cost each."""
        for i in reversed(range(count)):
            self._symbols.append(((value >> i) & 1, _HALF))

    def uint(self, value: int) -> None:
        """A non-negative integer in Elias-gamma form: 2 * floor(log2(value + 1)) + 1 bits."""
        if value < 0:
            raise ValueError(f"cannot store a negative number ({value}) in a header")
        width = (value + 1).bit_length()
        if width > UINT_MAX_BITS:
            raise ValueError(f"{value} is too large for a header field")
        for _ in range(width - 1):
            self._symbols.append((0, _HALF))
        self.bits(value + 1, width)

    def push_onto(self, coder: _Coder) -> None:
        """Push every field so that the first one written is the first popped."""
        for symbol, logits in reversed(self._symbols):
            coder.push(np.array([symbol], dtype=np.int64), logits)


class FieldReader:
    """Pops fields in reading order from a stream (the inverse of :class:`FieldWriter`)."""

    def __init__(self, coder: _Coder) -> None:
        self._coder = coder

    def choice(self, probs: Sequence[float]) -> int:
        return int(self._coder.pop(_logits(probs))[0])

    def flag(self, p_true: float) -> bool:
        return bool(self.choice((1.0 - p_true, p_true)))

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | int(self._coder.pop(_HALF)[0])
        return value

    def uint(self) -> int:
        zeros = 0
        while int(self._coder.pop(_HALF)[0]) == 0:
            zeros += 1
            if zeros >= UINT_MAX_BITS:
                raise ValueError("corrupted blob: a header number is impossibly long")
        return ((1 << zeros) | self.bits(zeros)) - 1

