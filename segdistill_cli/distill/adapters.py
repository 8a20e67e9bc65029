"""Student-side adapters that make a student variable fit its teacher counterpart.

`ADAPTER: conv1x1` adds a 1x1 conv (no bias) + BatchNorm to the teacher's channel count;
`RESIZE: bilinear` resizes to the teacher's H, W with align_corners=True (the legacy models'
convention). The conv runs first, at the student's (usually smaller) resolution.

Adapter parameters are trained with the student but are not part of it: they are named
`distill_adapter_<pair index>[/in<k>]/...` so checkpoint/export code can recognise and drop them
(`is_adapter_param`). The exported student is built from the model alone and never has them.
"""
from __future__ import annotations

from typing import Any

ADAPTER_PREFIX = "distill_adapter_"


def adapter_param_prefix(pair_index: int, var_index: int, n_vars: int) -> str:
    """`distill_adapter_3`, or `distill_adapter_3/in1` when the pair has several student vars."""
    base = f"{ADAPTER_PREFIX}{pair_index}"
    return base if n_vars == 1 else f"{base}/in{var_index}"


def is_adapter_param(name: str) -> bool:
    """True for parameters (and their optimizer state) that belong to a distillation adapter."""
    return name.startswith(ADAPTER_PREFIX)


def apply_adapter(student: Any, plan: Any) -> Any:
    """Return `student` after the plan's conv1x1+BN and/or bilinear resize (a `pairs.AdapterPlan`).

    Must run inside the student's program_guard (the params' initialisers go to its startup).
    """
    if not plan.needed:
        return student
    from ..paddle_env import import_paddle

    paddle = import_paddle()
    import paddle.nn.functional as F

    out = student
    if plan.out_channels is not None:
        attr = paddle.ParamAttr
        out = paddle.static.nn.conv2d(
            out, num_filters=plan.out_channels, filter_size=1,
            param_attr=attr(name=f"{plan.param_prefix}/weights"), bias_attr=False)
        out = paddle.static.nn.batch_norm(
            out, param_attr=attr(name=f"{plan.param_prefix}/BatchNorm/gamma"),
            bias_attr=attr(name=f"{plan.param_prefix}/BatchNorm/beta"),
            moving_mean_name=f"{plan.param_prefix}/BatchNorm/moving_mean",
            moving_variance_name=f"{plan.param_prefix}/BatchNorm/moving_variance")
    if plan.out_hw is not None:
        out = F.interpolate(out, size=list(plan.out_hw), mode="bilinear", align_corners=True)
    return out
