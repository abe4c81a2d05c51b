"""The model fingerprint: what ties a blob to the model that made it.

SHA-256 over the model's canonical config (``ardm.checkpoint.model_config`` as JSON with sorted
keys and no spaces: kind, net and its settings, classes, data shape, order seed, modality, the
kind's own fields) and over every tensor of the state dict (weights and step losses) in sorted
name order, each as its shape and raw little-endian bytes, taken from the model's CPU float32
form (:mod:`ardm.coding.cpu_model`: a model in float64 or on a GPU has the fingerprint of its
weights in float32). Renaming a class or a parameter does not change it; changing any weight,
the config or the step losses does. The first four bytes of the digest, little endian, are the
fingerprint: the blob's check covers it, and custom models store its low 16 bits so that an
error can name the model a blob needs. A net outside the registry (``ardm.nets.NETS``) has no
canonical config: its class name stands in.

Example:
    >>> from ardm.nets import build_net
    >>> from ardm.models import OrderAgnosticARDM
    >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
    >>> f = model_fingerprint(m)
    >>> m.order_seed = 1
    >>> model_fingerprint(m) != f
    True
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ardm.coding.cpu_model import cpu_float32
from ardm.models import ARDM

__all__ = ["model_fingerprint"]


def model_fingerprint(model: ARDM) -> int:
    """32-bit fingerprint of ``model`` (see the module docstring).

    Computed afresh each time (about 20 ms for the shipped models): a cache keyed on the
    tensors' version counters would miss changes made through ``.data``, and a stale
    fingerprint would make blobs that no other process can decode.
    """
    from ardm.checkpoint import model_config

    model = cpu_float32(model)  # the form the codec codes with, whatever the device or dtype
    try:
        config = model_config(model)
    except ValueError:  # a net of the user's own, outside the registry: its class names it
        config = {"net": f"unregistered:{type(model.net).__qualname__}", "model": model.kind,
                  "num_classes": model.num_classes, "data_shape": list(model.data_shape),
                  "order_seed": model.order_seed, "modality": model.modality}
    config.pop("format_version", None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for _, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
        digest.update(json.dumps(list(array.shape)).encode())
        digest.update(array.reshape(-1).view(np.uint8))  # the raw bytes, without a copy
    return int.from_bytes(digest.digest()[:4], "little")
