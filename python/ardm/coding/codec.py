"""Lossless compression with an ARDM and rANS (paper Sec. 5, "Lossless compression"):
``compress`` / ``decompress`` / ``split``.

A fixed order (from a seed) and a policy (from the model's step losses and the budget) turn the
model into a sequence of network calls, the model's :class:`~ardm.models.StepSchedule`.
Encoding walks the calls in reverse, since ANS is a stack, pushing each call's symbols with their
predicted distributions; decoding walks forward with the same calls. Two modes:

- ``"joint"`` (the default): all items of one call in one stream, decoded in lockstep, the
  header and the check paid once: the mode for a file or a dataset;
- ``"independent"``: every item its own stream, decodable alone (:func:`split`), for random
  access to records.

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
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ardm import _core
from ardm.coding.container import (
    JOIN_CONCAT,
    JOIN_STACK,
    LAYOUT_BATCH,
    LAYOUT_ONE,
    LAYOUT_SEQUENCE,
    StreamHeader,
    check_state,
    looks_like_version_1,
    pack_streams,
    unpack_streams,
)
from ardm.coding.deterministic import EVAL_ROWS, evaluate_in_fixed_chunks
from ardm.coding.fields import FieldReader, FieldWriter
from ardm.coding.fingerprint import model_fingerprint
from ardm.coding.items import Items, from_items, item_lengths, to_items
from ardm.modalities import get_modality
from ardm.models import ARDM, StepSchedule

__all__ = [
    "DEFAULT_BUDGET",
    "MODES",
    "Progress",
    "blob_model",
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

    indices: list[int]
    schedule: StepSchedule
    levels: list[torch.Tensor]  # (1, D) per call
    positions: list[np.ndarray]  # the call's own positions, ascending
    padded: list[torch.Tensor]  # (1, width) the same, padded with position 0

    @classmethod
    def build(cls, model: ARDM, indices: list[int], length: int, budget: int, seed: int) -> _Group:
        ranks_np = np.full(model.num_vars, -1, dtype=np.int64)
        ranks_np[:length] = _core.order_ranks(_core.random_order(length, seed))
        ranks = torch.from_numpy(ranks_np).unsqueeze(0)
        schedule = StepSchedule(model.policy(budget, num_vars=length), model.num_stages, length)
        positions = [np.flatnonzero(schedule.in_step(s, ranks)[0].numpy()) for s in schedule]
        width = max(len(p) for p in positions)
        padded = []
        for p in positions:
            row = torch.zeros(1, width, dtype=torch.long)
            row[0, : len(p)] = torch.from_numpy(p)
            padded.append(row)
        levels = [schedule.levels_before(s, ranks) for s in schedule]
        return cls(indices, schedule, levels, positions, padded)


def _groups(model: ARDM, lengths: list[int], coded: list[bool], budget: int, seed: int) -> list[_Group]:
    by_length: dict[int, list[int]] = {}
    for i, (n, yes) in enumerate(zip(lengths, coded)):
        if yes and n > 0:
            by_length.setdefault(n, []).append(i)
    return [
        _Group.build(model, idx, n, budget, seed)
        for n, idx in sorted(by_length.items(), key=lambda kv: -kv[0])
    ]


def _log_probs(model: ARDM, state: torch.Tensor, levels: torch.Tensor, padded: torch.Tensor) -> np.ndarray:
    """Coding log-probabilities of every row, float32 (rows, width, k), in fixed chunks."""
    return np.concatenate(
        [out for _, out in evaluate_in_fixed_chunks(model.coding_log_probs, state, levels, padded)]
    )


# ---- encoding and decoding of the coded items ---------------------------------------------------


Push = Callable[[np.ndarray, np.ndarray], None]


def _encode_group(
    model: ARDM, group: _Group, values: torch.Tensor, push: Push, progress: Progress | None = None
) -> np.ndarray:
    """Push every call of ``group`` in reverse; returns each item's ideal bits (float64 (n,)).
    Reports each block of calls to ``progress`` once it is pushed."""
    n = values.shape[0]
    steps = list(reversed(group.schedule.steps))
    width, k = group.padded[0].shape[1], model.symbols_per_step
    per_block = max(1, math.ceil(EVAL_ROWS / n))
    per_block = max(1, min(per_block, ENCODE_BLOCK_BYTES // max(1, 4 * n * width * k)))
    bits = np.zeros(n)
    for lo in range(0, len(steps), per_block):
        block = steps[lo : lo + per_block]
        levels = torch.cat([group.levels[s.index].expand(n, -1) for s in block])
        padded = torch.cat([group.padded[s.index].expand(n, -1) for s in block])
        out = _log_probs(model, values.repeat(len(block), 1), levels, padded)
        for j, step in enumerate(block):
            pos = group.positions[step.index]
            logits = np.ascontiguousarray(out[j * n : (j + 1) * n, : len(pos)])
            symbols = model.next_symbols(values[:, pos], step.level).numpy()
            picked = np.take_along_axis(logits, symbols[..., None], -1)[..., 0]
            bits -= picked.astype(np.float64).sum(1) / math.log(2)
            push(symbols, logits)
        _report(progress, len(block))
    return bits


def _decode_group(
    model: ARDM,
    group: _Group,
    pop: Callable[[np.ndarray], np.ndarray],
    progress: Progress | None = None,
) -> torch.Tensor:
    n = len(group.indices)
    state = torch.zeros(n, model.num_vars, dtype=torch.long)
    for step in group.schedule:
        pos = group.positions[step.index]
        out = _log_probs(
            model, state, group.levels[step.index].expand(n, -1), group.padded[step.index].expand(n, -1)
        )
        symbols = pop(np.ascontiguousarray(out[:, : len(pos)]))
        positions = torch.from_numpy(pos).unsqueeze(0).expand(n, -1)
        state = model.apply_symbols(state, step.level, positions, torch.from_numpy(symbols))
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
    if model is None:
        from ardm.pretrained import load

        return load()
    if not isinstance(model, ARDM):
        raise ValueError(f"model must be an ARDM (see ardm.load), got {type(model).__name__}")
    return model


def _model_ref(model: ARDM) -> tuple[str | None, int]:
    """(shipped name or None, fingerprint) of a model; a shipped model changed since it was
    loaded is custom."""
    fingerprint = model_fingerprint(model)
    if model.shipped_name is not None and model.shipped_fingerprint == fingerprint:
        return model.shipped_name, fingerprint
    return None, fingerprint


def _header(model: ARDM, layout: int, count: int, dtype: str, budget: int, seed: int) -> StreamHeader:
    name, fingerprint = _model_ref(model)
    header = StreamHeader(name, 0 if name else fingerprint & 0xFFFF, layout, count)
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
    progress: Progress | None = None,
) -> tuple[bytes, np.ndarray]:
    """One stream holding every item of ``items`` (decoded in lockstep); returns it and each
    item's ideal model bits (NaN for raw items)."""
    header = _header(model, items.layout, items.count, items.dtype, budget, seed)
    header.raw = list(raw)
    typed = _typed(items.values, items.lengths, items.dtype)
    coder = _core.AnsCoder(header.initial_state(model_fingerprint(model), typed))
    for i in reversed(range(len(raw))):  # raw values are decoded last: push them first
        if raw[i]:
            _push_raw(_flat_push(coder), items.values[i, : items.lengths[i]].numpy(), model.num_classes)
    bits = np.full(len(raw), np.nan)
    groups = _groups(model, items.lengths, [not r for r in raw], budget, seed)
    for group in reversed(groups):  # group 0 is decoded first
        values = items.values[group.indices]
        bits[group.indices] = _encode_group(model, group, values, _flat_push(coder), progress)
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
    lengths = _stream_lengths(model, stream, header)
    header.read_raw_flags(reader, len(lengths))
    pop = _flat_pop(coder)
    values = torch.zeros(len(lengths), model.num_vars, dtype=torch.long)
    coded = [not r for r in header.raw]
    for group in _groups(model, lengths, coded, budget, seed):
        values[group.indices] = _decode_group(model, group, pop, progress)
    for i, raw in enumerate(header.raw):
        if raw:
            values[i, : lengths[i]] = torch.from_numpy(_pop_raw(pop, lengths[i], model.num_classes))
    if progress is not None:  # lengths whose items are all raw: their calls, never made
        coded_lengths = [n for n, yes in zip(lengths, coded) if yes]
        _report(progress, _units(model, lengths, budget) - _units(model, coded_lengths, budget))
    return _finish(model, coder.state(), coder.num_words(), header, model_fingerprint(model),
                   values, lengths, dtype)


