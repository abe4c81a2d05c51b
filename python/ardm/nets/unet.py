"""Image U-Net for order-agnostic ARDMs (Hoogeboom et al. 2022, Section 6.1 / Appendix C).

The network sees the partially known image (unknown pixels replaced by the absorbing class), the
mask of known pixels and the step ``t`` (number of known variables) and returns, for every
variable, the parameters of its head (:mod:`ardm.nets.heads`): K logits or a logistic mixture. The paper's CIFAR-10 model is the VDM-style U-Net: 32 residual blocks at 256
channels at a single resolution, attention in the middle (preset ``paper``). The small presets
space-to-depth the input by 2 (28x28 -> 14x14 with 4x the channels), run a two-level U-Net with
attention at the lowest resolution and depth-to-space the output, so that they train on a CPU.

Example:
    >>> import torch
    >>> net = build_unet("tiny", num_classes=256, data_shape=(1, 28, 28))
    >>> x = torch.full((2, 1, 28, 28), 256)  # everything unknown (absorbing class)
    >>> params = net(x, torch.zeros(2, 1, 28, 28, dtype=torch.bool), torch.zeros(2, dtype=torch.long))
    >>> params.shape, net.head.log_probs(params).shape   # 2 mixture components: 6 parameters
    (torch.Size([2, 1, 28, 28, 6]), torch.Size([2, 1, 28, 28, 256]))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ardm.nets.heads import HEADS, build_head

__all__ = ["UNetConfig", "UNet", "UNET_PRESETS", "build_unet"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the image U-Net.

    ``channel_mult`` gives one entry per resolution level (each level after the first halves the
    resolution); ``attention_levels`` lists the levels with self-attention after each residual
    block (the middle block always has attention). ``space_to_depth`` folds s x s pixel patches
    into channels at the input and unfolds the output the same way.
    """

    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1,)
    num_heads: int = 4
    dropout: float = 0.0
    space_to_depth: int = 2
    head: str = "logistic_mixture"
    num_mixtures: int = 5

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.channels < 8 or self.channels % 8:
            raise ValueError(f"channels must be a positive multiple of 8, got {self.channels}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be non-empty and positive: {self.channel_mult}")
        if any(not 0 <= lvl < len(self.channel_mult) for lvl in self.attention_levels):
            raise ValueError(f"attention_levels {self.attention_levels} out of range")
        if self.space_to_depth < 1 or self.num_res_blocks < 0 or self.num_mixtures < 1:
            raise ValueError("space_to_depth >= 1, num_res_blocks >= 0, num_mixtures >= 1")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown UNetConfig keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# Presets, DiT-style registry. Throughputs are measured by benchmarks/bench_train.py.
UNET_PRESETS: dict[str, UNetConfig] = {
    # Unit tests: a forward on 2 images at 28x28 in a few ms.
    "tiny": UNetConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, num_heads=1,
                       num_mixtures=2),
    # Trains on 2 CPU cores (Fashion-MNIST): 14x14x64 and 7x7x128 with attention at 7x7.
    "small": UNetConfig(channels=64, channel_mult=(1, 2), num_res_blocks=2, num_heads=4),
    # One GPU.
    "base": UNetConfig(channels=128, channel_mult=(1, 2, 2), num_res_blocks=3,
                       attention_levels=(1, 2), num_heads=4, dropout=0.1, space_to_depth=1),
    # The paper's CIFAR-10 architecture (VDM-like): 32 blocks at 256 channels, one resolution.
    "paper": UNetConfig(channels=256, channel_mult=(1,), num_res_blocks=32, attention_levels=(),
                        num_heads=1, dropout=0.1, space_to_depth=1, head="categorical"),
}


