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
    if plan.out_channels is not None and paddle.framework.in_pir_mode():
        out = _pir_conv_bn(out, plan)
    elif plan.out_channels is not None:
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


def _pir_conv_bn(x: Any, plan: Any) -> Any:
    """The conv1x1 + BN above under PIR, where static.nn.conv2d/batch_norm do not build: the model
    backend's primitives with the same parameter names and static.nn's defaults (conv init
    Normal(0, sqrt(2 / C_in)), no bias; BN momentum 0.9, epsilon 1e-5, global weight decay)."""
    from ..models.pir_ops import PirOps

    ops = PirOps(is_test=False)
    out = ops.conv2d(x, plan.out_channels, 1, 1, 0, 1, 1, f"{plan.param_prefix}/weights", None)
    return ops.batch_norm(out, f"{plan.param_prefix}/BatchNorm/",
                          ("gamma", "beta", "moving_mean", "moving_variance"), 1e-5, 0.9,
                          no_decay=False)
