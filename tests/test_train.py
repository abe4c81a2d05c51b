"""Checkpoints (round trip, atomicity, safe loading), exact resume, and the CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import perturbed_unet
from safetensors.torch import load_file

from ardm import cli
from ardm.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    TRAIN_STATE_FILE,
    load_model,
    load_train_state,
    save_model,
)
from ardm.modalities.text import load_text_bytes
from ardm.models import OrderAgnosticARDM, UpscaleARDM
from ardm.models.timesteps import UniformSampler
from ardm.training import TrainConfig, build_for_training, train


@pytest.fixture(scope="module")
def image_dir(fm12_dir: Path) -> Path:
    return fm12_dir


@pytest.fixture(scope="module", autouse=True)
def _restore_threads() -> Iterator[None]:  # the runs here use one thread: quick on a shared CPU
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _model() -> OrderAgnosticARDM:
    net = perturbed_unet(256, (1, 8, 8), std=0.1)
    model = OrderAgnosticARDM(net, 256, (1, 8, 8), ce_weight=2e-3)
    model.step_losses.copy_(torch.linspace(3.0, 0.1, 64, dtype=torch.float64))
    return model


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _model().eval()
    save_model(model, {"preset": "tiny", "dataset": "x", "step": 7}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, MODEL_FILE]  # no temp files
    loaded = load_model(tmp_path)
    assert not loaded.training
    assert loaded.data_shape == (1, 8, 8) and loaded.num_classes == 256 and loaded.ce_weight == 2e-3
    assert torch.equal(loaded.step_losses, model.step_losses)
    x = torch.randint(0, 256, (2, 1, 8, 8))
    known = torch.rand(2, 1, 8, 8) < 0.5
    with torch.no_grad():
        assert torch.equal(loaded.predict_log_probs(x, known), model.predict_log_probs(x, known))
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["model"] == "oa" and config["step"] == 7 and config["net"] == "unet"
    assert config["net_config"]["head"] == "logistic_mixture" and config["modality"] == "image"
    assert torch.equal(load_model(tmp_path / MODEL_FILE).step_losses, model.step_losses)


def test_checkpoint_errors(tmp_path: Path) -> None:
    save_model(_model(), {}, tmp_path)
    (tmp_path / MODEL_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        load_model(tmp_path)
    save_model(_model(), {}, tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["net_config"]["channels"] = 24
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        load_model(tmp_path)
    config["model"] = "flow"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model must be one of"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def _config(image_dir: Path, out: Path, steps: int, resume: bool = False) -> TrainConfig:
    return TrainConfig(
        out=str(out), data=str(image_dir), preset="tiny", steps=steps, batch_size=4,
        warmup=2, ckpt_every=3, eval_every=3, eval_size=8, holdout=16, step_loss_evals=1,
        resume=resume, progress=False, threads=1,
    )


@pytest.fixture(scope="module")
def straight_run(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    train(_config(image_dir, out, 6))
    return out


def test_resume_is_exact(image_dir: Path, straight_run: Path, tmp_path: Path) -> None:
    split = tmp_path / "split"
    train(_config(image_dir, split, 3))
    assert load_train_state(split)["step"] == 3
    train(_config(image_dir, split, 6, resume=True))
    a, b = load_train_state(straight_run), load_train_state(split)
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0, equal_nan=True)
    wa, wb = load_file(straight_run / MODEL_FILE), load_file(split / MODEL_FILE)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert load_model(straight_run).has_step_losses()
    lines = (straight_run / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["step"] for m in metrics] == [3, 6] and np.isfinite(metrics[-1]["test_bpd"])


def test_resume_refuses_changed_settings(image_dir: Path, straight_run: Path, tmp_path: Path) -> None:
    shutil.copytree(straight_run, tmp_path, dirs_exist_ok=True)
    cfg = _config(image_dir, tmp_path, 9, resume=True)
    cfg.batch_size = 8
    with pytest.raises(ValueError, match="batch_size"):
        train(cfg)


def test_init_starts_from_another_runs_weights(image_dir: Path, straight_run: Path, tmp_path: Path) -> None:
    cfg = _config(image_dir, tmp_path / "tuned", 1)
    cfg.init, cfg.lr = str(straight_run), 1e-9  # one step that barely moves the weights
    train(cfg)
    start = load_model(straight_run).state_dict()
    tuned = load_train_state(tmp_path / "tuned")["model"]
    for name, value in start.items():
        if name != "step_losses":  # re-estimated at the end of the run
            torch.testing.assert_close(tuned[name], value, rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "tuned" / CONFIG_FILE).read_text())["train"]["init"] == str(straight_run)


def test_init_refuses_another_model(image_dir: Path, straight_run: Path, tmp_path: Path) -> None:
    cfg = _config(image_dir, tmp_path / "other", 1)
    cfg.init, cfg.preset = str(straight_run), "small"
    with pytest.raises(ValueError, match="is another model than this run builds"):
        train(cfg)
    cfg.init = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="nowhere"):
        train(cfg)


def test_step_losses_command_re_estimates_only_the_step_losses(
    straight_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(straight_run, run)
    before = load_file(run / MODEL_FILE)
    assert cli.main(["step-losses", str(run), "--evals", "3", "--seed", "5", "--no-progress"]) == 0
    assert "re-estimated on 3 of its 16 held-out items" in capsys.readouterr().out
    after = load_file(run / MODEL_FILE)
    assert before.keys() == after.keys() and not torch.equal(before["step_losses"], after["step_losses"])
    assert all(torch.equal(before[k], after[k]) for k in before if k != "step_losses")
    losses = after["step_losses"]
    assert torch.all(losses[1:] <= losses[:-1] + 1e-12)  # fitted non-increasing
    metrics = json.loads((run / CONFIG_FILE).read_text())["metrics"]
    assert metrics["step_losses_evals"] == 3
    assert metrics["step_losses_sum_bits"] == pytest.approx(float(losses.sum()))
    # Bad input: a message and exit status 1, the run untouched.
    assert cli.main(["step-losses", str(run), "--evals", "0"]) == 1
    config = json.loads((run / CONFIG_FILE).read_text())
    del config["train"]
    (run / CONFIG_FILE).write_text(json.dumps(config))
    assert cli.main(["step-losses", str(run), "--no-progress"]) == 1
    assert "does not name its training data" in capsys.readouterr().err
    assert torch.equal(load_file(run / MODEL_FILE)["step_losses"], losses)


def test_train_state_is_weights_only(straight_run: Path) -> None:
    state = torch.load(straight_run / TRAIN_STATE_FILE, weights_only=True)
    assert {"model", "ema", "optimizer", "step", "rng_cpu", "config"} <= set(state)


def test_cli(image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--help"])
    assert exc.value.code == 0
    assert "--resume" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "no")]) == 1
    assert "does not exist" in capsys.readouterr().err
    out = tmp_path / "cli"
    argv = ["train", "--data", str(image_dir), "--preset", "tiny", "--steps", "2", "--batch-size",
            "4", "--out", str(out), "--eval-size", "4", "--holdout", "8", "--step-loss-evals", "1",
            "--no-progress", "--threads", "1"]
    assert cli.main(argv) == 0
    assert load_model(out).has_step_losses()


def test_a_text_file_trains_as_text_without_naming_the_modality(tmp_path: Path) -> None:
    text = tmp_path / "verses.txt"
    text.write_bytes(load_text_bytes("kjv")[: 64 * 256])
    argv = ["train", "--data", str(text), "--preset", "tiny", "--steps", "2", "--batch-size", "4",
            "--eval-size", "2", "--holdout", "2", "--step-loss-evals", "1", "--no-progress",
            "--threads", "1", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0  # it looked for MNIST files in verses.txt before
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["modality"], config["net"]) == ("text", "transformer")


def test_upscale_training_on_real_data(image_dir: Path, tmp_path: Path) -> None:
    cfg = _config(image_dir, tmp_path, 3)
    cfg.model, cfg.branch_factor, cfg.budget_split = "upscale", 16, "equal"
    train(cfg)
    model = load_model(tmp_path)
    assert isinstance(model, UpscaleARDM)
    assert (model.num_stages, model.branch_factor, model.budget_split) == (2, 16, "equal")
    assert model.step_losses.shape == (2, 144) and model.has_step_losses()
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["model"] == "upscale" and len(config["metrics"]["step_losses_stage_bpd"]) == 2
    assert np.isfinite(config["metrics"]["test_bpd"])
    assert [len(p) for p in model.policy(6).stages] == [3, 3]  # the equal split


def test_direct_upscale_defaults_to_the_categorical_head(image_dir: Path, tmp_path: Path) -> None:
    argv = ["train", "--data", str(image_dir), "--model", "upscale", "--parametrization",
            "direct", "--branch-factor", "16", "--preset", "tiny", "--steps", "1",
            "--batch-size", "4", "--out", str(tmp_path), "--eval-size", "1", "--holdout", "4",
            "--step-loss-evals", "1", "--no-progress", "--threads", "1"]
    assert cli.main(argv) == 0
    model = load_model(tmp_path)
    assert model.parametrization == "direct" and model.net.config.head == "categorical"


def test_config_defaults_and_validation() -> None:
    cfg = TrainConfig(out="x")
    assert (cfg.modality, cfg.net, cfg.data, cfg.model) == ("image", "unet", "fashion-mnist", "oa")
    assert TrainConfig(out="x", data="/some/dir").data == "/some/dir"
    for kwargs, match in [
        ({"modality": "video"}, "unknown modality"),
        ({"net": "perceiver"}, "unknown net"),
        ({"preset": "giant"}, "unknown unet preset"),
        ({"head": "gaussian"}, "unknown head"),
        ({"steps": 0}, "steps"),
        ({"ema": 1.0}, "ema"),
        ({"model": "flow"}, "unknown model"),
        ({"branch_factor": 1}, "branch_factor"),
        ({"parametrization": "both"}, "parametrization"),
        ({"budget_split": "random"}, "budget split"),
        ({"timestep_sampler": "cosine"}, "timestep sampler"),
        ({"grad_clip": -1.0}, r"grad_clip must be > 0 \(the largest gradient norm; inf: no"),
        ({"grad_clip": 0.0}, "grad_clip must be > 0"),  # clip_grad_norm_(0) zeroes the gradients
        ({"grad_clip": math.nan}, "grad_clip must be > 0"),
        ({"eval_size": 0}, "eval_size must be >= 1"),  # it trained and reported "test bpd nan"
        ({"eval_size": -3}, "eval_size must be >= 1"),
        ({"lr": -1e-3}, "lr must be a positive number"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"lr": math.nan}, "lr must be a positive number"),
        ({"lr": math.inf}, "lr must be a positive number"),
        ({"ema": -0.1}, "ema must be in"),
        ({"ema": math.nan}, "ema must be in"),
        ({"weight_decay": -0.01}, "weight_decay must be >= 0"),
        ({"weight_decay": math.nan}, "weight_decay must be >= 0"),
        ({"ce_weight": math.nan}, "ce_weight must be >= 0"),
        ({"ce_weight": -1.0}, "ce_weight must be >= 0"),
        ({"warmup": -1}, "warmup must be >= 0"),
        ({"holdout": -1}, "holdout must be >= 0"),
        ({"seed": -1}, "seed must be in 0..4294967295"),
        ({"seed": 2**64}, "seed must be in 0..4294967295"),
        ({"model": "oa", "parametrization": "direct"}, "'direct' is for --model upscale"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(out="x", **kwargs)
    assert TrainConfig(out="x", grad_clip=math.inf).grad_clip == math.inf  # inf: no clipping
    assert TrainConfig(out="x", weight_decay=0.0, warmup=0, holdout=0, seed=0).seed == 0


def test_the_modality_of_a_dataset_path_is_found_from_its_files(image_dir: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"any bytes \xff")
    wavs = tmp_path / "recordings" / "day1"
    wavs.mkdir(parents=True)
    (wavs / "a.wav").write_bytes(b"RIFF")
    paths = (notes, tmp_path / "recordings", wavs / "a.wav", image_dir, tmp_path / "none")
    found = [TrainConfig(out="x", data=str(p)).modality for p in paths]
    assert found == ["text", "audio", "audio", "image", "image"]
    assert TrainConfig(out="x", data=str(notes), modality="image").modality == "image"  # as told


def test_a_categorical_head_over_many_values_is_refused() -> None:
    # K = 65,536 audio values: 65,536 logits a sample (GBs a batch; it was OOM-killed).
    with pytest.raises(ValueError, match=r"K = 65,536 audio values builds 65,536 logits per "
                       r"variable .* use --head logistic_mixture, or --model upscale "
                       r"--parametrization direct \(b logits per variable\)"):
        TrainConfig(out="x", data="asterisk", head="categorical", preset="tiny")
    with pytest.raises(ValueError, match="use --head logistic_mixture$"):  # no head_classes
        TrainConfig(out="x", data="asterisk", net="transformer", head="categorical", preset="tiny")
    with pytest.raises(ValueError, match="use a branch factor of at most 4,096"):
        TrainConfig(out="x", data="asterisk", parametrization="direct", branch_factor=8192)
    # The direct parametrization gives the dilated net's categorical head b logits: accepted.
    for head in (None, "categorical"):
        cfg = TrainConfig(out="x", data="asterisk", parametrization="direct", head=head,
                          preset="tiny")
        model = build_for_training(cfg, 65536, (64,))
        assert model.net.head.name == "categorical" and model.net.head.params_per_var == model.branch_factor == 16
    # K = 256 (images, text) keeps its categorical heads; audio keeps its mixture head.
    TrainConfig(out="x", head="categorical", preset="tiny")
    TrainConfig(out="x", data="kjv", preset="tiny")
    TrainConfig(out="x", data="asterisk", preset="tiny")


def test_build_for_training() -> None:
    cfg = TrainConfig(out="x", preset="tiny", timestep_sampler="uniform")
    oa = build_for_training(cfg, 256, (1, 8, 8))
    assert isinstance(oa, OrderAgnosticARDM) and oa.net.config.head == "logistic_mixture"
    assert isinstance(oa.timestep_sampler, UniformSampler) and oa.modality == "image"
    cfg = TrainConfig(out="x", preset="tiny", model="upscale", branch_factor=16,
                      parametrization="direct", budget_split="equal", ce_weight=0.5)
    up = build_for_training(cfg, 256, (1, 8, 8))
    assert isinstance(up, UpscaleARDM) and up.net.head.name == "categorical"  # direct: categorical
    assert (up.num_stages, up.budget_split, up.ce_weight) == (2, "equal", 0.5)
    assert up.timestep_sampler.num_steps == 2 * 64


def test_python_m_ardm_training_is_the_train_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ardm.training", "--help"], capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--resume" in result.stdout and "--net" in result.stdout


def test_the_global_batch_split_over_ranks_has_the_one_process_gradient() -> None:
    # What DDP computes, without processes: each rank's mean loss over its rows of the global
    # batch (items and noise drawn once, for the whole batch), gradients averaged over ranks.
    torch.manual_seed(0)
    model = OrderAgnosticARDM(perturbed_unet(256, (1, 8, 8), std=0.05), 256, (1, 8, 8))
    x = torch.randint(0, 256, (6, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    noise = model.training_noise(6, torch.Generator().manual_seed(2))
    loss, _ = model.training_loss(x, torch.Generator().manual_seed(2))
    assert torch.equal(loss, model.training_loss(x, noise=noise)[0])  # the same draws
    whole = torch.autograd.grad(loss, list(model.parameters()))
    world = 3
    shares = []
    for rank in range(world):
        mine = slice(rank, None, world)
        share_loss, _ = model.training_loss(x[mine], noise=tuple(n[mine] for n in noise))
        shares.append(torch.autograd.grad(share_loss, list(model.parameters())))
    for g, *gs in zip(whole, *shares):
        torch.testing.assert_close(sum(gs) / world, g, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="noise for 2 items"):
        model.training_loss(x[:2], noise=noise)