def timestep_embedding(fraction: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of ``1000 * t / D`` (Transformer / DDPM style), shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=fraction.device, dtype=torch.float32) / half
    )
    args = 1000.0 * fraction.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(channels: int) -> nn.GroupNorm:
    # At least 4 channels per group: with one channel per group a per-channel shift vanishes.
    return nn.GroupNorm(math.gcd(32, channels // 4), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the time embedding scales and shifts the second norm's output
    (improved-diffusion's ``use_scale_shift_norm``), so normalization cannot remove it."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, 2 * out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.temb(temb)[:, :, None, None].chunk(2, dim=1)
        out = self.norm2(out) * (1.0 + scale) + shift
        out = self.conv2(self.dropout(F.silu(out)))
        return self.skip(h) + out


class AttnBlock(nn.Module):
    """Multi-head self-attention over all positions of a feature map."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        qkv = self.qkv(self.norm(h)).reshape(b, 3, self.num_heads, c // self.num_heads, hh * ww)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (b, heads, hw, c/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return h + self.proj(out.transpose(-1, -2).reshape(b, c, hh, ww))


class UNet(nn.Module):
    """U-Net ``net(x_in, known, t) -> head parameters (B, C, H, W, P)`` for ARDMs on images.

    ``x_in`` holds values in ``0..K`` where ``K`` (= ``num_classes``) is the absorbing class of the
    unknown pixels. The input features per channel are the value scaled to [-1, 1] (0 for the
    absorbing class) and the mask; the absorbing class thus has its own input (value 0, mask 0).
    """

    def __init__(self, config: UNetConfig, num_classes: int, data_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if len(data_shape) != 3:
            raise ValueError(f"data_shape must be (C, H, W), got {data_shape}")
        c, h, w = data_shape
        factor = config.space_to_depth * 2 ** (len(config.channel_mult) - 1)
        if h % factor or w % factor:
            raise ValueError(
                f"image size {h}x{w} must be divisible by {factor} (space_to_depth x 2^(levels-1))"
            )
        self.config = config
        self.num_classes = num_classes
        self.data_shape = tuple(data_shape)
        s = config.space_to_depth
        ch = config.channels
        temb_dim = 4 * ch
        self.head = build_head(config.head, num_classes, config.num_mixtures)
        self.params_per_var = self.head.params_per_var

        self.temb = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(2 * c * s * s, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [ch]
        cur = ch
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                blocks = [ResBlock(cur, ch * mult, temb_dim, config.dropout)]
                cur = ch * mult
                if level in config.attention_levels:
                    blocks.append(AttnBlock(cur, config.num_heads))
                self.down.append(nn.ModuleList(blocks))
                skip_channels.append(cur)
            if level != len(config.channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skip_channels.append(cur)

        self.mid = nn.ModuleList([
            ResBlock(cur, cur, temb_dim, config.dropout),
            AttnBlock(cur, config.num_heads),
            ResBlock(cur, cur, temb_dim, config.dropout),
        ])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                blocks = [ResBlock(cur + skip_channels.pop(), ch * mult, temb_dim, config.dropout)]
                cur = ch * mult
                if level in config.attention_levels:
                    blocks.append(AttnBlock(cur, config.num_heads))
                if level != 0 and i == config.num_res_blocks:
                    blocks.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    blocks.append(nn.Conv2d(cur, cur, 3, padding=1))
                self.up.append(nn.ModuleList(blocks))

        self.norm_out = _norm(cur)
        self.conv_out = nn.Conv2d(cur, c * self.params_per_var * s * s, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    # ---- body -------------------------------------------------------------------------------

    def _params(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-variable head parameters, shape (B, C, H, W, P)."""
        b, c, h, w = x_in.shape
        s = self.config.space_to_depth
        known_f = known.to(torch.float32)
        # Zero the value of absorbing (unknown) variables only: an upscale ARDM passes the coarse
        # values of variables not yet refined in this stage, with known = "refined in this stage".
        has_value = (x_in < self.num_classes).to(torch.float32)
        value = (x_in.to(torch.float32) * (2.0 / (self.num_classes - 1)) - 1.0) * has_value
        feats = torch.cat([value, known_f], dim=1)
        if s > 1:
            feats = F.pixel_unshuffle(feats, s)
        num_vars = c * h * w
        temb = self.temb(timestep_embedding(t.to(torch.float32) / num_vars, self.config.channels))

        hs = [self.conv_in(feats)]
        hcur = hs[-1]
        for blocks in self.down:
            for blk in blocks:
                hcur = blk(hcur, temb) if isinstance(blk, ResBlock) else blk(hcur)
            hs.append(hcur)
        for blk in self.mid:
            hcur = blk(hcur, temb) if isinstance(blk, ResBlock) else blk(hcur)
        for blocks in self.up:
            hcur = torch.cat([hcur, hs.pop()], dim=1)
            for blk in blocks:
                hcur = blk(hcur, temb) if isinstance(blk, ResBlock) else blk(hcur)
        out = self.conv_out(F.silu(self.norm_out(hcur)))
        if s > 1:
            out = F.pixel_shuffle(out, s)  # (B, C*P, H, W)
        return out.reshape(b, c, self.params_per_var, h, w).permute(0, 1, 3, 4, 2)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Head parameters (B, C, H, W, P) of every variable (``self.head`` reads them)."""
        return self._params(x_in, known, t)


def build_unet(
    preset: str | UNetConfig, num_classes: int, data_shape: tuple[int, ...], **overrides: object
) -> UNet:
    """Build a U-Net from a preset name (see ``UNET_PRESETS``) or a config, with field overrides.

    Example:
        >>> build_unet("tiny", 256, (1, 28, 28), head="categorical").head.name
        'categorical'
    """
    if isinstance(preset, UNetConfig):
        config = preset
    elif preset in UNET_PRESETS:
        config = UNET_PRESETS[preset]
    else:
        raise ValueError(f"unknown U-Net preset {preset!r}; choose one of {sorted(UNET_PRESETS)}")
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(config)}
        if unknown:
            raise ValueError(f"UNetConfig has no settings {sorted(unknown)}")
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    return UNet(config, num_classes, tuple(data_shape))  # type: ignore[arg-type]