def _check_declared(num_items: int, num_vars: int, stream_bytes: int) -> None:
    # A symbol costs at least ~2e-5 bits (frequencies are at most 1 - K / 2^24), so a blob
    # cannot hold more than about 4e5 values per byte: larger declarations are corrupted.
    if num_items * num_vars > 400_000 * max(stream_bytes, 1) + num_vars:
        raise ValueError(
            f"corrupted blob: it declares {num_items} items of {num_vars} values in "
            f"{stream_bytes} bytes"
        )


def _open_stream(stream: bytes) -> tuple[_core.AnsCoder, FieldReader, StreamHeader]:
    coder = _core.AnsCoder.from_compact_bytes(stream)
    reader = FieldReader(coder)
    return coder, reader, StreamHeader.read_prefix(reader)


# ---- independent streams, coded in lockstep --------------------------------------------------


def _encode_independent(
    model: ARDM, items: Items, budget: int, seed: int, progress: Progress | None = None
) -> list[bytes]:
    """One stream per item, each a complete one-item blob; the network calls of items of one
    length are shared (their rows fill the evaluation chunks together)."""
    fingerprint = model_fingerprint(model)
    streams: list[bytes] = [b""] * len(items.lengths)
    bits_per_value = math.log2(model.num_classes)
    for length in sorted(set(items.lengths), reverse=True):
        idx = [i for i, n in enumerate(items.lengths) if n == length]
        values = items.values[idx]
        # A full item is one item of data_shape; only a short last chunk stores its length.
        layout = LAYOUT_ONE if length == model.num_vars else LAYOUT_SEQUENCE
        count = length if layout == LAYOUT_SEQUENCE else 1
        headers = []
        for item in _typed(values, [length] * len(idx), items.dtype):
            header = _header(model, layout, count, items.dtype, budget, seed)
            header.raw = [False]
            headers.append((header, header.initial_state(fingerprint, [item])))
        batch = _core.AnsCoderBatch(len(idx), np.asarray([s for _, s in headers], np.uint64))
        group = _Group.build(model, list(range(len(idx))), length, budget, seed)
        bits = _encode_group(model, group, values, batch.push, progress)
        for j, (i, data) in enumerate(zip(idx, batch.to_compact_bytes_list())):
            if bits[j] > length * bits_per_value:  # the model codes it worse than raw values
                one = Items(values[j : j + 1], [length], layout, count, items.dtype)
                streams[i] = _encode_stream(model, one, budget, seed, [True])[0]
                continue
            coder = _core.AnsCoder.from_compact_bytes(data)
            writer = FieldWriter()
            headers[j][0].write(writer)
            writer.push_onto(coder)
            streams[i] = coder.to_compact_bytes()
    return streams


