"""Upscale ARDM (ardm.models.upscale): exactness, unbiasedness, sampling, masking, policies."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import MLPNet, RecordingNet, TableNet, TinyNet
from torch import nn

from ardm.models import OrderAgnosticARDM, UpscaleARDM
from ardm.models.transitions import coarse_values, digit_log_probs
from ardm.nets import build_net

K, B = 10, 3  # S = 3 stages; the top digit of 0..9 in base 3 is 0 or 1 only
SHAPE = (2, 3)  # D = 6
D = 6


def tiny_model(parametrization: str = "data", outputs: int = K, seed: int = 0) -> UpscaleARDM:
    net = TinyNet(SHAPE, K, outputs, seed)
    return UpscaleARDM(net, K, SHAPE, B, parametrization=parametrization)


def data(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, K, (n, *SHAPE), generator=torch.Generator().manual_seed(seed))


def all_orders() -> list[list[int]]:
    return [list(p) for p in itertools.permutations(range(D))]


def test_stages_and_budgets() -> None:
    model = tiny_model()
    assert (model.num_stages, model.num_steps, model.min_budget, model.max_budget) == (3, 18, 3, 18)
    assert model.step_losses.shape == model.stage_step_losses.shape == (3, D)
    assert model.symbols_per_step == B and model.kind == "upscale"
    assert [model.stage_level(s) for s in range(3)] == [3, 2, 1]


def test_context_free_data_parametrization_is_exact_for_any_order_and_policy() -> None:
    # The data parametrization's stage probabilities telescope: prod_s p(d_s | coarse) = p(x).
    net = TableNet(SHAPE, K, scale=2.0)
    model = UpscaleARDM(net, K, SHAPE, B)
    x = data(5)
    table = torch.log_softmax(net.table.detach().double(), -1).expand(x.shape[0], *SHAPE, K)
    want = -table.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    want = want.flatten(1).sum(1) / math.log(2)
    for order, policies in [
        (list(range(D)), None),
        ([5, 3, 1, 0, 2, 4], [[0], [0, 3], [0, 1, 5]]),
        ([2, 0, 1, 5, 4, 3], [[0, 2, 4], [0], [0]]),
    ]:
        got = model.exact_nll_bits(x, order, policies)
        assert torch.allclose(got, want, atol=1e-4)


def test_training_bound_is_unbiased() -> None:
    torch.manual_seed(0)
    model = tiny_model()
    x = data(1, seed=3)
    orders = torch.tensor(all_orders())  # every order at once: one row per order
    exact = float(model.exact_nll_bits(x.expand(len(orders), *SHAPE), orders).mean()) / D
    means = []
    with torch.no_grad():
        for i in range(16):
            _, stats = model.training_loss(x.expand(1000, *SHAPE), torch.Generator().manual_seed(i))
            means.append(float(stats["bpd"]))
    err = np.std(means) / math.sqrt(len(means))
    assert abs(np.mean(means) - exact) < 5 * err + 1e-6


def test_nll_estimate_over_every_step_is_exact_for_a_fixed_order() -> None:
    # Each of the S * D variable steps once: the estimate's mean is exactly -log2 p / D.
    model = tiny_model()
    x = data(1, seed=5)
    order, policies = [4, 1, 0, 5, 2, 3], [[0, 4], [0], [0, 1, 3]]
    total = model.num_stages * D
    est = model.nll_bpd(x.expand(total, *SHAPE), order=order, policy=policies,
                        step_index=torch.arange(total))
    exact = float(model.exact_nll_bits(x, order, policies)[0])
    assert float(est.double().mean()) * D == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("fixed_order", [False, True])
def test_nll_estimate_is_unbiased_for_a_parallel_policy(fixed_order: bool) -> None:
    model = tiny_model()
    x = data(1, seed=5)
    policies = [[0, 4], [0], [0, 1, 3]]
    if fixed_order:
        order = [4, 1, 0, 5, 2, 3]
        exact = float(model.exact_nll_bits(x, order, policies)[0]) / D
    else:
        order = None
        orders = torch.tensor(all_orders())
        bits = model.exact_nll_bits(x.expand(len(orders), *SHAPE), orders, policies)
        exact = float(bits.mean()) / D
    draws = [
        model.nll_bpd(
            x.expand(4000, *SHAPE),
            order=order,
            policy=policies,
            generator=torch.Generator().manual_seed(i),
        )
        for i in range(10)
    ]
    values = torch.cat(draws).double()
    err = float(values.std()) / math.sqrt(values.numel())
    assert abs(float(values.mean()) - exact) < 5 * err + 1e-6


def test_network_sees_coarse_values_and_the_refined_mask() -> None:
    rec = RecordingNet(TableNet(SHAPE, K))
    model = UpscaleARDM(rec, K, SHAPE, B)
    x = torch.tensor([[[9, 5, 4], [8, 0, 2]]])
    levels = torch.tensor([[2, 1, 2, 1, 1, 2]])  # stage 1 (level 2), three variables refined
    model.predict_digit_log_probs(x, levels)
    x_in, known, t = rec.inputs[-1]
    assert x_in.flatten().tolist() == [9, 3, 0, 6, 0, 0]  # coarse_2 or coarse_1 per variable
    assert known.flatten().tolist() == [False, True, False, True, True, False]
    assert t.tolist() == [D + 3]


def test_every_method_shows_the_net_only_coarse_values() -> None:
    # Each input the net sees is, per variable, the data at that variable's level: no finer digit.
    rec = RecordingNet(TinyNet(SHAPE, K, K))
    model = UpscaleARDM(rec, K, SHAPE, B)
    x = data(2, seed=9)
    order = list(range(D))[::-1]
    model.training_loss(x, torch.Generator().manual_seed(0))
    model.nll_bpd(x, generator=torch.Generator().manual_seed(1))
    model.nll_bpd(x, order=order, policy=[[0, 3], [0], [0, 1]])
    model.exact_nll_bits(x, order, [[0, 3], [0], [0, 1]])
    model.estimate_step_losses(x, batch_size=64)
    assert rec.calls == model.network_calls == 1 + 1 + 1 + 5 + 1
    flat = x.flatten(1)
    for x_in, known, t in rec.inputs:
        level = 3 - t // D  # the stage level; refined variables are one level finer
        levels = level.unsqueeze(1) - known.flatten(1).long()
        n = x_in.shape[0]  # the step-loss sweep (one evaluation a step) sees only the first item
        rows = torch.arange(n) if n == x.shape[0] else torch.zeros(n, dtype=torch.long)
        assert torch.equal(x_in.flatten(1), coarse_values(flat[rows], levels, B))


def test_coarsening_hides_finer_digits() -> None:
    model = tiny_model()
    x = data(3, seed=7)
    levels = torch.tensor([[3] * D, [2, 1, 2, 1, 2, 2], [1, 0, 0, 1, 1, 0]])
    # Replace every unknown low digit by another value with the same coarse value.
    other = coarse_values(x.flatten(1), levels, B) + (
        torch.randint(0, 27, x.flatten(1).shape) % (B**levels)
    )
    other = torch.minimum(other, torch.full_like(other, K - 1)).reshape(x.shape)
    assert torch.equal(
        coarse_values(other.flatten(1), levels, B), coarse_values(x.flatten(1), levels, B)
    )
    a = model.predict_digit_log_probs(x, levels)
    b = model.predict_digit_log_probs(other, levels)
    assert torch.equal(a, b)


@pytest.mark.parametrize("parametrization,outputs", [("data", K), ("direct", B), ("direct", K)])
def test_training_loss_backpropagates(parametrization: str, outputs: int) -> None:
    model = tiny_model(parametrization, outputs)
    loss, stats = model.training_loss(data(8), torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert float(stats["bpd"]) > 0


def test_digit_probabilities_sum_to_one_on_allowed_digits() -> None:
    for parametrization, outputs in [("data", K), ("direct", B)]:
        model = tiny_model(parametrization, outputs)
        x = torch.full((2, *SHAPE), 9)
        lp = model.predict_digit_log_probs(x, torch.full((2, D), 2))  # from 9: only digit 0
        assert torch.allclose(lp.exp()[..., 0], torch.ones(2, *SHAPE))
        lp = model.predict_digit_log_probs(data(2), torch.full((2, D), 3))  # top: digits 0, 1
        assert torch.all(lp[..., 2] == float("-inf"))
        assert torch.allclose(lp.exp().sum(-1), torch.ones(2, *SHAPE))


def test_sampling_makes_the_policy_calls_and_valid_values() -> None:
    rec = RecordingNet(TinyNet(SHAPE, K, K))
    model = UpscaleARDM(rec, K, SHAPE, B)
    x = model.sample(7, policy=[[0, 2], [0], [0, 1, 4]], generator=torch.Generator().manual_seed(0))
    assert rec.calls == model.network_calls == 6
    assert x.shape == (7, *SHAPE) and x.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < K
    before = rec.calls
    model.sample(2, generator=torch.Generator().manual_seed(0))
    assert rec.calls - before == 3 * D
    model.estimate_step_losses(data(8), generator=torch.Generator().manual_seed(0))
    for budget in (3, 5, 11):
        before = rec.calls
        model.sample(3, budget=budget, generator=torch.Generator().manual_seed(budget))
        assert rec.calls - before == model.policy(budget).calls <= budget


def test_context_free_sampling_follows_the_model() -> None:
    net = TableNet(SHAPE, K, seed=2, scale=2.0)
    model = UpscaleARDM(net, K, SHAPE, B)
    x = model.sample(6000, policy=[[0], [0, 3], [0]], generator=torch.Generator().manual_seed(0))
    freq = torch.stack([torch.bincount(v, minlength=K) for v in x.flatten(1).T]).double() / 6000
    probs = torch.softmax(net.table.detach().double().reshape(D, K), -1)
    assert float((freq - probs).abs().max()) < 0.03


def test_step_losses_and_policies() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="estimate_step_losses"):
        model.policy(5)
    losses = model.estimate_step_losses(data(4), evals_per_step=2)
    assert (
        losses.shape == (3, D) and bool(torch.isfinite(losses).all()) and bool((losses >= 0).all())
    )
    assert model.has_step_losses()
    for budget in range(3, 19):
        policy = model.policy(budget)
        assert len(policy.stages) == 3 and len(policy) == policy.calls <= budget
        assert all(p[0] == 0 and np.all(np.diff(p) > 0) for p in policy.stages)
    equal = model.plan(9, split="equal")
    assert equal.budgets.tolist() == [3, 3, 3]
    assert model.plan(9).cost <= equal.cost + 1e-9
    assert [len(p) for p in model.naive_policy(4).stages] == [2, 1, 1]
    assert [len(p) for p in model.policy(18).stages] == [D] * 3
    # An item of m < D variables: every stage plans on its last m step losses.
    short = model.policy(5, num_vars=4)
    assert len(short.stages) == 3 and short.calls <= 5 and max(p.max() for p in short.stages) < 4
    assert model.plan(5, num_vars=4).budgets.sum() == short.calls
    assert model.policy(12, num_vars=4) == type(short).full(3, 4)  # S * m calls: every step


def test_bad_inputs_raise_value_error() -> None:
    net = TinyNet(SHAPE, K, K)
    with pytest.raises(ValueError):
        UpscaleARDM(net, K, SHAPE, 1)
    with pytest.raises(ValueError):
        UpscaleARDM(net, 1, SHAPE, 2)
    with pytest.raises(ValueError):
        UpscaleARDM(net, K, SHAPE, B, parametrization="both")
    with pytest.raises(ValueError):
        UpscaleARDM(net, K, SHAPE, B, budget_split="random")
    model = UpscaleARDM(net, K, SHAPE, B)
    with pytest.raises(ValueError):
        model.training_loss(torch.zeros(2, 3, 2, dtype=torch.long))  # wrong shape
    with pytest.raises(ValueError):
        model.training_loss(torch.full((2, *SHAPE), K))  # out of range
    with pytest.raises(ValueError):
        model.policy(2)  # below one call per stage
    with pytest.raises(ValueError):
        model.exact_nll_bits(data(1), list(range(D)), [[0], [0]])  # one policy short
    with pytest.raises(ValueError):
        model.exact_nll_bits(data(1), list(range(D)), [[0], [1], [0]])  # must start at 0
    with pytest.raises(ValueError):
        model.predict_digit_log_probs(data(1), torch.full((1, D), 4))  # level above S
    with pytest.raises(ValueError):
        model.predict_digit_log_probs(data(1), torch.tensor([[3, 1, 3, 3, 3, 3]]))  # mixed stages
    with pytest.raises(ValueError):
        model.predict_digit_log_probs(data(1), torch.ones(1, D, dtype=torch.bool))
    with pytest.raises(ValueError, match="data parametrization"):
        UpscaleARDM(TinyNet(SHAPE, K, K - 1), K, SHAPE, B)  # a head over K - 1 values
    with pytest.raises(ValueError, match="at least b"):
        UpscaleARDM(TinyNet(SHAPE, K, 2), K, SHAPE, B, "direct")  # fewer than b outputs
    with pytest.raises(ValueError, match="categorical"):
        UpscaleARDM(build_net("tiny", K, (1, 4, 4)), K, (1, 4, 4), B, "direct")  # a mixture
    with pytest.raises(ValueError, match="head"):
        UpscaleARDM(nn.Linear(2, 2), K, SHAPE, B)  # no head at all


# ---- the data parametrization's interval path ---------------------------------------------------


class KWayHead:
    """Wraps a head: interval masses summed from all K log-probabilities (the K-way path)."""

    def __init__(self, head) -> None:  # type: ignore[no-untyped-def]
        self.inner = head
        self.name, self.num_classes = head.name, head.num_classes
        self.params_per_var = head.params_per_var

    def log_probs(self, params: torch.Tensor) -> torch.Tensor:
        return self.inner.log_probs(params)

    def target_log_probs(self, params: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner.log_probs(params).gather(-1, target.unsqueeze(-1)).squeeze(-1)

    def interval_log_probs(
        self, params: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> torch.Tensor:
        log_p = self.inner.log_probs(params).double().unsqueeze(-2)  # (..., 1, K)
        values = torch.arange(self.num_classes)
        inside = (values >= low.unsqueeze(-1)) & (values <= high.unsqueeze(-1))
        return torch.logsumexp(log_p.masked_fill(~inside, -math.inf), -1).float()

    adjacent_interval_log_probs = interval_log_probs


class KWayNet(nn.Module):
    """The same net with a :class:`KWayHead`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.head = KWayHead(net.head)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_in, known, t)


