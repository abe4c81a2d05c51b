"""Images: uint8 pixels (K = 256) laid out (C, H, W); datasets from MNIST-format IDX files or
CIFAR-10 batches (:mod:`ardm.data`), files from PNG or .npy (:mod:`ardm.files`), previews as a
PNG grid.

Example:
    >>> import torch
    >>> IMAGE.num_classes, IMAGE.default_dataset
    (256, 'fashion-mnist')
    >>> image_grid(torch.zeros(5, 1, 2, 2, dtype=torch.long), 256).shape   # 2 rows of 3
    (5, 8)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ardm.coding.deterministic import EVAL_ROWS
from ardm.data import is_image_dataset_dir, load_dataset
from ardm.files import IMAGE_SUFFIXES, default_output_suffix, read_array, write_array
from ardm.modalities.base import WithoutSampleRate

__all__ = ["IMAGE", "ImageModality", "image_grid", "save_grid"]

#: The most pixels a preview grid may have once scaled (268 M, 0.8 GB of RGB): a larger one is a
#: mistake in ``--scale`` that would exhaust memory, not a picture anyone can look at.
MAX_GRID_PIXELS = 1 << 28


def image_grid(images: torch.Tensor, num_classes: int, columns: int | None = None) -> np.ndarray:
    """Images (n, C, H, W) with values 0..K-1 -> one uint8 grid (rows, cols[, 3]), 1-pixel gaps.

    C = 1 gives grey, C = 3 colour; values are scaled to 0..255.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (n, 1 or 3, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    values = images.long().clamp(0, num_classes - 1).numpy()
    values = (values * 255 // max(num_classes - 1, 1)).astype(np.uint8)
    grid = np.full((c, rows * (h + 1) - 1, cols * (w + 1) - 1), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[:, r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = values[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(images: torch.Tensor, num_classes: int, path: str | Path, scale: int = 2) -> Path:
    """Save :func:`image_grid` of ``images`` as a PNG, each pixel ``scale`` x ``scale``."""
    from PIL import Image

    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    grid = image_grid(images, num_classes)
    height, width = grid.shape[0] * scale, grid.shape[1] * scale
    if height * width > MAX_GRID_PIXELS:
        raise ValueError(f"scale {scale} makes a grid of {width}x{height} pixels, more than "
                         f"{MAX_GRID_PIXELS:,}; use a smaller scale")
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


class ImageModality(WithoutSampleRate):
    """The image modality (see the module docstring)."""

    name = "image"
    num_classes = 256
    dtype = "uint8"
    default_dataset = "fashion-mnist"
    datasets = ("fashion-mnist",)
    dataset_help = ("'fashion-mnist' (Debian package dataset-fashion-mnist) or a directory of MNIST "
                    "IDX files or CIFAR-10 python batches")
    default_net = "unet"
    default_ce_weight = 1e-3  # the paper's for images
    default_model = "oa"
    default_branch_factor = 4
    preview_suffix = ".png"
    coding_rows = EVAL_ROWS
    file_suffixes = tuple(sorted(IMAGE_SUFFIXES | {".npy"}))

    def load(self, name_or_path: str | Path, split: str) -> torch.Tensor:
        return load_dataset(name_or_path, split)

    def holds_dataset(self, path: Path) -> bool:
        return is_image_dataset_dir(path)

    def read_file(self, path: str | os.PathLike, data_shape: tuple[int, ...]) -> np.ndarray:
        return read_array(path, data_shape)

    def write_data(self, path: Path, data: np.ndarray) -> Path:
        if not path.suffix:
            path = path.with_name(path.name + default_output_suffix(data))
        write_array(path, data)
        return path

    def save_preview(
        self, samples: torch.Tensor, num_classes: int, path: str | os.PathLike, scale: int = 2
    ) -> Path:
        return save_grid(samples, num_classes, path, scale)


IMAGE = ImageModality()
