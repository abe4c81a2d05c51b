"""Shared test fakes and fixtures.

Fake networks follow the net protocol of :mod:`ardm.nets.registry`:
``net(x_in, known, t) -> head parameters (B, *data_shape, P)`` with a ``head`` attribute. Each one
exists to let a test check one property; see its docstring. Test modules import them with
``from conftest import ...``.

The IDX helpers write MNIST-format datasets; the ``*_crops_dir`` fixtures hold small center crops
of the real Fashion-MNIST test images (``apt-get install dataset-fashion-mnist``, which ``.ci/run``
installs).
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ardm
from ardm.data import load_dataset
from ardm.models import OrderAgnosticARDM, UpscaleARDM
from ardm.nets import CategoricalHead, build_net

# ---- fake networks ------------------------------------------------------------------------------


class TableNet(nn.Module):
    """Context-free: a fixed logit table per variable, so exact likelihoods have a closed form."""

    def __init__(self, shape: tuple[int, ...], outputs: int, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(*shape, outputs, generator=gen) * scale)
        self.head = CategoricalHead(outputs)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.table.expand(x_in.shape[0], *self.table.shape)


class MLPNet(nn.Module):
    """Context-dependent, reads ``x_in`` only where known: orders matter; OA == one-stage upscale."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        d = int(np.prod(shape))
        self.k = num_classes
        self.mlp = nn.Sequential(
            nn.Linear(d * (num_classes + 2) + 1, 32), nn.Tanh(), nn.Linear(32, d * num_classes)
        )
        with torch.no_grad():
            for p in self.mlp.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        self.head = CategoricalHead(num_classes)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = torch.where(known, x_in, torch.full_like(x_in, self.k))
        one_hot = nn.functional.one_hot(x, self.k + 1).flatten(1).float()
        feats = torch.cat([one_hot, known.flatten(1).float(), t[:, None].float()], dim=1)
        return self.mlp(feats).reshape(*x_in.shape, self.k)


class TinyNet(nn.Module):
    """Depends on values, ``known`` and ``t``; asserts ``known`` counts the t mod D refined ones."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, outputs: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        d = int(np.prod(shape))
        self.shape, self.d, self.k = shape, d, num_classes
        self.bias = nn.Parameter(torch.randn(d, outputs, generator=gen))
        self.mix = nn.Parameter(torch.randn(d, outputs, generator=gen))
        self.own = nn.Parameter(torch.randn(outputs, generator=gen))
        self.time = nn.Parameter(torch.randn(outputs, generator=gen))
        self.refined = nn.Parameter(torch.randn(outputs, generator=gen))
        self.head = CategoricalHead(outputs)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x_in.shape[0]
        assert known.dtype == torch.bool and known.shape == x_in.shape
        assert torch.equal(known.flatten(1).sum(1), t % self.d)
        x = x_in.reshape(batch, -1).float() / self.k
        out = (
            self.bias
            + self.mix * x.mean(1).view(-1, 1, 1) * 3
            + self.own * x.unsqueeze(-1) * 2
            + self.time * (t.float() / (3 * self.d)).view(-1, 1, 1)
            + self.refined * known.reshape(batch, -1, 1).float()
        )
        return out.reshape(batch, *self.shape, -1)


class StepMarkerNet(nn.Module):
    """Predicts the current call's index with certainty: a sample shows when each value was drawn."""

    def __init__(self, num_classes: int, absorbing: int) -> None:
        super().__init__()
        self.calls = 0
        self.absorbing = absorbing
        self.dummy = nn.Parameter(torch.zeros(()))
        self.head = CategoricalHead(num_classes)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert bool((x_in[~known] == self.absorbing).all())
        assert torch.equal(t, known.flatten(1).sum(1))
        params = torch.full((*x_in.shape, self.head.num_classes), -1e9)
        params[..., self.calls] = 0.0
        self.calls += 1
        return params


