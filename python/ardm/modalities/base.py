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

__all__ = ["Modality"]


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
    #: The net (``ardm.nets.NETS``) and auxiliary cross-entropy weight ``ardm train`` defaults to.
    default_net: str
    default_ce_weight: float
    #: File suffixes that ``ardm compress`` routes to this modality's shipped model.
    file_suffixes: tuple[str, ...]
    #: The suffix of :meth:`save_preview`'s files (``.png`` for images, ``.txt`` for text).
    preview_suffix: str

    def load(self, name_or_path: str | Path, split: str) -> torch.Tensor:
        """A dataset split as integer items (N, *item_shape) with values in 0..K-1."""
        ...

    def read_file(self, path: str | os.PathLike, data_shape: tuple[int, ...]) -> np.ndarray:
        """A user's file as integer data for a model of ``data_shape`` (exactly, or an error)."""
        ...

    def write_file(self, path: str | os.PathLike, data: np.ndarray) -> Path:
        """Write decoded data back in the file's own format; returns the path written."""
        ...

    def save_preview(
        self, samples: torch.Tensor, num_classes: int, path: str | os.PathLike, scale: int = 2
    ) -> Path:
        """Save samples (n, *item_shape) so that a person can look at them (``scale``: size)."""
        ...
