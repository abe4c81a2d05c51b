"""Real image datasets as uint8 tensors (N, C, H, W): Fashion-MNIST, MNIST-format IDX, CIFAR-10.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (files under
/usr/share/datasets/fashion-mnist). Any directory of MNIST-format IDX files (``train-images-
idx3-ubyte[.gz]`` and ``t10k-images-idx3-ubyte[.gz]``) or of CIFAR-10 python batches
(``data_batch_1..5``, ``test_batch``) works the same way. IDX is parsed here with struct + numpy;
CIFAR batches are pickles, read with an unpickler that builds only what a real batch holds (plain
containers, and uint8 arrays made from the file's own bytes), so a file can neither run code nor
make the loader allocate memory of its choosing.

Example:
    >>> x = load_dataset("fashion-mnist", "test")  # doctest: +SKIP
    >>> x.shape, x.dtype  # doctest: +SKIP
    (torch.Size([10000, 1, 28, 28]), torch.uint8)
"""

from __future__ import annotations

import gzip
import io
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_dataset", "is_image_dataset_dir", "read_idx", "DATASET_DIRS", "SPLITS"]

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


def is_image_dataset_dir(path: Path) -> bool:
    """Whether ``path`` is a directory of MNIST IDX training images or CIFAR-10 python batches."""
    return path.is_dir() and (_holds_cifar(path) or _find_idx_images(path, "train") is not None)


def _holds_cifar(directory: Path) -> bool:
    return (directory / "test_batch").is_file() or (directory / "data_batch_1").is_file()


def _find_idx_images(directory: Path, split: str) -> Path | None:
    prefix = _IDX_PREFIX[split]
    for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"):
        for suffix in ("", ".gz"):
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


# ---- CIFAR-10 python batches: a pickle that may only build what a real batch holds ------------
#
# A real batch is a dict of bytes keys: b"data" (a uint8 array (N, 3072), pickled as
# numpy's _reconstruct(ndarray, (0,), b"b") plus its state, or _frombuffer at protocol 5),
# b"labels" (a list of ints), b"batch_label" (bytes) and b"filenames" (a list of bytes). The
# unpickler below hands the pickle stand-ins instead of numpy's callables: they accept exactly
# those calls, and an array is built only from raw bytes of the file whose length matches its
# declared shape, so a pickle can neither run code nor make numpy allocate memory of its choosing.

CIFAR_ROW = 3 * 32 * 32


class _NdarrayName:
    """Stands for ``numpy.ndarray``: only ``_reconstruct`` takes it; calling it is refused."""

    def __call__(self, *args: object) -> None:
        raise pickle.UnpicklingError("refusing to call numpy.ndarray from a pickle")


class _Uint8:
    """Stands for ``numpy.dtype("u1")``, the dtype of CIFAR data; its pickled state is checked."""

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("|", b"|")):
            raise pickle.UnpicklingError(f"unexpected state of a uint8 dtype: {state!r:.80}")


def _dtype(name: object, align: object = False, copy: object = True) -> _Uint8:
    if name not in ("u1", b"u1"):
        raise pickle.UnpicklingError(f"refusing dtype {name!r:.40} (CIFAR data is uint8)")
    return _Uint8()


def _uint8_array(shape: object, data: object) -> np.ndarray:
    """A uint8 array of ``shape`` over raw bytes that hold exactly its values."""
    if (not isinstance(shape, tuple) or len(shape) > 2
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise pickle.UnpicklingError(f"unexpected array shape {shape!r:.80}")
    if not isinstance(data, (bytes, bytearray)) or len(data) != int(np.prod(shape, dtype=np.int64)):
        raise pickle.UnpicklingError(f"array data does not match its shape {shape}")
    return np.frombuffer(bytes(data), dtype=np.uint8).reshape(shape)


class _PendingArray:
    """What ``_reconstruct(ndarray, (0,), b"b")`` returns; its state (version, shape, dtype,
    fortran order, raw bytes) makes the array."""

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _Uint8)
                and state[3] is False and self.array is None):
            raise pickle.UnpicklingError("unexpected numpy array state in a pickle")
        self.array = _uint8_array(state[1], state[4])


def _reconstruct(cls: object, shape: object, typecode: object) -> _PendingArray:
    if not isinstance(cls, _NdarrayName) or shape != (0,) or typecode not in (b"b", "b"):
        raise pickle.UnpicklingError("unexpected numpy array reconstruction in a pickle")
    return _PendingArray()


def _frombuffer(buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
    if not isinstance(dtype, _Uint8) or order not in ("C", b"C"):
        raise pickle.UnpicklingError("unexpected numpy array in a pickle")
    return _uint8_array(shape, buffer)


def _latin1(text: object, encoding: object) -> bytes:
    """``_codecs.encode(str, "latin1")``: how Python 3 pickles bytes at protocol 2."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("unexpected _codecs.encode call in a pickle")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Admits only the stand-ins above; everything else in a pickle is plain data."""

    _GLOBALS = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _NdarrayName(),
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1,
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        raise ValueError(f"refusing to load {module}.{name} from a pickle")


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_opcodes(raw: bytes) -> None:
    """Parse the pickle without running it: every argument within the file, memo slots in
    sequence (the C unpickler allocates a table up to the largest slot a pickle names)."""
    for count, (opcode, arg, _) in enumerate(pickletools.genops(raw)):
        if opcode.name in _MEMO_PUTS and not 0 <= int(arg) <= count:
            raise pickle.UnpicklingError(f"memo slot {arg} out of sequence")


def _plain(value: object, depth: int = 0) -> object:
    """The unpickled batch with its arrays made; a stand-in left over is an error."""
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise pickle.UnpicklingError("a numpy array without its data")
        return value.array
    if isinstance(value, (_NdarrayName, _Uint8)):
        raise pickle.UnpicklingError("a numpy type where data belongs")
    if depth < 3 and isinstance(value, dict):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if depth < 3 and isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    return value


def _read_cifar_batch(path: Path) -> np.ndarray:
    """The images (N, 3, 32, 32) uint8 of one CIFAR-10 python batch."""
    raw = path.read_bytes()
    try:
        _check_opcodes(raw)
        batch = _plain(_CifarUnpickler(io.BytesIO(raw), encoding="bytes").load())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, RecursionError, OverflowError) as err:
        if isinstance(err, ValueError) and str(err).startswith("refusing"):
            raise ValueError(f"{path}: {err}") from err
        raise ValueError(f"{path}: corrupt CIFAR-10 batch ({type(err).__name__}: {err})") from err
    data = batch.get(b"data") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != CIFAR_ROW:
        raise ValueError(f"{path}: expected a 'data' array of shape (N, {CIFAR_ROW})")
    labels = batch.get(b"labels", [0] * len(data))
    if not isinstance(labels, list) or len(labels) != len(data):
        raise ValueError(f"{path}: expected {len(data)} labels, one per image")
    return data.reshape(-1, 3, 32, 32)


def _load_cifar(directory: Path, split: str) -> torch.Tensor:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    arrays = []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{directory}: CIFAR-10 batch {name} is missing")
        arrays.append(_read_cifar_batch(path))
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
    if _holds_cifar(directory):
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
