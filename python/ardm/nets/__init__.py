"""Networks for ARDMs: the image U-Net and its presets."""

from ardm.nets.unet import UNET_PRESETS, UNet, UNetConfig, build_net

__all__ = ["UNET_PRESETS", "UNet", "UNetConfig", "build_net"]
