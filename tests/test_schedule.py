"""Policies and the step schedule (ardm.models.schedule) that every model kind walks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import MLPNet, TinyNet

from ardm import _core
from ardm.models import ARDM, OrderAgnosticARDM, Policy, StepSchedule, UpscaleARDM


def test_from_stages_accepts_every_spelling() -> None:
    want = Policy((np.array([0, 2, 3]),))
    for spelling in ([0, 2, 3], (0, 2, 3), np.array([0, 2, 3], np.int32), torch.tensor([0, 2, 3]),
                     [[0, 2, 3]], [np.array([0, 2, 3])], want):
        policy = Policy.from_stages(spelling, num_stages=1, num_vars=4)
        assert policy == want and hash(policy) == hash(want)
        assert policy.stages[0].dtype == np.int64
    two = Policy.from_stages([[0, 4], np.array([0])], num_stages=2, num_vars=6)
    assert len(two) == two.calls == 3 and [p.tolist() for p in two.stages] == [[0, 4], [0]]
    assert two != Policy.from_stages([[0, 4], [0, 1]], num_stages=2, num_vars=6)
    assert Policy.full(2, 3) == Policy.from_stages([[0, 1, 2]] * 2, num_stages=2, num_vars=3)


@pytest.mark.parametrize(
    "stages, num_stages",
    [
        (3, 1),  # not a list
        (None, 1),
        ("01", 1),
        ([], 1),  # no stage
        ([1, 2], 1),  # does not start at 0
        ([0, 2, 2], 1),  # not strictly increasing
        ([0, 3, 1], 1),
        ([0, 4], 1),  # a start step at D
        ([0, -1], 1),
        ([0.0, 1.0], 1),  # not integers
        ([True, False], 1),
        ([[0], [0]], 1),  # two stages for a one-stage model
        ([[0]], 2),  # one stage short
        ([[0], [1]], 2),  # the second stage does not start at 0
        ([[0], []], 2),  # an empty stage
        ([[0, 1], [[0]]], 2),  # a 2-D stage
    ],
)
def test_from_stages_rejects_bad_policies(stages, num_stages: int) -> None:
    with pytest.raises(ValueError):
        Policy.from_stages(stages, num_stages=num_stages, num_vars=4)


def test_one_stage_schedule_levels() -> None:
    # Order-agnostic: level 1 is unknown, 0 known; a step reveals ranks start..end-1.
    schedule = StepSchedule(Policy.from_stages([0, 1, 3], 1, 4), num_stages=1, num_vars=4)
    assert [(s.index, s.stage, s.start, s.end, s.level) for s in schedule] == [
        (0, 0, 0, 1, 1), (1, 0, 1, 3, 1), (2, 0, 3, 4, 1)
    ]
    ranks = torch.tensor([[2, 0, 3, 1], [0, 1, 2, 3]])
    levels = [schedule.levels_before(s, ranks).tolist() for s in schedule]
    assert levels == [
        [[1, 1, 1, 1], [1, 1, 1, 1]],
        [[1, 0, 1, 1], [0, 1, 1, 1]],
        [[0, 0, 1, 0], [0, 0, 0, 1]],
    ]
    steps = torch.stack([schedule.in_step(s, ranks) for s in schedule])
    assert torch.equal(steps.sum(0), torch.ones(2, 4, dtype=torch.long))  # each variable once
    assert schedule.in_step(schedule.steps[1], ranks)[0].tolist() == [True, False, False, True]


def test_upscale_schedule_levels() -> None:
    # Two stages: stage 0 takes every variable from level 2 to 1, stage 1 from 1 to 0.
    schedule = StepSchedule(Policy.from_stages([[0, 2], [0]], 2, 3), num_stages=2, num_vars=3)
    assert len(schedule) == 3 and [len(schedule.stage_steps(s)) for s in (0, 1)] == [2, 1]
    assert [(s.stage, s.start, s.end, s.level) for s in schedule] == [
        (0, 0, 2, 2), (0, 2, 3, 2), (1, 0, 3, 1)
    ]
    ranks = torch.tensor([[1, 2, 0]])
    assert [schedule.levels_before(s, ranks).tolist() for s in schedule] == [
        [[2, 2, 2]], [[1, 2, 1]], [[1, 1, 1]]
    ]
    # A rank of -1 (padding) counts as refined from the first step on.
    assert schedule.levels_before(schedule.steps[0], torch.tensor([[-1, 0, 1]])).tolist() == [
        [1, 2, 2]
    ]


def _oa() -> OrderAgnosticARDM:
    return OrderAgnosticARDM(MLPNet((2, 3), 5, seed=1), 5, (2, 3))


def _upscale() -> UpscaleARDM:
    return UpscaleARDM(TinyNet((2, 3), 10, 10, seed=2), 10, (2, 3), branch_factor=3)


@pytest.mark.parametrize(
    "make, policy", [(_oa, [0, 2, 3]), (_upscale, [[0, 4], [0], [0, 1, 3]])], ids=["oa", "upscale"]
)
def test_walking_the_schedule_codes_x_in_exact_nll_bits(make, policy) -> None:
    # What the codec does, kind-blind: coding_log_probs / next_symbols / apply_symbols step by
    # step reach x, and the code length is exact_nll_bits for the same order and policy.
    model: ARDM = make()
    x = torch.randint(0, model.num_classes, (3, 2, 3), generator=torch.Generator().manual_seed(0))
    order = torch.from_numpy(_core.random_order(model.num_vars, 5))
    schedule = StepSchedule(Policy.from_stages(policy, model.num_stages, model.num_vars),
                            model.num_stages, model.num_vars)
    ranks = model._check_order(order, 3)
    by_rank = ranks.argsort(1)
    flat = x.flatten(1)
    state = torch.zeros_like(flat)
    bits = torch.zeros(3, dtype=torch.float64)
    for step in schedule:
        positions = by_rank[:, step.start : step.end]
        lp = model.coding_log_probs(state, schedule.levels_before(step, ranks), positions)
        assert lp.shape == (3, step.end - step.start, model.symbols_per_step)
        symbols = model.next_symbols(flat.gather(1, positions), step.level)
        bits -= lp.double().gather(-1, symbols.unsqueeze(-1)).sum((1, 2)) / math.log(2)
        state = model.apply_symbols(state, step.level, positions, symbols)
    assert torch.equal(state, flat)
    assert torch.allclose(bits, model.exact_nll_bits(x, order, policy), atol=1e-4)
