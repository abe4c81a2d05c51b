"""Non-causal dilated residual conv net over 1-D sequences (audio), DiffWave-like.

DiffWave (Kong et al. 2021, Section 3 and Figure 2): residual layers of a dilated convolution,
a gated ``tanh * sigmoid`` unit and a 1x1 convolution split into a residual and a skip output;
dilations cycle ``1, 2, ..., 2^(k-1)``; the step enters every layer through a projection of its
embedding. Here no layer is causal (an ARDM sees known samples on both sides), and the input of
each position is what an ARDM knows of it:

* the value scaled to [-1, 1] and mu-law companded (speech lives at small amplitudes: mu-law
  spreads them out), both 0 where nothing is known of it (the absorbing class K, or an upscale
  ARDM's first stage, where an unrefined value shows as 0);
* its low byte scaled to [-1, 1] (the digits that decide a 16-bit value's last stage are below
  bf16's precision in the scaled value: a trunk in bf16 would not see them at all);
* for an upscale ARDM, the value is coarse (its low digits zero) and ``known`` says which
  positions were refined in this stage; the step ``t`` tells the stage.

The output is the parameters of a head per position: a discretized logistic mixture over the K
values by default, whose interval masses give an upscale ARDM its digits without K logits.

Precision. A mixture's means must be right to a few of the 65,536 values (about 1e-4 of the
range), finer than bf16's 8-bit mantissa resolves a value of 0.1. So the trunk may run in bf16
(autocast), but the input features, the linear path from the nearest samples (which carries the
interpolation, most of the mean) and the output projection always run in float32.

Example:
    >>> import torch
    >>> net = build_dilated("tiny", num_classes=65536, data_shape=(64,))
    >>> x = torch.full((2, 64), 65536)   # everything unknown
    >>> net(x, torch.zeros(2, 64, dtype=torch.bool), torch.zeros(2, dtype=torch.long)).shape
    torch.Size([2, 64, 15])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ardm.nets.heads import HEADS, build_head
from ardm.nets.unet import timestep_embedding

__all__ = ["DilatedConfig", "DilatedConvNet", "DILATED_PRESETS", "build_dilated"]

MU = 255.0
INITIAL_LOG_SCALE = -3.0
DIRECT_REACH = 8  # samples on each side that the linear path sees
FEATURES = 4  # value, mu-law value, low byte, known
# The log-scales are this many times the raw outputs: Adam moves a raw output about lr a step,
# and a scale must travel from a tenth of the range to a few values (ln 1000 ~ 7) per stage
# (3: faster than 1 and, unlike 8, stable at lr 1e-2 on real speech).
LOG_SCALE_GAIN = 3.0


@dataclass(frozen=True)
class DilatedConfig:
    """Architecture of the dilated conv net."""

    channels: int = 64
    layers: int = 12
    dilation_cycle: int = 6  # dilations 1, 2, ..., 2^(cycle-1), repeated
    kernel_size: int = 3
    time_dim: int = 128
    head: str = "logistic_mixture"
    num_mixtures: int = 5
    # Logits per position of a categorical head; None: one per value (K). An upscale ARDM in
    # the direct parametrization needs only b (K = 65,536 logits per sample would not fit).
    head_classes: int | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.channels < 4 or self.layers < 1 or self.dilation_cycle < 1:
            raise ValueError("channels >= 4, layers >= 1 and dilation_cycle >= 1 are required")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (non-causal, centred), got {self.kernel_size}")
        if self.time_dim < 2 or self.time_dim % 2 or self.num_mixtures < 1:
            raise ValueError("time_dim must be even and >= 2, num_mixtures >= 1")
        h = self.head_classes
        if h is not None and not (self.head == "categorical" and isinstance(h, int)
                                  and not isinstance(h, bool) and 2 <= h <= 1 << 16):
            raise ValueError(f"head_classes is for a categorical head, an integer in 2..65536, got {h!r:.40}")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (without ``head_classes`` when it is the default, so that the
        configs, and fingerprints, of models made before it existed stay the same)."""
        d = dataclasses.asdict(self)
        if d["head_classes"] is None:
            del d["head_classes"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DilatedConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown DilatedConfig keys: {sorted(unknown)}")
        return cls(**d)

    @property
    def receptive_field(self) -> int:
        """Samples each output sees (on both sides together, plus itself)."""
        dilations = [2 ** (i % self.dilation_cycle) for i in range(self.layers)]
        return 1 + (self.kernel_size - 1) * sum(dilations)


DILATED_PRESETS: dict[str, DilatedConfig] = {
    # Unit tests: a forward on short sequences in milliseconds.
    "tiny": DilatedConfig(channels=16, layers=4, dilation_cycle=4, time_dim=32),
    # Trains on 2 CPU cores (receptive field 2,047 samples, 0.26 s at 8 kHz).
    "small": DilatedConfig(channels=32, layers=10, dilation_cycle=10, time_dim=64),
    # One GPU: DiffWave's base size (30 layers, 64 channels, dilations up to 512).
    "base": DilatedConfig(channels=64, layers=30, dilation_cycle=10, time_dim=128),
}


def _taps(h: torch.Tensor, dilation: int, kernel_size: int) -> torch.Tensor:
    """(B, L, C) -> (B, L, kernel_size * C): each position's dilated neighbourhood, zero-padded.

    A dilated convolution is then one matrix product over channels, which runs several times
    faster on CPUs than ``conv1d``'s dilated kernels (above all backward and in bf16).
    """
    reach = dilation * (kernel_size // 2)
    if reach == 0:
        return h
    length = h.shape[1]
    padded = F.pad(h, (0, 0, reach, reach))
    return torch.cat(
        [padded[:, i * dilation : i * dilation + length] for i in range(kernel_size)], dim=-1
    )


class ResidualLayer(nn.Module):
    """Dilated conv -> gated unit -> 1x1 conv split into residual and skip (DiffWave Fig. 2)."""

    def __init__(self, channels: int, dilation: int, kernel_size: int, time_dim: int) -> None:
        super().__init__()
        self.dilation, self.kernel_size = dilation, kernel_size
        self.time = nn.Linear(time_dim, channels)
        self.conv = nn.Linear(kernel_size * channels, 2 * channels)
        self.out = nn.Linear(channels, 2 * channels)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # h (B, L, C), channels last.
        y = self.conv(_taps(h + self.time(temb)[:, None, :], self.dilation, self.kernel_size))
        gate, filt = y.chunk(2, dim=-1)
        residual, skip = self.out(torch.sigmoid(gate) * torch.tanh(filt)).chunk(2, dim=-1)
        return (h + residual) / math.sqrt(2.0), skip


class DilatedConvNet(nn.Module):
    """``net(x_in, known, t) -> head parameters (B, L, P)`` for ARDMs on 1-D sequences.

    Args:
        config: the architecture (:class:`DilatedConfig`).
        num_classes: K; ``x_in`` takes values 0..K, K being the absorbing class.
        data_shape: ``(L,)``; any length works (the net is convolutional), L sets the scale of t.
    """

    def __init__(self, config: DilatedConfig, num_classes: int, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        if len(data_shape) != 1:
            raise ValueError(f"the dilated net takes 1-D items (L,), got data_shape {data_shape}")
        self.config = config
        self.num_classes = num_classes
        self.data_shape = tuple(data_shape)
        self.head = build_head(config.head, config.head_classes or num_classes, config.num_mixtures)
        c = config.channels
        self.inp = nn.Linear(FEATURES, c)
        self.time = nn.Sequential(
            nn.Linear(config.time_dim, 4 * config.time_dim), nn.SiLU(),
            nn.Linear(4 * config.time_dim, config.time_dim), nn.SiLU(),
        )
        self.layers = nn.ModuleList(
            ResidualLayer(c, 2 ** (i % config.dilation_cycle), config.kernel_size, config.time_dim)
            for i in range(config.layers)
        )
        self.skip_out = nn.Linear(c, c)
        self.out = nn.Linear(c, self.head.params_per_var)
        # A linear path from the nearest samples' features to the head: a linear interpolator
        # that Adam finds in a few hundred steps, which the deep path then corrects.
        self.direct = nn.Linear(FEATURES * (2 * DIRECT_REACH + 1), self.head.params_per_var)
        self._init_output()

    def _init_output(self) -> None:
        # Small random weights, so a mixture's components get different gradients (zero weights
        # would keep them identical forever); a mixture starts at the centre with the spread of
        # speech (a tenth of the range), not the whole range, which Adam would need thousands
        # of steps to shrink.
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)
        nn.init.zeros_(self.direct.weight)
        nn.init.zeros_(self.direct.bias)
        if self.config.head == "logistic_mixture":
            m = self.config.num_mixtures
            with torch.no_grad():
                self.out.bias[m : 2 * m] = torch.linspace(-0.05, 0.05, m)
                self.out.bias[2 * m :] = INITIAL_LOG_SCALE / LOG_SCALE_GAIN

    def _features(self, x_in: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        k = self.num_classes
        # Absent: the absorbing class (order-agnostic), or an unrefined 0, which is what an
        # upscale ARDM's first stage shows for every value it has not refined yet (a real
        # coarse 0 later on, the loudest negative samples, only loses its hint).
        present = (x_in < k) & (known | (x_in != 0))
        value = torch.where(present, x_in, 0).float() * (2.0 / (k - 1)) - 1.0
        value = torch.where(present, value, 0.0)
        companded = torch.sign(value) * torch.log1p(MU * value.abs()) / math.log1p(MU)
        low_byte = torch.where(present, x_in % 256, 0).float() * (2.0 / 255) - 1.0
        low_byte = torch.where(present, low_byte, 0.0)
        return torch.stack([value, companded, low_byte, known.float()], dim=-1)  # (B, L, 4)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        length = x_in.shape[1]
        with torch.autocast(x_in.device.type, enabled=False):  # float32: see "Precision"
            features = self._features(x_in, known)
            direct = self.direct(_taps(features, 1, 2 * DIRECT_REACH + 1))
        h = self.inp(features)
        temb = self.time(timestep_embedding(t.float() / length, self.config.time_dim))
        skip = torch.zeros_like(h)
        for layer in self.layers:
            h, s = layer(h, temb)
            skip = skip + s
        hidden = F.relu(self.skip_out(F.relu(skip / math.sqrt(len(self.layers)))))
        with torch.autocast(x_in.device.type, enabled=False):
            params = self.out(hidden.float()) + direct
            if self.config.head == "logistic_mixture":
                m = self.config.num_mixtures
                params = torch.cat([params[..., : 2 * m], LOG_SCALE_GAIN * params[..., 2 * m :]], -1)
        return params


def build_dilated(preset: str | DilatedConfig, num_classes: int, data_shape: tuple[int, ...],
                  **overrides: object) -> DilatedConvNet:
    """A :class:`DilatedConvNet` from a preset name or a config, with field overrides."""
    config = DILATED_PRESETS[preset] if isinstance(preset, str) else preset
    if overrides:
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    return DilatedConvNet(config, num_classes, data_shape)
