"""Blobs of format 3 made by an earlier build decode, and the same items give the same bytes.

Every coding call's network outputs are part of the format (docs/format.md, "Network
evaluation"): a change of the portable evaluation's arithmetic, of the coder or of the container
that moves one bit makes every blob written before it unreadable. The blobs in
``tests/data/format3`` were made with the shipped models when format 3 was defined; this module
makes them again and decodes them. A change that breaks this test is a new format version (or a
retrained shipped model, whose old blobs no longer decode either: then make them again with
``python tests/test_format_stability.py`` and say so in the commit).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import ardm
from ardm.pretrained import bundled_audio, bundled_text

GOLDEN = Path(__file__).parent / "data" / "format3"


def golden_items() -> dict[str, tuple[str, torch.Tensor, dict]]:
    """file name -> (shipped model, item(s), compress options): one blob of each model and mode."""
    return {
        "kjv-record": ("kjv", bundled_text()[5].clone(), {"budget": 20}),
        "kjv-independent": ("kjv", bundled_text()[[1, 6]].clone(), {"budget": 10, "mode": "independent"}),
        "fashion-mnist": ("fashion-mnist", ardm.bundled_images()[[2, 7]].clone(), {"budget": 10}),
        "speech": ("speech", bundled_audio()["mon-6"][1000:2600].clone(), {"budget": 8}),
    }


@pytest.mark.parametrize("name", sorted(golden_items()))
def test_a_format_3_blob_decodes_and_is_made_again_byte_for_byte(name: str) -> None:
    model_name, item, options = golden_items()[name]
    model = ardm.load(model_name)
    blob = (GOLDEN / f"{name}.ardm").read_bytes()
    assert torch.equal(ardm.decompress(blob, model), item)
    assert ardm.compress(item, model, **options) == blob


if __name__ == "__main__":  # make the blobs again (a new format version or new shipped weights)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for file_name, (model_name, item, options) in golden_items().items():
        blob = ardm.compress(item, ardm.load(model_name), **options)
        (GOLDEN / f"{file_name}.ardm").write_bytes(blob)
        print(f"{file_name}: {len(blob)} bytes", file=sys.stderr)
