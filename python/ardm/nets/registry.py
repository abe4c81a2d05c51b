"""The registry of named networks: what the CLI offers as ``--net`` and what checkpoints rebuild.

Every network follows one protocol: ``net(x_in, known, t) -> head parameters (B, *data_shape, P)``
with a ``head`` attribute (:mod:`ardm.nets.heads`) and a ``config`` dataclass that has
``to_dict()`` / ``from_dict()``. A :class:`NetSpec` names a network, its config class, its presets
and how to build it; adding a network (the text transformer, the audio conv net) is one new file
and one entry in ``NETS``.

Example:
    >>> sorted(NETS), sorted(NETS["unet"].presets)
    (['dilated', 'transformer', 'unet'], ['base', 'paper', 'small', 'tiny'])
    >>> net = build_net("tiny", 256, (1, 28, 28))
    >>> net_config(net)["net"], net.head.name
    ('unet', 'logistic_mixture')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ardm.nets.dilated import DILATED_PRESETS, DilatedConfig, DilatedConvNet
from ardm.nets.transformer import TRANSFORMER_PRESETS, Transformer, TransformerConfig
from ardm.nets.unet import UNET_PRESETS, UNet, UNetConfig

__all__ = ["NETS", "NetSpec", "build_net", "net_config", "net_config_from_dict", "net_from_config"]


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
    "dilated": NetSpec(
        "dilated", DilatedConfig, DILATED_PRESETS,
        lambda c, k, shape: DilatedConvNet(c, k, shape),  # type: ignore[arg-type]
        "non-causal dilated residual conv net (L,) for audio (DiffWave-like); presets tiny "
        "(tests), small (CPU), base (GPU)",
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


# Bounds on every setting of a registered net's config, checked before anything is built (a
# config.json is data from a file): integers (widths, depths, counts) and list entries at most
# NET_INT_MAX, lists at most NET_LIST_MAX long, strings at most 64 characters.
NET_INT_MAX = 4096
NET_LIST_MAX = 16


def _check_setting(key: str, value: object, default: object) -> None:
    """``value`` has the JSON type of the setting's default and lies within the bounds."""
    def integer(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= NET_INT_MAX

    if isinstance(default, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, what = integer(value), f"an integer in 0..{NET_INT_MAX}"
    elif isinstance(default, float):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and abs(value) <= NET_INT_MAX)
        what = f"a number of at most {NET_INT_MAX} in size"
    elif isinstance(default, str):
        ok, what = isinstance(value, str) and len(value) <= 64, "a short string"
    elif isinstance(default, (tuple, list)):
        ok = (isinstance(value, (list, tuple)) and len(value) <= NET_LIST_MAX
              and all(integer(v) for v in value))
        what = f"a list of at most {NET_LIST_MAX} integers in 0..{NET_INT_MAX}"
    else:
        ok = value is None or isinstance(value, (bool, int, float, str))
        what = "a JSON number, string, boolean or null"
    if not ok:
        raise ValueError(f"net_config.{key} must be {what}, got {value!r:.80}")


def net_config_from_dict(name: object, net_cfg: object) -> Any:
    """The config object of net ``name`` from ``config.json``'s ``net_config``, every setting
    checked for its type and range first: a ``ValueError`` names the setting.

    Example:
        >>> net_config_from_dict("transformer", {"width": 64, "depth": 2}).depth
        2
        >>> net_config_from_dict("transformer", {"depth": "2"})
        Traceback (most recent call last):
        ...
        ValueError: net_config.depth must be an integer in 0..4096, got '2'
    """
    if not isinstance(name, str) or name not in NETS:
        raise ValueError(f"net must be one of {sorted(NETS)}, got {name!r:.80}")
    spec = NETS[name]
    if not isinstance(net_cfg, dict):
        raise ValueError(f"net_config must be a JSON object, got {type(net_cfg).__name__}")
    fields = {f.name: f for f in dataclasses.fields(spec.config_class)}
    unknown = sorted(str(k)[:40] for k in net_cfg if k not in fields)
    if unknown:
        raise ValueError(f"net_config has settings that a {name} does not have: {unknown[:5]}")
    for key, value in net_cfg.items():
        default = fields[key].default
        if default is dataclasses.MISSING and fields[key].default_factory is not dataclasses.MISSING:
            default = fields[key].default_factory()
        _check_setting(key, value, default)
    try:
        return spec.config_class.from_dict(net_cfg)
    except (ValueError, TypeError, ArithmeticError) as err:
        raise ValueError(f"net_config: {err}") from err


def net_from_config(
    config: dict[str, Any], num_classes: int, data_shape: tuple[int, ...]
) -> nn.Module:
    """Rebuild a network from ``config.json``'s ``net`` and ``net_config`` fields (checked by
    :func:`net_config_from_dict`)."""
    name = config.get("net", "unet")
    net_cfg = net_config_from_dict(name, config.get("net_config"))
    return NETS[name].build(net_cfg, num_classes, data_shape)
