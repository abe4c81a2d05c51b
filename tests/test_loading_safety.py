"""Loading validates first: every failure to load a model directory, a training state or a
CIFAR-10 batch is one ``ValueError`` naming the file (and the field), before anything of the
size a file claims is allocated (issue #12).

Config files are real ``config.json`` files of the shipped models, mutated by hypothesis (wrong
types, huge or negative numbers, missing keys, nested garbage, deep nesting), read beside the
real weights.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as safetensors_save

import ardm
from ardm.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    TRAIN_STATE_FILE,
    load_model,
    load_train_state,
    read_config,
    save_train_state,
)
from ardm.data import load_dataset
from ardm.pretrained import PRETRAINED

# ---- model directories ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kjv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped text model's run directory (its config is rewritten by the tests)."""
    directory = tmp_path_factory.mktemp("kjv")
    shutil.copy(PRETRAINED["kjv"] / CONFIG_FILE, directory / CONFIG_FILE)
    shutil.copy(PRETRAINED["kjv"] / MODEL_FILE, directory / MODEL_FILE)
    return directory


REAL_CONFIG = read_config(PRETRAINED["kjv"])


def _load_with_config(directory: Path, text: str | bytes) -> object:
    raw = text.encode() if isinstance(text, str) else text
    (directory / CONFIG_FILE).write_bytes(raw)
    start = time.perf_counter()
    try:
        return load_model(directory)
    finally:
        assert time.perf_counter() - start < 10


def _with(path: str, value: object, config: dict | None = None) -> dict:
    """``config`` (the real one) with ``path`` ("key" or "net_config.key") set to ``value``, or
    deleted for the marker ``DELETE``."""
    config = json.loads(json.dumps(config or REAL_CONFIG))
    *parents, key = path.split(".")
    target = config
    for parent in parents:
        target = target[parent]
    if value is DELETE:
        target.pop(key, None)
    else:
        target[key] = value
    return config


DELETE = object()


@pytest.mark.parametrize("path, value, field", [
    ("num_classes", "256", "num_classes"),                  # was fine: int("256")
    ("num_classes", 1e300, "num_classes"),                  # was OverflowError-prone floats
    ("num_classes", 2**70, "num_classes"),                  # was a multi-GB embedding
    ("num_classes", -3, "num_classes"),
    ("data_shape", 256, "data_shape"),                      # was TypeError
    ("data_shape", [0], "data_shape"),
    ("data_shape", [2**40], "data_shape"),
    ("data_shape", [[256]], "data_shape"),
    ("ce_weight", "small", "ce_weight"),
    ("ce_weight", -1.0, "ce_weight"),
    ("order_seed", 2**80, "order_seed"),                    # was OverflowError in the coder
    ("order_seed", True, "order_seed"),
    ("modality", ["text"], "modality"),                     # was TypeError (unhashable)
    ("model", {"kind": "oa"}, "model"),
    ("absorbing_state", 10**6, "absorbing_state"),
    ("absorbing_state", "256", "absorbing_state"),
    ("net", 7, "net"),
    ("net_config", "transformer", "net_config"),
    ("net_config.width", 0, "width"),
    ("net_config.width", 2**31, "net_config.width"),        # was a multi-GB network
    ("net_config.num_heads", 0, "num_heads"),               # was ZeroDivisionError-prone
    ("net_config.depth", None, "net_config.depth"),         # was TypeError
    ("net_config.depth", 4096, "tensor operations"),        # thousands of layers: not built
    ("net_config.mlp_ratio", "4", "net_config.mlp_ratio"),
    ("net_config.head", ["categorical"], "net_config.head"),
    ("net_config.positions", "sinusoidal", "positions"),
    ("net_config.colour", 1, "does not have"),
    ("format_version", 2, "newer"),
    ("format_version", "1", "format_version"),
    ("num_classes", DELETE, "num_classes"),
    ("net_config.width", 512, "does not match"),            # builds, but not these weights
    ("num_classes", 300, "does not match"),
])
def test_a_bad_field_is_a_value_error_naming_the_file_and_the_field(kjv_dir, path, value, field):
    with pytest.raises(ValueError, match=field) as err:
        _load_with_config(kjv_dir, json.dumps(_with(path, value)))
    assert str(kjv_dir) in str(err.value)


