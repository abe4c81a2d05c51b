"""Run directories: weights, config and resumable training state, all written atomically.

A run directory holds

- ``model.safetensors``: the weights used for evaluation (the EMA weights during training), with the
  ``step_losses`` buffer inside;
- ``config.json``: everything needed to rebuild the model (``model`` kind, a key of
  ``ardm.models.MODEL_KINDS``; ``net``, a key of ``ardm.nets.NETS``, and its ``net_config``;
  ``num_classes``, ``data_shape``, ``ce_weight``, ``order_seed``, ``modality``; and the kind's
  own fields, e.g. ``branch_factor``, ``parametrization`` and ``budget_split`` of an upscale
  model) plus training facts (``dataset``, ``step``, ...). The per-step losses
  (D for an order-agnostic model, S x D for an upscale one) are the ``step_losses`` buffer in the
  safetensors file;
- ``train_state.pt`` (training only): raw weights, EMA weights, optimizer state, step and RNG state,
  tensors and plain types only, so ``torch.load(weights_only=True)`` reads it.

Every file is written to a temporary file in the same directory, fsynced and renamed over the old
one, so a crash leaves either the old or the new file, never a torn one. Loading never runs code
from a file (safetensors, ``weights_only=True``, JSON).

Example:
    >>> import tempfile
    >>> from ardm.nets import build_net
    >>> from ardm.models import OrderAgnosticARDM
    >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
    >>> d = tempfile.mkdtemp()
    >>> save_model(m, {"preset": "tiny"}, d)
    >>> load_model(d).data_shape
    (1, 4, 4)
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch.overrides import TorchFunctionMode

from ardm.modalities import MODALITIES
from ardm.models import ARDM, MODEL_KINDS, PARAMETRIZATIONS
from ardm.models.stage_budget import SPLITS
from ardm.nets.registry import net_config, net_from_config

__all__ = [
    "MODEL_FILE",
    "CONFIG_FILE",
    "TRAIN_STATE_FILE",
    "atomic_write_bytes",
    "remove_temp_files",
    "model_config",
    "build_model",
    "save_model",
    "load_model",
    "save_train_state",
    "load_train_state",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"
FORMAT_VERSION = 1

#: Called with (temporary file, final path) once the temporary file is complete and fsynced, just
#: before the rename: a test pauses a writer here to kill it mid-checkpoint.
_before_rename: Callable[[Path, Path], None] | None = None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "f.bin"
        >>> atomic_write_bytes(p, b"abc"); p.read_bytes()
        b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if _before_rename is not None:
            _before_rename(Path(tmp), path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write_bytes` leaves in ``directory`` when
    its process is killed before the rename (``.NAME.*.tmp``; nothing ever reads them).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / ".train_state.pt.abc123.tmp").write_bytes(b"torn")
        >>> [p.name for p in remove_temp_files(d)], list(d.iterdir())
        (['.train_state.pt.abc123.tmp'], [])
    """
    removed = []
    for name in (MODEL_FILE, CONFIG_FILE, TRAIN_STATE_FILE):
        for leftover in sorted(Path(directory).glob(f".{name}.*.tmp")):
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed





def _order_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"order_seed must be a non-negative integer, got {value!r}")
    return value


def model_config(model: ARDM) -> dict[str, Any]:
    """The part of ``config.json`` that describes the model itself (any kind, any net).

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import UpscaleARDM
        >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4)), 10, (1, 4, 4), branch_factor=4)
        >>> c = model_config(m)
        >>> c["model"], c["net"], c["branch_factor"], c["parametrization"], c["order_seed"]
        ('upscale', 'unet', 4, 'data', 0)
    """
    return {
        "format_version": FORMAT_VERSION,
        "model": model.kind,
        **net_config(model.net),
        "num_classes": model.num_classes,
        "data_shape": list(model.data_shape),
        "ce_weight": model.ce_weight,
        "order_seed": _order_seed(model.order_seed),
        "modality": model.modality,
        **model.kind_config(),
    }


