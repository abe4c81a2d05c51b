"""Upscale ARDM (ardm.upscale): exactness, unbiasedness, sampling, policies and coding."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from ardm import _core
from ardm import upscale as up
from ardm.transitions import coarse_values
from ardm.upscale import UpscaleARDM, upscale_schedule

K, B = 10, 3  # S = 3 stages; the top digit of 0..9 in base 3 is 0 or 1 only
SHAPE = (2, 3)  # D = 6
D = 6


class ContextFreeNet(nn.Module):
    """Logits that ignore the input: a fixed table per variable."""

    def __init__(self, shape: tuple[int, ...], outputs: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.table = nn.Parameter(torch.randn(*shape, outputs, generator=gen) * 2)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.table.expand(x_in.shape[0], *self.table.shape)


class TinyNet(nn.Module):
    """A small net whose output depends on the inputs and on t (so orders and stages matter)."""

    def __init__(self, shape: tuple[int, ...], outputs: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        d = int(np.prod(shape))
        self.shape = shape
        self.bias = nn.Parameter(torch.randn(d, outputs, generator=gen))
        self.mix = nn.Parameter(torch.randn(d, outputs, generator=gen))
        self.own = nn.Parameter(torch.randn(outputs, generator=gen))
        self.time = nn.Parameter(torch.randn(outputs, generator=gen))
        self.refined = nn.Parameter(torch.randn(outputs, generator=gen))
        self.calls = 0

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        batch = x_in.shape[0]
        # known: refined in this stage; exactly t mod D of them (the within-stage step).
        assert known.dtype == torch.bool and known.shape == x_in.shape
        assert torch.equal(known.flatten(1).sum(1), t % D)
        x = x_in.reshape(batch, -1).float() / K
        out = (
            self.bias
            + self.mix * x.mean(1).view(-1, 1, 1) * 3
            + self.own * x.unsqueeze(-1) * 2
            + self.time * (t.float() / 18).view(-1, 1, 1)
            + self.refined * known.reshape(batch, -1, 1).float()
        )
        return out.reshape(batch, *self.shape, -1)


def tiny_model(parametrization: str = "data", outputs: int = K, seed: int = 0) -> UpscaleARDM:
    return UpscaleARDM(TinyNet(SHAPE, outputs, seed), K, SHAPE, B, parametrization=parametrization)


def data(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, K, (n, *SHAPE), generator=torch.Generator().manual_seed(seed))


def all_orders() -> list[list[int]]:
    return [list(p) for p in itertools.permutations(range(D))]


def test_stages_and_budgets() -> None:
    model = tiny_model()
    assert (model.num_stages, model.num_steps, model.min_budget, model.max_budget) == (3, 18, 3, 18)
    assert model.step_losses.shape == (3, D)


def test_context_free_data_parametrization_is_exact_for_any_order_and_policy() -> None:
    # The data parametrization's stage probabilities telescope: prod_s p(d_s | coarse) = p(x).
    net = ContextFreeNet(SHAPE, K)
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
            policies=policies,
            generator=torch.Generator().manual_seed(i),
        )
        for i in range(10)
    ]
    values = torch.cat(draws).double()
    err = float(values.std()) / math.sqrt(values.numel())
    assert abs(float(values.mean()) - exact) < 5 * err + 1e-6


def test_network_sees_coarse_values_and_the_refined_mask() -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    class Spy(ContextFreeNet):
        def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen.append((x_in.clone(), known.clone(), t.clone()))
            return super().forward(x_in, known, t)

    model = UpscaleARDM(Spy(SHAPE, K), K, SHAPE, B)
    x = torch.tensor([[[9, 5, 4], [8, 0, 2]]])
    levels = torch.tensor([[2, 1, 2, 1, 1, 2]])  # stage 1 (level 2), three variables refined
    model.predict_digit_log_probs(x, levels)
    x_in, known, t = seen[-1]
    assert x_in.flatten().tolist() == [9, 3, 0, 6, 0, 0]  # coarse_2 or coarse_1 per variable
    assert known.flatten().tolist() == [False, True, False, True, True, False]
    assert t.tolist() == [D + 3]


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
    model = tiny_model()
    policies = [[0, 2], [0], [0, 1, 4]]
    model.net.calls = 0
    x = model.sample(7, policies=policies, generator=torch.Generator().manual_seed(0))
    assert model.net.calls == 6
    assert x.shape == (7, *SHAPE) and x.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < K
    model.net.calls = 0
    model.sample(2, generator=torch.Generator().manual_seed(0))
    assert model.net.calls == 3 * D
    model.estimate_step_losses(data(8), generator=torch.Generator().manual_seed(0))
    for budget in (3, 5, 11):
        model.net.calls = 0
        model.sample(3, budget=budget, generator=torch.Generator().manual_seed(budget))
        assert model.net.calls == sum(len(p) for p in model.policy(budget)) <= budget


def test_context_free_sampling_follows_the_model() -> None:
    net = ContextFreeNet(SHAPE, K, seed=2)
    model = UpscaleARDM(net, K, SHAPE, B)
    x = model.sample(6000, policies=[[0], [0, 3], [0]], generator=torch.Generator().manual_seed(0))
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
        policies = model.policy(budget)
        assert len(policies) == 3 and sum(len(p) for p in policies) <= budget
        assert all(p[0] == 0 and np.all(np.diff(p) > 0) for p in policies)
    equal = model.plan(9, split="equal")
    assert equal.budgets.tolist() == [3, 3, 3]
    assert model.plan(9).cost <= equal.cost + 1e-9
    assert [len(p) for p in model.naive_policy(4)] == [2, 1, 1]
    assert [len(p) for p in model.policy(18)] == [D] * 3


def test_bad_inputs_raise_value_error() -> None:
    net = TinyNet(SHAPE, K)
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
    with pytest.raises(ValueError):
        UpscaleARDM(TinyNet(SHAPE, K - 1), K, SHAPE, B).training_loss(data(2))
    with pytest.raises(ValueError):
        UpscaleARDM(TinyNet(SHAPE, 2), K, SHAPE, B, "direct").training_loss(data(2))


# ---- coding schedule ------------------------------------------------------------------------


def coded_model() -> UpscaleARDM:
    model = tiny_model(seed=4)
    model.estimate_step_losses(data(8), generator=torch.Generator().manual_seed(0))
    return model


@pytest.mark.parametrize("budget", [3, 4, 6])
def test_schedule_decodes_and_batches_like_the_codec(budget: int) -> None:
    from ardm.codec import _padded_positions
    from ardm.deterministic import evaluate_in_fixed_chunks

    model = coded_model()
    schedule = upscale_schedule(model, budget, order_seed=7)
    x = data(5, seed=11).flatten(1)
    covered = np.concatenate([schedule.positions(j) for j in range(schedule.num_steps)])
    assert sorted(covered.tolist()) == sorted(list(range(D)) * 3)  # every variable once per stage

    # Encoder side: rows of every step in one batch, as codec.compress builds them.
    steps = schedule.num_steps
    step_of_row = np.repeat(np.arange(steps), x.shape[0])
    states = torch.cat([schedule.state_before(x, s) for s in range(steps)])
    known = torch.stack([schedule.known(s) for s in range(steps)])[step_of_row]
    positions = _padded_positions(schedule)
    encoded = np.concatenate(
        [
            out
            for _, out in evaluate_in_fixed_chunks(
                schedule.logits, states, known, positions[step_of_row]
            )
        ]
    )

    # Decoder side: one step at a time from the initial state, items one by one.
    for item in range(x.shape[0]):
        state = schedule.initial_state(1)
        for step in range(steps):
            k = schedule.known(step).expand(1, -1)
            p = positions[step].expand(1, -1)
            out = np.concatenate(
                [o for _, o in evaluate_in_fixed_chunks(schedule.logits, state, k, p)]
            )
            assert np.array_equal(out[0], encoded[step * x.shape[0] + item])  # bit for bit
            assert out.shape == (1, positions.shape[1], B) and np.all(np.isfinite(out))
            symbols = schedule.symbols(x[item : item + 1], step)
            assert symbols.dtype == np.int64 and symbols.min() >= 0 and symbols.max() < B
            assert torch.equal(state, schedule.state_before(x[item : item + 1], step))
            # The coded digit is always allowed (its log-probability is a real one).
            count = len(schedule.positions(step))
            assert np.all(out[0, np.arange(count), symbols[0]] > up.IMPOSSIBLE_LOG_PROB)
            state = schedule.apply(state, step, symbols)
        assert torch.equal(state, x[item : item + 1])


def test_schedule_bits_match_exact_nll() -> None:
    model = coded_model()
    budget = 5
    schedule = upscale_schedule(model, budget, order_seed=3)
    x = data(3, seed=2).flatten(1)
    bits = np.zeros(x.shape[0])
    for step in range(schedule.num_steps):
        known = schedule.known(step).expand(x.shape[0], -1)
        pos = torch.from_numpy(schedule.positions(step)).expand(x.shape[0], -1)
        logits = schedule.logits(schedule.state_before(x, step), known, pos)
        out = torch.log_softmax(logits.double(), -1)
        symbols = torch.from_numpy(schedule.symbols(x, step))
        bits -= out.gather(-1, symbols.unsqueeze(-1)).squeeze(-1).sum(1).numpy() / math.log(2)
    order = _core.random_order(D, 3)
    want = model.exact_nll_bits(x.reshape(-1, *SHAPE), order, model.policy(budget)).numpy()
    assert np.allclose(bits, want, atol=1e-3)


def test_schedule_rejects_a_budget_below_the_stage_count() -> None:
    with pytest.raises(ValueError):
        upscale_schedule(coded_model(), 2, order_seed=0)


needs_coder = pytest.mark.skipif(
    not hasattr(_core, "AnsCoderBatch"), reason="the rANS coder is not built into ardm._core"
)


@needs_coder
@pytest.mark.parametrize("budget", [3, 4, 6])
def test_compression_round_trip(budget: int) -> None:
    from ardm import codec, container

    model = coded_model()
    x = data(9, seed=budget).to(torch.uint8)
    blob = codec.compress(x, model, budget=budget)
    assert container.unpack(blob).kind == container.KIND_UPSCALE
    assert torch.equal(codec.decompress(blob, model), x)
    # Each item alone gives the same stream as inside the batch, and decodes alone.
    streams = container.unpack(blob).streams
    for i in (0, 8):
        single = codec.compress(x[i], model, budget=budget)
        assert container.unpack(single).streams == [streams[i]]
        assert torch.equal(codec.decompress(single, model), x[i])


class ForwardOnly(nn.Module):
    """Hides a network's ``interval_log_probs``, forcing the K-way data parametrization path."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_in, known, t)


