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
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from ardm.modalities import get_modality
from ardm.models import ARDM, MODEL_KINDS
from ardm.nets.registry import net_config, net_from_config

__all__ = [
    "MODEL_FILE",
    "CONFIG_FILE",
    "TRAIN_STATE_FILE",
    "atomic_write_bytes",
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


def build_model(config: dict[str, Any]) -> ARDM:
    """Rebuild a (randomly initialized) model from a ``config.json`` dict.

    Example:
        >>> from ardm.nets import build_net
        >>> from ardm.models import UpscaleARDM
        >>> m = UpscaleARDM(build_net("tiny", 10, (1, 4, 4)), 10, (1, 4, 4), branch_factor=4)
        >>> m.order_seed = 5
        >>> m2 = build_model(model_config(m))
        >>> type(m2).__name__, m2.num_stages, m2.order_seed
        ('UpscaleARDM', 2, 5)
    """
    kind = config.get("model")
    if kind not in MODEL_KINDS:
        raise ValueError(f"unsupported model kind {kind!r} (kinds: {', '.join(MODEL_KINDS)})")
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"config format {version!r} is newer than this ardm")
    try:
        num_classes = int(config["num_classes"])
        data_shape = tuple(int(s) for s in config["data_shape"])
        ce_weight = float(config.get("ce_weight", 1e-3))
        order_seed = _order_seed(config.get("order_seed", 0))
        modality = get_modality(str(config.get("modality", "image"))).name
        net = net_from_config(config, num_classes, data_shape)
        model = MODEL_KINDS[kind].from_kind_config(net, num_classes, data_shape, ce_weight, config)
    except (KeyError, TypeError) as err:
        raise ValueError(f"config.json lacks or mistypes a model field: {err}") from err
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
    """Read ``config.json`` of a run directory."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"{config_path} does not exist (not an ardm run directory?)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: invalid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object")
    return config


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
    model = build_model(read_config(path))
    weights_path = path / MODEL_FILE
    if not weights_path.is_file():
        raise ValueError(f"{weights_path} does not exist")
    try:
        state = safetensors_load(weights_path.read_bytes())
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{weights_path}: not a valid safetensors file ({err})") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights_path} does not match config.json: {err}") from err
    return model.to(device).eval()


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``train_state.pt`` (tensors and plain types only) into directory ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(path) / TRAIN_STATE_FILE, buffer.getvalue())


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read ``train_state.pt`` with ``torch.load(weights_only=True)`` (never runs code)."""
    state_path = Path(path) / TRAIN_STATE_FILE
    if not state_path.is_file():
        raise ValueError(f"{state_path} does not exist; nothing to resume")
    return torch.load(state_path, map_location="cpu", weights_only=True)
