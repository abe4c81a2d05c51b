"""Lossless compression of single data points with an ARDM and rANS (paper Sec. 5, "Lossless
compression"): ``compress`` / ``decompress``.

A fixed order (from a seed) and a policy (from the model's step losses and the budget) turn the
model into a sequence of ``len(policy)`` network calls. Encoding walks the steps in reverse, since
ANS is a stack, pushing each step's variables with their predicted distributions; decoding walks
forward with the same calls. Every item is its own stream and can be decoded alone: no bits-back,
no initial bits. Network outputs are made bit-identical between encode and decode by
``ardm.deterministic`` (fixed evaluation shapes, one intra-op thread), and every item carries a
CRC-32 of its data, so a mismatch is a ``ValueError``, never wrong data.

Example:
    >>> import ardm, torch
    >>> model = ardm.load()                                   # the shipped Fashion-MNIST model
    >>> x = ardm.bundled_images()[:2]                         # (2, 1, 28, 28) uint8
    >>> blob = ardm.compress(x, model, budget=20)
    >>> bool(torch.equal(ardm.decompress(blob, model), x))
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch

from ardm import _core
from ardm.container import (
    DTYPES,
    KIND_NAMES,
    KIND_ORDER_AGNOSTIC,
    Header,
    data_checksum,
    pack,
    unpack,
)
from ardm.deterministic import evaluate_in_fixed_chunks

DEFAULT_BUDGET = 100


class CodingSchedule(Protocol):
    """How a model turns into network calls for coding: implemented once per model kind."""

    kind: int
    num_steps: int

    def positions(self, step: int) -> np.ndarray:
        """Flat positions whose symbols step ``step`` codes (same for every item)."""

    def symbols(self, x_flat: torch.Tensor, step: int) -> np.ndarray:
        """Symbols coded at ``step``, int64 (B, n), read from the full data."""

    def state_before(self, x_flat: torch.Tensor, step: int) -> torch.Tensor:
        """The partially known data the network sees before ``step`` (for batched encoding)."""

    def initial_state(self, batch: int) -> torch.Tensor:
        """The decoder's state before step 0."""

    def apply(self, state: torch.Tensor, step: int, symbols: np.ndarray) -> torch.Tensor:
        """The decoder's state after ``step`` decoded ``symbols``."""

    def known(self, step: int) -> torch.Tensor:
        """A (D,) tensor describing what is known of each variable before ``step`` (a bool mask
        for the order-agnostic model, per-variable resolution levels for the upscale model)."""

    def logits(
        self, state: torch.Tensor, known: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Float logits (rows, n, k) of the symbols at ``positions`` (rows, n), from states and
        what is known."""


@dataclass
class OrderAgnosticSchedule:
    """Coding schedule of an ``OrderAgnosticARDM``: policy step i codes order[t_i : t_{i+1}]."""

    model: torch.nn.Module
    order: np.ndarray
    policy: np.ndarray
    kind: int = KIND_ORDER_AGNOSTIC

    def __post_init__(self) -> None:
        self.num_steps = len(self.policy)
        self._ranks = torch.from_numpy(_core.order_ranks(self.order))
        self._steps = [
            _core.step_positions(self.order, self.policy, i) for i in range(self.num_steps)
        ]

    def positions(self, step: int) -> np.ndarray:
        return self._steps[step]

    def symbols(self, x_flat: torch.Tensor, step: int) -> np.ndarray:
        return x_flat[:, self._steps[step]].numpy().astype(np.int64)

    def state_before(self, x_flat: torch.Tensor, step: int) -> torch.Tensor:
        return x_flat  # the model masks what is not known

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.model.num_vars, dtype=torch.long)

    def apply(self, state: torch.Tensor, step: int, symbols: np.ndarray) -> torch.Tensor:
        state[:, self._steps[step]] = torch.from_numpy(symbols)
        return state

    def known(self, step: int) -> torch.Tensor:
        return self._ranks < int(self.policy[step])

    def logits(
        self, state: torch.Tensor, known: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        shape = (state.shape[0], *self.model.data_shape)
        return self.model.predict_logits(state.view(shape), known.view(shape), positions)


def model_fingerprint(model: torch.nn.Module) -> int:
    """16-bit fingerprint of a model: its kind, classes, data shape, weights and step losses.

    Stored in every blob, so decoding with another model is caught before any decoding.
    """
    digest = hashlib.sha256()
    facts = [type(model).__name__, model.num_classes, list(model.data_shape)]
    digest.update(json.dumps(facts).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:2], "little")


def _schedule_for(model: torch.nn.Module, budget: int, order_seed: int) -> CodingSchedule:
    from ardm.ardm import OrderAgnosticARDM

    if isinstance(model, OrderAgnosticARDM):
        order = _core.random_order(model.num_vars, order_seed)
        return OrderAgnosticSchedule(model, order, model.policy(budget))
    upscale = _upscale_schedule_factory()
    if upscale is not None and upscale[0](model):
        return upscale[1](model, budget, order_seed)
    raise ValueError(f"cannot compress with a {type(model).__name__}: expected an ARDM model")


def _upscale_schedule_factory():
    try:
        from ardm.upscale import UpscaleARDM, upscale_schedule
    except ImportError:
        return None
    return (lambda m: isinstance(m, UpscaleARDM)), upscale_schedule


def _check_budget(model: torch.nn.Module, budget: int | None) -> int:
    # An upscale model needs at least one call per stage and can use one per variable and stage.
    low = int(getattr(model, "min_budget", 1))
    high = int(getattr(model, "max_budget", model.num_vars))
    if budget is None:
        budget = min(max(DEFAULT_BUDGET, low), high)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ValueError(f"budget must be an integer number of network calls, got {budget!r}")
    if not low <= budget <= high:
        raise ValueError(f"budget must be between {low} and {high} for this model, got {budget}")
    return int(budget)


def _as_items(x, model: torch.nn.Module) -> tuple[torch.Tensor, str, bool]:
    """Validate x and return (items as int64 (B, D), dtype name, whether x had a batch axis)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x))  # a copy: the input may be read-only
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be an integer tensor or array, got {type(x).__name__}")
    dtype = str(x.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ValueError(f"x must have an integer dtype ({', '.join(DTYPES)}), got {dtype}")
    shape = tuple(model.data_shape)
    if tuple(x.shape) == shape:
        batched = False
        x = x.unsqueeze(0)
    elif x.dim() == len(shape) + 1 and tuple(x.shape[1:]) == shape:
        batched = True
    else:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; this model codes {shape} or (n, *{shape})"
        )
    if x.shape[0] == 0:
        raise ValueError("x holds no items")
    flat = x.reshape(x.shape[0], -1).to(torch.int64)
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high >= model.num_classes:
        raise ValueError(
            f"x has values in [{low}, {high}]; this model codes 0..{model.num_classes - 1}"
        )
    return flat, dtype, batched


