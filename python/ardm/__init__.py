"""ardm: Autoregressive Diffusion Models (Hoogeboom et al., ICLR 2022, arXiv:2110.02037).

Order-agnostic and upscale ARDMs on images, text and audio; parallel generation under any
budget of network calls with an exactly optimal policy; lossless compression with rANS.
"""

from ardm._core import (
    AnsCoder,
    AnsCoderBatch,
    budget_curve,
    naive_policy,
    optimal_policy,
    order_ranks,
    policy_cost,
    quantize_logits,
    random_order,
    step_positions,
)

__all__ = [
    "AnsCoder",
    "AnsCoderBatch",
    "budget_curve",
    "naive_policy",
    "optimal_policy",
    "order_ranks",
    "policy_cost",
    "quantize_logits",
    "random_order",
    "step_positions",
]
