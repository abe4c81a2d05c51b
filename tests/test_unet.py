"""Image U-Net and the net registry: shapes, heads, presets, configuration errors, speed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ardm.nets import (
    NETS,
    UNET_PRESETS,
    CategoricalHead,
    LogisticMixtureHead,
    UNetConfig,
    build_head,
    build_net,
    build_unet,
    net_config,
    net_from_config,
)
from ardm.nets.heads import (
    logistic_mixture_interval_log_probs,
    logistic_mixture_log_probs,
    logistic_mixture_target_log_prob,
    split_mixture_params,
)


def _inputs(b: int, shape: tuple[int, int, int], k: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    known = torch.rand(b, *shape, generator=gen) < 0.5
    x = torch.randint(0, k, (b, *shape), generator=gen)
    x_in = torch.where(known, x, k)
    return x_in, known, known.flatten(1).sum(1), x


@pytest.mark.parametrize("head", ["logistic_mixture", "categorical"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 8, 8), (1, 4, 4)])
def test_forward_shapes(head: str, shape: tuple[int, int, int]) -> None:
    net = build_net("tiny", 256, shape, head=head)
    x_in, known, t, x = _inputs(2, shape, 256)
    with torch.no_grad():
        params = net(x_in, known, t)
    per_var = 256 if head == "categorical" else 3 * UNET_PRESETS["tiny"].num_mixtures
    assert net.head.name == head and net.head.params_per_var == per_var
    assert params.shape == (2, *shape, per_var) and params.dtype == torch.float32
    log_probs = net.head.log_probs(params)
    assert log_probs.shape == (2, *shape, 256) and torch.isfinite(log_probs).all()
    target = net.head.target_log_probs(params, x)
    assert target.shape == (2, *shape)
    assert torch.allclose(target, log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1), atol=1e-4)


def test_mixture_head_is_normalized_and_matches_target_path() -> None:
    gen = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 4.0):
        params = torch.randn(500, 3 * 4, generator=gen) * scale
        for k in (2, 16, 256):
            log_probs = logistic_mixture_log_probs(params, k)
            assert torch.allclose(log_probs.exp().sum(-1), torch.ones(500), atol=1e-5)
            target = torch.randint(0, k, (500,), generator=gen)
            fast = logistic_mixture_target_log_prob(params, target, k)
            full = log_probs.gather(-1, target[:, None])[:, 0]
            assert torch.allclose(fast, full, rtol=1e-5, atol=1e-5)


def test_mixture_interval_masses_match_summed_bins() -> None:
    gen = torch.Generator().manual_seed(3)
    for scale in (0.1, 1.0, 4.0):
        params = torch.randn(300, 3 * 4, generator=gen) * scale
        for k in (2, 10, 256):
            probs = logistic_mixture_log_probs(params, k).double().exp()
            a, b = torch.randint(0, k, (2, 300, 3), generator=gen)
            low, high = torch.minimum(a, b), torch.maximum(a, b)
            fast = logistic_mixture_interval_log_probs(params, low, high, k).double().exp()
            cumulative = torch.cat([torch.zeros(300, 1, dtype=torch.float64), probs.cumsum(-1)], -1)
            summed = cumulative.gather(-1, high + 1) - cumulative.gather(-1, low)
            assert torch.allclose(fast, summed, atol=1e-5)


@pytest.mark.parametrize("head", ["logistic_mixture", "categorical"])
def test_head_interval_log_probs_match_summed_log_probs(head: str) -> None:
    gen = torch.Generator().manual_seed(0)
    net = build_net("tiny", 256, (1, 8, 8), head=head).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    x_in, known, t, _ = _inputs(3, (1, 8, 8), 256)
    a, b = torch.randint(0, 256, (2, 3, 1, 8, 8, 5), generator=gen)
    low, high = torch.minimum(a, b), torch.maximum(a, b)
    with torch.no_grad():
        params = net(x_in, known, t)
        probs = net.head.log_probs(params).double().exp()
        fast = net.head.interval_log_probs(params, low, high).double().exp()
        per_row = torch.stack(
            [net.head.interval_log_probs(p, lo, hi) for p, lo, hi in zip(params, low, high)]
        ).double().exp()
    cumulative = F.pad(probs.cumsum(-1), (1, 0))
    summed = cumulative.gather(-1, high + 1) - cumulative.gather(-1, low)
    assert fast.shape == (3, 1, 8, 8, 5)
    assert torch.allclose(fast, summed, atol=1e-5)
    assert torch.allclose(per_row, fast, atol=1e-6)


def test_heads() -> None:
    cat, mix = build_head("categorical", 10), build_head("logistic_mixture", 10, num_mixtures=3)
    assert isinstance(cat, CategoricalHead) and isinstance(mix, LogisticMixtureHead)
    assert (cat.params_per_var, mix.params_per_var) == (10, 9)
    params = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(cat.log_probs(params), torch.log_softmax(params, -1))
    with pytest.raises(ValueError, match="unknown head"):
        build_head("gaussian", 10)
    with pytest.raises(ValueError, match="mixture"):
        LogisticMixtureHead(10, 0)


def test_mixture_head_far_tails_are_finite() -> None:
    # A sharp component far from a bin: the exact log-mass formula keeps huge negative values finite.
    params = torch.tensor([[0.0, -0.99, -7.0]])  # one component, mean near bin 0, smallest scale
    log_probs = logistic_mixture_log_probs(params, 256)
    assert torch.isfinite(log_probs).all()
    assert float(log_probs[0, 255]) < -1000
    assert int(log_probs.argmax()) in (0, 1)


def test_mixture_chunking_is_invisible() -> None:
    params = torch.randn(300, 6)
    assert torch.equal(
        logistic_mixture_log_probs(params, 256), logistic_mixture_log_probs(params, 256, 1000)
    )


def test_split_mixture_params_errors() -> None:
    with pytest.raises(ValueError, match="3M"):
        split_mixture_params(torch.zeros(2, 5))


def test_presets_registry_and_paper_size() -> None:
    assert {"tiny", "small", "base", "paper"} <= set(UNET_PRESETS)
    paper = UNET_PRESETS["paper"]
    assert paper.channels == 256 and paper.num_res_blocks == 32 and paper.channel_mult == (1,)
    for name, cfg in UNET_PRESETS.items():
        assert UNetConfig.from_dict(cfg.to_dict()) == cfg, name


def test_small_preset_builds_at_28x28() -> None:
    net = build_net("small", 256, (1, 28, 28))
    assert 1e6 < sum(p.numel() for p in net.parameters()) < 1e7


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="head"):
        UNetConfig(head="gaussian")
    with pytest.raises(ValueError, match="divisible"):
        build_net("small", 256, (1, 30, 30))
    with pytest.raises(ValueError, match="unknown unet preset"):
        build_net("huge", 256, (1, 28, 28))
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        build_unet("huge", 256, (1, 28, 28))
    with pytest.raises(ValueError, match="num_classes"):
        build_net("tiny", 1, (1, 28, 28))
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        UNetConfig.from_dict({"width": 3})


def test_output_depends_on_known_values_and_t() -> None:
    net = build_net("tiny", 256, (1, 8, 8))
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x_in, known, t, _ = _inputs(1, (1, 8, 8), 256)
    with torch.no_grad():
        base = net(x_in, known, t)
        assert not torch.allclose(base, net(x_in, known, t + 5))
        x2 = x_in.clone()
        x2[known] = (x2[known] + 7) % 256
        assert not torch.allclose(base, net(x2, known, t))


def test_tiny_forward_is_cheap() -> None:
    # Work is counted, not timed (speed lives in benchmarks/bench_train.py): a batch of 2 at
    # 28x28 costs ~0.1 GFLOP.
    net = build_net("tiny", 256, (1, 28, 28)).eval()
    x_in, known, t, _ = _inputs(2, (1, 28, 28), 256)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x_in, known, t)
    assert counter.get_total_flops() < 0.2e9


# ---- the registry --------------------------------------------------------------------------------


def test_registry_builds_and_rebuilds_nets() -> None:
    assert set(NETS) == {"unet", "transformer", "dilated"} and set(NETS["unet"].presets) == set(UNET_PRESETS)
    net = build_net("tiny", 16, (1, 4, 4), head="categorical", channels=24)
    config = net_config(net)
    assert config["net"] == "unet" and config["net_config"]["channels"] == 24
    assert UNetConfig.from_dict(config["net_config"]) == net.config
    again = net_from_config(config, 16, (1, 4, 4))
    assert again.config == net.config and again.head.name == "categorical"
    assert [p.shape for p in again.parameters()] == [p.shape for p in net.parameters()]
    # A config object instead of a preset name, and the same net through build_unet.
    assert build_net(net.config, 16, (1, 4, 4)).config == net.config
    assert build_unet("tiny", 16, (1, 4, 4), head="categorical", channels=24).config == net.config


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_net("tiny", 16, (1, 4, 4), net="perceiver"), "unknown net"),
        (lambda: build_net("huge", 16, (1, 4, 4)), "unknown unet preset"),
        (lambda: build_net(3, 16, (1, 4, 4)), "preset"),
        (lambda: build_net("tiny", 16, (1, 4, 4), width=3), "no settings"),
        (lambda: build_unet("tiny", 16, (1, 4, 4), width=3), "no settings"),
        (lambda: build_net("tiny", 16, (1, 4, 4), head="gaussian"), "head"),
        (lambda: net_config(torch.nn.Linear(2, 2)), "not a registered net"),
        (lambda: net_from_config({"net": "perceiver", "net_config": {}}, 16, (1, 4, 4)),
         "net must be one of"),
        (lambda: net_from_config({"net": "unet"}, 16, (1, 4, 4)), "net_config"),
        (lambda: net_from_config({"net": "unet", "net_config": {"width": 3}}, 16, (1, 4, 4)),
         "does not have"),
        (lambda: net_from_config({"net": "unet", "net_config": {"channels": "x"}}, 16, (1, 4, 4)),
         "net_config"),
    ],
)
def test_registry_errors_are_value_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