def _padded_positions(schedule: CodingSchedule) -> torch.Tensor:
    """(steps, n) positions of every step, padded with position 0 to the largest step.

    Every row then has the same evaluation shape whether it is encoded or decoded, which is what
    keeps the network's outputs bit-identical (see ``ardm.deterministic``).
    """
    steps = [schedule.positions(s) for s in range(schedule.num_steps)]
    padded = torch.zeros(len(steps), max(len(p) for p in steps), dtype=torch.long)
    for s, step_positions in enumerate(steps):
        padded[s, : len(step_positions)] = torch.from_numpy(np.asarray(step_positions))
    return padded


def _first(rows: np.ndarray, count: int) -> np.ndarray:
    """The logits of a step's own positions (the rest is padding), contiguous float32."""
    return np.ascontiguousarray(rows[:, :count, :], dtype=np.float32)


def compress(
    x, model: torch.nn.Module | None = None, budget: int | None = None, order_seed=None
) -> bytes:
    """Compress integer data losslessly; every item of a batch is its own stream.

    Args:
        x: integer tensor (or array) of shape ``model.data_shape`` or ``(n, *model.data_shape)``.
        model: an ARDM; ``None`` loads the shipped default.
        budget: network calls per item (1..D; S..S*D for an upscale model with S stages);
            ``None`` uses 100 within that range.
        order_seed: the generation order's seed; ``None`` uses the model's chosen seed.
    """
    model = _resolve_model(model)
    budget = _check_budget(model, budget)
    items, dtype, batched = _as_items(x, model)
    seed = _order_seed(model, order_seed)
    schedule = _schedule_for(model, budget, seed)
    num_items, steps = items.shape[0], schedule.num_steps

    # Encoding knows all the data, so every (item, step) call is independent: batch them all.
    step_of_row = np.repeat(np.arange(steps), num_items)
    states = torch.cat([schedule.state_before(items, s) for s in range(steps)])
    known = torch.stack([schedule.known(s) for s in range(steps)])[step_of_row]
    positions = _padded_positions(schedule)
    step_logits: list[list[np.ndarray]] = [[] for _ in range(steps)]
    for rows, out in evaluate_in_fixed_chunks(
        schedule.logits, states, known, positions[step_of_row]
    ):
        for step in np.unique(step_of_row[rows]):
            in_step = step_of_row[rows] == step
            step_logits[step].append(_first(out[in_step], len(schedule.positions(step))))

    coder = _core.AnsCoderBatch(num_items)
    for step in reversed(range(steps)):  # ANS is a stack: step 0 must be on top
        logits = np.concatenate(step_logits[step])  # rows of a step are its items, in order
        coder.push(schedule.symbols(items, step), logits)
        step_logits[step] = []
    header = Header(
        kind=schedule.kind,
        dtype=dtype,
        batched=batched,
        fingerprint=model_fingerprint(model),
        budget=budget,
        order_seed=seed,
        checksums=[data_checksum(item.numpy()) for item in _typed_items(items, dtype)],
        streams=coder.to_bytes_list(),
    )
    return pack(header)


