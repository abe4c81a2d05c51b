"""Blobs made where torch runs other CPU kernels (docs/format.md, "Network evaluation").

The network's float32 outputs are bit-identical only where torch runs the same kernels, and a
machine with another instruction set runs others: a blob compressed there need not decode here.
These tests stand in for that machine with torch's own switches for the kernels it dispatches to
(``ATEN_CPU_CAPABILITY`` for ATen's vectorized loops, ``ONEDNN_MAX_CPU_ISA`` for oneDNN's
matrix products and convolutions), read when torch starts, so the blob is made in a subprocess.
What must hold either way: the blob decodes bit for bit, or decompress raises a ValueError that
names the platform as the likely cause; wrong data never comes back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ardm
from ardm.coding.codec import PLATFORM_HINT
from ardm.pretrained import bundled_text

# The lowest kernels torch has on x86: plain loops in ATen, SSE4.1 in oneDNN.
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}

MAKE_BLOB = """
import sys, ardm
from ardm.pretrained import bundled_text
record = bundled_text()[0].clone()
open(sys.argv[1], "wb").write(ardm.compress(record, ardm.load("kjv"), budget=10))
"""


def test_a_blob_of_other_kernels_decodes_or_names_the_platform(tmp_path: Path) -> None:
    path = tmp_path / "other.ardm"
    env = {**os.environ, **OTHER_KERNELS, "OMP_NUM_THREADS": "1"}
    made = subprocess.run([sys.executable, "-c", MAKE_BLOB, str(path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    record = bundled_text()[0].clone()
    try:
        back = ardm.decompress(path.read_bytes(), ardm.load("kjv"))
    except ValueError as error:
        assert PLATFORM_HINT in str(error)
    else:
        assert torch.equal(back, record)


def test_a_corrupted_stream_names_the_platform_too() -> None:
    """The decoder cannot tell a flipped bit from other kernels: its message gives both."""
    record = bundled_text()[0].clone()
    blob = bytearray(ardm.compress(record, ardm.load("kjv"), budget=10))
    blob[-2] ^= 0x10
    with pytest.raises(ValueError, match="CPU instruction set"):
        ardm.decompress(bytes(blob), ardm.load("kjv"))


def test_a_header_error_does_not_blame_the_platform() -> None:
    model = ardm.load("kjv")
    blob = ardm.compress(bundled_text()[0].clone(), model, budget=10)
    with pytest.raises(ValueError, match="another model") as caught:
        ardm.decompress(blob, ardm.load("fashion-mnist"))
    assert PLATFORM_HINT not in str(caught.value)
