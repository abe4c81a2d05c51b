"""ardm: Autoregressive Diffusion Models (Hoogeboom et al., ICLR 2022, arXiv:2110.02037).

Order-agnostic and upscale ARDMs on images, text and audio; parallel generation under any
budget of network calls with an exactly optimal policy; lossless compression with rANS.

Example:
    >>> import ardm
    >>> ardm.optimal_policy([3.0, 2.0, 1.0, 0.5], budget=2).tolist()
    [0, 2]
"""

from ardm._core import (
    AnsCoder,
    AnsCoderBatch,
    budget_curve,
    naive_policy,
    optimal_policy,
    order_ranks,
    policy_cost,
    portable_grid,
    portable_math,
    quantize_logits,
    random_order,
    random_orders,
    step_positions,
)
from ardm.coding import compress, decompress
from ardm.models import ARDM, OrderAgnosticARDM, Policy, UpscaleARDM
from ardm.pretrained import bundled_images, load

__version__ = "0.1.0"

__all__ = [
    "ARDM",
    "AnsCoder",
    "AnsCoderBatch",
    "OrderAgnosticARDM",
    "Policy",
    "UpscaleARDM",
    "budget_curve",
    "bundled_images",
    "compress",
    "decompress",
    "load",
    "naive_policy",
    "optimal_policy",
    "order_ranks",
    "policy_cost",
    "portable_grid",
    "portable_math",
    "quantize_logits",
    "random_order",
    "random_orders",
    "step_positions",
]