# ---- reading a config.json: every field checked before anything is built -----------------------

MAX_CLASSES = 1 << 16  # values of a variable (16-bit audio)
MAX_VARS = 1 << 22  # variables of one item
MAX_CONFIG_BYTES = 1 << 20
MAX_BUILD_OPS = 50_000  # tensor operations that building a network may take (see _NoInit)
_REQUIRED = object()
# The fields of each model kind (``kind_config``): key -> check(value, num_classes) -> value.
_KIND_FIELDS: dict[str, dict[str, tuple[object, Callable[[Any, int], bool], str]]] = {
    "oa": {"absorbing_state": (
        None, lambda v, k: v is None or (_is_int(v) and 0 <= v <= k), "null or an integer in 0..K"
    )},
    "upscale": {
        "branch_factor": (_REQUIRED, lambda v, k: _is_int(v) and 2 <= v <= k, "an integer in 2..K"),
        "parametrization": ("data", lambda v, k: v in PARAMETRIZATIONS, f"one of {PARAMETRIZATIONS}"),
        "budget_split": ("optimal", lambda v, k: v in SPLITS, f"one of {SPLITS}"),
    },
}
_BUILD_ERRORS = (TypeError, AttributeError, ArithmeticError, IndexError, KeyError, RuntimeError,
                 RecursionError, MemoryError, NotImplementedError)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Fields:
    """The fields of one ``config.json``: each read is checked, and an error names the file
    (``source``) and the field."""

    def __init__(self, config: dict[str, Any], source: str) -> None:
        self.config, self.source = config, source

    def get(self, key: str, default: object, ok: Callable[[Any], bool], what: str) -> Any:
        if key not in self.config:
            if default is _REQUIRED:
                raise ValueError(f"{self.source}: the field {key!r} is missing")
            return default
        value = self.config[key]
        if not ok(value):
            raise ValueError(f"{self.source}: {key} must be {what}, got {value!r:.80}")
        return value

    def integer(self, key: str, low: int, high: int, default: object = _REQUIRED) -> int:
        return self.get(key, default, lambda v: _is_int(v) and low <= v <= high,
                        f"an integer in {low}..{high}")

    def choice(self, key: str, options: Any, default: object = _REQUIRED) -> str:
        return self.get(key, default, lambda v: isinstance(v, str) and v in options,
                        f"one of {sorted(options)}")


def build_model(config: dict[str, Any], source: str = CONFIG_FILE) -> ARDM:
    """Rebuild a (randomly initialized) model from a ``config.json`` dict.

    Every field is checked for its type and range before anything is built; a field that is
    missing, mistyped or out of range is a ``ValueError`` naming ``source`` and the field.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import UpscaleARDM
        >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4)), 10, (1, 4, 4), branch_factor=4)
        >>> m.order_seed = 5
        >>> m2 = build_model(model_config(m))
        >>> type(m2).__name__, m2.num_stages, m2.order_seed
        ('UpscaleARDM', 2, 5)
        >>> build_model({**model_config(m), "num_classes": "10"})
        Traceback (most recent call last):
        ...
        ValueError: config.json: num_classes must be an integer in 2..65536, got '10'
    """
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
    fields = _Fields(config, source)
    version = config.get("format_version", FORMAT_VERSION)
    if _is_int(version) and version > FORMAT_VERSION:
        raise ValueError(f"{source}: config format {version} is newer than this ardm; upgrade ardm")
    fields.integer("format_version", 0, FORMAT_VERSION, FORMAT_VERSION)
    kind = fields.choice("model", MODEL_KINDS)
    num_classes = fields.integer("num_classes", 2, MAX_CLASSES)
    data_shape = tuple(fields.get(
        "data_shape", _REQUIRED,
        lambda v: isinstance(v, list) and 1 <= len(v) <= 4 and all(_is_int(n) and n >= 1 for n in v)
        and math.prod(v) <= MAX_VARS,
        f"a list of 1 to 4 positive integers of at most {MAX_VARS} values in all",
    ))
    ce_weight = fields.get("ce_weight", 1e-3, lambda v: isinstance(v, (int, float))
                           and not isinstance(v, bool) and 0 <= v <= 1e6, "a number in 0..1e6")
    order_seed = fields.integer("order_seed", 0, 2**64 - 1, 0)
    modality = fields.choice("modality", MODALITIES, "image")
    kind_fields = {key: fields.get(key, default, lambda v, ok=ok: ok(v, num_classes),
                                   what.replace("K", str(num_classes)))
                   for key, (default, ok, what) in _KIND_FIELDS.get(kind, {}).items()}
    try:
        net = net_from_config(config, num_classes, data_shape)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    except _BUILD_ERRORS as err:
        raise ValueError(f"{source}: net_config does not build a {config.get('net', 'unet')} "
                         f"({type(err).__name__}: {err})") from err
    try:
        model = MODEL_KINDS[kind].from_kind_config(
            net, num_classes, data_shape, float(ce_weight), {**config, **kind_fields})
    except (ValueError, *_BUILD_ERRORS) as err:
        raise ValueError(f"{source}: the {kind} model does not build ({err})") from err
    model.order_seed = order_seed
    model.modality = modality
    return model


