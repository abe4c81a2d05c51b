"""Lossless compression with an ARDM and rANS (paper Sec. 5, "Lossless compression"):
``compress`` / ``decompress`` / ``split``.

A fixed order (from a seed) and a policy (from the model's step losses and the budget) turn the
model into a sequence of network calls, the model's :class:`~ardm.models.StepSchedule`.
Encoding walks the calls in reverse, since ANS is a stack, pushing each call's symbols with their
predicted distributions; decoding walks forward with the same calls. Two modes:

- ``"joint"`` (the default): all items of one call in one stream, decoded in lockstep, the
  header and the check paid once: the mode for a file or a dataset;
- ``"independent"``: every item its own stream (a *piece* of a frame), decodable alone
  (:func:`split`), for random access to records. A piece carries a 24-bit check and the frame
  a 32-bit one over all of it, so an item costs about 37 bits more than its information, not 46.

The encoder streams: it holds the distributions of a few calls at a time (enough rows to fill the
fixed evaluation chunks of :mod:`ardm.coding.deterministic`), never all of them, so memory does
not grow with the number of calls. An item the model would code worse than its raw values is
stored raw. Every stream's check is its coder's initial state (:mod:`ardm.coding.container`).

Progress: ``compress`` and ``decompress`` take ``progress``, a callable given the number of
network calls just made, in units of *policy steps*: every distinct item length costs the calls
of its policy once (items of one length share each call). :func:`coding_steps` and
:func:`decoding_steps` give the total in advance; the calls reported by one compress or
decompress sum to exactly that total, and both agree for the same data (see
:func:`coding_steps` for the two rare cases counted specially).

Example:
    >>> import ardm, torch
    >>> model = ardm.load()                                   # the shipped Fashion-MNIST model
    >>> x = ardm.bundled_images()[:2]                         # (2, 1, 28, 28) uint8
    >>> blob = ardm.compress(x, model, budget=20)
    >>> bool(torch.equal(ardm.decompress(blob, model), x))
    True
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ardm import _core
from ardm.coding.container import (
    FORMAT_2_REMEDY,
    JOIN_CONCAT,
    JOIN_STACK,
    LAYOUT_BATCH,
    LAYOUT_ONE,
    LAYOUT_SEQUENCE,
    PIECE_FLOOR,
    StreamHeader,
    check_frame,
    check_state,
    looks_like_version_1,
    mark_piece,
    open_frame_stream,
    open_stream,
    pack_streams,
    unpack_streams,
)
from ardm.coding.cpu_model import cpu_float32
from ardm.coding.deterministic import evaluate_in_fixed_chunks
from ardm.coding.fields import FieldReader, FieldWriter
from ardm.coding.fingerprint import model_fingerprint
from ardm.coding.items import Items, from_items, item_lengths, to_items
from ardm.modalities import get_modality
from ardm.models import ARDM, StepSchedule
from ardm.models.transitions import coarse_values, next_digits

__all__ = [
    "DEFAULT_BUDGET",
    "MODES",
    "Progress",
    "blob_model",
    "blob_sample_rate",
    "coding_steps",
    "compress",
    "decompress",
    "decoding_steps",
    "split",
]

DEFAULT_BUDGET = 100
MODES = ("joint", "independent")
# The encoder evaluates at most this many bytes of distributions at once.
ENCODE_BLOCK_BYTES = 1 << 27

Progress = Callable[[int], None]
"""A progress callback: called with the number of policy steps (network calls) just done."""


def _report(progress: Progress | None, steps: int) -> None:
    if progress is not None and steps > 0:
        progress(steps)


def _num_calls(model: ARDM, length: int, budget: int) -> int:
    """The network calls of the policy for items of ``length`` values (0 for empty items)."""
    if length <= 0:
        return 0
    return len(StepSchedule(model.policy(budget, num_vars=length), model.num_stages, length))


def _units(model: ARDM, lengths: list[int], budget: int) -> int:
    """Progress units of items of these lengths: each distinct length's calls once."""
    return sum(_num_calls(model, n, budget) for n in set(lengths))


# ---- the schedule of a group of items of one length ---------------------------------------------


@dataclass
class _Group:
    """Items of one length m sharing the coding order of ``random_order(m, seed)`` and the
    policy for m variables; positions past m are padding, known from the first call on."""

    indices: np.ndarray | list[int]
    schedule: StepSchedule
    levels: list[torch.Tensor]  # (1, D) per call
    positions: list[np.ndarray]  # the call's own positions, ascending
    padded: list[torch.Tensor]  # (1, width) the same, padded with position 0 (see build)

    @classmethod
    def build(cls, model: ARDM, indices: np.ndarray | list[int], length: int, budget: int, seed: int) -> _Group:
        ranks_np = np.full(model.num_vars, -1, dtype=np.int64)
        ranks_np[:length] = _core.order_ranks(_core.random_order(length, seed))
        ranks = torch.from_numpy(ranks_np).unsqueeze(0)
        schedule = StepSchedule(model.policy(budget, num_vars=length), model.num_stages, length)
        positions = [np.flatnonzero(schedule.in_step(s, ranks)[0].numpy()) for s in schedule]
        # Several rows per evaluation (small items) stack several calls' rows, so every call
        # is padded to the largest; one row per evaluation (audio) evaluates each call alone,
        # at its own width, which both sides know.
        stacked = _coding_rows(model) > 1
        largest = max(len(p) for p in positions)
        padded = []
        for p in positions:
            row = torch.zeros(1, largest if stacked else len(p), dtype=torch.long)
            row[0, : len(p)] = torch.from_numpy(p)
            padded.append(row)
        levels = [schedule.levels_before(s, ranks) for s in schedule]
        return cls(indices, schedule, levels, positions, padded)


