"""``ardm eval`` under torchrun (two gloo processes): each rank evaluates its share of the test
items, rank 0 prints, and the numbers are the ones one process computes, to the last bit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import perturbed_unet, torchrun

from ardm import cli
from ardm.checkpoint import save_model
from ardm.distributed import Dist, shard
from ardm.evaluate import _share_size, evaluate_budgets, load_test_images, resolve_run
from ardm.models import OrderAgnosticARDM

ARGS = ["--budgets", "64,8,2", "--test-size", "22", "--batch-size", "4", "--repeats", "2",
        "--exact-images", "6", "--exact-max-calls", "8", "--holdout-size", "8", "--no-progress"]


# Under torchrun: ``ardm eval RUN ARGS...``, then the rows of evaluate_budgets (every digit) into
# OUT as JSON, by rank 0.
SCRIPT = """
import dataclasses, json, sys
from ardm import cli
from ardm.distributed import process_group
from ardm.evaluate import evaluate_budgets, load_test_images, resolve_run

out, run, args = sys.argv[1], sys.argv[2], sys.argv[3:]
with process_group() as d:
    assert d.world == 2
    assert cli.main(["eval", run, *args]) == 0
    model, config = resolve_run(run)
    images, _ = load_test_images(model, config, 22)
    model.step_losses.copy_(model.step_losses.new_tensor(range(64)).flip(0))
    rows = evaluate_budgets(model, images, [64, 8, 2], batch_size=4, repeats=2, exact_images=6,
                            exact_max_calls=8, progress=False)
    if d.is_main:
        open(out, "w").write(json.dumps([dataclasses.asdict(r) for r in rows]))
"""


def _rows_in_one_process(run: Path) -> list[dict]:
    model, config = resolve_run(run)
    images, _ = load_test_images(model, config, 22)
    model.step_losses.copy_(model.step_losses.new_tensor(range(64)).flip(0))
    rows = evaluate_budgets(model, images, [64, 8, 2], batch_size=4, repeats=2, exact_images=6,
                            exact_max_calls=8, progress=False)
    return json.loads(json.dumps([dataclasses.asdict(r) for r in rows]))


def _numbers(output: str) -> list[str]:
    """The printed lines but the one with the elapsed time."""
    return [line for line in output.splitlines() if " s; bits/dim" not in line]


@pytest.fixture(scope="module")
def run_dir(fm8_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny order-agnostic model without per-step losses (eval estimates them first)."""
    model = OrderAgnosticARDM(perturbed_unet(256, (1, 8, 8), std=0.05), 256, (1, 8, 8)).eval()
    out = tmp_path_factory.mktemp("run")
    save_model(model, {"dataset": str(fm8_dir), "train": {"holdout": 8}}, out)
    return out


def test_sharded_eval_gives_the_one_process_numbers(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script, rows_path = tmp_path / "sharded_eval.py", tmp_path / "rows.json"
    script.write_text(SCRIPT)
    result = torchrun(str(script), str(rows_path), str(run_dir), *ARGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker: the same arithmetic
    try:
        assert cli.main(["eval", str(run_dir), *ARGS]) == 0
        rows = _rows_in_one_process(run_dir)
    finally:
        torch.set_num_threads(threads)
    alone = _numbers(capsys.readouterr().out)
    assert any(line.strip().startswith("8 |") for line in alone)  # the table is there
    assert _numbers(result.stdout) == alone  # printed once (rank 0), digit for digit
    assert json.loads(rows_path.read_text()) == rows  # and every bit of every number
    assert all(r["exact_bpd"] is not None for r in rows if r["calls"] <= 8)


def test_shares_are_strided_chunks() -> None:
    # 22 items in chunks of 4: chunks 0..5 (the last holds 2); rank 0 takes 0, 2, 4, rank 1 the rest.
    assert list(shard(range(6), Dist(0, 2))) == [0, 2, 4]
    assert list(shard(range(6), Dist(1, 2))) == [1, 3, 5]
    assert _share_size(22, 4) == 22  # one process: everything