@pytest.mark.parametrize("k,b", [(256, 4), (256, 16), (10, 3)])
def test_interval_path_matches_the_k_way_data_parametrization(k: int, b: int) -> None:
    from ardm.nets import build_net

    torch.manual_seed(0)
    shape = (1, 4, 4)
    net = build_net("tiny", k, shape).eval()
    fast = UpscaleARDM(net, k, shape, b)
    slow = UpscaleARDM(ForwardOnly(net), k, shape, b)
    assert fast._interval_net() is not None and slow._interval_net() is None
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, k, (6, *shape), generator=gen)
    with torch.no_grad():
        for stage in range(fast.num_stages):
            level = torch.full((6,), fast.stage_level(stage))
            ranks = fast.random_ranks(6, gen)
            levels = fast._levels(ranks, torch.randint(0, 16, (6,), generator=gen), level)
            target = (fast._target_log_probs(x.flatten(1), levels, level),
                      slow._target_log_probs(x.flatten(1), levels, level))
            assert torch.allclose(*target, atol=1e-4)
            digits = (fast.predict_digit_log_probs(x, levels).exp(),
                      slow.predict_digit_log_probs(x, levels).exp())
            assert torch.allclose(*digits, atol=1e-5)
            assert torch.allclose(digits[0].sum(-1), torch.ones(6, *shape), atol=1e-5)
