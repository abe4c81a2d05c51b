"""Reading and writing the files users compress: PNG images and NumPy arrays.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> write_array(path, np.arange(784, dtype=np.uint8).reshape(1, 28, 28))
    >>> read_array(path, (1, 28, 28)).shape
    (1, 28, 28)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def read_array(path: str | os.PathLike, data_shape: tuple[int, ...]) -> np.ndarray:
    """Read an image or .npy file as an integer array of ``data_shape`` or ``(n, *data_shape)``.

    Images are read losslessly (grayscale for 1-channel models, RGB for 3-channel ones) and laid
    out channels first.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises several types for bad files
            raise ValueError(f"{path}: not a readable .npy file ({err})") from err
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        channels = data_shape[0] if len(data_shape) == 3 else 1
        try:
            with Image.open(path) as image:
                if image.mode not in ("L", "RGB", "P", "RGBA", "LA", "I;16", "I"):
                    raise ValueError(f"{path}: unsupported image mode {image.mode}")
                if image.mode in ("I;16", "I"):
                    array = np.array(image)
                else:
                    array = np.array(image.convert("L" if channels == 1 else "RGB"))
        except (OSError, Image.DecompressionBombError) as err:
            raise ValueError(f"{path}: not a readable image ({err})") from err
        array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    else:
        raise ValueError(f"{path}: unknown file type; give a .png (or other image) or .npy file")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: holds {array.dtype} values; ardm compresses integer data")
    if array.shape != tuple(data_shape) and array.shape[1:] != tuple(data_shape):
        raise ValueError(
            f"{path}: shape {array.shape} does not fit the model's data shape {tuple(data_shape)}"
        )
    return array


def write_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an image (8-bit, 1 or 3 channels first) or as .npy, by suffix."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        np.save(path, array, allow_pickle=False)
        return
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unknown output type; use .png or .npy")
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(
            f"{path}: data of shape {array.shape} and dtype {array.dtype} is no 8-bit image; "
            "write it as .npy"
        )
    image = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    Image.fromarray(image).save(path)


def default_output_suffix(array: np.ndarray) -> str:
    """``.png`` for data that is an 8-bit image, else ``.npy``."""
    is_image = array.dtype == np.uint8 and array.ndim == 3 and array.shape[0] in (1, 3)
    return ".png" if is_image else ".npy"
