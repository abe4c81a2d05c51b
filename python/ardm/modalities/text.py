"""Text: bytes (K = 256), UTF-8 or not, in items of 256 bytes.

The dataset ``kjv`` is the King James Bible from the Debian package ``bible-kjv``, all of it as
``bible -f -l 10000 gen1:1-rev22:21`` prints it (4.4 MB, a verse a line), split by position: the
first 90 % of the bytes train, the last 10 % test, never shuffled across the cut. Any text file,
or a directory of them (read in sorted order, joined by newlines), is split the same way. A
dataset is cut into whole chunks; a user's file (``read_file``) is read as one sequence of bytes
of any length, which the codec cuts into items and whose last, shorter item it codes exactly.

Example:
    >>> import torch
    >>> TEXT.num_classes, TEXT.default_dataset, TEXT.item_length
    (256, 'kjv', 256)
    >>> chunk_bytes(b"abcdefg", 3).tolist()
    [[97, 98, 99], [100, 101, 102]]
    >>> printable(torch.tensor([72, 105, 10, 0]))
    'Hi\\n\\\\x00'
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from ardm.coding.deterministic import EVAL_ROWS
from ardm.modalities.base import WithoutSampleRate

__all__ = ["TEXT", "TextModality", "chunk_bytes", "load_text_bytes", "printable", "split_bytes"]

KJV_COMMAND = ("bible", "-f", "-l", "10000", "gen1:1-rev22:21")
TRAIN_FRACTION = 0.9
_TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".log", ".csv", ".tsv", ".json", ".jsonl",
                  ".xml", ".html", ".htm", ".yaml", ".yml", ".ini", ".cfg", ".tex")


def _kjv_bytes() -> bytes:
    if shutil.which(KJV_COMMAND[0]) is None:
        raise ValueError("the kjv dataset needs the `bible` program: apt-get install bible-kjv")
    try:
        done = subprocess.run(KJV_COMMAND, capture_output=True, check=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise ValueError(f"`{' '.join(KJV_COMMAND)}` failed ({err}); reinstall bible-kjv") from err
    return done.stdout


def load_text_bytes(name_or_path: str | os.PathLike) -> bytes:
    """All bytes of a text dataset: ``"kjv"``, a file, or a directory of files (sorted, joined
    by newlines).

    Example:
        >>> load_text_bytes("/nonexistent")
        Traceback (most recent call last):
        ...
        ValueError: text dataset /nonexistent: no such file or directory
    """
    if str(name_or_path) == "kjv":
        return _kjv_bytes()
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.read_bytes()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise ValueError(f"text dataset {path}: the directory holds no files")
        return b"\n".join(p.read_bytes() for p in files)
    raise ValueError(f"text dataset {path}: no such file or directory")


def split_bytes(data: bytes, split: str) -> bytes:
    """The ``train`` (first 90 %) or ``test`` (last 10 %) part of ``data``, cut by position.

    Example:
        >>> split_bytes(bytes(range(10)), "test")
        b'\\t'
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cut = int(len(data) * TRAIN_FRACTION)
    return data[:cut] if split == "train" else data[cut:]


def chunk_bytes(data: bytes, length: int) -> torch.Tensor:
    """``data`` as whole chunks (n, length) uint8; a shorter tail is left out."""
    n = len(data) // length
    return torch.from_numpy(np.frombuffer(data[: n * length], dtype=np.uint8).copy()).view(n, length)


def printable(values: torch.Tensor) -> str:
    """Bytes as text a terminal can show: UTF-8 where it decodes, other control bytes escaped."""
    raw = bytes(values.flatten().to(torch.uint8).tolist())
    text = raw.decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\x{ord(c):02x}" for c in text)


class TextModality(WithoutSampleRate):
    """The text modality (see the module docstring)."""

    name = "text"
    num_classes = 256
    dtype = "uint8"
    default_dataset = "kjv"
    datasets = ("kjv",)
    dataset_help = "'kjv' (Debian package bible-kjv) or a text file or directory of text files"
    default_net = "transformer"
    default_ce_weight = 1e-4  # the paper's for text
    default_model = "oa"
    default_branch_factor = 4
    preview_suffix = ".txt"
    coding_rows = EVAL_ROWS
    file_suffixes = _TEXT_SUFFIXES
    #: Bytes per item of the models trained here (``ardm train`` cuts datasets so).
    item_length = 256

    def load(self, name_or_path: str | Path, split: str) -> torch.Tensor:
        data = split_bytes(load_text_bytes(name_or_path), split)
        chunks = chunk_bytes(data, self.item_length)
        if not chunks.shape[0]:
            raise ValueError(
                f"text dataset {name_or_path}: its {split} split has {len(data)} bytes, less than "
                f"one {self.item_length}-byte item"
            )
        return chunks

    def holds_dataset(self, path: Path) -> bool:
        """Any file, or a directory with files in it: text models take any bytes."""
        return path.is_file() or (path.is_dir() and any(p.is_file() for p in path.rglob("*")))

    def read_file(self, path: str | os.PathLike, data_shape: tuple[int, ...]) -> np.ndarray:
        if len(data_shape) != 1:
            raise ValueError(
                f"{path}: a text file needs a model of 1-D items (bytes), this one takes items of "
                f"shape {data_shape}; use a text model (--model kjv)"
            )
        return np.frombuffer(Path(path).read_bytes(), dtype=np.uint8).copy()

    def write_data(self, path: Path, data: np.ndarray) -> Path:
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"text data must be 1-D uint8 bytes, got {data.dtype} {data.shape}")
        path.write_bytes(data.tobytes())
        return path

    def save_preview(
        self, samples: torch.Tensor, num_classes: int, path: str | os.PathLike, scale: int = 2
    ) -> Path:
        del num_classes, scale  # text has one way to be shown
        target = Path(path)
        if target.suffix.lower() == ".png":
            target = target.with_suffix(".txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        rule = "\n" + "-" * 72 + "\n"
        target.write_text(rule.join(printable(s) for s in samples) + "\n", encoding="utf-8")
        return target


TEXT = TextModality()
