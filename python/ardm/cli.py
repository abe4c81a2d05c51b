"""The ``ardm`` command line: one subcommand per module in ``ardm.commands``.

To add a subcommand, write ``ardm/commands/<name>.py`` with ``add_parser(subparsers)`` (returning
its parser) and ``run(args) -> int``, and append the module to ``COMMANDS``.

Example:
    >>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from ardm.commands import (
    choose_order,
    compress,
    decompress,
    demo,
    infill,
    sample,
    step_losses,
    train,
)
from ardm.commands import eval as eval_command

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: list[ModuleType] = [
    train,
    eval_command,
    sample,
    infill,
    compress,
    decompress,
    demo,
    choose_order,
    step_losses,
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="ardm",
        description="Autoregressive Diffusion Models (Hoogeboom et al., ICLR 2022): train, "
        "generate in parallel under a budget, and compress losslessly.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def _fail(command: str, message: str) -> int:
    """Print one line, ``ardm COMMAND: error: MESSAGE``, and return the exit status 1."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    print(f"ardm {command}: error: {'; '.join(lines) or 'failed'}", file=sys.stderr)
    return 1


#: What torch's CPU and CUDA allocators say when an allocation fails.
ALLOCATION_FAILURES = ("can't allocate memory", "out of memory")

#: The options that make a command's work smaller, as its parser names them.
SIZE_OPTIONS = {"batch_size": "--batch-size", "n": "--n", "test_size": "--test-size",
                "preset": "--preset"}


def is_allocation_failure(err: BaseException) -> bool:
    """Whether ``err`` is a failed allocation (torch raises them as ``RuntimeError``).

    Example:
        >>> is_allocation_failure(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        True
        >>> is_allocation_failure(RuntimeError("shape mismatch"))
        False
    """
    text = str(err).lower()
    return isinstance(err, MemoryError) or any(phrase in text for phrase in ALLOCATION_FAILURES)


def out_of_memory(args: argparse.Namespace, detail: str = "") -> str:
    """The one line for a failed allocation: what failed and the options that make it smaller."""
    first = detail.strip().splitlines()[0][:160] if detail.strip() else ""
    options = [flag for name, flag in SIZE_OPTIONS.items() if hasattr(args, name)]
    advice = f"use a smaller {' or '.join(options)}" if options else "use fewer or smaller inputs"
    return f"out of memory{f' ({first})' if first else ''}; {advice}"


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit status.

    A user's error (a ``ValueError``, or an ``OSError`` such as a missing or unreadable file) is
    one line on stderr and exit status 1, never a traceback; usage errors are argparse's (2). So
    is running out of memory (a ``MemoryError``, or torch's allocation ``RuntimeError``), with
    the options that make the work smaller.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args))
    except ValueError as err:  # what ardm says is wrong with the input
        return _fail(args.command, str(err))
    except OSError as err:  # a file that cannot be read or written, as the system says why
        where = f"{err.filename}: " if err.filename else ""
        return _fail(args.command, f"{where}{err.strerror or err}")
    except MemoryError:
        return _fail(args.command, out_of_memory(args))
    except RuntimeError as err:  # torch's allocators raise RuntimeError (CUDA: a subclass)
        if not is_allocation_failure(err):
            raise
        return _fail(args.command, out_of_memory(args, str(err)))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