@pytest.mark.parametrize("k,b", [(256, 4), (256, 16), (10, 3)])
def test_interval_path_matches_the_k_way_data_parametrization(k: int, b: int) -> None:
    shape = (1, 4, 4)
    net = build_net("tiny", k, shape).eval()  # the logistic mixture head
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    fast = UpscaleARDM(net, k, shape, b)
    slow = UpscaleARDM(KWayNet(net), k, shape, b)
    x = torch.randint(0, k, (6, *shape), generator=gen)
    with torch.no_grad():
        for stage in range(fast.num_stages):
            t = stage * 16 + torch.randint(0, 16, (6,), generator=gen)
            levels, _, _ = fast._random_levels(t, gen)
            target = (fast._target_log_probs(x.flatten(1), levels),
                      slow._target_log_probs(x.flatten(1), levels))
            assert torch.allclose(*target, atol=1e-4)
            digits = (fast.predict_digit_log_probs(x, levels).exp(),
                      slow.predict_digit_log_probs(x, levels).exp())
            assert torch.allclose(*digits, atol=1e-5)
            assert torch.allclose(digits[0].sum(-1), torch.ones(6, *shape), atol=1e-5)
            # ... and both are the K-way digit probabilities of ardm.models.transitions.
            x_in, known, t_in, level = fast._net_inputs(x.flatten(1), levels)
            full = net.head.log_probs(net(x_in, known, t_in)).flatten(1, -2).double()
            coarse = coarse_values(x.flatten(1), level, b)
            want = digit_log_probs(full, coarse, level, b, k).exp()
            assert torch.allclose(digits[0].flatten(1, -2).double(), want, atol=1e-5)


