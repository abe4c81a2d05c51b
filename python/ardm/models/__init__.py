"""ARDM model kinds behind one interface (:class:`ARDM`): the order-agnostic model (one stage)
and the upscale model (S stages), with the policies and the step schedule they share.

``MODEL_KINDS`` maps the ``model`` field of ``config.json`` to the class that rebuilds it.
"""

from ardm.models.base import ARDM
from ardm.models.order_agnostic import OrderAgnosticARDM
from ardm.models.schedule import Policy, Step, StepSchedule
from ardm.models.upscale import PARAMETRIZATIONS, UpscaleARDM

MODEL_KINDS: dict[str, type[ARDM]] = {
    OrderAgnosticARDM.kind: OrderAgnosticARDM,
    UpscaleARDM.kind: UpscaleARDM,
}

__all__ = [
    "ARDM",
    "MODEL_KINDS",
    "PARAMETRIZATIONS",
    "OrderAgnosticARDM",
    "Policy",
    "Step",
    "StepSchedule",
    "UpscaleARDM",
]
