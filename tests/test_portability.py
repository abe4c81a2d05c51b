"""Blobs made where torch runs other CPU kernels (docs/format.md, "Network evaluation").

A machine with another instruction set runs other kernels: in plain float32 the network's outputs
differ there in their last bits, and a blob made there would not decode here. These tests stand
in for that machine with torch's own switches for the kernels it dispatches to
(``ATEN_CPU_CAPABILITY`` for ATen's vectorized loops, ``ONEDNN_MAX_CPU_ISA`` for oneDNN's
matrix products and convolutions), read when torch starts, so the blobs are made in a
subprocess, with another thread count too. Under the portable evaluation the blobs must be the
very bytes this process makes, and decode here bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ardm
from ardm.coding.codec import FORMAT_2_HINT
from ardm.pretrained import bundled_text

# The lowest kernels torch has on x86: plain loops in ATen, SSE4.1 in oneDNN.
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "OMP_NUM_THREADS": "1"}

# One item of each shipped model: a KJV record, a Fashion-MNIST image, 0.1 s of speech.
ITEMS = """
import torch, ardm
from ardm.pretrained import bundled_audio, bundled_text
def items():
    speech = bundled_audio()["mon-6"][:800].clone()
    return [("kjv", bundled_text()[0].clone(), 10), ("fashion-mnist", ardm.bundled_images()[3], 10),
            ("speech", speech, 8)]
"""

MAKE_BLOBS = ITEMS + """
import sys
from pathlib import Path
torch.set_num_threads(1)
for name, item, budget in items():
    Path(sys.argv[1], name).write_bytes(ardm.compress(item, ardm.load(name), budget=budget))
"""


def test_blobs_made_on_other_kernels_are_the_same_bytes_and_decode_here(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-c", MAKE_BLOBS, str(tmp_path)],
                          env={**os.environ, **OTHER_KERNELS}, capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stderr
    scope: dict = {}
    exec(ITEMS, scope)
    for name, item, budget in scope["items"]():
        model = ardm.load(name)
        theirs = (tmp_path / name).read_bytes()
        assert ardm.compress(item, model, budget=budget) == theirs, name
        assert torch.equal(ardm.decompress(theirs, model), item), name


def test_a_corrupted_stream_names_the_older_format_too() -> None:
    """The decoder cannot tell a flipped bit from a format-2 stream: its message gives both."""
    record = bundled_text()[0].clone()
    blob = bytearray(ardm.compress(record, ardm.load("kjv"), budget=10))
    blob[-2] ^= 0x10
    with pytest.raises(ValueError, match="format 2"):
        ardm.decompress(bytes(blob), ardm.load("kjv"))


def test_a_format_2_frame_is_refused_by_name() -> None:
    records = bundled_text()[:2].clone()
    blob = bytearray(ardm.compress(records, ardm.load("kjv"), budget=10, mode="independent"))
    blob[1] -= 2  # the kind byte of format 2's frames
    with pytest.raises(ValueError, match="format 2, whose network ran in plain float32"):
        ardm.decompress(bytes(blob), ardm.load("kjv"))


def test_a_header_error_does_not_blame_the_format() -> None:
    model = ardm.load("kjv")
    blob = ardm.compress(bundled_text()[0].clone(), model, budget=10)
    with pytest.raises(ValueError, match="another model") as caught:
        ardm.decompress(blob, ardm.load("fashion-mnist"))
    assert FORMAT_2_HINT not in str(caught.value)
