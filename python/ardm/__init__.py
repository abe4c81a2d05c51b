"""ardm: Autoregressive Diffusion Models (Hoogeboom et al., ICLR 2022, arXiv:2110.02037).

Order-agnostic and upscale ARDMs on images, text and audio; parallel generation under any
budget of network calls with an exactly optimal policy; lossless compression with rANS.
"""

# Transitional: re-export whatever the Rust core provides; the explicit list lands with the core.
from ardm._core import *  # noqa: F401,F403
