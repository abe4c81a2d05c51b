"""Policies and the one step schedule that every ARDM computation walks.

An ARDM with S stages (S = 1 for an order-agnostic model, S = ceil(log_b K) for an upscale one)
generates its D variables S times over, once per stage, one policy step per network call. A
:class:`Policy` holds the start steps of every stage; a :class:`StepSchedule` lists the network
calls in the order they are made (stage 0's steps, then stage 1's, ...) and says, for every call,
what is known of each variable: its *level*.

Levels. Stage ``s`` takes every variable from level ``l = S - s`` to level ``l - 1``: level l means
"the l lowest base-b digits are unknown" (for an order-agnostic model, level 1 is unknown and level
0 is known). Before within-stage step ``start``, the variables of rank < start are at level l - 1
and the others at level l. A variable of rank -1 (padding of a short item) counts as already
refined from the first step on.

``sample``, ``exact_nll_bits``, ``nll_bpd``, the step-loss estimate and the codec all walk this
schedule (see :mod:`ardm.models.base`); none of them knows which kind of model it drives.

Example:
    >>> import numpy as np, torch
    >>> policy = Policy.from_stages([[0, 2], [0]], num_stages=2, num_vars=4)
    >>> schedule = StepSchedule(policy, num_stages=2, num_vars=4)
    >>> [(s.stage, s.start, s.end) for s in schedule.steps]
    [(0, 0, 2), (0, 2, 4), (1, 0, 4)]
    >>> ranks = torch.tensor([[3, 0, 1, 2]])
    >>> schedule.levels_before(schedule.steps[1], ranks).tolist()   # stage 0: level 2 -> 1
    [[2, 1, 1, 2]]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Policy", "Step", "StepSchedule"]


@dataclass(frozen=True)
class Policy:
    """The start steps of every stage's network calls: ``stages[s]`` is strictly increasing,
    starts at 0 and stays below the number of variables. ``len(policy)`` is the number of calls.

    Example:
        >>> p = Policy.from_stages([[0, 5, 9]], num_stages=1, num_vars=12)
        >>> len(p), p.stages[0].tolist()
        (3, [0, 5, 9])
    """

    stages: tuple[np.ndarray, ...]

    @property
    def calls(self) -> int:
        """Network calls of the policy: its steps summed over the stages."""
        return sum(len(p) for p in self.stages)

    def __len__(self) -> int:
        return self.calls

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy) or len(other.stages) != len(self.stages):
            return NotImplemented
        return all(np.array_equal(a, b) for a, b in zip(self.stages, other.stages))

    def __hash__(self) -> int:
        return hash(tuple(tuple(p.tolist()) for p in self.stages))

    @classmethod
    def from_stages(
        cls, stages: Policy | Sequence | np.ndarray, num_stages: int, num_vars: int
    ) -> Policy:
        """Validate ``stages`` (a Policy, one list of start steps per stage, or, for a one-stage
        model, a single list) and return it as a Policy."""
        if isinstance(stages, Policy):
            stages = list(stages.stages)
        else:
            try:
                stages = list(stages)
            except TypeError:
                raise ValueError(
                    f"a policy is a list of start steps per stage, got {type(stages).__name__}"
                ) from None
            # A one-stage model takes its single list of start steps as is (list, array, tensor).
            if num_stages == 1 and stages and all(np.ndim(p) == 0 for p in stages):
                stages = [stages]
        if len(stages) != num_stages:
            raise ValueError(f"need one policy per stage (S = {num_stages}), got {len(stages)}")
        checked = []
        for p in stages:
            arr = np.asarray(p)
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise ValueError("a policy is a 1-D list of integer start steps")
            arr = arr.astype(np.int64)
            if (
                not arr.size
                or arr[0] != 0
                or np.any(np.diff(arr) <= 0)
                or arr[-1] >= num_vars
            ):
                raise ValueError(
                    f"policy must be strictly increasing, start at 0 and stay below D={num_vars}"
                )
            checked.append(arr)
        return cls(tuple(checked))

    @classmethod
    def full(cls, num_stages: int, num_vars: int) -> Policy:
        """One call per variable and stage."""
        return cls(tuple(np.arange(num_vars, dtype=np.int64) for _ in range(num_stages)))


@dataclass(frozen=True)
class Step:
    """One network call: within-stage steps ``start .. end - 1`` of stage ``stage``, i.e. the
    variables of those ranks, which go from level ``level`` to ``level - 1``."""

    index: int
    stage: int
    start: int
    end: int
    level: int


class StepSchedule:
    """The network calls of ``policy`` in the order they are made (see the module docstring)."""

    def __init__(self, policy: Policy, num_stages: int, num_vars: int) -> None:
        policy = Policy.from_stages(policy, num_stages, num_vars)
        self.policy = policy
        self.num_stages = num_stages
        self.num_vars = num_vars
        steps = []
        for stage, starts in enumerate(policy.stages):
            bounds = starts.tolist() + [num_vars]
            for start, end in zip(bounds[:-1], bounds[1:]):
                steps.append(Step(len(steps), stage, start, end, num_stages - stage))
        self.steps: list[Step] = steps

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def stage_steps(self, stage: int) -> list[Step]:
        return [s for s in self.steps if s.stage == stage]

    @staticmethod
    def levels_before(step: Step, ranks: torch.Tensor) -> torch.Tensor:
        """Per-variable levels (B, D) before ``step``: ``level - 1`` for ranks < start."""
        return step.level - (ranks < step.start).long()

    @staticmethod
    def in_step(step: Step, ranks: torch.Tensor) -> torch.Tensor:
        """Bool (B, D): the variables that ``step`` generates."""
        return (ranks >= step.start) & (ranks < step.end)
