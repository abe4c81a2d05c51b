"""The form of a model the codec codes with: on the CPU, in float32 (``docs/format.md``,
"Network evaluation").

A blob must decode bit for bit, so both sides evaluate the network on the CPU from the same
float32 parameters, under the portable evaluation (:mod:`ardm.coding.portable`, which gives the
same bits on every CPU), whatever device or dtype the user's model lives in. A model elsewhere
is coded with a CPU float32 copy, made once per call and never kept (a cache would go stale when
the weights change); the user's model is never moved or cast.

Example:
    >>> import torch
    >>> from ardm.nets import build_net
    >>> from ardm.models import OrderAgnosticARDM
    >>> m = OrderAgnosticARDM(build_net("tiny", 4, (1, 4, 4)), 4, (1, 4, 4)).double()
    >>> c = cpu_float32(m)
    >>> next(c.parameters()).dtype, c.step_losses.dtype, next(m.parameters()).dtype
    (torch.float32, torch.float64, torch.float64)
    >>> cpu_float32(c) is c
    True
"""

from __future__ import annotations

import copy

import torch

from ardm.models import ARDM

__all__ = ["cpu_float32"]


def _coding_dtype(model: ARDM, tensor: torch.Tensor) -> torch.dtype:
    """float32 for the network's floating tensors; the step losses stay float64, the dtype
    ``ARDM`` gives them (the budget DP plans with them); integer tensors keep theirs."""
    if not tensor.is_floating_point():
        return tensor.dtype
    return torch.float64 if tensor is model.step_losses else torch.float32


def cpu_float32(model: ARDM) -> ARDM:
    """``model`` itself if every tensor is on the CPU in its coding dtype, else a copy that is.

    Raises ``ValueError`` for a model on the ``meta`` device, which has no weights to code with.
    """
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        raise ValueError(
            "the model is on the meta device and has no weights to code with: load them first "
            "(ardm.load(RUN_DIR), or model.to_empty(device='cpu') and model.load_state_dict(...))"
        )
    if all(t.device.type == "cpu" and t.dtype == _coding_dtype(model, t) for t in tensors):
        return model
    # Deep-copy everything but the tensors, which the memo maps to their CPU copies in the
    # coding dtype: the model is never duplicated on its own device or in its own dtype.
    memo: dict[int, object] = {}
    for param in model.parameters():
        data = param.detach().to("cpu", _coding_dtype(model, param))
        memo[id(param)] = torch.nn.Parameter(data, requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.detach().to("cpu", _coding_dtype(model, buffer))
    return copy.deepcopy(model, memo)
