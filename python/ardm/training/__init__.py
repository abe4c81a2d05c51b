"""Training: :class:`TrainConfig` (modality, data, model kind, net) and the loop (one process or
DDP under torchrun: ``torchrun --nproc_per_node=N -m ardm.training ...``)."""

from ardm.training.config import TrainConfig
from ardm.training.loop import build_for_training, evaluate_bpd, train

__all__ = ["TrainConfig", "build_for_training", "evaluate_bpd", "train"]