def _groups(model: ARDM, lengths: list[int], coded: list[bool], budget: int, seed: int) -> list[_Group]:
    # numpy, not per-item lists: a header may declare many items before any of them decodes
    lengths_np = np.asarray(lengths, dtype=np.int64)
    keep = np.asarray(coded, dtype=bool) & (lengths_np > 0)
    return [
        _Group.build(model, np.flatnonzero(keep & (lengths_np == n)), int(n), budget, seed)
        for n in np.unique(lengths_np[keep])[::-1]
    ]


def _coding_rows(model: ARDM) -> int:
    """Rows per network evaluation (part of the format): the modality's."""
    return get_modality(model.modality).coding_rows


def _coding_params(model: ARDM, state: torch.Tensor, levels: torch.Tensor, padded: torch.Tensor) -> np.ndarray:
    """What the network gives each row for coding, float32 (rows, width, k or P), in fixed
    chunks: the symbols' log-probabilities, or parameters of their digits' tables."""
    return np.concatenate(
        [out for _, out in evaluate_in_fixed_chunks(
            model.coding_params, state, levels, padded, rows=_coding_rows(model))]
    )


def _params_width(model: ARDM) -> int:
    """Floats per variable of :func:`_coding_params`."""
    head: Any = model.net.head
    return model.symbols_per_step if model.digits_per_symbol == 1 else int(head.params_per_var)


def _digit_table(model: ARDM, params: np.ndarray, prefix: np.ndarray, digit: int) -> np.ndarray:
    """Log-probabilities (n, w, base) of digit ``digit`` of each symbol given ``prefix`` (n, w),
    the symbols with that digit and the ones below it zeroed, in fixed chunks as the network."""
    fn = functools.partial(model.coding_digit_log_probs, digit=digit)
    chunks = evaluate_in_fixed_chunks(fn, torch.from_numpy(params), torch.from_numpy(prefix),
                                      rows=_coding_rows(model))
    return np.concatenate([out for _, out in chunks])


