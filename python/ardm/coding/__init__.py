"""Lossless compression: the codec (:mod:`ardm.coding.codec`), the container format 2
(:mod:`ardm.coding.container`, ``docs/format.md``), header fields coded in the stream
(:mod:`ardm.coding.fields`), the model fingerprint and bit-exact network evaluation
(:mod:`ardm.coding.deterministic`)."""

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
