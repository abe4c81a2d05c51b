"""Checkpoints of both model kinds: upscale round trip, order seeds, config errors."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import torch
from conftest import TableNet, perturbed_unet

from ardm import checkpoint
from ardm.checkpoint import CONFIG_FILE, build_model, load_model, model_config, save_model
from ardm.models import MODEL_KINDS, OrderAgnosticARDM, UpscaleARDM
from ardm.nets import build_net

SHAPE = (1, 8, 8)


def _upscale(parametrization: str = "data", head: str = "logistic_mixture") -> UpscaleARDM:
    net = perturbed_unet(256, SHAPE, std=0.1, head=head)
    model = UpscaleARDM(
        net, 256, SHAPE, branch_factor=4, parametrization=parametrization, ce_weight=2e-3,
        budget_split="equal",
    )
    model.step_losses.copy_(torch.rand(4, 64, generator=torch.Generator().manual_seed(1)).double())
    return model.eval()


def test_doc_examples() -> None:
    assert doctest.testmod(checkpoint).failed == 0


@pytest.mark.parametrize("parametrization,head", [("data", "logistic_mixture"), ("direct", "categorical")])
def test_upscale_round_trip_gives_identical_outputs(
    tmp_path: Path, parametrization: str, head: str
) -> None:
    model = _upscale(parametrization, head)
    model.order_seed = 42
    save_model(model, {"preset": "tiny", "step": 3}, tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["model"] == "upscale" and config["branch_factor"] == 4
    assert config["parametrization"] == parametrization and config["budget_split"] == "equal"
    assert config["order_seed"] == 42 and "absorbing_state" not in config
    assert config["net"] == "unet" and config["net_config"]["head"] == head
    assert config["modality"] == "image"

    loaded = load_model(tmp_path)
    assert isinstance(loaded, UpscaleARDM) and not loaded.training
    assert (loaded.num_stages, loaded.branch_factor, loaded.parametrization) == (4, 4, parametrization)
    assert loaded.budget_split == "equal" and loaded.ce_weight == 2e-3 and loaded.order_seed == 42
    assert torch.equal(loaded.step_losses, model.step_losses)  # the S x D buffer
    x = torch.randint(0, 256, (3, *SHAPE), generator=torch.Generator().manual_seed(2))
    levels = torch.tensor([4, 2, 1]).view(3, 1) - (torch.rand(3, 64) < 0.5).long()
    levels[:, 0] = torch.tensor([4, 2, 1])
    with torch.no_grad():
        assert torch.equal(
            loaded.predict_digit_log_probs(x, levels), model.predict_digit_log_probs(x, levels)
        )
    assert loaded.policy(9) == model.policy(9)


def test_every_kind_round_trips_through_its_config() -> None:
    for kind, cls in MODEL_KINDS.items():
        args = {"branch_factor": 4} if kind == "upscale" else {}
        model = cls(build_net("tiny", 16, (1, 4, 4), head="categorical"), 16, (1, 4, 4), **args)
        model.order_seed, model.modality = 3, "image"
        config = model_config(model)
        assert config["model"] == kind == model.kind
        again = build_model(json.loads(json.dumps(config)))  # through JSON, as on disk
        assert type(again) is cls and model_config(again) == config


def test_order_seed_of_an_order_agnostic_model(tmp_path: Path) -> None:
    model = OrderAgnosticARDM(build_net("tiny", 16, (1, 4, 4)), 16, (1, 4, 4))
    save_model(model, {}, tmp_path)
    assert load_model(tmp_path).order_seed == 0  # default
    model.order_seed = 7
    save_model(model, {}, tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["order_seed"] == 7
    assert load_model(tmp_path).order_seed == 7


def test_older_configs_without_order_seed_load(tmp_path: Path) -> None:
    model = OrderAgnosticARDM(build_net("tiny", 16, (1, 4, 4)), 16, (1, 4, 4))
    config = model_config(model)
    del config["order_seed"]
    assert build_model(config).order_seed == 0


def test_bad_configs_raise_value_error() -> None:
    config = model_config(_upscale())
    for key, value, match in [
        ("order_seed", -1, "order_seed"),
        ("order_seed", "3", "order_seed"),
        ("branch_factor", 1, "branch"),
        ("parametrization", "both", "parametrization"),
        ("budget_split", "random", "budget_split must be one of"),
        ("model", "flow", "model must be one of"),
        ("model", None, "model must be one of"),
        ("net", "perceiver", "net must be one of"),
        ("net", "transformer", "settings that a transformer does not have"),
        ("net_config", {"width": 3}, "settings that a unet does not have"),
        ("net_config", [], "net_config"),
        ("modality", "video", "modality must be one of"),
        ("format_version", 99, "newer"),
        ("num_classes", 1, "num_classes"),
        ("data_shape", [1, 8], "data_shape"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_model({**config, key: value})
    missing = dict(config)
    del missing["branch_factor"]
    with pytest.raises(ValueError, match="branch_factor"):
        build_model(missing)


def test_saving_needs_a_registered_net(tmp_path: Path) -> None:
    model = OrderAgnosticARDM(TableNet((1, 4, 4), 4), 4, (1, 4, 4))
    with pytest.raises(ValueError, match="not a registered net"):
        save_model(model, {}, tmp_path)


def test_saving_rejects_a_bad_order_seed(tmp_path: Path) -> None:
    model = _upscale()
    model.order_seed = -3
    with pytest.raises(ValueError, match="order_seed"):
        save_model(model, {}, tmp_path)


# ---- the model fingerprint covers the config and every weight (docs/format.md) -----------------


def test_shipped_fingerprints_are_pinned() -> None:
    """Blobs name a shipped model by number only while its fingerprint is this: changing how the
    fingerprint is computed would make every existing blob of the shipped models undecodable."""
    import ardm

    assert ardm.load().shipped_fingerprint == 0xA2E30487
    assert ardm.load("kjv").shipped_fingerprint == 0xA4B57CC2  # 30,000 steps, 2026-12-06


@pytest.mark.parametrize("path, value", [
    ("order_seed", 5), ("ce_weight", 0.5), ("modality", "text"), ("net_config.dropout", 0.25),
    ("budget_split", "optimal"), ("net_config.num_heads", 2),
])
def test_the_fingerprint_changes_with_every_model_field(tmp_path: Path, path: str, value) -> None:
    """Fields that leave every tensor's shape alone: the same weights under another config are
    another model."""
    from ardm.coding import model_fingerprint

    save_model(_upscale(), {"preset": "tiny"}, tmp_path)
    loaded = load_model(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    *parents, key = path.split(".")
    (config[parents[0]] if parents else config)[key] = value
    changed = build_model(config)
    changed.load_state_dict(loaded.state_dict(), strict=True)
    assert model_fingerprint(changed) != model_fingerprint(loaded), path


def test_the_fingerprint_ignores_training_facts_and_sees_weights_changed_in_place(tmp_path: Path) -> None:
    from ardm.coding import model_fingerprint

    model = _upscale()
    save_model(model, {"preset": "tiny", "step": 3}, tmp_path)
    before = model_fingerprint(load_model(tmp_path))
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config.update(step=4, dataset="elsewhere", metrics={"test_bpd": 1.0})
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    loaded = load_model(tmp_path)
    assert model_fingerprint(loaded) == before
    weight = next(loaded.parameters())
    weight.data[0].add_(1.0)  # through .data: no version counter changes (was a stale cache)
    assert model_fingerprint(loaded) != before
    loaded.step_losses.data.mul_(2.0)
    assert model_fingerprint(loaded) not in (before,)
