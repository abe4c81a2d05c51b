"""Modalities (:mod:`ardm.modalities.base`): images, text and audio; a new modality is a new file here.

Example:
    >>> get_modality("image").num_classes
    256
"""

from __future__ import annotations

import os
from pathlib import Path

from ardm.modalities.audio import AUDIO
from ardm.modalities.base import Modality
from ardm.modalities.image import IMAGE
from ardm.modalities.text import TEXT

__all__ = ["MODALITIES", "Modality", "get_modality", "modality_for_data", "modality_for_path"]

MODALITIES: dict[str, Modality] = {m.name: m for m in (IMAGE, TEXT, AUDIO)}


def get_modality(name: str) -> Modality:
    """The modality called ``name`` (a key of ``MODALITIES``)."""
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; choose one of {sorted(MODALITIES)}")
    return MODALITIES[name]


def modality_for_data(data: str | os.PathLike) -> Modality | None:
    """The modality of a training dataset given by name or path (``ardm train --data``): a named
    dataset's, else the first whose :meth:`~Modality.holds_dataset` takes the path (text last:
    it takes any file); None where the path does not exist (loading then says so).

    Example:
        >>> modality_for_data("kjv").name
        'text'
    """
    named = [m for m in MODALITIES.values() if str(data) in m.datasets]
    if named:
        return named[0]
    path = Path(data).expanduser()
    for modality in sorted(MODALITIES.values(), key=lambda m: m is TEXT):
        if modality.holds_dataset(path):
            return modality
    return None


def modality_for_path(path: str | os.PathLike) -> Modality:
    """The modality whose files end like ``path`` (``ardm compress`` picks the model by it).

    Example:
        >>> modality_for_path("shirt.png").name
        'image'
    """
    suffix = Path(path).suffix.lower()
    for modality in MODALITIES.values():
        if suffix in modality.file_suffixes:
            return modality
    known = sorted({s for m in MODALITIES.values() for s in m.file_suffixes})
    raise ValueError(
        f"{path}: no modality reads {suffix or 'files without a suffix'} files (known: "
        f"{', '.join(known)}); pass --model RUN_DIR for a model of your own"
    )