def _symbol_tables(model: ARDM, params: np.ndarray, symbols: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(coded symbols, their log-probabilities) of the symbols (n, w) of one call, in the order
    they are popped: the symbols whole, or their digits, most significant first."""
    count, base = model.digits_per_symbol, model.digit_base
    if count == 1:
        return [(symbols, params)]
    values = torch.from_numpy(symbols)
    tables = []
    for digit in range(count):
        level = count - digit  # digit and the ones below it still unknown
        prefix = coarse_values(values, level, base).numpy()
        tables.append((next_digits(values, level, base).numpy(),
                       _digit_table(model, params, prefix, digit)))
    return tables


def _pop_symbols(model: ARDM, params: np.ndarray, pop: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The symbols (n, w) of one call, popped whole or digit by digit."""
    count, base = model.digits_per_symbol, model.digit_base
    if count == 1:
        return pop(params)
    symbols = np.zeros(params.shape[:2], dtype=np.int64)
    for digit in range(count):
        table = _digit_table(model, params, symbols, digit)
        symbols += pop(table).astype(np.int64) * base ** (count - 1 - digit)
        if symbols.size and int(symbols.max()) >= model.num_classes:  # an impossible digit
            raise ValueError("corrupted blob: a decoded value is out of range")
    return symbols


# ---- encoding and decoding of the coded items ---------------------------------------------------


Push = Callable[[np.ndarray, np.ndarray], None]


def _encode_group(
    model: ARDM, group: _Group, values: torch.Tensor, push: Push, progress: Progress | None = None,
    one_stream: bool = False,
) -> np.ndarray:
    """Push every call of ``group`` in reverse; returns each item's ideal bits (float64 (n,)).
    Reports each block of calls to ``progress`` once it is pushed. ``one_stream``: every item
    goes to one coder, so symbols split into digits are pushed chunk by chunk of rows, in the
    order :func:`_decode_group` pops them."""
    n = values.shape[0]
    rows = _coding_rows(model)
    # The pushes of one call: its rows at once, or chunk by chunk for digits in one stream.
    by_chunk = one_stream and model.digits_per_symbol > 1
    chunks = [slice(r, r + rows) for r in range(0, n, rows)] if by_chunk else [slice(0, n)]
    steps = list(reversed(group.schedule.steps))
    width, k = max(p.shape[1] for p in group.padded), _params_width(model)
    per_block = max(1, math.ceil(rows / n))
    per_block = max(1, min(per_block, ENCODE_BLOCK_BYTES // max(1, 4 * n * width * k)))
    bits = np.zeros(n)
    for lo in range(0, len(steps), per_block):
        block = steps[lo : lo + per_block]
        levels = torch.cat([group.levels[s.index].expand(n, -1) for s in block])
        padded = torch.cat([group.padded[s.index].expand(n, -1) for s in block])
        out = _coding_params(model, values.repeat(len(block), 1), levels, padded)
        for j, step in enumerate(block):
            pos = group.positions[step.index]
            params = np.ascontiguousarray(out[j * n : (j + 1) * n, : len(pos)])
            symbols = model.next_symbols(values[:, pos], step.level).numpy()
            tables = _symbol_tables(model, params, symbols)
            for coded, logits in tables:
                picked = np.take_along_axis(logits, coded[..., None], -1)[..., 0]
                bits -= picked.astype(np.float64).sum(1) / math.log(2)
            for chunk in reversed(chunks):
                for coded, logits in reversed(tables):
                    push(coded[chunk], logits[chunk])
        _report(progress, len(block))
    return bits


def _decode_group(
    model: ARDM,
    group: _Group,
    pop: Callable[[slice, np.ndarray], np.ndarray],
    progress: Progress | None = None,
) -> torch.Tensor:
    """Walk the calls of ``group`` forward. Each evaluation chunk's rows are popped as soon as
    they come (``pop(rows, logits)``), so a corrupted stream fails at its first bad chunk and
    no call's distributions are held for all items at once."""
    n = len(group.indices)
    # Before the first call every item is zeros: one row, expanded, so that the state of the n
    # items a header declares is allocated only as their symbols are popped.
    state = torch.zeros(1, model.num_vars, dtype=torch.long).expand(n, -1)
    for step in group.schedule:
        pos = group.positions[step.index]
        positions = torch.from_numpy(pos).unsqueeze(0)
        parts = []
        for rows, out in evaluate_in_fixed_chunks(
            model.coding_params, state, group.levels[step.index].expand(n, -1),
            group.padded[step.index].expand(n, -1), rows=_coding_rows(model),
        ):
            params = np.ascontiguousarray(out[:, : len(pos)])
            symbols = torch.from_numpy(_pop_symbols(model, params, functools.partial(pop, rows)))
            parts.append(model.apply_symbols(
                state[rows], step.level, positions.expand(len(symbols), -1), symbols))
        state = torch.cat(parts)
        _report(progress, 1)
    return state


def _raw_tables(num_classes: int) -> list[tuple[int, int]]:
    """(divisor, alphabet) per digit of a raw value: uniform rows of at most 256 symbols."""
    if num_classes <= 256:
        return [(1, num_classes)]
    digits = []
    divisor = 1
    while divisor < num_classes:
        digits.append((divisor, min(256, math.ceil(num_classes / divisor))))
        divisor *= 256
    return digits[::-1]  # most significant digit first


def _push_raw(push: Push, values: np.ndarray, num_classes: int) -> None:
    """Push values under uniform distributions (decoded most significant digit first)."""
    for divisor, alphabet in reversed(_raw_tables(num_classes)):
        digits = (values // divisor) % 256 if alphabet == 256 else values // divisor
        push(digits.reshape(1, -1), np.zeros((1, values.size, alphabet), np.float32))


def _pop_raw(pop: Callable[[np.ndarray], np.ndarray], count: int, num_classes: int) -> np.ndarray:
    values = np.zeros(count, dtype=np.int64)
    for divisor, alphabet in _raw_tables(num_classes):
        values += pop(np.zeros((1, count, alphabet), np.float32)).reshape(-1) * divisor
    if count and int(values.max()) >= num_classes:
        raise ValueError("corrupted blob: a raw value is out of range")
    return values


# ---- settings --------------------------------------------------------------------------------


def _check_budget(model: ARDM, budget: object) -> int:
    low, high = model.min_budget, model.max_budget
    if budget is None:
        return min(max(DEFAULT_BUDGET, low), high)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"budget must be an integer number of network calls, got {budget!r}")
    if not low <= budget <= high:
        raise ValueError(f"budget must be between {low} and {high} for this model, got {budget}")
    return int(budget)


def _check_seed(model: ARDM, order_seed: object) -> int:
    if order_seed is None:
        return model.order_seed
    if isinstance(order_seed, bool) or not isinstance(order_seed, (int, np.integer)) or order_seed < 0:
        raise ValueError(f"order_seed must be a non-negative integer, got {order_seed!r}")
    return int(order_seed)


def _resolve_model(model: object) -> ARDM:
    """The model to code with: the shipped default for None, else ``model`` on the CPU in
    float32 (a copy where it is elsewhere: :func:`~ardm.coding.cpu_model.cpu_float32`)."""
    if model is None:
        from ardm.pretrained import load

        return load()
    if not isinstance(model, ARDM):
        raise ValueError(f"model must be an ARDM (see ardm.load), got {type(model).__name__}")
    return cpu_float32(model)


def _model_ref(model: ARDM) -> tuple[str | None, int]:
    """(shipped name or None, fingerprint) of a model; a shipped model changed since it was
    loaded is custom."""
    fingerprint = model_fingerprint(model)
    if model.shipped_name is not None and model.shipped_fingerprint == fingerprint:
        return model.shipped_name, fingerprint
    return None, fingerprint


def _is_shipped(model: ARDM, name: str) -> bool:
    """Whether ``model`` is the shipped model ``name`` (by name, else by fingerprint, for its
    weights loaded from a path)."""
    shipped_name, fingerprint = _model_ref(model)
    if shipped_name == name:
        return True
    from ardm.pretrained import load

    return fingerprint == model_fingerprint(load(name))


def _has_rate(model: ARDM) -> bool:
    return get_modality(model.modality).sample_rate is not None


def _check_rate(model: ARDM, sample_rate: object) -> int | None:
    """The sample rate to store: None for the modality's default (or a modality without one)."""
    default = get_modality(model.modality).sample_rate
    if sample_rate is None:
        return None
    if default is None:
        raise ValueError(
            f"sample_rate is for audio; this model codes {model.modality} data (leave it None)"
        )
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not (
        1 <= sample_rate < 1 << 31
    ):
        raise ValueError(f"sample_rate must be an integer in 1..2^31-1 Hz, got {sample_rate!r}")
    return None if sample_rate == default else int(sample_rate)


def _header(model: ARDM, layout: int, count: int, dtype: str, budget: int, seed: int,
            sample_rate: int | None = None) -> StreamHeader:
    name, fingerprint = _model_ref(model)
    header = StreamHeader(name, 0 if name else fingerprint & 0xFFFF, layout, count)
    header.has_rate = _has_rate(model)
    header.sample_rate = sample_rate
    header.budget = None if budget == _check_budget(model, None) else budget
    header.order_seed = None if seed == model.order_seed else seed
    header.dtype = None if dtype == get_modality(model.modality).dtype else dtype
    return header


def _settings(model: ARDM, header: StreamHeader) -> tuple[str, int, int]:
    """(dtype, budget, order seed) of a stream, the defaults filled in."""
    dtype = get_modality(model.modality).dtype if header.dtype is None else header.dtype
    budget = _check_budget(model, header.budget)
    seed = model.order_seed if header.order_seed is None else header.order_seed
    return dtype, budget, seed


def _typed(values: torch.Tensor, lengths: list[int], dtype: str) -> list[np.ndarray]:
    """Each item's own values in the dtype of the input (what the check covers)."""
    typed = values.to(getattr(torch, dtype)).numpy()
    return [row[:n] for row, n in zip(typed, lengths)]


# ---- one stream ------------------------------------------------------------------------------


def _encode_stream(
    model: ARDM, items: Items, budget: int, seed: int, raw: list[bool],
    progress: Progress | None = None, sample_rate: int | None = None, piece: bool = False,
) -> tuple[bytes, np.ndarray]:
    """One stream holding every item of ``items`` (decoded in lockstep), or one piece of a
    frame (``piece``: its check is 24 bits); returns it and each item's ideal model bits (NaN
    for raw items)."""
    header = _header(model, items.layout, items.count, items.dtype, budget, seed, sample_rate)
    header.raw = list(raw)
    header.piece = piece
    typed = _typed(items.values, items.lengths, items.dtype)
    coder = _core.AnsCoder(header.initial_state(model_fingerprint(model), typed), floor=PIECE_FLOOR)
    for i in reversed(range(len(raw))):  # raw values are decoded last: push them first
        if raw[i]:
            _push_raw(_flat_push(coder), items.values[i, : items.lengths[i]].numpy(), model.num_classes)
    bits = np.full(len(raw), np.nan)
    groups = _groups(model, items.lengths, [not r for r in raw], budget, seed)
    for group in reversed(groups):  # group 0 is decoded first
        values = items.values[group.indices]
        bits[group.indices] = _encode_group(model, group, values, _flat_push(coder), progress,
                                            one_stream=True)
    writer = FieldWriter()
    header.write(writer)
    writer.push_onto(coder)
    return coder.to_compact_bytes(), bits


def _flat_push(coder: _core.AnsCoder) -> Push:
    def push(symbols: np.ndarray, logits: np.ndarray) -> None:
        coder.push(symbols.reshape(-1), logits.reshape(-1, logits.shape[-1]))

    return push


def _stream_lengths(model: ARDM, stream: bytes, header: StreamHeader) -> list[int]:
    """The item lengths a one-stream blob declares (checked against its size)."""
    num_items = header.count if header.layout != LAYOUT_SEQUENCE else -(-header.count // model.num_vars)
    _check_declared(num_items, model.num_vars, len(stream))
    return item_lengths(header.layout, header.count, model.num_vars)


def _decode_stream(model: ARDM, stream: bytes, header: StreamHeader, reader: FieldReader,
                   coder: _core.AnsCoder, progress: Progress | None = None) -> torch.Tensor:
    dtype, budget, seed = _settings(model, header)
    _check_first_call(model, stream, header, budget, seed)
    lengths = _stream_lengths(model, stream, header)
    header.read_raw_flags(reader, len(lengths), _has_rate(model))
    pop = _flat_pop(coder)
    coded = [not r for r in header.raw]
    with _data_errors():
        decoded = [(group, _decode_group(model, group, lambda _, logits: pop(logits), progress))
                   for group in _groups(model, lengths, coded, budget, seed)]
        raw_values = [(i, _pop_raw(pop, lengths[i], model.num_classes))
                      for i, raw in enumerate(header.raw) if raw]
        # Allocated only now that every symbol was popped: a header's count allocates nothing.
        values = torch.zeros(len(lengths), model.num_vars, dtype=torch.long)
        for group, state in decoded:
            values[group.indices] = state
        for i, raw_item in raw_values:
            values[i, : lengths[i]] = torch.from_numpy(raw_item)
        if progress is not None:  # lengths whose items are all raw: their calls, never made
            coded_lengths = [n for n, yes in zip(lengths, coded) if yes]
            _report(progress, _units(model, lengths, budget) - _units(model, coded_lengths, budget))
        return _finish(model, coder.state(), coder.num_words(), header, model_fingerprint(model),
                       values, lengths, dtype)


#: What a stream whose data fails to decode may be besides corrupted: a single-stream blob of
#: format 2, whose header reads the same but whose network ran in plain float32 (its frames are
#: told apart by their kind byte, single streams cannot be).
FORMAT_2_HINT = (
    "; if the blob is intact, it may be of format 2 (made before the portable network "
    f"evaluation), which this release reads as corrupted: {FORMAT_2_REMEDY}"
)


@contextlib.contextmanager
def _data_errors() -> Iterator[None]:
    """Name the other cause of a stream whose data fails to decode: an older format."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{error}{FORMAT_2_HINT}") from None


def _check_declared(num_items: int, num_vars: int, stream_bytes: int) -> None:
    # A symbol costs at least ~2e-5 bits (frequencies are at most 1 - K / 2^24), so a blob
    # cannot hold more than about 4e5 values per byte: larger declarations are corrupted.
    if num_items * num_vars > 400_000 * max(stream_bytes, 1) + num_vars:
        raise ValueError(
            f"corrupted blob: it declares {num_items} items of {num_vars} values in "
            f"{stream_bytes} bytes"
        )


def _push_bits(logits: np.ndarray) -> float:
    """The fewest bits that pushing one symbol of each row of ``logits`` (..., k) can add to a
    stream: a push under frequency f (of 2^24) multiplies the state, at least 2^31, by at least
    1 + (2^24 - f)(1 - 2^-7) / f, and the most frequent symbol's f is the cheapest."""
    top = _core.quantize_logits(logits.reshape(-1, logits.shape[-1])).max(1).astype(np.float64)
    return float(np.log2(1 + (2.0**24 - top) * (1 - 2.0**-7) / top).sum()) * (1 - 1e-9)


def _check_first_call(model: ARDM, stream: bytes, header: StreamHeader, budget: int, seed: int) -> None:
    """A header that declares more full items than the stream can hold is an error before
    anything is made per item (checked only past one item per bit of the stream, which no real
    blob reaches: it costs one evaluation chunk).

    A compact stream of B bytes holds at most 8 B - 31 bits of pushes (a piece, which may start
    below 2^31, more, but a piece holds one item and never gets this far). Every full item pops its
    first call's symbols under the same distributions (nothing is known yet, and each row's
    output depends on that row alone), so each costs at least their :func:`_push_bits`; an item
    stored raw costs at least its uniform tables' bits.
    """
    full = {LAYOUT_ONE: 1, LAYOUT_BATCH: header.count}.get(header.layout, header.count // model.num_vars)
    capacity = 8 * len(stream) - 31
    if full <= max(capacity, 1):
        return
    _check_declared(full, model.num_vars, len(stream))  # absurd counts fail without a network call
    group = _Group.build(model, [0], model.num_vars, budget, seed)
    chunks = evaluate_in_fixed_chunks(
        model.coding_params, torch.zeros(1, model.num_vars, dtype=torch.long), group.levels[0],
        group.padded[0], rows=_coding_rows(model),
    )
    first = next(chunks)[1][:, : len(group.positions[0])]
    # Split symbols: their first digits alone (the same for every item) bound an item's bits.
    zero = np.zeros(first.shape[:2], dtype=np.int64)
    first_call = (first if model.digits_per_symbol == 1 else _digit_table(model, first, zero, 0))[0]
    raw = model.num_vars * sum(_push_bits(np.zeros((1, alphabet), np.float32))
                               for _, alphabet in _raw_tables(model.num_classes))
    if full * min(_push_bits(first_call), raw) > capacity:
        raise ValueError(
            f"corrupted blob: it declares {full} items, more than its {len(stream)} bytes can hold"
        )


# ---- independent streams, coded in lockstep --------------------------------------------------


def _encode_independent(
    model: ARDM, items: Items, budget: int, seed: int, progress: Progress | None = None,
    sample_rate: int | None = None,
) -> list[bytes]:
    """One stream per item, each a complete one-item blob; the network calls of items of one
    length are shared (their rows fill the evaluation chunks together)."""
    fingerprint = model_fingerprint(model)
    streams: list[bytes] = [b""] * len(items.lengths)
    bits_per_value = math.log2(model.num_classes)
    for length in sorted(set(items.lengths), reverse=True):
        idx = [i for i, n in enumerate(items.lengths) if n == length]
        values = items.values[idx]
        layouts = [_piece_layout(items, i) for i in idx]
        headers = []
        for (layout, count), item in zip(layouts, _typed(values, [length] * len(idx), items.dtype)):
            header = _header(model, layout, count, items.dtype, budget, seed, sample_rate)
            header.raw, header.piece = [False], True
            headers.append((header, header.initial_state(fingerprint, [item])))
        batch = _core.AnsCoderBatch(len(idx), np.asarray([s for _, s in headers], np.uint64),
                                    floor=PIECE_FLOOR)
        group = _Group.build(model, list(range(len(idx))), length, budget, seed)
        bits = _encode_group(model, group, values, batch.push, progress)
        for j, (i, data) in enumerate(zip(idx, batch.to_compact_bytes_list())):
            if bits[j] > length * bits_per_value:  # the model codes it worse than raw values
                one = Items(values[j : j + 1], [length], *layouts[j], items.dtype)
                streams[i] = _encode_stream(model, one, budget, seed, [True], None, sample_rate,
                                            piece=True)[0]
                continue
            coder = _core.AnsCoder.from_compact_bytes(data, floor=PIECE_FLOOR)
            writer = FieldWriter()
            headers[j][0].write(writer)
            writer.push_onto(coder)
            streams[i] = coder.to_compact_bytes()
    return streams


def _piece_layout(items: Items, i: int) -> tuple[int, int]:
    """(layout, count) of the one-item stream of item ``i`` in a frame: one item of
    ``data_shape``, but for a short last item of a sequence, which stores its length."""
    if items.layout == LAYOUT_SEQUENCE and items.lengths[i] < items.values.shape[1]:
        return LAYOUT_SEQUENCE, items.lengths[i]
    return LAYOUT_ONE, 1


@dataclass
class _Opened:
    """A one-item stream whose header has been read."""

    model: ARDM
    coder: _core.AnsCoder
    header: StreamHeader
    length: int


def _open_independent(
    streams: list[bytes], model: ARDM | None, joiner: int | None = None
) -> list[_Opened]:
    """Read the header (and raw flag) of every one-item stream of a frame; with ``joiner``,
    check that the streams fit it (:func:`_check_frame`)."""
    opened = []
    loaded: dict[tuple, ARDM] = {}  # a shipped model is loaded once for all its streams
    for stream in streams:
        coder, reader, header = open_frame_stream(stream)
        header.piece = True
        ref = (header.model, header.fingerprint16)
        if ref not in loaded:
            loaded[ref] = _model_for(header, model)
        the_model = loaded[ref]
        lengths = item_lengths(header.layout, min(header.count, 2 * the_model.num_vars),
                               the_model.num_vars)
        if header.layout == LAYOUT_BATCH or len(lengths) != 1:
            raise ValueError("corrupted blob: a stream inside the frame holds more than one item")
        header.read_raw_flags(reader, 1, _has_rate(the_model))
        opened.append(_Opened(the_model, coder, header, lengths[0]))
    if joiner is not None:
        _check_frame(joiner, opened)
    return opened


def _check_frame(joiner: int, opened: list[_Opened]) -> None:
    """The frame's joiner and streams must agree as :func:`compress` makes them: one model,
    dtype and sample rate; stacked items all of layout "one item"; concatenated items 1-D, all
    but the last of layout "one item", the last one too or a short one of layout "sequence"
    (:func:`_piece_layout`)."""
    if len({(id(o.model), _settings(o.model, o.header)[0], o.header.sample_rate)
            for o in opened}) > 1:
        raise ValueError(
            "corrupted blob: the streams of its frame disagree on the model, dtype or sample rate"
        )
    one_item = [o.header.layout == LAYOUT_ONE for o in opened]
    if joiner == JOIN_STACK and not all(one_item):
        raise ValueError(
            "corrupted blob: its frame says stacked items but holds a piece of a sequence"
        )
    last = opened[-1]
    if joiner == JOIN_CONCAT and (
        len(last.model.data_shape) != 1 or not all(one_item[:-1])
        or not (one_item[-1] or 0 < last.length < last.model.num_vars)
    ):
        raise ValueError("corrupted blob: the items of its frame do not form one sequence")


def _independent_units(opened: list[_Opened]) -> int:
    """Progress units of a frame: the calls of each (model, length, settings) once."""
    keys = {(id(o.model), o.length, _settings(o.model, o.header)): o.model for o in opened}
    return sum(_num_calls(m, length, budget) for (_, length, (_, budget, _)), m in keys.items())


def _decode_independent(
    streams: list[bytes], model: ARDM | None, progress: Progress | None = None,
    joiner: int | None = None,
) -> list[torch.Tensor]:
    """Decode one-item streams; those that share a schedule are decoded in lockstep."""
    opened = _open_independent(streams, model, joiner)
    out: list[torch.Tensor] = [torch.empty(0)] * len(streams)
    groups: dict[tuple, list[int]] = {}
    for i, o in enumerate(opened):
        key = (id(o.model), o.length, _settings(o.model, o.header), o.header.raw[0])
        groups.setdefault(key, []).append(i)
    for (model_id, length, (dtype, budget, seed), raw), idx in groups.items():
        the_model = opened[idx[0]].model
        fingerprint = model_fingerprint(the_model)
        if raw:
            if (model_id, length, (dtype, budget, seed), False) not in groups:
                # no coded item of this length: its calls, never made, are reported at once
                _report(progress, _num_calls(the_model, length, budget))
            for i in idx:
                o = opened[i]
                values = torch.zeros(1, the_model.num_vars, dtype=torch.long)
                raw_values = _pop_raw(_flat_pop(o.coder), length, the_model.num_classes)
                values[0, :length] = torch.from_numpy(raw_values)
                out[i] = _finish(the_model, o.coder.state(), o.coder.num_words(), o.header,
                                 fingerprint, values, [length], dtype)
            continue
        # One coder batch per evaluation chunk of items: each chunk is popped as it comes.
        rows = _coding_rows(the_model)
        data = [opened[i].coder.to_compact_bytes() for i in idx]
        batches = [_core.AnsCoderBatch.from_compact_bytes_list(data[k : k + rows], floor=PIECE_FLOOR)
                   for k in range(0, len(data), rows)]
        group = _Group.build(the_model, list(range(len(idx))), length, budget, seed)
        values = _decode_group(the_model, group, _batch_pop(batches, rows), progress)
        states = np.concatenate([b.states() for b in batches])
        words = np.concatenate([b.num_words() for b in batches])
        for j, i in enumerate(idx):
            out[i] = _finish(the_model, int(states[j]), int(words[j]), opened[i].header,
                             fingerprint, values[j : j + 1], [length], dtype)
    return out


def _batch_pop(batches: list[_core.AnsCoderBatch], rows: int) -> Callable[[slice, np.ndarray], np.ndarray]:
    """Pop a chunk of rows from the coder batch of its items (one batch per ``rows`` items)."""
    def pop(chunk: slice, logits: np.ndarray) -> np.ndarray:
        return batches[chunk.start // rows].pop(logits)

    return pop


def _finish(model: ARDM, state: int, words_left: int, header: StreamHeader, fingerprint: int,
            values: torch.Tensor, lengths: list[int], dtype: str) -> torch.Tensor:
    """Check the decoder's end state against the check of the decoded data; the data."""
    check_state(state, words_left, header.initial_state(fingerprint, _typed(values, lengths, dtype)))
    return from_items(values, lengths, header.layout, model.data_shape, dtype)


def _flat_pop(coder: _core.AnsCoder) -> Callable[[np.ndarray], np.ndarray]:
    def pop(logits: np.ndarray) -> np.ndarray:
        return coder.pop(logits.reshape(-1, logits.shape[-1])).reshape(logits.shape[:-1])

    return pop


# ---- the public API --------------------------------------------------------------------------


def compress(
    x: object,
    model: ARDM | None = None,
    budget: int | None = None,
    order_seed: int | None = None,
    mode: str = "joint",
    progress: Progress | None = None,
    sample_rate: int | None = None,
) -> bytes:
    """Compress integer data losslessly.

    Args:
        x: an item of shape ``model.data_shape``, a batch ``(n, *model.data_shape)`` or, for a
            model of 1-D items, a 1-D sequence (tensor, array or ``bytes``) of any length.
        model: an ARDM; ``None`` loads the shipped default.
        budget: network calls per item (``model.min_budget .. model.max_budget``); ``None``
            uses 100 within that range.
        order_seed: the coding order's seed; ``None`` uses the model's chosen seed.
        mode: ``"joint"`` (one stream, overhead paid once) or ``"independent"`` (every item its
            own stream, decodable alone: see :func:`split`).
        progress: called with the number of network calls (policy steps) just made, as they are
            made; they sum to :func:`coding_steps` of the same arguments. The blob is the same
            with or without it.
        sample_rate: audio models only: the rate in Hz that :func:`blob_sample_rate` gives
            back (``ardm decompress`` writes it into the WAV); ``None`` is the modality's
            8,000 Hz. It does not change how the samples are coded.

    Example:
        >>> import ardm
        >>> blob = ardm.compress(ardm.bundled_images()[0], budget=10)   # one 1x28x28 image
        >>> ardm.decompress(blob).shape
        torch.Size([1, 28, 28])
    """
    model = _resolve_model(model)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    budget = _check_budget(model, budget)
    seed = _check_seed(model, order_seed)
    rate = _check_rate(model, sample_rate)
    items = to_items(x, model.data_shape, model.num_classes)
    raw_bits = [n * math.log2(model.num_classes) for n in items.lengths]
    with torch.no_grad():
        if mode == "joint" or items.layout == LAYOUT_ONE:
            raw = [False] * len(items.lengths)
            stream, bits = _encode_stream(model, items, budget, seed, raw, progress, rate)
            worse = [bool(b > r) for b, r in zip(bits, raw_bits)]
            if any(worse):  # rare: code again with those items raw (not reported: see coding_steps)
                stream, _ = _encode_stream(model, items, budget, seed, worse, None, rate)
            return stream
        streams = _encode_independent(model, items, budget, seed, progress, rate)
        joiner = JOIN_CONCAT if items.layout == LAYOUT_SEQUENCE else JOIN_STACK
        if not streams:  # an empty sequence: one stream that says so
            stream, _ = _encode_stream(model, items, budget, seed, [], None, rate)
            return stream
        return pack_streams(streams, joiner, _typed(items.values, items.lengths, items.dtype))


def coding_steps(
    x: object,
    model: ARDM | None = None,
    budget: int | None = None,
    mode: str = "joint",
) -> int:
    """The progress units :func:`compress` reports for these arguments: its network calls.

    Items of one length share every call, so this is the sum, over the distinct item lengths
    of ``x``, of the calls of the policy for that length (``budget`` or fewer each: a batch of
    images is one length, a sequence at most two). It is the same in both modes and needs no
    network call. Items stored raw (rare: the model would code them worse than their raw
    values) count as if coded, so that the total is exact and known in advance: in joint mode
    :func:`compress` then codes the stream a second time, a pass it does not report; and
    :func:`decompress`, which makes no calls for a length whose items are all raw, reports those
    calls at once. :func:`decoding_steps` of the blob gives the same total.

    Args: as for :func:`compress` (the order seed does not change the count).

    Example:
        >>> import ardm
        >>> from ardm.coding import coding_steps, decoding_steps
        >>> x = ardm.bundled_images()[:2]
        >>> calls = []
        >>> blob = ardm.compress(x, budget=20, progress=calls.append)
        >>> sum(calls) == coding_steps(x, budget=20) == decoding_steps(blob)
        True
        >>> done = []
        >>> _ = ardm.decompress(blob, progress=done.append)
        >>> sum(done) == sum(calls)
        True
    """
    model = _resolve_model(model)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    budget = _check_budget(model, budget)
    items = to_items(x, model.data_shape, model.num_classes)
    return _units(model, items.lengths, budget)


def decoding_steps(blob: bytes, model: ARDM | None = None) -> int:
    """The progress units :func:`decompress` reports for ``blob``, read from its headers (no
    network call): equal to :func:`coding_steps` of the data and settings that made it.

    ``model`` as for :func:`decompress`; errors as there (a corrupted header is a ``ValueError``).
    """
    joiner, streams = unpack_streams(blob)
    with _named_errors(blob):
        if joiner is None:
            _, _, header, the_model = _open_one(streams[0], model)
            lengths = _stream_lengths(the_model, streams[0], header)
            return _units(the_model, lengths, _settings(the_model, header)[1])
        return _independent_units(_open_independent(streams, model, joiner))


@contextlib.contextmanager
def _named_errors(blob: bytes) -> Iterator[None]:
    """Name a format-1 blob in the ``ValueError`` it raises."""
    try:
        yield
    except ValueError:
        if looks_like_version_1(bytes(blob)):
            raise ValueError(
                "this is a format-1 blob (ardm 0.1); this release reads format 3: decompress it "
                "with ardm 0.1 and compress it again"
            ) from None
        raise


def decompress(
    blob: bytes, model: ARDM | None = None, progress: Progress | None = None
) -> torch.Tensor:
    """Decode a blob made by :func:`compress`: the same shape, length and dtype, bit for bit.

    ``model`` None loads the shipped model the blob names. Raises ``ValueError`` for a
    truncated, corrupted or foreign blob, a blob made by another model, or any decode whose
    result does not reproduce the blob's check: wrong data never comes back.

    ``progress`` is called with the number of network calls just made, as they are made; they
    sum to :func:`decoding_steps` of the blob, the same total that :func:`compress` reported.
    """
    joiner, streams = unpack_streams(blob)
    with _named_errors(blob), torch.no_grad():
        if joiner is None:
            parts = [_decode_one(streams[0], model, progress)]
        else:
            parts = _decode_independent(streams, model, progress, joiner)
            check_frame(bytes(blob), [p.numpy() for p in parts])
    if joiner is None:
        return parts[0]
    if joiner == JOIN_CONCAT:
        return torch.cat(parts)
    return torch.stack(parts)


def _open_one(
    stream: bytes, model: ARDM | None
) -> tuple[_core.AnsCoder, FieldReader, StreamHeader, ARDM]:
    """Open a one-stream blob: its coder, field reader, header and the model that decodes it."""
    coder, reader, header = open_stream(stream)
    model = _model_for(header, model)
    if header.layout == LAYOUT_BATCH and header.count == 0:
        raise ValueError("corrupted blob: a batch of no items")
    if header.piece and header.layout == LAYOUT_SEQUENCE and not 0 < header.count < model.num_vars:
        # a piece is one item, or the short last item of a sequence (see _piece_layout)
        raise ValueError("corrupted blob: a piece of an independent frame holds one item")
    return coder, reader, header, model


def _decode_one(stream: bytes, model: ARDM | None, progress: Progress | None = None) -> torch.Tensor:
    coder, reader, header, the_model = _open_one(stream, model)
    return _decode_stream(the_model, stream, header, reader, coder, progress)


def _model_for(header: StreamHeader, model: ARDM | None) -> ARDM:
    if model is not None:
        model = _resolve_model(model)
        if header.model is None and header.fingerprint16 != model_fingerprint(model) & 0xFFFF:
            raise ValueError(
                f"this blob was made by another model (fingerprint {header.fingerprint16:04x}, "
                f"this model {model_fingerprint(model) & 0xFFFF:04x}); decompress it with the "
                "model that compressed it"
            )
        if header.model is not None and not _is_shipped(model, header.model):
            raise ValueError(
                f"this blob was made by another model, the shipped {header.model!r}; decompress "
                f"it with ardm.load({header.model!r}), or give no model"
            )
        return model
    if header.model is None:
        raise ValueError(
            f"this blob was made by a model of your own (fingerprint {header.fingerprint16:04x}); "
            "pass it: decompress(blob, model=ardm.load(RUN_DIR)) or ardm decompress --model RUN_DIR"
        )
    from ardm.pretrained import load

    return load(header.model)


def blob_sample_rate(blob: bytes, model: ARDM | None = None) -> int | None:
    """The sample rate (Hz) an audio blob was compressed with, or None for other data; reads the
    header only (no network calls). ``model`` as for :func:`decompress`.

    Example:
        >>> import ardm
        >>> blob_sample_rate(ardm.compress(ardm.bundled_images()[0], budget=5)) is None
        True
    """
    joiner, streams = unpack_streams(blob)
    with _named_errors(blob):
        coder, reader, header, the_model = _open_one(streams[0], model)
        if not _has_rate(the_model):
            return None
        lengths = _stream_lengths(the_model, streams[0], header)
        header.read_raw_flags(reader, len(lengths) if joiner is None else 1, True)
    return get_modality(the_model.modality).sample_rate if header.sample_rate is None else header.sample_rate


def blob_model(blob: bytes) -> str | None:
    """The shipped model a blob names, or None for a model of the user's own (no decoding).

    Example:
        >>> import ardm
        >>> blob_model(ardm.compress(ardm.bundled_images()[0], budget=5))
        'fashion-mnist'
    """
    _, streams = unpack_streams(blob)
    return open_stream(streams[0])[2].model


def split(blob: bytes) -> list[bytes]:
    """Split an independent blob into one blob per item, each decodable alone (no network
    calls: each item's stream is sliced out and its header marked, :func:`mark_piece`). An item
    alone has its own 24-bit check only, not the frame's.

    Example:
        >>> import ardm
        >>> blob = ardm.compress(ardm.bundled_images()[:3], budget=10, mode="independent")
        >>> [ardm.decompress(b).shape for b in ardm.coding.split(blob)][0]
        torch.Size([1, 28, 28])
    """
    joiner, streams = unpack_streams(blob)
    if joiner is None:
        header = open_stream(streams[0])[2]
        if header.layout != LAYOUT_ONE and header.count > 1:
            raise ValueError(
                "this blob is one joint stream (mode='joint'); compress with mode='independent' "
                "to get items that decode alone"
            )
        return streams
    return [mark_piece(s) for s in streams]

