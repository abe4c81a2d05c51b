"""``ardm compress`` under torchrun (two gloo processes): each rank compresses its share of the
input files and writes their blobs, byte for byte the ones one process writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import perturbed_unet, real_crops, torchrun
from PIL import Image

from ardm import cli
from ardm.checkpoint import save_model
from ardm.models import OrderAgnosticARDM


def test_sharded_compress_writes_the_one_process_blobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = OrderAgnosticARDM(perturbed_unet(16, (1, 8, 8), std=0.05), 16, (1, 8, 8)).eval()
    images = real_crops(12)
    model.estimate_step_losses(images[:8])
    run = tmp_path / "run"
    save_model(model, {"dataset": "crops"}, run)
    inputs = []
    for i in range(3):  # rank 0 compresses files 0 and 2, rank 1 file 1
        inputs.append(str(tmp_path / f"crop{i}.png"))
        Image.fromarray(images[8 + i, 0].numpy()).save(inputs[-1])
    args = ["--model", str(run), "--budget", "6", "--no-progress"]
    result = torchrun("-m", "ardm.cli", "compress", *inputs, "-o", f"{tmp_path / 'ddp'}/", *args)
    assert cli.main(["compress", *inputs, "-o", f"{tmp_path / 'one'}/", *args]) == 0
    assert result.stdout == capsys.readouterr().out  # the totals, printed once
    blobs = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert blobs == [f"crop{i}.png.ardm" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == blobs
    for name in blobs:
        assert (tmp_path / "ddp" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
