"""Where the CLI reads and writes: inputs checked, outputs placed by the ``-o`` rules of
``ardm compress`` and ``ardm decompress``, and every output of every command (blobs, decoded
files, samples, plots) written whole or not at all, never over a file without ``--force``.

The rules (each command's ``--help`` states them):

- no ``-o``: each output is written beside its input;
- ``-o DIR``, an existing directory or a path ending in ``/`` (created): each output in DIR;
- ``-o FILE`` with one input: that file, in a directory that exists;
- ``-o FILE`` with several inputs: an error, since each input gets its own output.

An output that exists is replaced only with ``--force``; an output is never one of the inputs and
two inputs never share one. A file is written under a temporary name beside its target, checked,
then renamed into place, so a failure leaves neither half a file nor a lost old one.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "a.png").write_bytes(b"")
    0
    >>> [p.name for p in plan_outputs([str(folder / "a.png")], None, lambda p: p.name + ".ardm")]
    ['a.png.ardm']
    >>> plan_outputs([str(folder / "a.png")] * 2, str(folder / "x.ardm"), str)
    Traceback (most recent call last):
    ...
    ValueError: -o ...x.ardm is not a directory, but 2 inputs were given: ...
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["check_inputs", "check_free", "plan_outputs", "write_whole"]


def check_inputs(inputs: list[str]) -> list[Path]:
    """The inputs as paths, each an existing file (a ``ValueError`` names the first that is not)."""
    paths = [Path(p) for p in inputs]
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path} is a directory; give the files in it")
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    return paths


def check_free(target: Path, force: bool, option: str = "-o") -> None:
    """A ``ValueError`` unless ``target`` may be written: it is no directory, and it does not exist
    or ``force`` allows replacing it. ``option`` names the flag that chooses where to write."""
    if target.is_dir():
        raise ValueError(f"{target} is a directory; give {option} a file name")
    if (target.exists() or target.is_symlink()) and not force:
        raise ValueError(
            f"{target} exists; pass --force to replace it, or {option} to write elsewhere"
        )


def plan_outputs(
    inputs: list[str], output: str | None, name_of: Callable[[Path], str], *, force: bool = False
) -> list[Path]:
    """The output path of every input under the rules of the module docstring, checked before
    anything is computed; ``name_of(input)`` names an output placed beside its input or in DIR.
    Creates DIR if it ends in ``/``, and makes sure every output directory can be written."""
    paths = [Path(p) for p in inputs]
    folder: Path | None = None
    if output is None:
        targets = [p.parent / name_of(p) for p in paths]
    else:
        out = Path(output)
        if out.is_dir() or output.endswith(("/", os.sep)):
            if out.exists() and not out.is_dir():
                raise ValueError(f"-o {output}: {out} is a file, not a directory")
            folder = out
            targets = [out / name_of(p) for p in paths]
        elif len(paths) > 1:
            raise ValueError(
                f"-o {output} is not a directory, but {len(paths)} inputs were given: each input "
                "gets its own output, so -o must name a directory (an existing one, or end it "
                "with / to create it)"
            )
        else:
            if not out.parent.is_dir():
                raise ValueError(f"-o {output}: the directory {out.parent} does not exist")
            targets = [out]
    by_target: dict[str, Path] = {}
    for source, target in zip(paths, targets):
        key = os.path.normpath(os.path.abspath(target))
        if key in by_target:
            raise ValueError(
                f"{by_target[key]} and {source} would both be written to {target}; give one "
                "input at a time, or rename one"
            )
        by_target[key] = source
    sources = {os.path.realpath(p) for p in paths}
    for target in targets:
        if os.path.realpath(target) in sources:
            raise ValueError(f"{target} is also an input; give -o another name")
        check_free(target, force)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for directory in dict.fromkeys(t.parent for t in targets):
        _check_writable(directory)
    return targets


def _check_writable(directory: Path) -> None:
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".ardm-")
    except OSError as err:
        raise ValueError(f"cannot write in {directory}: {err.strerror}") from err
    os.close(fd)
    os.unlink(name)


def write_whole(
    target: Path,
    write: Callable[[Path], Path],
    *,
    force: bool,
    check: Callable[[Path], None] | None = None,
    option: str = "-o",
) -> Path:
    """Write a file with ``write(path)`` (which returns the path it wrote: a modality may add a
    suffix to a bare name) under a temporary name beside ``target``, call ``check`` on it (it
    raises if the file is not what it must be), then rename it into place; returns the final
    path. Nothing is left behind if any step fails.

    Every other file ``write`` makes beside its path (an audio preview: one WAV per sample and
    a plot) is moved into place with it, and each of them is refused, before any is moved, if
    it exists and ``force`` is not given (``option``: as for :func:`check_free`).
    """
    try:
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".ardm-"))
    except OSError as err:
        raise ValueError(f"cannot write in {target.parent}: {err.strerror}") from err
    try:
        try:
            written = write(staging / target.name)
        except ValueError as err:  # say the name the user gave, not the temporary one
            raise ValueError(str(err).replace(str(staging / target.name), str(target))) from err
        made = sorted(staging.iterdir())
        for path in made:
            check_free(target.parent / path.name, force, option)
        if check is not None:
            check(written)
        for path in made:
            os.replace(path, target.parent / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target.parent / written.name
