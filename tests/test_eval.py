"""ardm.evaluate and the eval / sample commands, end to end on tiny models and real images."""

from __future__ import annotations

import doctest
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from ardm import cli, evaluate
from ardm.checkpoint import load_model, save_model
from ardm.commands import eval as eval_command
from ardm.data import load_dataset
from ardm.evaluate import evaluate_budgets, policy_specs, sample_images, step_loss_curves
from ardm.models import OrderAgnosticARDM, Policy, UpscaleARDM
from ardm.nets import build_net

SHAPE = (1, 8, 8)  # D = 64


@pytest.fixture(scope="module")
def image_dir(fm8_dir: Path) -> Path:
    return fm8_dir


def _oa() -> OrderAgnosticARDM:
    torch.manual_seed(0)
    return OrderAgnosticARDM(build_net("tiny", 256, SHAPE), 256, SHAPE).eval()


def _upscale() -> UpscaleARDM:
    torch.manual_seed(0)
    net = build_net("tiny", 256, SHAPE, head="categorical")
    return UpscaleARDM(net, 256, SHAPE, branch_factor=16).eval()  # S = 2 stages


def _run(model, image_dir: Path, out: Path) -> Path:
    save_model(model, {"dataset": str(image_dir), "train": {"holdout": 16}}, out)
    return out