# ---- one stage ------------------------------------------------------------------------------------


def test_one_stage_upscale_model_is_the_order_agnostic_model() -> None:
    # b >= K: one digit is the whole value, so around a net that reads only the known values
    # both kinds give the same likelihoods, training bound and step losses.
    net = MLPNet(SHAPE, K, seed=3)
    oa = OrderAgnosticARDM(net, K, SHAPE)
    up = UpscaleARDM(net, K, SHAPE, branch_factor=K)
    assert (up.num_stages, up.num_steps, up.max_budget) == (1, D, D) == (oa.num_stages, oa.num_steps, D)
    x = data(3, seed=4)
    order = [3, 0, 5, 1, 4, 2]
    for policy in (None, [0, 2, 3]):
        assert torch.allclose(
            up.exact_nll_bits(x, order, policy), oa.exact_nll_bits(x, order, policy), atol=1e-4
        )
        assert torch.allclose(
            up.nll_bpd(x, policy=policy, generator=torch.Generator().manual_seed(1)),
            oa.nll_bpd(x, policy=policy, generator=torch.Generator().manual_seed(1)),
            atol=1e-5,
        )
    with torch.no_grad():
        up_loss = up.training_loss(x, torch.Generator().manual_seed(2))[1]["bpd"]
        oa_loss = oa.training_loss(x, torch.Generator().manual_seed(2))[1]["bpd"]
    assert torch.allclose(up_loss, oa_loss, atol=1e-5)
    up_steps = up.estimate_step_losses(x, generator=torch.Generator().manual_seed(3))
    oa_steps = oa.estimate_step_losses(x, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(up_steps.flatten(), oa_steps, atol=1e-9)
    # The same plan, up to ties: losses equal to 1e-9 may break a tie of policies the other way.
    up_plan, oa_plan = up.plan(4), oa.plan(4)
    assert up_plan.cost == pytest.approx(oa_plan.cost, abs=1e-6)
    assert len(up_plan.policies[0]) == len(oa_plan.policies[0]) == 4
