"""``ardm infill``: fill the unknown bytes of a text given the known ones, under a budget.

Example:
    ardm infill kjv "In the ____ God created the heaven and the earth." --budget 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ardm.evaluate import resolve_run
from ardm.modalities.text import printable

__all__ = ["add_parser", "run", "infill_text", "check_text_model"]

DESCRIPTION = """\
Fill in the unknown bytes of a text (each MASK character, '_' by default) given all the known
ones, in any order, under a budget of network calls: what an order-agnostic model can do and a
left-to-right one cannot. A text shorter than the model's item is completed to a whole item (the
bytes after it are generated too, then dropped); a longer one is filled item by item. Prints the
filled text, the network calls and the time.

examples:
  ardm infill kjv "In the ____ God created the heaven and the earth."
  ardm infill runs/kjv --file masked.txt --mask '#' --budget 64 --seed 3
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``infill`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "infill", help="fill in the masked bytes of a text under a budget of network calls",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("run", help="run directory (from ardm train) or shipped text model name (kjv)")
    add("text", nargs="?", default=None, help="the text, MASK characters where bytes are unknown")
    add("--file", default=None, help="read the text from this file instead")
    add("--mask", default="_", help="the character that marks an unknown byte (default: %(default)s)")
    add("--budget", type=int, default=64,
        help="network calls per item, clipped to its unknown bytes (default: %(default)s)")
    add("--temperature", type=float, default=1.0, help="divides the logits (default: %(default)s)")
    add("--seed", type=int, default=0, help="seed of orders and draws (default: %(default)s)")
    return p


def infill_text(
    model: torch.nn.Module, data: bytes, mask: bytes, budget: int, temperature: float = 1.0,
    seed: int = 0,
) -> tuple[bytes, int]:
    """``data`` with every ``mask`` byte filled in by ``model`` (an ARDM of 1-D byte items);
    returns the filled bytes and the network calls made.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import OrderAgnosticARDM
        >>> m = OrderAgnosticARDM(build_net("tiny", 256, (8,), net="transformer"), 256, (8,))
        >>> filled, calls = infill_text(m, b"ab__", b"_", budget=8)
        >>> filled[:2], len(filled), calls
        (b'ab', 4, 6)
    """
    if len(mask) != 1:
        raise ValueError(f"the mask must be one byte, got {mask!r} ({len(mask)} bytes)")
    check_text_model(model)
    if mask not in data:
        raise ValueError(f"the text has no mask character {mask.decode(errors='replace')!r} to fill")
    length = model.data_shape[0]
    gen = torch.Generator().manual_seed(seed)
    calls_before = model.network_calls
    out = bytearray()
    for lo in range(0, len(data), length):
        piece = data[lo : lo + length]
        given = torch.zeros(length, dtype=torch.long)
        given[: len(piece)] = torch.tensor(list(piece))
        known = torch.zeros(length, dtype=torch.bool)
        known[: len(piece)] = given[: len(piece)] != mask[0]
        unknown = int((~known).sum())
        if unknown == 0:
            out += piece
            continue
        needs_losses = min(budget, unknown) < unknown
        if needs_losses and not model.has_step_losses():
            raise ValueError("the model has no per-step losses; give --budget >= the unknown bytes")
        filled = model.sample(
            1, budget=min(budget, unknown), temperature=temperature, generator=gen,
            given=given, known=known,
        )
        out += bytes(filled[0, : len(piece)].tolist())
    return bytes(out), model.network_calls - calls_before


def check_text_model(model: torch.nn.Module, name: str | None = None) -> None:
    """A ``ValueError`` unless ``model`` (called ``name``) takes byte sequences: infill fills in
    text, and an image or audio model's items are no bytes.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import OrderAgnosticARDM
        >>> check_text_model(OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4)))
        Traceback (most recent call last):
        ...
        ValueError: infill fills in text, and the model is an image model (items of shape (1, 4, 4), K = 4 values); use a text model (kjv, or a run trained on text)
    """
    if len(model.data_shape) == 1 and model.num_classes == 256:
        return
    kind = getattr(model, "modality", "image")
    article = "an" if kind[:1] in "aeiou" else "a"
    raise ValueError(
        f"infill fills in text, and {name or 'the model'} is {article} {kind} model (items of "
        f"shape {tuple(model.data_shape)}, K = {model.num_classes:,} values); use a text model "
        "(kjv, or a run trained on text)"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``ardm infill`` with parsed arguments; returns the exit status."""
    if (args.text is None) == (args.file is None):
        raise ValueError("give the text as an argument or with --file, not both")
    data = Path(args.file).read_bytes() if args.file else args.text.encode("utf-8")
    mask = args.mask.encode("utf-8")
    if args.budget < 1:
        raise ValueError(f"budget must be >= 1, got {args.budget}")
    model, _ = resolve_run(args.run)
    check_text_model(model, args.run)
    start = time.perf_counter()
    filled, calls = infill_text(model, data, mask, args.budget, args.temperature, args.seed)
    seconds = time.perf_counter() - start
    print(printable(torch.tensor(list(filled), dtype=torch.uint8)))
    print(
        f"{data.count(mask)} bytes filled in {calls} network calls, {seconds:.2f} s "
        f"(budget {args.budget}, temperature {args.temperature}, seed {args.seed})",
        file=sys.stderr,
    )
    return 0
