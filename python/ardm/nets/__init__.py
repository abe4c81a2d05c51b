"""Networks for ARDMs behind one protocol and a registry (:mod:`ardm.nets.registry`), with the
output heads separate from the trunks (:mod:`ardm.nets.heads`)."""

from ardm.nets.dilated import DILATED_PRESETS, DilatedConfig, DilatedConvNet, build_dilated
from ardm.nets.heads import HEADS, CategoricalHead, LogisticMixtureHead, build_head
from ardm.nets.registry import NETS, NetSpec, build_net, net_config, net_from_config
from ardm.nets.transformer import (
    TRANSFORMER_PRESETS,
    Transformer,
    TransformerConfig,
    build_transformer,
)
from ardm.nets.unet import UNET_PRESETS, UNet, UNetConfig, build_unet

__all__ = [
    "DILATED_PRESETS",
    "DilatedConfig",
    "DilatedConvNet",
    "build_dilated",
    "HEADS",
    "NETS",
    "TRANSFORMER_PRESETS",
    "UNET_PRESETS",
    "CategoricalHead",
    "LogisticMixtureHead",
    "NetSpec",
    "Transformer",
    "TransformerConfig",
    "UNet",
    "UNetConfig",
    "build_head",
    "build_net",
    "build_transformer",
    "build_unet",
    "net_config",
    "net_from_config",
]
