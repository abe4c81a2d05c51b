"""OrderAgnosticARDM: estimators against exact enumeration, sampling, masking, step losses."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import MLPNet, RecordingNet, StepMarkerNet, TableNet, perturbed_unet
from torch import nn

from ardm import _core
from ardm.models import OrderAgnosticARDM, UpscaleARDM
from ardm.models.timesteps import StratifiedSampler, TimestepSampler, UniformSampler, make_sampler
from ardm.nets import build_net

K = 3
SHAPE = (4,)
D = 4


class FixedSampler(TimestepSampler):
    def __init__(self, num_steps: int, t: torch.Tensor) -> None:
        super().__init__(num_steps)
        self.t = t

    def sample(self, batch_size, device="cpu", generator=None):  # type: ignore[no-untyped-def]
        return self.t.to(device), torch.ones(batch_size, device=device)


def ranks_of(orders: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(orders)
    ranks.scatter_(1, orders, torch.arange(orders.shape[1]).expand_as(orders).contiguous())
    return ranks


ALL_ORDERS = torch.tensor(list(itertools.permutations(range(D))))  # (24, 4)


def exact_order_average(model: OrderAgnosticARDM, x: torch.Tensor, policy=None) -> float:
    """E_sigma[-log2 p(x | sigma, policy)] by enumeration, x a single item (1, *SHAPE)."""
    bits = [float(model.exact_nll_bits(x, order, policy)[0]) for order in ALL_ORDERS]
    return sum(bits) / len(bits)


@pytest.fixture(params=["table", "mlp"])
def model(request: pytest.FixtureRequest) -> OrderAgnosticARDM:
    net = TableNet(SHAPE, K, seed=1) if request.param == "table" else MLPNet(SHAPE, K, seed=2)
    return OrderAgnosticARDM(net, K, SHAPE, ce_weight=0.0)


X_ITEMS = [torch.tensor([[0, 1, 2, 1]]), torch.tensor([[2, 2, 0, 1]])]


@pytest.mark.parametrize("x", X_ITEMS)
def test_training_loss_expectation_is_exact_nll(model: OrderAgnosticARDM, x: torch.Tensor) -> None:
    # Enumerate every (t, sigma): the mean of the Eq. 4 loss is E_sigma[-log p(x | sigma)].
    combos = [(t, o) for t in range(D) for o in range(len(ALL_ORDERS))]
    t = torch.tensor([c[0] for c in combos])
    ranks = ranks_of(ALL_ORDERS[[c[1] for c in combos]])
    model.timestep_sampler = FixedSampler(D, t)
    model.random_ranks = lambda batch, generator=None: ranks  # type: ignore[method-assign]
    _, stats = model.training_loss(x.expand(len(combos), -1))
    expected = exact_order_average(model, x) / D
    assert float(stats["bpd"]) == pytest.approx(expected, rel=1e-5)
    if isinstance(model.net, TableNet):
        # Context-free: every order gives the same likelihood, sum of per-position -log p.
        nll = -torch.log_softmax(model.net.table.detach(), -1).gather(1, x.T)[:, 0].sum() / math.log(2)
        assert float(stats["bpd"]) * D == pytest.approx(float(nll), rel=1e-5)


@pytest.mark.parametrize("policy", [[0, 1, 3], [0, 2], [0], [0, 1, 2, 3]])
def test_policy_estimator_fixed_order_matches_exact(model: OrderAgnosticARDM, policy) -> None:
    x = X_ITEMS[0]
    order = torch.tensor([2, 0, 3, 1])
    est = model.nll_bpd(x.expand(D, -1), order=order, policy=policy, step_index=torch.arange(D))
    exact = float(model.exact_nll_bits(x, order, policy)[0])
    assert float(est.mean()) * D == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("policy", [[0, 1, 3], [0, 2], None])
def test_policy_estimator_random_order_matches_exact(model: OrderAgnosticARDM, policy) -> None:
    x = X_ITEMS[1]
    combos = list(itertools.product(range(len(ALL_ORDERS)), range(D)))
    ranks = ranks_of(ALL_ORDERS[[c[0] for c in combos]])
    model.random_ranks = lambda batch, generator=None: ranks  # type: ignore[method-assign]
    est = model.nll_bpd(
        x.expand(len(combos), -1), policy=policy, step_index=torch.tensor([c[1] for c in combos])
    )
    assert float(est.double().mean()) * D == pytest.approx(exact_order_average(model, x, policy), rel=1e-5)


def test_nll_bpd_is_unbiased_monte_carlo() -> None:
    # The plain random estimator, no enumeration hooks: mean over many draws near the exact value.
    model = OrderAgnosticARDM(MLPNet(SHAPE, K, seed=3), K, SHAPE)
    x = X_ITEMS[0]
    est = model.nll_bpd(x.expand(20000, -1), generator=torch.Generator().manual_seed(0))
    exact = exact_order_average(model, x) / D
    stderr = float(est.std()) / math.sqrt(est.numel())
    assert abs(float(est.mean()) - exact) < 4 * stderr + 1e-6


@pytest.mark.parametrize("policy", [[0], [0, 3], [0, 1, 2, 9, 15], list(range(16))])
def test_sample_calls_and_fills_each_variable_once(policy: list[int]) -> None:
    shape = (1, 4, 4)
    net = StepMarkerNet(16, absorbing=16)
    model = OrderAgnosticARDM(net, 16, shape)
    order = torch.from_numpy(np.random.default_rng(0).permutation(16))
    x = model.sample(3, policy=policy, order=order)
    assert net.calls == model.network_calls == len(policy)
    bounds = policy + [16]
    flat = x.flatten(1)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        assert bool((flat[:, order[lo:hi]] == i).all())  # filled at its own step, never again


def test_sample_random_orders_and_temperature() -> None:
    model = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4))
    gen = torch.Generator().manual_seed(0)
    x = model.sample(5, generator=gen, temperature=0.5, policy=[0, 4, 8])
    assert x.shape == (5, 1, 4, 4) and x.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < 4
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, temperature=0.0)
    with pytest.raises(ValueError, match="step losses"):
        model.sample(1, budget=2)


def test_masks_never_leak_into_predictions() -> None:
    shape = (1, 4, 4)
    model = OrderAgnosticARDM(perturbed_unet(8, shape), 8, shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 8, (3, *shape), generator=gen)
    known = torch.rand(3, *shape, generator=gen) < 0.5
    other = torch.where(known, x, torch.randint(0, 8, x.shape, generator=gen))
    assert not torch.equal(other, x)
    a, b = model.predict_log_probs(x, known), model.predict_log_probs(other, known)
    c = model.predict_log_probs(x, known.logical_not())
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # the network does depend on the known values
    assert torch.allclose(a.exp().sum(-1), torch.ones(3, *shape), atol=1e-5)  # normalized
    positions = torch.tensor([[0, 5], [15, 1], [3, 3]])
    picked = model.predict_log_probs(x, known, positions)
    assert picked.shape == (3, 2, 8)
    flat = a.flatten(1, -2)
    assert torch.allclose(picked, flat.gather(1, positions[..., None].expand(-1, -1, 8)))


def test_every_method_masks_its_inputs() -> None:
    shape = (1, 4, 4)
    rec = RecordingNet(perturbed_unet(8, shape), absorbing=8)
    model = OrderAgnosticARDM(rec, 8, shape)
    x = torch.randint(0, 8, (2, *shape), generator=torch.Generator().manual_seed(1))
    order = np.random.default_rng(0).permutation(16)
    model.training_loss(x)
    model.nll_bpd(x)
    model.nll_bpd(x, order=order, policy=[0, 5])
    model.exact_nll_bits(x, order, [0, 7, 11])
    model.sample(2, policy=[0, 8])
    model.estimate_step_losses(x, batch_size=8)
    model.predict_log_probs(x, torch.rand(2, *shape) < 0.5)
    levels = torch.randint(0, 2, (2, 16))
    model.coding_log_probs(x.flatten(1), levels, torch.tensor([[0, 1], [2, 3]]))
    assert rec.calls == model.network_calls == 1 + 1 + 1 + 3 + 2 + 2 + 1 + 1


@pytest.mark.parametrize("head", ["logistic_mixture", "categorical"])
def test_fast_target_path_matches_full_log_probs(head: str) -> None:
    shape = (1, 4, 4)
    model = OrderAgnosticARDM(perturbed_unet(256, shape, std=0.1, head=head), 256, shape)
    x = torch.randint(0, 256, (2, *shape))
    known = torch.rand(2, *shape) < 0.3
    with torch.no_grad():
        fast = model._target_log_probs(x.flatten(1), (~known).long().flatten(1))
    full = model.predict_log_probs(x, known).flatten(1, -2)
    want = full.gather(-1, x.flatten(1).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(fast, want, atol=1e-4)


def test_estimate_step_losses_uniform_table_is_log2_k() -> None:
    net = TableNet(SHAPE, K)
    with torch.no_grad():
        net.table.zero_()
    model = OrderAgnosticARDM(net, K, SHAPE)
    assert not model.has_step_losses()
    losses = model.estimate_step_losses(torch.tensor([[0, 1, 2, 0], [1, 1, 1, 1]]), evals_per_step=3)
    assert losses.dtype == torch.float64 and losses.shape == (D,)
    assert torch.allclose(losses, torch.full((D,), math.log2(K), dtype=torch.float64))
    assert model.has_step_losses() and torch.equal(model.step_losses, losses)


def test_estimate_step_losses_sum_estimates_nll() -> None:
    # sum_t L_t is the expected full-model NLL (E over orders), here of a context-free net.
    net = TableNet(SHAPE, K, seed=5)
    model = OrderAgnosticARDM(net, K, SHAPE)
    x = X_ITEMS[0]
    model.estimate_step_losses(x, evals_per_step=2000, batch_size=4096,
                               generator=torch.Generator().manual_seed(0))
    assert float(model.step_losses.sum()) == pytest.approx(exact_order_average(model, x), rel=0.02)


def test_step_losses_are_paired_over_steps_and_fitted_non_increasing() -> None:
    # Every step of evaluation round r sees the same item (evenly spaced over the data), and the
    # stored losses cannot rise with t, however noisy a few evaluations are.
    rec = RecordingNet(MLPNet((16,), 5, seed=3))
    model = OrderAgnosticARDM(rec, 5, (16,))
    x = torch.randint(0, 5, (6, 16), generator=torch.Generator().manual_seed(0))
    losses = model.estimate_step_losses(x, evals_per_step=3, batch_size=16)
    assert torch.all(losses[1:] <= losses[:-1] + 1e-12)
    seen = torch.cat([x_in for x_in, _, _ in rec.inputs])  # 16 steps x 3 rounds, in order
    known = torch.cat([k for _, k, _ in rec.inputs]).flatten(1)
    for r, item in enumerate([0, 2, 4]):
        rows = slice(16 * r, 16 * (r + 1))
        assert torch.equal(seen[rows][known[rows]], x[item].expand(16, -1)[known[rows]])


def test_policy_full_budget_and_errors() -> None:
    model = OrderAgnosticARDM(TableNet(SHAPE, K), K, SHAPE)
    assert (model.num_stages, model.num_steps, model.min_budget, model.max_budget) == (1, D, 1, D)
    assert model.symbols_per_step == K and model.stage_step_losses.shape == (1, D)
    assert model.policy().stages[0].tolist() == [0, 1, 2, 3]
    assert model.policy(10).stages[0].tolist() == [0, 1, 2, 3] and model.policy(10).calls == D
    with pytest.raises(ValueError, match="estimate_step_losses"):
        model.policy(2)
    with pytest.raises(ValueError, match="budget"):
        model.policy(0)
    with pytest.raises(ValueError, match="integer"):
        model.policy(10.5)  # even a float above D is an error, not the full policy
    with pytest.raises(ValueError, match="num_vars"):
        model.policy(2, num_vars=0)


def test_policy_uses_core_dp_on_sorted_losses() -> None:
    model = OrderAgnosticARDM(TableNet((8,), K), K, (8,))
    model.step_losses.copy_(torch.tensor([3.0, 2.0, 2.5, 1.0, 0.5, 0.7, 0.2, 0.1], dtype=torch.float64))
    sorted_losses = np.sort(model.step_losses.numpy())[::-1].copy()
    for budget in (1, 2, 3, 5):
        policy = model.policy(budget)
        steps = policy.stages[0]
        assert len(policy.stages) == 1 and len(policy) == policy.calls <= budget
        assert steps[0] == 0 and np.all(np.diff(steps) > 0)
        assert np.array_equal(steps, _core.optimal_policy(sorted_losses, budget))
    naive = model.naive_policy(4)
    assert naive.calls == 4 and naive.stages[0].tolist() == _core.naive_policy(8, 4).tolist()


def test_policy_for_fewer_variables_uses_the_last_steps() -> None:
    # An item of m < D variables (the rest padding, known from the start) plans on L_{D-m..D-1}.
    model = OrderAgnosticARDM(TableNet((8,), K), K, (8,))
    losses = torch.tensor([9.0, 8.0, 3.0, 2.0, 2.5, 1.0, 0.5, 0.1], dtype=torch.float64)
    model.step_losses.copy_(losses)
    tail = np.sort(losses.numpy()[3:])[::-1].copy()
    for budget in (1, 2, 4):
        policy = model.policy(budget, num_vars=5)
        assert np.array_equal(policy.stages[0], _core.optimal_policy(tail, budget))
        assert policy.stages[0].max() < 5
        assert model.plan(budget, num_vars=5).cost == pytest.approx(
            _core.policy_cost(tail, policy.stages[0])
        )
    assert model.policy(5, num_vars=5).stages[0].tolist() == [0, 1, 2, 3, 4]  # every step
    with pytest.raises(ValueError, match="num_vars"):
        model.policy(3, num_vars=9)


def test_input_validation() -> None:
    model = OrderAgnosticARDM(TableNet(SHAPE, K), K, SHAPE)
    x = torch.tensor([[0, 1, 2, 1]])
    with pytest.raises(ValueError, match="shape"):
        model.training_loss(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model.training_loss(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="values"):
        model.training_loss(torch.tensor([[0, 1, 3, 0]]))
    with pytest.raises(ValueError, match="bool"):
        model.predict_log_probs(x, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="permutation"):
        model.exact_nll_bits(x, [0, 0, 1, 2])
    with pytest.raises(ValueError, match="shape"):
        model.exact_nll_bits(x, [0, 1, 2])
    with pytest.raises(ValueError, match="policy"):
        model.exact_nll_bits(x, [0, 1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="policy"):
        model.nll_bpd(x, policy=[0, 2, 2])
    with pytest.raises(ValueError, match="step_index"):
        model.nll_bpd(x, policy=[0, 2], step_index=torch.tensor([D]))
    with pytest.raises(ValueError, match="policy"):
        model.sample(1, policy=3)
    with pytest.raises(ValueError, match="num_classes"):
        OrderAgnosticARDM(TableNet(SHAPE, 1), 1, SHAPE)
    with pytest.raises(ValueError, match="head"):
        OrderAgnosticARDM(nn.Linear(4, 4), K, SHAPE)  # no output head
    with pytest.raises(ValueError, match="classes"):
        OrderAgnosticARDM(TableNet(SHAPE, K + 1), K, SHAPE)  # a head over K + 1 values


def test_timestep_samplers() -> None:
    gen = torch.Generator().manual_seed(0)
    t, w = StratifiedSampler(100).sample(10, generator=gen)
    assert sorted(int(v) // 10 for v in t) == list(range(10))  # one per stratum
    assert torch.equal(w, torch.ones(10))
    t, _ = UniformSampler(7).sample(1000, generator=gen)
    assert int(t.min()) == 0 and int(t.max()) == 6
    # Stratified t is marginally uniform: item 0's t over many draws covers the range evenly.
    first = torch.stack([StratifiedSampler(4).sample(3, generator=gen)[0][0] for _ in range(4000)])
    counts = torch.bincount(first, minlength=4).float() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)
    with pytest.raises(ValueError, match="unknown timestep sampler"):
        make_sampler("cosine", 5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"evals_per_step": 0}, ">= 1"),
        ({"batch_size": 0}, ">= 1"),
        ({"data": torch.zeros(0, 1, 4, 4, dtype=torch.long)}, "at least one data point"),
    ],
)
def test_step_loss_estimation_rejects_bad_arguments(kwargs, message) -> None:
    models = [
        OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4)),
        UpscaleARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4), 2),
    ]
    for model in models:
        args = {"data": torch.zeros(2, 1, 4, 4, dtype=torch.long), **kwargs}
        with pytest.raises(ValueError, match=message):
            model.estimate_step_losses(**args)
        assert torch.isnan(model.step_losses).all()  # nothing was stored
