"""kill -9 at any moment of a real training run, then ``--resume``: the final weights are the
uninterrupted run's, bit for bit; a partial checkpoint is never loaded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ardm import cli
from ardm.checkpoint import CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, load_train_state
from ardm.training import TrainConfig, train

STEPS, CKPT_EVERY = 6, 2  # checkpoints at steps 2, 4, 6, then once more with the step losses

# Runs ``ardm train ARGV...``; pauses (forever) the NTH atomic write of NAME between its complete
# temporary file and the rename, after writing the temporary file's path to MARKER.
PAUSING_TRAINER = """
import sys, time
from pathlib import Path
from ardm import checkpoint
from ardm.commands.train import main

name, nth, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
seen = 0

def pause(tmp, path):
    global seen
    if path.name == name:
        seen += 1
        if seen == nth:
            marker.write_text(str(tmp))
            time.sleep(3600)

checkpoint._before_rename = pause
sys.exit(main(sys.argv[4:]))
"""


@pytest.fixture(scope="module", autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _config(data: Path, out: Path, resume: bool = False) -> TrainConfig:
    return TrainConfig(
        out=str(out), data=str(data), preset="tiny", steps=STEPS, batch_size=4, warmup=2,
        ckpt_every=CKPT_EVERY, eval_every=CKPT_EVERY, eval_size=8, holdout=8, step_loss_evals=1,
        threads=1, resume=resume, progress=False,
    )


def _argv(data: Path, out: Path) -> list[str]:
    return ["--out", str(out), "--data", str(data), "--preset", "tiny", "--steps", str(STEPS),
            "--batch-size", "4", "--warmup", "2", "--ckpt-every", str(CKPT_EVERY),
            "--eval-every", str(CKPT_EVERY), "--eval-size", "8", "--holdout", "8",
            "--step-loss-evals", "1", "--threads", "1", "--no-progress", "--resume"]


def kill_during_write(data: Path, out: Path, name: str, nth: int) -> Path:
    """Start ``ardm train --resume`` on ``out``, SIGKILL it while its ``nth`` write of ``name``
    has a complete temporary file not yet renamed; returns that temporary file."""
    marker = out.parent / f"{out.name}.paused"
    marker.unlink(missing_ok=True)
    command = [sys.executable, "-c", PAUSING_TRAINER, name, str(nth), str(marker),
               *_argv(data, out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the trainer exited ({proc.returncode}) before the pause: "
                            f"{proc.communicate()[1][-2000:]}")
            assert time.monotonic() < deadline, "the trainer never reached the pause"
            time.sleep(0.05)
        time.sleep(0.05)  # the marker's text is complete
        tmp = Path(marker.read_text())
        assert tmp.is_file() and tmp.parent == out
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return tmp


def _temp_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def uninterrupted(fm8_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    train(_config(fm8_dir, out))
    return out


def test_kill_9_anywhere_then_resume_is_exact(
    fm8_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # 1. In the write of the step-4 train_state.pt: its complete temporary file is never renamed.
    tmp = kill_during_write(fm8_dir, out, TRAIN_STATE_FILE, nth=2)
    assert load_train_state(out)["step"] == 2 and _temp_files(out) == [tmp.name]
    # 2. Resumed from step 2 (the leftover is deleted, never read); killed between the files of
    #    the step-4 checkpoint: train_state.pt is at step 4, model.safetensors still at step 2.
    kill_during_write(fm8_dir, out, MODEL_FILE, nth=1)
    assert tmp.name not in _temp_files(out)
    assert load_train_state(out)["step"] == 4
    assert json.loads((out / CONFIG_FILE).read_text())["step"] == 2
    # 3. Resumed from step 4; killed after the last step, writing the checkpoint that adds the
    #    per-step losses (the second train_state.pt write of this process).
    kill_during_write(fm8_dir, out, TRAIN_STATE_FILE, nth=2)
    state = load_train_state(out)
    assert state["step"] == STEPS and "step_losses_step" not in json.loads(state["metrics"])
    # 4. Resumed to the end.
    train(_config(fm8_dir, out, resume=True))
    assert _temp_files(out) == []
    a, b = load_train_state(uninterrupted), load_train_state(out)
    for key in ("model", "ema"):
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0, equal_nan=True)
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    assert (uninterrupted / MODEL_FILE).read_bytes() == (out / MODEL_FILE).read_bytes()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # the lines of lost steps are dropped on resume


def test_a_truncated_checkpoint_is_refused(
    fm8_dir: Path, uninterrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    state_path = tmp_path / TRAIN_STATE_FILE
    state_path.write_bytes(state_path.read_bytes()[: state_path.stat().st_size // 2])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    argv = ["train", *_argv(fm8_dir, tmp_path)]
    assert cli.main(argv) == 1
    assert "train_state.pt is truncated or corrupt" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written