class RecordingNet(nn.Module):
    """Records every input of a net; given ``absorbing``, asserts no unknown value reaches it."""

    def __init__(self, inner: nn.Module, absorbing: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.head = inner.head
        self.absorbing = absorbing
        self.inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def calls(self) -> int:
        return len(self.inputs)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.absorbing is not None:
            assert bool((x_in[~known] == self.absorbing).all())
            assert torch.equal(t, known.flatten(1).sum(1))
        self.inputs.append((x_in.clone(), known.clone(), t.clone()))
        return self.inner(x_in, known, t)


def real_crops(n: int) -> torch.Tensor:
    """Real Fashion-MNIST test images (bundled), 8x8 crops at 16 levels (x >> 4)."""
    images = ardm.bundled_images()
    crops = [images[i % 10, :, 10 + i // 10 : 18 + i // 10, 10:18] for i in range(n)]
    return (torch.stack(crops) >> 4).to(torch.uint8)


def real_text(n: int) -> bytes:
    """Real English bytes: this project's README, from its start, repeated to length ``n``."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_bytes()
    return (text * (1 + n // len(text)))[:n]


class SequenceNet(nn.Module):
    """A small real network over 1-D items of bytes (embedding + conv), categorical head: tests
    the codec's sequence layout cheaply. ``bias`` > 0 makes value 0 very likely (a confidently
    wrong model, so that the codec stores items raw)."""

    def __init__(self, length: int, num_classes: int = 256, bias: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes + 1, 16)
        self.conv = nn.Conv1d(17, 32, 5, padding=2)
        self.out = nn.Linear(32, num_classes)
        self.head = CategoricalHead(num_classes)
        with torch.no_grad():
            self.out.bias[0] += bias

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.embed(x_in), known.unsqueeze(-1).float()], dim=-1)
        h = torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        return self.out(h)


@pytest.fixture(scope="session")
def upscale_model() -> UpscaleARDM:
    """A tiny upscale ARDM (b = 4, K = 16) over 8x8 crops, step losses on real crops."""
    torch.manual_seed(1)
    m = UpscaleARDM(build_net("tiny", 16, (1, 8, 8)), 16, (1, 8, 8), branch_factor=4).eval()
    m.estimate_step_losses(real_crops(10))
    return m


@pytest.fixture(scope="session")
def text_model() -> OrderAgnosticARDM:
    """A small byte model over items of 32 (SequenceNet), step losses on real English bytes."""
    torch.manual_seed(2)
    m = OrderAgnosticARDM(SequenceNet(32), 256, (32,)).eval()
    m.modality = "text"
    m.estimate_step_losses(torch.frombuffer(bytearray(real_text(32 * 8)), dtype=torch.uint8).view(8, 32))
    return m


def perturbed_unet(
    num_classes: int, shape: tuple[int, ...], std: float = 0.2, seed: int = 0, **overrides: object
) -> nn.Module:
    """The tiny U-Net, every weight redrawn (zero-initialized output layers hide input effects)."""
    net = build_net("tiny", num_classes, shape, **overrides)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return net


# ---- MNIST-format IDX files ---------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file (uint8) holding ``array``."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed by default."""
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_mnist_dir(root: Path, train: np.ndarray, test: np.ndarray, gz: bool = True) -> Path:
    """A dataset directory in the MNIST layout (``train-`` and ``t10k-images-idx3-ubyte[.gz]``)."""
    suffix = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{suffix}", train, gz)
    write_idx(root / f"t10k-images-idx3-ubyte{suffix}", test, gz)
    return root


@pytest.fixture(scope="session")
def fashion_mnist_test() -> torch.Tensor:
    """The real Fashion-MNIST test split (10000, 1, 28, 28) uint8."""
    return load_dataset("fashion-mnist", "test")


def _crops_dir(
    factory: pytest.TempPathFactory, images: torch.Tensor, size: int, train: int, test: int
) -> Path:
    lo = (28 - size) // 2
    crops = images[: train + test, 0, lo : lo + size, lo : lo + size].numpy()
    return write_mnist_dir(factory.mktemp(f"fm{size}"), crops[:train], crops[train:])


@pytest.fixture(scope="session")
def fm8_dir(tmp_path_factory: pytest.TempPathFactory, fashion_mnist_test: torch.Tensor) -> Path:
    """8x8 center crops of real Fashion-MNIST images: 48 training and 32 test images (D = 64)."""
    return _crops_dir(tmp_path_factory, fashion_mnist_test, 8, 48, 32)


@pytest.fixture(scope="session")
def fm12_dir(tmp_path_factory: pytest.TempPathFactory, fashion_mnist_test: torch.Tensor) -> Path:
    """12x12 center crops of real Fashion-MNIST images: 96 training and 24 test images (D = 144
    keeps the end-of-training step-loss estimate quick)."""
    return _crops_dir(tmp_path_factory, fashion_mnist_test, 12, 96, 24)


# ---- multi-process runs ------------------------------------------------------------------------


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=2 ARGS...`` on the CPU; must succeed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result
