"""``TrainConfig``: everything a training run depends on (saved in ``config.json``).

A run names a modality (how the data becomes items), a dataset of it, a model kind and a net
from the registry with a preset; nothing here knows a data shape or a class count.

Example:
    >>> TrainConfig(out="runs/x", preset="tiny").net
    'unet'
    >>> TrainConfig(out="runs/x", net="nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown net 'nope'; choose one of ['dilated', 'transformer', 'unet']
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ardm.modalities import MODALITIES, modality_for_data
from ardm.models import MODEL_KINDS, PARAMETRIZATIONS
from ardm.models.stage_budget import SPLITS
from ardm.models.timesteps import make_sampler
from ardm.nets import HEADS, NETS

__all__ = [
    "TrainConfig", "FIXED_ON_RESUME", "LR_SCHEDULES", "MAX_CATEGORICAL_LOGITS", "PRECISIONS",
]

#: constant after warm-up, or cosine decay to a tenth of ``lr`` at ``steps``.
LR_SCHEDULES = ("constant", "cosine")
#: auto: bf16 autocast on CUDA, fp32 on a CPU (bf16 there is asked for by name).
PRECISIONS = ("auto", "bf16", "fp32")
#: The most logits per variable a categorical head may have; more take gigabytes a batch.
MAX_CATEGORICAL_LOGITS = 4096
#: Seeds are combined with steps and epochs into torch generator seeds (64-bit).
MAX_SEED = 2**32 - 1


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in ``config.json`` under ``"train"``)."""

    out: str
    modality: str | None = None
    data: str | None = None
    model: str | None = None
    net: str | None = None
    branch_factor: int | None = None
    parametrization: str = "data"
    budget_split: str = "optimal"
    preset: str = "small"
    head: str | None = None
    steps: int = 20000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema: float = 0.999
    ce_weight: float | None = None
    timestep_sampler: str = "stratified"
    eval_every: int = 1000
    eval_size: int = 500
    ckpt_every: int = 500
    holdout: int = 1000
    step_loss_evals: int = 16
    seed: int = 0
    init: str | None = None
    resume: bool = False
    device: str = "cpu"
    precision: str = "auto"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.modality is None:  # a named dataset's, a path's by its files, else images
            found = modality_for_data(self.data) if self.data is not None else None
            self.modality = found.name if found is not None else "image"
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; choose one of {sorted(MODALITIES)}")
        modality = MODALITIES[self.modality]
        if self.data is None:
            self.data = modality.default_dataset
        if self.net is None:
            self.net = modality.default_net
        if self.model is None:
            self.model = modality.default_model
        if self.branch_factor is None:
            self.branch_factor = modality.default_branch_factor
        if self.ce_weight is None:
            self.ce_weight = modality.default_ce_weight
        if self.model not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {list(MODEL_KINDS)}")
        if self.net not in NETS:
            raise ValueError(f"unknown net {self.net!r}; choose one of {sorted(NETS)}")
        if self.head is not None and self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {list(HEADS)}")
        if self.branch_factor < 2:
            raise ValueError(f"branch_factor must be >= 2, got {self.branch_factor}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"unknown parametrization {self.parametrization!r}; "
                f"choose one of {list(PARAMETRIZATIONS)}"
            )
        if self.budget_split not in SPLITS:
            raise ValueError(
                f"unknown budget split {self.budget_split!r}; choose one of {list(SPLITS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        make_sampler(self.timestep_sampler, 1)  # an unknown name is a ValueError here
        presets = NETS[self.net].presets
        if self.preset not in presets:
            raise ValueError(
                f"unknown {self.net} preset {self.preset!r}; choose one of {sorted(presets)}"
            )
        self._check_numbers()
        self._check_head_size()

    def _check_numbers(self) -> None:
        """Every numeric setting in its range (NaN is in none): a ``ValueError`` names it."""
        positive = ("steps", "batch_size", "eval_every", "ckpt_every", "step_loss_evals")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_size < 1:  # 0 would train without a test bpd and report it as nan
            raise ValueError(
                f"eval_size must be >= 1 (the test items the test bpd is estimated on; a few "
                f"make it quick), got {self.eval_size}"
            )
        for name in ("warmup", "holdout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.lr < math.inf:
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be >= 0 (0: none), got {self.weight_decay}")
        # clip_grad_norm_ with a bound <= 0 zeroes or flips the gradients; inf clips nothing.
        if not self.grad_clip > 0.0:
            raise ValueError(
                f"grad_clip must be > 0 (the largest gradient norm; inf: no clipping), got "
                f"{self.grad_clip}"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 <= self.ce_weight < math.inf:
            raise ValueError(f"ce_weight must be >= 0, got {self.ce_weight}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")

    def _check_head_size(self) -> None:
        """Refuse a categorical head with so many logits per variable that a batch's logits take
        gigabytes (a categorical head over audio's K = 65,536 values). The head and its logits
        are those :func:`ardm.training.loop.build_for_training` builds."""
        if self.parametrization == "direct" and self.model != "upscale":
            raise ValueError(
                f"parametrization 'direct' is for --model upscale (it predicts each stage's b "
                f"digits); --model {self.model} predicts the values themselves"
            )
        overrides = self.net_overrides()
        if overrides.get("head", NETS[self.net].presets[self.preset].head) != "categorical":
            return
        num_classes = MODALITIES[self.modality].num_classes
        if "head_classes" in overrides:
            if self.branch_factor > MAX_CATEGORICAL_LOGITS:
                raise ValueError(
                    f"a categorical head with b = {self.branch_factor:,} logits per variable "
                    f"(--parametrization direct) takes gigabytes a batch; use a branch factor of "
                    f"at most {MAX_CATEGORICAL_LOGITS:,}"
                )
            return
        if num_classes <= MAX_CATEGORICAL_LOGITS:
            return
        options = "--head logistic_mixture"
        if _takes_head_classes(self.net):
            options += ", or --model upscale --parametrization direct (b logits per variable)"
        raise ValueError(
            f"a categorical head over the K = {num_classes:,} {self.modality} values builds "
            f"{num_classes:,} logits per variable (gigabytes a batch; at most "
            f"{MAX_CATEGORICAL_LOGITS:,} are allowed); use {options}"
        )

    def net_overrides(self) -> dict[str, object]:
        """The settings the net's preset is built with (``build_net`` overrides): the head
        where one is named (categorical for the direct parametrization, b free logits a stage),
        and ``head_classes = b`` where the net takes it, so the head has b logits, not K."""
        head = self.head or ("categorical" if self.parametrization == "direct" else None)
        overrides: dict[str, object] = {"head": head} if head else {}
        if self.parametrization == "direct" and _takes_head_classes(self.net):
            overrides["head_classes"] = self.branch_factor
        return overrides


def _takes_head_classes(net: str) -> bool:
    """Whether net ``net``'s config sets its categorical head's size apart from K."""
    return "head_classes" in {f.name for f in dataclasses.fields(NETS[net].config_class)}


# Fields that define the model or the data stream; a resumed run must not change them.
FIXED_ON_RESUME = (
    "modality", "data", "model", "net", "branch_factor", "parametrization", "preset", "head",
    "batch_size", "ce_weight", "timestep_sampler", "holdout", "seed",
)