def test_doc_examples() -> None:
    assert doctest.testmod(evaluate).failed == 0
    assert doctest.testmod(eval_command, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


def test_rows_policies_and_predictions(image_dir: Path) -> None:
    model = _oa()
    model.step_losses.copy_(torch.linspace(6.0, 0.5, 64, dtype=torch.float64))
    x = load_dataset(str(image_dir), "test")[:6]
    rows = evaluate_budgets(model, x, [64, 8, 2], exact_images=2, exact_max_calls=8,
                            progress=False)
    assert [(r.budget, r.policy) for r in rows] == [
        (64, "optimal"), (64, "naive"), (8, "optimal"), (8, "naive"), (2, "optimal"), (2, "naive")
    ]
    by = {(r.budget, r.policy): r for r in rows}
    assert by[64, "optimal"].exact_bpd is None and by[8, "naive"].exact_bpd is not None
    assert math.isclose(by[64, "optimal"].predicted_bpd, 6.5 / 2, rel_tol=1e-9)  # mean of L_t
    for budget in (8, 2):
        assert by[budget, "optimal"].predicted_bpd <= by[budget, "naive"].predicted_bpd
        assert by[budget, "optimal"].calls <= budget
    assert all(math.isfinite(r.bpd) and r.bpd > 0 for r in rows)
    again = evaluate_budgets(model, x, [64, 8, 2], exact_images=2, exact_max_calls=8,
                             progress=False)
    assert again == rows  # a fixed generator: the same numbers


def test_policies_are_compared_on_paired_estimates(image_dir: Path) -> None:
    model = _oa()  # a convex curve, so that the DP's policy is not the evenly spaced one
    model.step_losses.copy_(6.0 * torch.exp(-torch.arange(64.0, dtype=torch.float64) / 8) + 0.5)
    x = load_dataset(str(image_dir), "test")[:16]
    assert all(model.policy(b) != model.naive_policy(b) for b in (8, 3))
    rows = evaluate_budgets(model, x, [8, 3], repeats=2, exact_images=0, batch_size=5,
                            progress=False)
    for budget in (8, 3):
        opt, naive = (next(r for r in rows if (r.budget, r.policy) == (budget, name))
                      for name in ("optimal", "naive"))
        assert naive.vs_naive is None and naive.vs_naive_sem is None
        assert opt.vs_naive is not None and opt.vs_naive_sem is not None
        assert math.isclose(opt.vs_naive, opt.bpd - naive.bpd, abs_tol=1e-9)
        # The same orders and steps for both policies: their difference varies far less than
        # two independent estimates would (the items' spread cancels).
        assert 0 < opt.vs_naive_sem < 0.5 * math.hypot(opt.bpd_sem, naive.bpd_sem)


def test_test_items_are_evenly_spaced_over_the_split(image_dir: Path) -> None:
    model = _oa()
    split = load_dataset(str(image_dir), "test")
    items, source = evaluate.load_test_images(model, {"dataset": str(image_dir)}, 3)
    middle = round((len(split) - 1) / 2)
    assert torch.equal(items, split[[0, middle, len(split) - 1]])
    assert source == f"3 test items of {image_dir}, evenly spaced over its {len(split)}"
    everything, source = evaluate.load_test_images(model, {"dataset": str(image_dir)}, 10**6)
    assert torch.equal(everything, split) and source.startswith(f"all {len(split)} test items")


def test_upscale_specs_show_both_splits() -> None:
    model = _upscale()
    model.step_losses.copy_(
        torch.stack([torch.linspace(4, 1, 64), torch.linspace(1, 0.5, 64)]).double()
    )
    specs = {s.name: s for s in policy_specs(model, 6)}
    assert specs["equal"].stage_budgets == (3, 3) and specs["naive"].stage_budgets == (3, 3)
    assert sum(specs["optimal"].stage_budgets) == 6 == specs["optimal"].calls
    assert specs["optimal"].predicted_bits <= specs["equal"].predicted_bits <= specs["naive"].predicted_bits
    assert all(isinstance(s.policy, Policy) and s.policy.calls == s.calls for s in specs.values())
    assert specs["optimal"].policy == model.policy(6) and specs["naive"].policy == model.naive_policy(6)
    raw, ordered = step_loss_curves(model)
    assert raw.shape == ordered.shape == (2, 64) and ordered[1, 0] == 1.0
    with pytest.raises(ValueError, match="out of range"):
        policy_specs(model, 1)


def test_sampling_makes_exactly_the_policy_calls() -> None:
    model = _oa()
    model.step_losses.copy_(torch.linspace(6.0, 0.5, 64, dtype=torch.float64))
    result = sample_images(model, 7, n=3, seed=1)
    assert result.calls == result.policy_calls == model.policy(7).calls == 7
    assert result.images.shape == (3, *SHAPE) and int(result.images.max()) < 256
    assert torch.equal(sample_images(model, 7, n=3, seed=1).images, result.images)


@pytest.mark.parametrize("head, parametrization", [("logistic_mixture", "data"), ("categorical", "direct")])
def test_upscale_sampling_makes_exactly_the_policy_calls(head: str, parametrization: str) -> None:
    # The data parametrization asks the network for interval masses, the direct one for logits:
    # both must be counted.
    torch.manual_seed(0)
    net = build_net("tiny", 256, SHAPE, head=head)
    model = UpscaleARDM(net, 256, SHAPE, branch_factor=16, parametrization=parametrization).eval()
    model.step_losses.copy_(torch.linspace(6.0, 0.5, 128, dtype=torch.float64).view(2, 64))
    result = sample_images(model, 5, n=2, seed=1)
    assert result.calls == result.policy_calls == model.policy(5).calls == 5


def test_eval_command_estimates_step_losses_and_plots(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(_oa(), image_dir, tmp_path / "oa")
    plots = tmp_path / "plots"
    argv = ["eval", str(run), "--budgets", "64,8,2", "--test-size", "8", "--exact-images", "2",
            "--exact-max-calls", "8", "--plots", str(plots), "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "no per-step losses: estimating them on 16 held-out training items" in out
    table = [line for line in out.splitlines() if line.split("|")[0].strip() in {"64", "8", "2"}]
    assert len(table) == 3 and "optimal" in out and "naive" in out
    assert sorted(p.name for p in plots.iterdir()) == ["bpd_vs_budget.png", "step_losses.png"]
    assert not load_model(run).has_step_losses()  # the estimate is not written back


def test_eval_command_on_an_upscale_model(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(_upscale(), image_dir, tmp_path / "up")
    argv = ["eval", str(run), "--budgets", "10,2", "--test-size", "4", "--exact-images", "1",
            "--exact-max-calls", "2", "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "S = 2 stages" in out and "equal" in out and "per stage" in out
    assert "5+5" in out and "1+1" in out


def test_sample_command_writes_a_grid(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(_upscale(), image_dir, tmp_path / "up")
    png = tmp_path / "grid.png"
    argv = ["sample", str(run), "--budget", "5", "--n", "5", "-o", str(png), "--scale", "1",
            "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    calls = re.search(r"budget 5: (\d+) network calls", out)
    assert calls and 2 <= int(calls.group(1)) <= 5  # at most the budget, one call per stage at least
    with Image.open(png) as grid:
        assert grid.size == (3 * 9 - 1, 2 * 9 - 1)  # 3 columns, 2 rows of 8x8, 1px gaps


def test_bad_arguments_are_clear_errors(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(_oa(), image_dir, tmp_path / "oa")
    assert cli.main(["eval", str(run), "--budgets", "65"]) == 1
    assert "out of range" in capsys.readouterr().err
    assert cli.main(["eval", str(run), "--budgets", "ten"]) == 1
    assert "comma-separated" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "missing")]) == 1
    assert cli.main(["sample", str(run), "--n", "0", "--budget", "64"]) == 1
    assert "n must be" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval", "--help"])
    assert exc.value.code == 0
    assert "--budgets" in capsys.readouterr().out
