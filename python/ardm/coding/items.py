"""What a user compresses, as model items: one item, a batch, or a sequence of any length.

- one item: an integer tensor or array of shape ``model.data_shape``;
- a batch: ``(n, *model.data_shape)``;
- a sequence (models of 1-D items, e.g. text): a 1-D tensor, array or ``bytes`` of any length L,
  cut into items of D values; the last one may be shorter and is coded exactly (its length is in
  the blob), never padded with invented values.

Example:
    >>> import torch
    >>> items = to_items(b"hello", data_shape=(4,), num_classes=256)
    >>> items.layout == LAYOUT_SEQUENCE, items.lengths, items.values.tolist()
    (True, [4, 1], [[104, 101, 108, 108], [111, 0, 0, 0]])
    >>> from_items(items.values, items.lengths, items.layout, (4,), "uint8").tolist()
    [104, 101, 108, 108, 111]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ardm.coding.container import DTYPES, LAYOUT_BATCH, LAYOUT_ONE, LAYOUT_SEQUENCE

__all__ = ["Items", "to_items", "from_items", "item_lengths"]


@dataclass
class Items:
    """Items (n, D) int64 (padding 0 past each item's length), their lengths, the layout, the
    count stored in the header (items of a batch, values of a sequence) and the input's dtype."""

    values: torch.Tensor
    lengths: list[int]
    layout: int
    count: int
    dtype: str


def item_lengths(layout: int, count: int, num_vars: int) -> list[int]:
    """The lengths of the items of a layout: D each, the last of a sequence what is left."""
    if layout == LAYOUT_ONE:
        return [num_vars]
    if layout == LAYOUT_BATCH:
        return [num_vars] * count
    full, last = divmod(count, num_vars)
    return [num_vars] * full + ([last] if last else [])


def to_items(x: object, data_shape: tuple[int, ...], num_classes: int) -> Items:
    """Validate ``x`` (see the module docstring) and cut it into items."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        x = np.frombuffer(bytes(x), dtype=np.uint8)
    if isinstance(x, np.ma.MaskedArray):
        raise ValueError("x is a masked array, whose mask would be lost: pass x.filled() or x.data")
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu" or x.dtype.fields is not None:
            raise ValueError(f"x must hold integers, got dtype {x.dtype}")
        # a native-order copy: the input may be read-only, strided or big-endian
        x = torch.from_numpy(np.array(x, dtype=x.dtype.newbyteorder("="), order="C"))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be an integer tensor, array or bytes, got {type(x).__name__}")
    if x.layout != torch.strided or x.is_nested or x.is_meta:
        kind = "meta" if x.is_meta else "nested" if x.is_nested else str(x.layout).split(".")[-1]
        raise ValueError(f"x is a {kind} tensor; compress a dense tensor that holds its values")
    x = x.detach().cpu()
    dtype = str(x.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ValueError(f"x must have an integer dtype ({', '.join(DTYPES)}), got {dtype}")
    shape = tuple(data_shape)
    num_vars = math.prod(shape)
    if tuple(x.shape) == shape:
        layout, count = LAYOUT_ONE, 1
    elif x.dim() == len(shape) + 1 and tuple(x.shape[1:]) == shape:
        layout, count = LAYOUT_BATCH, int(x.shape[0])
    elif len(shape) == 1 and x.dim() == 1:
        layout, count = LAYOUT_SEQUENCE, int(x.shape[0])
    else:
        sequence = " or a 1-D sequence of any length" if len(shape) == 1 else ""
        raise ValueError(
            f"x has shape {tuple(x.shape)}; this model codes {shape}, (n, *{shape}){sequence}"
        )
    flat = x.reshape(-1).to(torch.int64)
    if flat.numel():
        low, high = int(flat.min()), int(flat.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"x has values in [{low}, {high}]; this model codes 0..{num_classes - 1}")
    lengths = item_lengths(layout, count, num_vars)
    if layout == LAYOUT_BATCH and count == 0:
        raise ValueError("x holds no items")
    values = torch.zeros(len(lengths) * num_vars, dtype=torch.int64)
    values[: flat.numel()] = flat
    return Items(values.view(len(lengths), num_vars), lengths, layout, count, dtype)


def from_items(
    values: torch.Tensor, lengths: list[int], layout: int, data_shape: tuple[int, ...], dtype: str
) -> torch.Tensor:
    """The inverse of :func:`to_items`: the tensor the user compressed, in its dtype."""
    out = values.to(getattr(torch, dtype))
    if layout == LAYOUT_ONE:
        return out[0].reshape(data_shape)
    if layout == LAYOUT_BATCH:
        return out.reshape(len(lengths), *data_shape)
    return torch.cat([row[:n] for row, n in zip(out, lengths)]) if lengths else out.reshape(0)
