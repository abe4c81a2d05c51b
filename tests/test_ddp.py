"""DDP on the CPU: ``torchrun --nproc_per_node=2 -m ardm.training`` (gloo) trains the weights one
process trains with the same global batch, resumes under torchrun, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ardm.checkpoint import CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, load_train_state
from ardm.distributed import Dist
from ardm.training import TrainConfig, train
from ardm.training.loop import _train

STEPS = 4  # the interrupted run stops at STEPS // 2 and resumes
SETTINGS = dict(preset="tiny", batch_size=4, warmup=2, ckpt_every=2, eval_every=2, eval_size=8,
                holdout=8, step_loss_evals=1, threads=1, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _argv(cfg: TrainConfig) -> list[str]:
    """``ardm train`` options for ``cfg`` (the fields that differ from the defaults)."""
    argv = ["--out", cfg.out, "--data", str(cfg.data), "--no-progress"]
    for name in ("preset", "steps", "batch_size", "warmup", "ckpt_every", "eval_every",
                 "eval_size", "holdout", "step_loss_evals", "threads"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    return argv + (["--resume"] if cfg.resume else [])


def torchrun(cfg: TrainConfig, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=nproc -m ardm.training`` with ``cfg``, on the CPU."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "ardm.training", *_argv(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _config(data: Path, out: Path, steps: int, resume: bool = False) -> TrainConfig:
    return TrainConfig(out=str(out), data=str(data), steps=steps, resume=resume, **SETTINGS)


def assert_same_weights(a: Path, b: Path) -> None:
    """Raw and EMA weights and the optimizer moments of two runs agree to float tolerance
    (DDP sums the gradient over ranks in another order than one process does)."""
    sa, sb = load_train_state(a), load_train_state(b)
    assert sa["step"] == sb["step"]
    for key in ("model", "ema"):
        assert sa[key].keys() == sb[key].keys()
        for name in sa[key]:
            torch.testing.assert_close(sa[key][name], sb[key][name], rtol=1e-4, atol=1e-5,
                                       equal_nan=True, msg=f"{key}.{name}")
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        torch.testing.assert_close(pa["exp_avg"], pb["exp_avg"], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def one_process(fm8_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Single-process runs of STEPS // 2 and STEPS steps (the same global batch of 4)."""
    runs = {}
    for steps in (STEPS // 2, STEPS):
        runs[steps] = tmp_path_factory.mktemp(f"one{steps}")
        train(_config(fm8_dir, runs[steps], steps))
    return runs


@pytest.fixture(scope="module")
def ddp_half(fm8_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two gloo processes, STEPS // 2 steps (each rank 2 items of every batch of 4)."""
    out = tmp_path_factory.mktemp("ddp")
    torchrun(_config(fm8_dir, out, STEPS // 2))
    return out


def test_ddp_trains_the_one_process_weights(ddp_half: Path, one_process: dict[int, Path]) -> None:
    assert_same_weights(ddp_half, one_process[STEPS // 2])
    metrics = [json.loads(line) for line in (ddp_half / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in
                 (one_process[STEPS // 2] / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2]  # one line: only rank 0 writes
    # The sharded test bpd is the one-process number (per-chunk noise, float64 in item order).
    assert metrics[0]["test_bpd"] == reference[0]["test_bpd"]
    assert metrics[0]["train_bpd_avg"] == pytest.approx(reference[0]["train_bpd_avg"], rel=1e-6)
    assert sorted(p.name for p in ddp_half.iterdir()) == sorted(
        [CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, "metrics.jsonl"]
    )  # no temporary files, nothing per rank
    assert len(load_train_state(ddp_half)["rng_cpu"]) == 2  # every rank's RNG state, for resume
    config = json.loads((ddp_half / CONFIG_FILE).read_text())
    assert config["step"] == 2 and "step_losses_sum_bits" in config["metrics"]


def test_ddp_resume_under_torchrun(
    fm8_dir: Path, ddp_half: Path, one_process: dict[int, Path], tmp_path: Path
) -> None:
    shutil.copytree(ddp_half, tmp_path, dirs_exist_ok=True)
    torchrun(_config(fm8_dir, tmp_path, STEPS, resume=True))
    assert_same_weights(tmp_path, one_process[STEPS])  # = the uninterrupted run
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]


def test_batch_must_split_evenly_over_ranks(fm8_dir: Path, tmp_path: Path) -> None:
    # DDP averages the ranks' mean losses: that is the global mean only for equal shares.
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        _train(_config(fm8_dir, tmp_path, 1), Dist(rank=0, world=3))