@pytest.mark.parametrize("text, what", [
    ("{", "invalid JSON"),
    ("[]", "JSON object"),
    ('{"num_classes": NaN}', "invalid JSON"),                # Python's json would read NaN
    ('{"num_classes": Infinity}', "invalid JSON"),
    ("[" * 100_000 + "]" * 100_000, "invalid JSON"),         # was RecursionError
    (b"\xff\xfe{}", "invalid JSON"),                         # not UTF-8
    ("{}", "missing"),
    (" " * (2 << 20), "larger than"),
])
def test_a_bad_config_file_is_a_value_error(kjv_dir, text, what):
    with pytest.raises(ValueError, match=what):
        _load_with_config(kjv_dir, text)


def _garbage_values() -> st.SearchStrategy:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.integers(-3, 300),
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    )
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
        max_leaves=12)


PATHS = sorted(REAL_CONFIG) + [f"net_config.{k}" for k in REAL_CONFIG["net_config"]] + ["extra"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS),
                                  st.one_of(st.just(DELETE), _garbage_values())),
                        min_size=1, max_size=3))
def test_any_mutation_of_a_real_config_loads_or_is_a_value_error(kjv_dir, changes):
    config = REAL_CONFIG
    for path, value in changes:
        if path.startswith("net_config.") and not isinstance(config.get("net_config"), dict):
            continue
        config = _with(path, value, config)
    try:
        model = _load_with_config(kjv_dir, json.dumps(config))
    except ValueError:
        return
    assert model.num_classes == 256  # only fields that do not change the model were changed


_HUGE_NETWORK = r"""
import json, resource, shutil, sys, tempfile
from pathlib import Path
from ardm.checkpoint import load_model
from ardm.pretrained import PRETRAINED
d = Path(tempfile.mkdtemp())
shutil.copy(PRETRAINED["kjv"] / "model.safetensors", d / "model.safetensors")
config = json.loads((PRETRAINED["kjv"] / "config.json").read_text())
config["net_config"].update(width=1024, depth=24)  # 300 M parameters, 1.2 GB of float32
(d / "config.json").write_text(json.dumps(config))
load_model(PRETRAINED["kjv"])  # warm up: what loading a real model takes
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(d)
except ValueError as err:
    print("ValueError:", err, file=sys.stderr)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_config_of_a_huge_network_is_refused_before_it_is_built():
    """Before: the 300 M-parameter network was built (1.2 GB) and only then compared with the
    weights; now the weights file's header is compared with the network's shapes first."""
    out = subprocess.run([sys.executable, "-c", _HUGE_NETWORK], capture_output=True, text=True,
                         timeout=300, check=True)
    assert "does not match" in out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) < 100  # MB


# ---- weights files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_cases() -> dict[str, bytes]:
    real = (PRETRAINED["kjv"] / MODEL_FILE).read_bytes()
    length = int.from_bytes(real[:8], "little")
    header = json.loads(real[8 : 8 + length])
    name = next(k for k in header if k != "__metadata__")
    shifted = dict(header)
    shifted[name] = {**header[name], "data_offsets": [0, 10**12]}
    shifted_json = json.dumps(shifted).encode()
    state = ardm.load("kjv").state_dict()
    return {
        "empty": b"",
        "garbage": os.urandom(4096),
        "truncated header": real[:100],
        "truncated data": real[: len(real) // 2],
        "huge header length": (2**60).to_bytes(8, "little") + real[8:],
        "header not JSON": (8).to_bytes(8, "little") + b"\xff" * 8 + real[16:],
        "offsets past the end": len(shifted_json).to_bytes(8, "little") + shifted_json
                                + real[8 + length :],
        "float64 weights": safetensors_save({k: v.double() for k, v in state.items()}),
        "a tensor missing": safetensors_save({k: v for k, v in list(state.items())[1:]}),
    }


@pytest.mark.parametrize("case", [
    "empty", "garbage", "truncated header", "truncated data", "huge header length",
    "header not JSON", "offsets past the end", "float64 weights", "a tensor missing",
])
def test_a_bad_weights_file_is_a_value_error(kjv_dir, weights_cases, case):
    (kjv_dir / CONFIG_FILE).write_text(json.dumps(REAL_CONFIG))
    good = (kjv_dir / MODEL_FILE).read_bytes()
    try:
        (kjv_dir / MODEL_FILE).write_bytes(weights_cases[case])
        with pytest.raises(ValueError, match=MODEL_FILE):
            load_model(kjv_dir)
    finally:
        (kjv_dir / MODEL_FILE).write_bytes(good)
    assert load_model(kjv_dir).num_classes == 256


def test_load_takes_a_name_or_a_path():
    for bad in (123, b"kjv", ["kjv"], 1.5):
        with pytest.raises(ValueError, match="shipped model"):
            ardm.load(bad)
    with pytest.raises(ValueError, match="neither a shipped model"):
        ardm.load("no-such-model")


# ---- training states ------------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo this must never run",))


def _train_state_cases(tmp_path: Path) -> dict[str, bytes]:
    save_train_state(tmp_path, {"step": 3, "weights": torch.zeros(10)})
    real = (tmp_path / TRAIN_STATE_FILE).read_bytes()
    evil_zip = io.BytesIO()
    with zipfile.ZipFile(evil_zip, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_Evil(), protocol=2))
        z.writestr("archive/version", "3\n")
    not_a_dict = io.BytesIO()
    torch.save([1, 2, 3], not_a_dict)
    return {
        "empty": b"", "garbage": os.urandom(1000), "truncated": real[: len(real) // 2],
        "a pickle that runs code": pickle.dumps(_Evil()), "a zip that runs code": evil_zip.getvalue(),
        "not a dict": not_a_dict.getvalue(), "a bit flipped": real[:40] + bytes([real[40] ^ 4]) + real[41:],
    }


def test_a_bad_training_state_is_a_value_error(tmp_path):
    for case, data in _train_state_cases(tmp_path).items():
        (tmp_path / TRAIN_STATE_FILE).write_bytes(data)
        try:
            load_train_state(tmp_path)
        except ValueError as err:
            assert TRAIN_STATE_FILE in str(err), case
        else:
            assert case == "a bit flipped", case  # a flip inside a name or padding can be harmless


# ---- CIFAR-10 batches -----------------------------------------------------------------------------


def _cifar_dir(root: Path, test_batch: bytes) -> Path:
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}))
    (root / "test_batch").write_bytes(test_batch)
    return root


class _Ndarray:
    """Pickles as a call of numpy.ndarray with a shape of its choosing (no data in the file)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (np.ndarray, (self.shape,))