@dataclass
class _Opened:
    """A one-item stream whose header has been read."""

    model: ARDM
    coder: _core.AnsCoder
    header: StreamHeader
    length: int


def _open_independent(streams: list[bytes], model: ARDM | None) -> list[_Opened]:
    """Read the header (and raw flag) of every one-item stream of a frame."""
    opened = []
    loaded: dict[tuple, ARDM] = {}  # a shipped model is loaded once for all its streams
    for stream in streams:
        coder, reader, header = _open_stream(stream)
        ref = (header.model, header.fingerprint16)
        if ref not in loaded:
            loaded[ref] = _model_for(header, model)
        the_model = loaded[ref]
        lengths = item_lengths(header.layout, min(header.count, 2 * the_model.num_vars),
                               the_model.num_vars)
        if header.layout == LAYOUT_BATCH or len(lengths) != 1:
            raise ValueError("corrupted blob: a stream inside the frame holds more than one item")
        header.read_raw_flags(reader, 1)
        opened.append(_Opened(the_model, coder, header, lengths[0]))
    return opened


def _independent_units(opened: list[_Opened]) -> int:
    """Progress units of a frame: the calls of each (model, length, settings) once."""
    keys = {(id(o.model), o.length, _settings(o.model, o.header)): o.model for o in opened}
    return sum(_num_calls(m, length, budget) for (_, length, (_, budget, _)), m in keys.items())