def _state_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_model(
    model: ARDM,
    config: dict[str, Any],
    path: str | Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``model.safetensors`` and ``config.json`` into the directory ``path``.

    ``config`` holds extra facts (preset, dataset, step, ...); the model's own fields are added.
    ``state_dict`` overrides the weights written (training passes the EMA weights).
    """
    path = Path(path)
    tensors = _state_tensors(state_dict if state_dict is not None else model.state_dict())
    full_config = {**config, **model_config(model)}
    atomic_write_bytes(path / MODEL_FILE, safetensors_save(tensors))
    atomic_write_bytes(path / CONFIG_FILE, (json.dumps(full_config, indent=2) + "\n").encode())


def read_config(path: str | Path) -> dict[str, Any]:
    """Read ``config.json`` of a run directory (a JSON object of at most 1 MB; NaN and
    infinities are not JSON and are refused)."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"{config_path} does not exist (not an ardm run directory?)")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{config_path}: larger than {MAX_CONFIG_BYTES} bytes (not a config)")

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a JSON value")

    try:
        text = config_path.read_bytes()
    except OSError as err:
        raise ValueError(f"{config_path}: cannot be read ({err})") from err
    try:
        config = json.loads(text.decode("utf-8"), parse_constant=refuse)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError too
        raise ValueError(f"{config_path}: invalid JSON ({type(err).__name__}: {err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object")
    return config


