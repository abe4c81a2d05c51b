"""Reading and writing the files users compress: PNG images and NumPy arrays.

An image is read only if its pixels are what the model codes, exactly: 8-bit greyscale (mode L)
for a 1-channel model, 8-bit RGB for a 3-channel one, one frame, no alpha, no transparent colour,
no palette, no other bit depth. Anything else is refused, never converted, so decompress gives
back the same pixels. The file's metadata (PNG text chunks, ICC profile, gamma, DPI) is not kept.

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

#: How each accepted mode may be stored: 8 bits a sample, nothing scaled (Pillow's raw modes).
_EXACT_RAW_MODES = {"L": {"L"}, "RGB": {"RGB", "BGR"}}
_MODE_NAMES = {
    "1": "a 1-bit image", "L": "an 8-bit greyscale image", "LA": "a greyscale image with alpha",
    "P": "a palette image", "PA": "a palette image with alpha", "RGB": "an 8-bit RGB image",
    "RGBA": "an RGBA image (with alpha)", "I;16": "a 16-bit greyscale image",
    "I": "a 32-bit integer (or 16-bit) greyscale image", "F": "a floating-point image",
    "CMYK": "a CMYK image",
}
_TRAIN_HINT = (
    "train a model that fits such images (ardm train --data DIR, a directory of MNIST-format "
    "IDX files or CIFAR-10 python batches) and pass --model RUN_DIR"
)


def _accepted(data_shape: tuple[int, ...]) -> tuple[str, str]:
    """The image mode a model of ``data_shape`` codes, and how to say so."""
    channels, height, width = data_shape
    mode = {1: "L", 3: "RGB"}.get(channels, "")
    kind = {"L": "8-bit greyscale images (mode L)", "RGB": "8-bit RGB images"}.get(
        mode, f"{channels}-channel data (as .npy)"
    )
    return mode, f"this model codes {kind} of {width}x{height} pixels exactly"


def _refuse(path: Path, what: str, data_shape: tuple[int, ...], hint: str) -> ValueError:
    return ValueError(f"{path}: {what}; {_accepted(data_shape)[1]}, and ardm never converts "
                      f"an image: {hint}")


def _stored_depth(image: Image.Image) -> str | None:
    """How an L or RGB image's samples are stored, if not as 8 bits each (Pillow scales them)."""
    for tile in image.tile:  # empty for formats that decode whole (WebP: always 8-bit)
        args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
        raw = args[0] if args else image.mode
        # PGM/PPM with a maximum value other than 255 are scaled to 0..255 when read.
        ppm = tile.codec_name in ("ppm", "ppm_plain") and len(args) > 1
        if ppm and args[1] != 255:
            return f"values up to {args[1]}"
        if raw not in _EXACT_RAW_MODES[image.mode]:
            return f"samples stored as {raw}"
    return None


def _read_image(path: Path, data_shape: tuple[int, ...]) -> np.ndarray:
    """The pixels of ``path`` if they are exactly what the model codes; else a ``ValueError``."""
    if len(data_shape) != 3:
        raise ValueError(f"{path}: an image needs an image model; this one takes items of shape "
                         f"{tuple(data_shape)}")
    mode, _ = _accepted(data_shape)
    convert = "convert it yourself if that loses nothing you need"
    with Image.open(path) as image:
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise _refuse(path, f"{frames} frames (an animation or a multi-page file)", data_shape,
                          "give one frame a file")
        what = _MODE_NAMES.get(image.mode, f"an image of mode {image.mode}")
        depth = _stored_depth(image) if image.mode in _EXACT_RAW_MODES else None
        if depth is not None:
            plain = {"L": "a greyscale image", "RGB": "an RGB image"}[image.mode]
            raise _refuse(path, f"{plain} with {depth}, not 8 bits a sample", data_shape, convert)
        if image.mode != mode:
            fits = image.mode in _EXACT_RAW_MODES
            raise _refuse(path, what, data_shape, _TRAIN_HINT if fits else convert)
        if "transparency" in image.info:
            raise _refuse(path, "an image with a transparent colour (alpha)", data_shape, convert)
        if image.size != tuple(data_shape[-1:-3:-1]):
            width, height = image.size
            raise _refuse(path, f"an image of {width}x{height} pixels", data_shape, _TRAIN_HINT)
        array = np.array(image)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def read_array(path: str | os.PathLike, data_shape: tuple[int, ...]) -> np.ndarray:
    """Read an image or .npy file as an integer array of ``data_shape`` or ``(n, *data_shape)``.

    Images are read losslessly and laid out channels first; one that the model cannot code
    exactly (see the module docstring) is a ``ValueError`` that says why.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises several types for bad files
            raise ValueError(f"{path}: not a readable .npy file ({err})") from err
    elif suffix in IMAGE_SUFFIXES:
        try:
            array = _read_image(path, tuple(data_shape))
        except (OSError, Image.DecompressionBombError) as err:
            raise ValueError(f"{path}: not a readable image ({err})") from err
    else:
        raise ValueError(f"{path}: unknown file type; give a .png (or other image) or .npy file")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path}: holds {array.dtype} values; ardm compresses integer data")
    if not array.dtype.isnative:  # decompress would give another dtype: refuse, never convert
        raise ValueError(f"{path}: holds {array.dtype.str} values, not in this machine's byte "
                         f"order; save it as {array.dtype.newbyteorder('=').str} to compress it")
    if array.shape != tuple(data_shape) and array.shape[1:] != tuple(data_shape):
        raise ValueError(
            f"{path}: shape {array.shape} does not fit the model's data shape {tuple(data_shape)}"
        )
    return array


def write_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an image (8-bit, 1 or 3 channels first) or as .npy, by suffix.

    Images are written losslessly (WebP in its lossless mode; it has no greyscale, so a 1-channel
    image is refused there).
    """
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
    options = {}
    if path.suffix.lower() == ".webp":
        if array.shape[0] == 1:
            raise ValueError(f"{path}: WebP has no greyscale images; write it as .png")
        options = {"lossless": True, "exact": True, "quality": 100}
    image = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    Image.fromarray(image).save(path, **options)


def default_output_suffix(array: np.ndarray) -> str:
    """``.png`` for data that is an 8-bit image, else ``.npy``."""
    is_image = array.dtype == np.uint8 and array.ndim == 3 and array.shape[0] in (1, 3)
    return ".png" if is_image else ".npy"
