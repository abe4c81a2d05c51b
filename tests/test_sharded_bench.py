"""``benchmarks/bench_compress.py`` under torchrun (two gloo processes): each rank compresses its
share of the images and rank 0 prints the table one process prints, every size column equal
(the speeds, per process, aside)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import perturbed_unet, torchrun

from ardm.checkpoint import save_model
from ardm.models import OrderAgnosticARDM

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_compress.py"
SHAPE = (1, 28, 28)


def _sizes(stdout: str) -> list[list[str]]:
    """The printed table without its first line (processes, threads, date) and the two speed
    columns of the ARDM rows."""
    rows = [line.split() for line in stdout.splitlines()[1:]]
    return [row[:-2] if row[0] in ("single", "independent", "joint") else row for row in rows]


def test_sharded_bench_compress_prints_the_one_process_table(tmp_path: Path) -> None:
    model = OrderAgnosticARDM(perturbed_unet(256, SHAPE, std=0.05), 256, SHAPE).eval()
    # A policy needs step losses; any decreasing curve plans one (estimating them is slow).
    model.step_losses.copy_(torch.linspace(6.0, 0.5, model.num_vars, dtype=torch.float64))
    run = tmp_path / "run"
    save_model(model, {"dataset": "fashion-mnist"}, run)
    # 5 images: 5 single calls and 3 batches of 2, shared 3 + 2 and 2 + 1 by the two ranks
    args = ["--model", str(run), "--subset", "5", "--single", "5", "--batch", "2",
            "--budgets", "3,2"]
    sharded = torchrun(str(BENCH), *args)
    one = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]
    assert "2 process(es)" in sharded.stdout.splitlines()[0]
    table = _sizes(one.stdout)
    assert len([row for row in table if row[0] in ("single", "independent", "joint")]) == 6
    assert _sizes(sharded.stdout) == table
