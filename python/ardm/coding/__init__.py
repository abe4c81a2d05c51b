"""Lossless compression: the codec (:mod:`ardm.coding.codec`), the container format 3
(:mod:`ardm.coding.container`, ``docs/format.md``), header fields coded in the stream
(:mod:`ardm.coding.fields`), the model fingerprint and the network evaluation that gives the same
bits on every machine (:mod:`ardm.coding.portable`, run in chunks by
:mod:`ardm.coding.deterministic`)."""

from ardm.coding.codec import (
    DEFAULT_BUDGET,
    MODES,
    blob_model,
    blob_sample_rate,
    coding_steps,
    compress,
    decoding_steps,
    decompress,
    split,
)
from ardm.coding.fingerprint import model_fingerprint

__all__ = [
    "DEFAULT_BUDGET",
    "MODES",
    "blob_model",
    "blob_sample_rate",
    "coding_steps",
    "compress",
    "decompress",
    "decoding_steps",
    "model_fingerprint",
    "split",
]