def decompress(blob: bytes, model: torch.nn.Module | None = None) -> torch.Tensor:
    """Decode a blob made by ``compress`` with the same model: same shape and dtype, bit for bit.

    Raises ``ValueError`` for a truncated, corrupted or foreign blob, a blob made by another model,
    or any decode whose data does not reproduce its checksum.
    """
    header = unpack(blob)
    model = _resolve_model(model)
    fingerprint = model_fingerprint(model)
    if header.fingerprint != fingerprint:
        raise ValueError(
            f"this blob was made by another model (fingerprint {header.fingerprint:04x}, "
            f"this model {fingerprint:04x}); decompress it with the model that compressed it"
        )
    budget = _check_budget(model, header.budget)
    schedule = _schedule_for(model, budget, header.order_seed)
    if schedule.kind != header.kind:
        raise ValueError(
            f"this blob was made by an {KIND_NAMES[header.kind]} model, "
            f"not this {KIND_NAMES[schedule.kind]} one"
        )
    coder = _core.AnsCoderBatch.from_bytes_list(header.streams)
    state = schedule.initial_state(header.num_items)
    positions = _padded_positions(schedule)
    for step in range(schedule.num_steps):
        known = schedule.known(step).expand(header.num_items, -1)
        step_positions = positions[step].expand(header.num_items, -1)
        chunks = evaluate_in_fixed_chunks(schedule.logits, state, known, step_positions)
        count = len(schedule.positions(step))
        logits = np.concatenate([_first(out, count) for _, out in chunks])
        state = schedule.apply(state, step, coder.pop(logits))
    if not all(_core.AnsCoder.from_bytes(b).is_empty() for b in coder.to_bytes_list()):
        raise ValueError("corrupted blob: data left in a stream after decoding every step")
    items = _typed_items(state, header.dtype)
    for i, (item, checksum) in enumerate(zip(items, header.checksums)):
        if data_checksum(item.numpy()) != checksum:
            raise ValueError(
                f"checksum mismatch in item {i}: the blob is corrupted or was made by a "
                "different model or software version; no data is returned"
            )
    out = items.reshape(header.num_items, *model.data_shape)
    return out if header.batched else out[0]


def split(blob: bytes) -> list[bytes]:
    """Split a batched blob into one blob per item, each decodable alone (no network calls).

    Example:
        >>> import ardm
        >>> model = ardm.load()
        >>> blob = ardm.compress(ardm.bundled_images()[:3], model, budget=10)
        >>> [ardm.decompress(b, model).shape for b in ardm.codec.split(blob)][0]
        torch.Size([1, 28, 28])
    """
    header = unpack(blob)
    return [
        pack(replace(header, batched=False, checksums=[checksum], streams=[stream]))
        for checksum, stream in zip(header.checksums, header.streams)
    ]


def _typed_items(items: torch.Tensor, dtype: str) -> torch.Tensor:
    return items.to(getattr(torch, dtype))


def _order_seed(model: torch.nn.Module, order_seed) -> int:
    if order_seed is None:
        return int(getattr(model, "order_seed", 0))
    if isinstance(order_seed, bool) or not isinstance(order_seed, (int, np.integer)):
        raise ValueError(f"order_seed must be a non-negative integer, got {order_seed!r}")
    if order_seed < 0:
        raise ValueError(f"order_seed must be a non-negative integer, got {order_seed}")
    return int(order_seed)


def _resolve_model(model):
    if model is None:
        from ardm.pretrained import load

        return load()
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "num_vars"):
        raise ValueError(f"model must be an ARDM (see ardm.load), got {type(model).__name__}")
    return model
