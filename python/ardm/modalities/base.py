"""The modality layer: how the data of one kind (images, text, audio) becomes model items.

A :class:`Modality` says, for its kind of data: the number of classes its values map to
(0..K-1), the dtype items come back as, how a dataset becomes items of one shape (``load``), how
a user's file is read into items and written back (``read_file`` / ``write_file``, exactly) and
how samples are shown (``save_preview``). Training, evaluation, sampling and the codec reach the
data only through a modality, so a new modality is one new file and one entry in ``MODALITIES``
(:mod:`ardm.modalities`); nothing outside a modality knows a data shape or a class count.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

__all__ = ["Modality", "WithoutSampleRate"]


class Modality(Protocol):
    """What every modality provides (see the module docstring)."""

    name: str
    #: K of the models trained on this modality by default (256 for 8-bit values).
    num_classes: int
    #: The dtype of its items; a blob of another dtype records it (a few bits more).
    dtype: str
    #: The dataset ``ardm train`` uses when none is named, and every dataset known by name.
    default_dataset: str
    datasets: tuple[str, ...]
    #: What ``ardm train --data`` takes for this modality: the named datasets (and the package
    #: that installs each) and what a user may bring instead.
    dataset_help: str
    #: The net (``ardm.nets.NETS``) and auxiliary cross-entropy weight ``ardm train`` defaults to.
    default_net: str
    default_ce_weight: float
    #: The model kind (``ardm.models.MODEL_KINDS``) and branching factor ``ardm train`` uses
    #: when none is given (the factor matters only for upscale models).
    default_model: str
    default_branch_factor: int
    #: File suffixes that ``ardm compress`` routes to this modality's shipped model.
    file_suffixes: tuple[str, ...]
    #: The suffix of :meth:`save_preview`'s files (``.png`` for images, ``.txt`` for text).
    preview_suffix: str
    #: Rows per network evaluation when coding (part of the format, see
    #: :mod:`ardm.coding.deterministic`): 8 for small items, 1 for items as large as audio chunks.
    coding_rows: int
    #: The sample rate (Hz) a blob of this modality records unless told another (audio: 8,000);
    #: None: its data has none (the container then has no such field).
    sample_rate: int | None

    def load(self, name_or_path: str | Path, split: str) -> torch.Tensor:
        """A dataset split as integer items (N, *item_shape) with values in 0..K-1."""
        ...

    def holds_dataset(self, path: Path) -> bool:
        """Whether ``path`` (not a dataset name) looks like this modality's data: how ``ardm
        train --data PATH`` picks a modality when none is given."""
        ...

    def read_file(self, path: str | os.PathLike, data_shape: tuple[int, ...]) -> np.ndarray:
        """A user's file as integer data for a model of ``data_shape`` (exactly, or an error)."""
        ...

    def read_file_with_rate(
        self, path: str | os.PathLike, data_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, int | None]:
        """:meth:`read_file` and the file's sample rate (audio) from one read; None as the rate
        for data that has none."""
        ...

    def write_file(
        self, path: str | os.PathLike, data: np.ndarray, sample_rate: int | None = None
    ) -> Path:
        """Write decoded data back in the file's own format (audio at ``sample_rate``, its
        modality's when None); returns the path written."""
        ...

    def save_preview(
        self, samples: torch.Tensor, num_classes: int, path: str | os.PathLike, scale: int = 2
    ) -> Path:
        """Save samples (n, *item_shape) so that a person can look at them (``scale``: size)."""
        ...


class WithoutSampleRate:
    """The sample-rate part of a modality whose data has none (images, text), in one place: its
    files are read with no rate and a rate given to ``write_file`` is an error. A subclass reads
    in ``read_file`` and writes in ``write_data``.

    Example:
        >>> from ardm.modalities import get_modality
        >>> get_modality("text").write_file("x.txt", np.zeros(1, np.uint8), 8000)
        Traceback (most recent call last):
        ...
        ValueError: text data has no sample rate, got 8000
    """

    name: str
    sample_rate = None

    def read_file(self, path: str | os.PathLike, data_shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def read_file_with_rate(
        self, path: str | os.PathLike, data_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, int | None]:
        return self.read_file(path, data_shape), None

    def write_file(
        self, path: str | os.PathLike, data: np.ndarray, sample_rate: int | None = None
    ) -> Path:
        if sample_rate is not None:
            raise ValueError(f"{self.name} data has no sample rate, got {sample_rate}")
        return self.write_data(Path(path), data)

    def write_data(self, path: Path, data: np.ndarray) -> Path:
        """Write decoded data in the file's own format; returns the path written."""
        raise NotImplementedError
