"""Image U-Net: shapes, heads, presets, configuration errors, speed of the test preset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ardm.nets import UNET_PRESETS, UNetConfig, build_net
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
        logits = net(x_in, known, t)
        target = net.target_log_probs(x_in, known, t, x)
    assert logits.shape == (2, *shape, 256) and logits.dtype == torch.float32
    assert target.shape == (2, *shape)
    assert torch.isfinite(logits).all()


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
def test_interval_log_probs_match_forward(head: str) -> None:
    torch.manual_seed(0)
    net = build_net("tiny", 256, (1, 8, 8), head=head).eval()
    x_in, known, t, _ = _inputs(3, (1, 8, 8), 256)
    a, b = torch.randint(0, 256, (2, 3, 1, 8, 8, 5))
    low, high = torch.minimum(a, b), torch.maximum(a, b)
    with torch.no_grad():
        probs = F.softmax(net(x_in, known, t).double(), dim=-1)
        fast = net.interval_log_probs(x_in, known, t, low, high).double().exp()
        per_row = net.interval_log_probs(x_in, known, t, low, high, per_row=True).double().exp()
    cumulative = F.pad(probs.cumsum(-1), (1, 0))
    summed = cumulative.gather(-1, high + 1) - cumulative.gather(-1, low)
    assert fast.shape == (3, 1, 8, 8, 5)
    assert torch.allclose(fast, summed, atol=1e-5)
    assert torch.allclose(per_row, fast, atol=1e-6)


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
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        build_net("huge", 256, (1, 28, 28))
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
