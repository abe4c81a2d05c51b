"""Bidirectional transformer over 1-D sequences (text bytes) for order-agnostic ARDMs.

The net sees the partially known sequence (unknown entries replaced by the absorbing class, an
extra token), the mask and the step ``t`` and returns K logits for every position (paper Section
6.2 uses a transformer for text8). No causal mask: every position attends to every other, known or
not, through ``torch.nn.functional.scaled_dot_product_attention``. Positions are rotary (RoPE,
Su et al. 2021) by default, so nothing positional has to be learned from scratch and the model
leaves the unigram plateau early; ``positions="learned"`` adds a learned table instead. The step
enters as a sinusoidal embedding of t/D added to every token.

Example:
    >>> import torch
    >>> net = build_transformer("tiny", num_classes=256, data_shape=(16,))
    >>> x = torch.full((2, 16), 256)   # everything unknown (absorbing class)
    >>> params = net(x, torch.zeros(2, 16, dtype=torch.bool), torch.zeros(2, dtype=torch.long))
    >>> params.shape, net.head.name
    (torch.Size([2, 16, 256]), 'categorical')
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

__all__ = ["TransformerConfig", "Transformer", "TRANSFORMER_PRESETS", "build_transformer"]

POSITIONS = ("rope", "learned")


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of the sequence transformer (pre-norm blocks, GELU MLP)."""

    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    positions: str = "rope"
    head: str = "categorical"
    num_mixtures: int = 5

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.width < 8 or self.num_heads < 1 or self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be >= 8 and divisible by num_heads")
        if (self.width // self.num_heads) % 2:
            raise ValueError("width / num_heads must be even (rotary positions rotate pairs)")
        if self.depth < 1 or self.mlp_ratio <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("depth >= 1, mlp_ratio > 0 and dropout in [0, 1) are required")

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys: {sorted(unknown)}")
        return cls(**d)


TRANSFORMER_PRESETS: dict[str, TransformerConfig] = {
    # Unit tests: a forward on a few short sequences in a millisecond.
    "tiny": TransformerConfig(width=32, depth=2, num_heads=2),
    # Trains on 2 CPU cores (3.2 M parameters; benchmarks/bench_train.py measures chunks/s).
    "small": TransformerConfig(width=256, depth=4, num_heads=4),
    # One GPU (25 M parameters).
    "base": TransformerConfig(width=512, depth=8, num_heads=8, dropout=0.1),
}


def _rotary_tables(length: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freqs[None]
    return angles.cos(), angles.sin()  # (L, dim/2) each


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x (B, H, L, dim): rotate each (even, odd) pair by its position's angle.
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    """Pre-norm self-attention and MLP, each a residual branch."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.rotary = cfg.positions == "rope"
        self.dropout = cfg.dropout
        hidden = int(cfg.width * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.width, hidden), nn.GELU(), nn.Linear(hidden, cfg.width),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, w = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if self.rotary:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        drop = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        h = h + self.proj(att.transpose(1, 2).reshape(b, n, w))
        return h + self.mlp(self.norm2(h))


class Transformer(nn.Module):
    """Bidirectional transformer ``net(x_in, known, t) -> head parameters (B, L, P)``.

    Args:
        config: the architecture (:class:`TransformerConfig`).
        num_classes: K; inputs take K + 1 values (the absorbing class is K).
        data_shape: ``(L,)``, the sequence length.
    """

    def __init__(self, config: TransformerConfig, num_classes: int, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        if len(data_shape) != 1:
            raise ValueError(f"the transformer takes 1-D items (L,), got data_shape {data_shape}")
        self.config = config
        self.num_classes = num_classes
        self.data_shape = tuple(data_shape)
        self.head = build_head(config.head, num_classes, config.num_mixtures)
        width, length = config.width, data_shape[0]
        self.token = nn.Embedding(num_classes + 1, width)
        self.position = nn.Parameter(torch.zeros(length, width)) if config.positions == "learned" else None
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, self.head.params_per_var)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2's: N(0, 0.02) everywhere, residual projections scaled down by sqrt(2 * depth) so
        # the residual stream starts near the token embedding; the output starts at uniform.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.config.depth))
        if self.position is not None:
            nn.init.normal_(self.position, std=0.02)
        nn.init.zeros_(self.out.weight)

    def forward(self, x_in: torch.Tensor, known: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        del known  # unknown entries already carry the absorbing class
        length = x_in.shape[1]
        h = self.token(x_in.long())
        if self.position is not None:
            h = h + self.position[:length]
        temb = timestep_embedding(t.float() / length, self.config.width).to(h.dtype)
        h = h + self.time(temb)[:, None, :]
        head_dim = self.config.width // self.config.num_heads
        rope = _rotary_tables(length, head_dim, h.device)
        for block in self.blocks:
            h = block(h, rope)
        return self.out(self.norm(h))


def build_transformer(preset: str | TransformerConfig, num_classes: int, data_shape: tuple[int, ...],
                      **overrides: object) -> Transformer:
    """A :class:`Transformer` from a preset name or a config, with field overrides."""
    config = TRANSFORMER_PRESETS[preset] if isinstance(preset, str) else preset
    if overrides:
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    return Transformer(config, num_classes, data_shape)