# ---- the weights file: its header read and checked against the config before building -----------

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def _weights_header(weights_path: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Name -> (dtype, shape) of every tensor of a safetensors file, from its JSON header alone,
    each tensor's bytes checked to lie inside the file."""
    try:
        size = weights_path.stat().st_size
        with open(weights_path, "rb") as f:
            start = f.read(8)
            length = int.from_bytes(start, "little") if len(start) == 8 else -1
            raw = f.read(length) if 2 <= length <= min(size - 8, 1 << 26) else b""
    except OSError as err:
        raise ValueError(f"{weights_path}: cannot be read ({err})") from err
    if not raw:
        raise ValueError(f"{weights_path}: not a safetensors file (bad header length)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{weights_path}: not a safetensors file ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{weights_path}: not a safetensors file (its header is not an object)")
    body = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
            shape = tuple(entry["shape"])
            begin, end = entry["data_offsets"]
            if not all(_is_int(n) and n >= 0 for n in (*shape, begin, end)):
                raise ValueError("negative or non-integer sizes")
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if not begin <= end <= body or end - begin != nbytes:
                raise ValueError(f"its bytes {begin}..{end} do not hold {shape} in {body} bytes")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{weights_path}: bad entry for tensor {name!r:.80} ({err})") from err
        tensors[name] = (dtype, shape)
    return tensors


def _check_weights(weights_path: Path, config: dict[str, Any], source: str) -> None:
    """The tensors the config's model has (built on the meta device: no memory, no random
    initialisation) against those in the weights file's header: names, dtypes and shapes, so
    that a config of a huge network is refused before that network is built."""
    with torch.device("meta"), _NoInit():
        expected = {k: (v.dtype, tuple(v.shape)) for k, v in build_model(config, source).state_dict().items()}
    found = _weights_header(weights_path)
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    differ = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or differ:
        details = "; ".join(f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                            for what, names in (("missing", missing), ("unexpected", unexpected),
                                                ("other dtype or shape", differ)) if names)
        raise ValueError(f"{weights_path} does not match {source} ({details})")


class _NoInit(TorchFunctionMode):
    """Skips random initialisation (on the meta device it would run slow reference code): the
    model built inside is only looked at for its tensors' names, dtypes and shapes. Refuses a
    network that takes more than ``MAX_BUILD_OPS`` tensor operations to build (a config of
    thousands of layers). A torch function mode is per thread: other threads are unaffected."""

    _SKIPPED = {getattr(torch.nn.init, name) for name in dir(torch.nn.init)
                if name.endswith("_") and not name.startswith("_")}
    _SKIPPED |= {torch.Tensor.normal_, torch.Tensor.uniform_}

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops += 1
        if self.ops > MAX_BUILD_OPS:
            raise ValueError(f"the network takes more than {MAX_BUILD_OPS} tensor operations to "
                             "build: not a network this ardm would have trained")
        if func in self._SKIPPED:
            return args[0] if args else kwargs.get("tensor")
        return func(*args, **(kwargs or {}))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ARDM:
    """Load a model (eval mode) from a run directory or its ``model.safetensors``.

    Example:
        >>> load_model("/nonexistent")
        Traceback (most recent call last):
        ...
        ValueError: /nonexistent/config.json does not exist (not an ardm run directory?)
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    config = read_config(path)
    source = str(path / CONFIG_FILE)
    weights_path = path / MODEL_FILE
    if not weights_path.is_file():
        raise ValueError(f"{weights_path} does not exist")
    _check_weights(weights_path, config, source)  # before building: sizes come from the files
    model = build_model(config, source)
    try:
        state = safetensors_load(weights_path.read_bytes())
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights_path}: not a valid safetensors file ({err})") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights_path} does not match {source}: {err}") from err
    return model.to(device).eval()


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``train_state.pt`` (tensors and plain types only) into directory ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path) / TRAIN_STATE_FILE, buffer.getvalue())


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read ``train_state.pt`` with ``torch.load(weights_only=True)`` (never runs code).

    A truncated or corrupt file is a ``ValueError``: it is read whole before anything is used.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> save_train_state(d, {"step": 3})
        >>> _ = (d / TRAIN_STATE_FILE).write_bytes((d / TRAIN_STATE_FILE).read_bytes()[:100])
        >>> load_train_state(d)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../train_state.pt is truncated or corrupt (...); ...
    """
    state_path = Path(path) / TRAIN_STATE_FILE
    if not state_path.is_file():
        raise ValueError(f"{state_path} does not exist; nothing to resume")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch, zipfile and pickle raise many kinds on a garbage file
        if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
            raise ValueError(
                f"{state_path} holds objects other than tensors and plain types; it was not "
                "written by ardm and is not loaded (loading it could run code)"
            ) from err
        reason = str(err).split(". ")[0][:120] or type(err).__name__  # torch's first sentence
        raise ValueError(
            f"{state_path} is truncated or corrupt ({reason}); delete it to start over, or "
            "restore a copy"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(f"{state_path} does not hold a training state")
    return state