class _BadState:
    """Pickles as a real array reconstruction whose state declares more rows than its bytes."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        state = (1, (100_000, 3072), np.dtype("u1"), False, bytes(3072))
        return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), state)


def test_real_cifar_batches_of_every_protocol_load(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    for protocol in (2, 4, 5):
        batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [3, 1, 4], b"data": images,
                 b"filenames": [b"a.png", b"b.png", b"c.png"]}
        _cifar_dir(tmp_path, pickle.dumps(batch, protocol=protocol))
        x = load_dataset(tmp_path, "test")
        assert x.shape == (3, 3, 32, 32) and np.array_equal(x.numpy().reshape(3, -1), images)


def _memo_hog() -> bytes:
    # protocol 2: None, then LONG_BINPUT into memo slot 10^8 (the C unpickler grows its memo
    # table to that slot: 1.5 GB for 10 bytes)
    return b"\x80\x02N" + b"r" + struct.pack("<I", 10**8) + b"."


def _reconstruct_large() -> bytes:
    return (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x10"
            b"\x85C\x01b\x87R.")


@pytest.mark.parametrize("case, batch", [
    ("numpy.ndarray of a chosen shape", pickle.dumps({b"data": _Ndarray((50000, 3072))}, protocol=2)),
    ("memo slot far ahead", _memo_hog()),
    ("_reconstruct of a large shape", _reconstruct_large()),
    ("data shorter than its shape", pickle.dumps({b"data": _BadState()})),
    ("float data", pickle.dumps({b"data": np.zeros((1, 3072), np.float32)})),
    ("object data", pickle.dumps({b"data": np.array([[None] * 3072], dtype=object)})),
    ("a list for data", pickle.dumps({b"data": [[0] * 3072]})),
    ("labels that do not match", pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]})),
    ("code", pickle.dumps({b"data": _Evil()})),
    ("truncated", pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-100]),
    ("garbage", b"\x80\x04" + bytes(range(256))),
])
def test_a_hostile_cifar_batch_is_refused_without_allocating(tmp_path, case, batch):
    """Before: the 61-byte pickle calling numpy.ndarray came back as 1.2 GB of uninitialized
    memory (a dataset); the memo slot took 1.5 GB, _reconstruct 256 MB."""
    assert len(batch) < 20_000
    _cifar_dir(tmp_path, batch)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="test_batch"):
            load_dataset(tmp_path, "test")
        assert tracemalloc.get_traced_memory()[1] < 8 << 20, case
    finally:
        tracemalloc.stop()