def _decode_independent(
    streams: list[bytes], model: ARDM | None, progress: Progress | None = None
) -> list[torch.Tensor]:
    """Decode one-item streams; those that share a schedule are decoded in lockstep."""
    opened = _open_independent(streams, model)
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
        batch = _core.AnsCoderBatch.from_compact_bytes_list(
            [opened[i].coder.to_compact_bytes() for i in idx]
        )
        group = _Group.build(the_model, list(range(len(idx))), length, budget, seed)
        values = _decode_group(the_model, group, batch.pop, progress)
        states, words = batch.states(), batch.num_words()
        for j, i in enumerate(idx):
            out[i] = _finish(the_model, int(states[j]), int(words[j]), opened[i].header,
                             fingerprint, values[j : j + 1], [length], dtype)
    return out


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
    items = to_items(x, model.data_shape, model.num_classes)
    raw_bits = [n * math.log2(model.num_classes) for n in items.lengths]
    with torch.no_grad():
        if mode == "joint" or items.layout == LAYOUT_ONE:
            raw = [False] * len(items.lengths)
            stream, bits = _encode_stream(model, items, budget, seed, raw, progress)
            worse = [bool(b > r) for b, r in zip(bits, raw_bits)]
            if any(worse):  # rare: code again with those items raw (not reported: see coding_steps)
                stream, _ = _encode_stream(model, items, budget, seed, worse)
            return stream
        streams = _encode_independent(model, items, budget, seed, progress)
        joiner = JOIN_CONCAT if items.layout == LAYOUT_SEQUENCE else JOIN_STACK
        if not streams:  # an empty sequence: one stream that says so
            stream, _ = _encode_stream(model, items, budget, seed, [])
            return stream
        return pack_streams(streams, joiner)


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
        return _independent_units(_open_independent(streams, model))


@contextlib.contextmanager
def _named_errors(blob: bytes) -> Iterator[None]:
    """Name a format-1 blob in the ``ValueError`` it raises."""
    try:
        yield
    except ValueError:
        if looks_like_version_1(bytes(blob)):
            raise ValueError(
                "this is a format-1 blob (ardm 0.1); this release reads format 2: decompress it "
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
            parts = _decode_independent(streams, model, progress)
    if joiner is None:
        return parts[0]
    if joiner == JOIN_CONCAT:
        return torch.cat(parts)
    return torch.stack(parts)


def _open_one(
    stream: bytes, model: ARDM | None
) -> tuple[_core.AnsCoder, FieldReader, StreamHeader, ARDM]:
    """Open a one-stream blob: its coder, field reader, header and the model that decodes it."""
    coder, reader, header = _open_stream(stream)
    model = _model_for(header, model)
    if header.layout == LAYOUT_BATCH and header.count == 0:
        raise ValueError("corrupted blob: a batch of no items")
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
        return model
    if header.model is None:
        raise ValueError(
            f"this blob was made by a model of your own (fingerprint {header.fingerprint16:04x}); "
            "pass it: decompress(blob, model=ardm.load(RUN_DIR)) or ardm decompress --model RUN_DIR"
        )
    from ardm.pretrained import load

    return load(header.model)


def blob_model(blob: bytes) -> str | None:
    """The shipped model a blob names, or None for a model of the user's own (no decoding).

    Example:
        >>> import ardm
        >>> blob_model(ardm.compress(ardm.bundled_images()[0], budget=5))
        'fashion-mnist'
    """
    _, streams = unpack_streams(blob)
    return _open_stream(streams[0])[2].model


def split(blob: bytes) -> list[bytes]:
    """Split an independent blob into one blob per item, each decodable alone (no network
    calls: the items' streams are sliced out).

    Example:
        >>> import ardm
        >>> blob = ardm.compress(ardm.bundled_images()[:3], budget=10, mode="independent")
        >>> [ardm.decompress(b).shape for b in ardm.coding.split(blob)][0]
        torch.Size([1, 28, 28])
    """
    joiner, streams = unpack_streams(blob)
    if joiner is None:
        header = _open_stream(streams[0])[2]
        if header.layout != LAYOUT_ONE and header.count > 1:
            raise ValueError(
                "this blob is one joint stream (mode='joint'); compress with mode='independent' "
                "to get items that decode alone"
            )
    return streams

