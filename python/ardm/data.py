"""Real image datasets as uint8 tensors (N, C, H, W): Fashion-MNIST, MNIST-format IDX, CIFAR-10.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (files under
/usr/share/datasets/fashion-mnist). Any directory of MNIST-format IDX files (``train-images-
idx3-ubyte[.gz]`` and ``t10k-images-idx3-ubyte[.gz]``) or of CIFAR-10 python batches
(``data_batch_1..5``, ``test_batch``) works the same way. IDX is parsed here with struct + numpy;
CIFAR batches are pickles, read with an unpickler that only admits plain containers and numpy
arrays, so a file cannot run code.

Example:
    >>> x = load_dataset("fashion-mnist", "test")  # doctest: +SKIP
    >>> x.shape, x.dtype  # doctest: +SKIP
    (torch.Size([10000, 1, 28, 28]), torch.uint8)
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_dataset", "read_idx", "DATASET_DIRS", "SPLITS"]

DATASET_DIRS: dict[str, tuple[Path, str]] = {
    # name -> (directory, Debian package that provides it)
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
}
SPLITS = ("train", "test")
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not), validating its magic number and size.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
        >>> read_idx(p).tolist()
        [7, 9]
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(
            f"{path}: IDX header says {dims} ({expected} bytes of data), file has {len(body)} bytes"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx_images(directory: Path, split: str) -> Path | None:
    prefix = _IDX_PREFIX[split]
    for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"):
        for suffix in ("", ".gz"):
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


class _SafeUnpickler(pickle.Unpickler):
    """Admits only numpy array reconstruction; everything else in a pickle is plain data."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise ValueError(f"refusing to load {module}.{name} from a pickle")


def _load_cifar(directory: Path, split: str) -> torch.Tensor:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    arrays = []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{directory}: CIFAR-10 batch {name} is missing")
        try:
            batch = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"{path}: corrupt CIFAR-10 batch ({err})") from err
        data = batch.get(b"data") if isinstance(batch, dict) else None
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{path}: expected a 'data' array of shape (N, 3072)")
        arrays.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
    return torch.from_numpy(np.concatenate(arrays))


def load_dataset(name_or_path: str | Path, split: str = "train") -> torch.Tensor:
    """Load an image dataset as a uint8 tensor (N, C, H, W).

    ``name_or_path`` is a known name (``"fashion-mnist"``) or a directory of MNIST-format IDX
    files or CIFAR-10 python batches; ``split`` is ``"train"`` or ``"test"``.

    Example:
        >>> load_dataset("/nonexistent")
        Traceback (most recent call last):
        ...
        ValueError: dataset directory /nonexistent does not exist
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    name = str(name_or_path)
    package = None
    if name in DATASET_DIRS:
        directory, package = DATASET_DIRS[name]
    else:
        directory = Path(name).expanduser()
    hint = f" (install it with: apt-get install {package})" if package else ""
    if not directory.is_dir():
        raise ValueError(f"dataset directory {directory} does not exist{hint}")
    if (directory / "test_batch").is_file() or (directory / "data_batch_1").is_file():
        return _load_cifar(directory, split)
    images = _find_idx_images(directory, split)
    if images is None:
        raise ValueError(
            f"no {_IDX_PREFIX[split]}-images-idx3-ubyte[.gz] (MNIST IDX) or CIFAR-10 batches "
            f"in {directory}{hint}"
        )
    array = read_idx(images)
    if array.ndim != 3 or array.dtype != np.uint8:
        raise ValueError(f"{images}: expected uint8 images (N, H, W), got {array.dtype} {array.shape}")
    return torch.from_numpy(array.copy()).unsqueeze(1)
