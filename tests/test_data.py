"""Dataset loaders: IDX parsing and validation, CIFAR-10 batches, the missing-data error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import idx_bytes, write_mnist_dir

from ardm import data
from ardm.data import load_dataset, read_idx


def _write_mnist_dir(root: Path, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_mnist_dir(root, train, test, gz)
    return train, test


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_round_trip(tmp_path: Path, gz: bool) -> None:
    train, test = _write_mnist_dir(tmp_path, gz)
    x = load_dataset(tmp_path, "train")
    assert x.dtype == torch.uint8 and x.shape == (7, 1, 28, 28)
    assert np.array_equal(x[:, 0].numpy(), train)
    assert np.array_equal(load_dataset(str(tmp_path), "test")[:, 0].numpy(), test)


def test_read_idx_validates(tmp_path: Path) -> None:
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    path = tmp_path / "f-idx2-ubyte"
    path.write_bytes(good)
    assert read_idx(path).shape == (3, 4)
    for bad, message in (
        (b"\x01" + good[1:], "magic"),
        (good[:2] + b"\x07" + good[3:], "element type"),
        (good[:-1], "header says"),
        (good + b"\x00", "header says"),
        (good[:6], "truncated"),
        (b"\x1f\x8b\x08garbage", "gzip"),
    ):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match=message):
            read_idx(path)


def test_labels_file_is_not_images(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(ValueError, match="expected uint8 images"):
        load_dataset(tmp_path)


def test_missing_dataset_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(
        data.DATASET_DIRS, "fashion-mnist", (tmp_path / "absent", "dataset-fashion-mnist")
    )
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    with pytest.raises(ValueError, match="no t10k-images"):
        load_dataset(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        load_dataset(tmp_path, "valid")


def _write_cifar(root: Path) -> np.ndarray:
    rng = np.random.default_rng(1)
    arrays = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        arr = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        arrays.append(arr)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": arr, b"labels": [0, 1]}, f)
    return np.concatenate(arrays[:5]).reshape(-1, 3, 32, 32)


def test_cifar_batches(tmp_path: Path) -> None:
    expected = _write_cifar(tmp_path)
    x = load_dataset(tmp_path, "train")
    assert x.shape == (10, 3, 32, 32) and np.array_equal(x.numpy(), expected)
    assert load_dataset(tmp_path, "test").shape == (2, 3, 32, 32)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("this must never run",))


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil()}, f)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        load_dataset(tmp_path, "test")


def test_real_fashion_mnist(fashion_mnist_test: torch.Tensor) -> None:
    x = fashion_mnist_test
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert int(x.max()) == 255 and int(x.min()) == 0
    assert load_dataset("fashion-mnist", "train").shape == (60000, 1, 28, 28)


def test_image_modality_loads_datasets(tmp_path: Path) -> None:
    from ardm.modalities import MODALITIES, get_modality

    _, test = _write_mnist_dir(tmp_path, gz=True)
    image = get_modality("image")
    assert MODALITIES["image"] is image and image.num_classes == 256
    assert np.array_equal(image.load(str(tmp_path), "test")[:, 0].numpy(), test)
    with pytest.raises(ValueError, match="unknown modality"):
        get_modality("video")


def test_every_modality_has_what_the_protocol_names() -> None:
    """A new modality file that forgets an attribute or method of ``Modality`` fails here, not
    deep inside training or coding."""
    from typing import get_type_hints

    from ardm.modalities import MODALITIES, Modality

    wanted = set(get_type_hints(Modality)) | {
        name for name in vars(Modality) if not name.startswith("_") and callable(vars(Modality)[name])
    }
    for modality in MODALITIES.values():
        missing = sorted(name for name in wanted if not hasattr(modality, name))
        assert not missing, f"modality {modality.name} lacks {missing}"
