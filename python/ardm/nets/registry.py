"""The registry of named networks: what the CLI offers as ``--net`` and what checkpoints rebuild.

Every network follows one protocol: ``net(x_in, known, t) -> head parameters (B, *data_shape, P)``
with a ``head`` attribute (:mod:`ardm.nets.heads`) and a ``config`` dataclass that has
``to_dict()`` / ``from_dict()``. A :class:`NetSpec` names a network, its config class, its presets
and how to build it; adding a network (the text transformer, the audio conv net) is one new file
and one entry in ``NETS``.

Example:
    >>> sorted(NETS), sorted(NETS["unet"].presets)
    (['transformer', 'unet'], ['base', 'paper', 'small', 'tiny'])
    >>> net = build_net("tiny", 256, (1, 28, 28))
    >>> net_config(net)["net"], net.head.name
    ('unet', 'logistic_mixture')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ardm.nets.transformer import TRANSFORMER_PRESETS, Transformer, TransformerConfig
from ardm.nets.unet import UNET_PRESETS, UNet, UNetConfig

__all__ = ["NETS", "NetSpec", "build_net", "net_config", "net_from_config"]


@dataclass(frozen=True)
class NetSpec:
    """A named network: its config dataclass, presets and constructor."""

    name: str
    config_class: type
    presets: dict[str, Any]
    build: Callable[[Any, int, tuple[int, ...]], nn.Module]
    description: str


NETS: dict[str, NetSpec] = {
    "unet": NetSpec(
        "unet", UNetConfig, UNET_PRESETS, lambda c, k, shape: UNet(c, k, shape),  # type: ignore[arg-type]
        "image U-Net (C, H, W); presets tiny (tests), small (CPU), base (GPU), paper (CIFAR-10)",
    ),
    "transformer": NetSpec(
        "transformer", TransformerConfig, TRANSFORMER_PRESETS,
        lambda c, k, shape: Transformer(c, k, shape),  # type: ignore[arg-type]
        "bidirectional sequence transformer (L,) for text; presets tiny (tests), small (CPU), "
        "base (GPU)",
    ),
}


def _spec(name: str) -> NetSpec:
    if name not in NETS:
        raise ValueError(f"unknown net {name!r}; choose one of {sorted(NETS)}")
    return NETS[name]


def build_net(
    preset: str | Any,
    num_classes: int,
    data_shape: tuple[int, ...],
    net: str = "unet",
    **overrides: object,
) -> nn.Module:
    """Build network ``net`` from a preset name or a config object, with field overrides.

    Example:
        >>> build_net("tiny", 256, (1, 28, 28), head="categorical").head.name
        'categorical'
    """
    spec = _spec(net)
    if isinstance(preset, spec.config_class):
        config = preset
    elif isinstance(preset, str) and preset in spec.presets:
        config = spec.presets[preset]
    else:
        raise ValueError(f"unknown {net} preset {preset!r}; choose one of {sorted(spec.presets)}")
    if overrides:
        names = {f.name for f in dataclasses.fields(config)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"{net} has no settings {sorted(unknown)}")
        config = dataclasses.replace(config, **overrides)
    return spec.build(config, int(num_classes), tuple(int(s) for s in data_shape))


def net_config(net: nn.Module) -> dict[str, Any]:
    """``{"net": name, "net_config": {...}}`` of a registered network (for ``config.json``)."""
    for spec in NETS.values():
        if isinstance(getattr(net, "config", None), spec.config_class):
            return {"net": spec.name, "net_config": net.config.to_dict()}  # type: ignore[union-attr]
    raise ValueError(f"{type(net).__name__} is not a registered net ({', '.join(sorted(NETS))})")


def net_from_config(
    config: dict[str, Any], num_classes: int, data_shape: tuple[int, ...]
) -> nn.Module:
    """Rebuild a network from ``config.json``'s ``net`` and ``net_config`` fields."""
    spec = _spec(str(config.get("net", "unet")))
    net_cfg = config.get("net_config")
    if not isinstance(net_cfg, dict):
        raise ValueError("config.json: net_config must be a JSON object")
    try:
        return spec.build(spec.config_class.from_dict(net_cfg), num_classes, data_shape)
    except TypeError as err:
        raise ValueError(f"config.json: bad net_config ({err})") from err
