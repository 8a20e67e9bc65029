"""MobileNetV2 backbone as legacy PaddleSeg built it (`pdseg/models/backbone/mobilenet_v2.py`).

Legacy details kept on purpose (the pretrained weights were trained with them):
* channel rounding for DEPTH_MULTIPLIER `scale`: conv1 and every group output use `int(c * scale)`
  (truncation), expansions `int(round(in * t))`. These are the exact legacy formulas for every
  scale, so e.g. x0.5 has conv1 16, groups 8/12/16/32/48/80/160 channels (no rounding to multiples
  of 8 as in torchvision's MobileNetV2);
* an expand conv also for t=1 (conv2_1_expand), no residual on the first unit of a group even when
  shapes match, ReLU6, BN momentum 0.9 / epsilon 1e-5 with flat `<name>_bn_*` names;
* a group's stride becomes 1 when the running stride would exceed the output stride, without any
  dilation; the backbone stops after conv8_1 (end_points=18), conv9/fc10 are never built;
* the decoder tap (decode_points=4) is the depthwise output of the last unit of group conv3
  (conv3_2_dwise, stride 4).
"""
from __future__ import annotations

from typing import Any

from .layers import LegacyNet

# (expansion t, output channels c, units n, stride s) per group conv2..conv8.
BOTTLENECKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))
DECODE_GROUP = "conv3"


def group_strides(output_stride: int) -> list[int]:
    """Legacy `modify_bottle_params`: the running product uses the *original* strides."""
    if output_stride % 2 != 0:
        raise ValueError("output stride must be even")
    running, strides = 2, []
    for _, _, _, s in BOTTLENECKS:
        running *= s
        strides.append(1 if running > output_stride else s)
    return strides


def mobilenet_v2(net: LegacyNet, image: Any, scale: float, output_stride: int) -> Any:
    """Build the truncated backbone; returns conv8_1's output (int(320*scale) ch).

    Marks `backbone.stride4` (decoder tap), `backbone.stride8` / `backbone.stride16` (last group
    output at that stride) and `backbone.out`.
    """
    x = net.conv_bn_layer(image, 3, int(32 * scale), 2, 1, name="conv1_1")
    in_c, stride = int(32 * scale), 2
    for i, ((t, c, n, _), s) in enumerate(zip(BOTTLENECKS, group_strides(output_stride))):
        name = f"conv{i + 2}"
        out_c = int(c * scale)
        x, depthwise = _group(net, x, in_c, t, out_c, n, s, name)
        in_c, stride = out_c, stride * s
        if name == DECODE_GROUP:
            net.mark("backbone.stride4", depthwise)
        if stride in (8, 16):
            net.mark(f"backbone.stride{stride}", x)
    return net.mark("backbone.out", x)


def _group(net: LegacyNet, x: Any, in_c: int, t: int, c: int, n: int, s: int,
           name: str) -> tuple[Any, Any]:
    """Legacy `invresi_blocks`: unit 1 strided without residual, units 2..n with residual."""
    x, depthwise = _unit(net, x, in_c, c, t, s, residual=False, name=f"{name}_1")
    for j in range(2, n + 1):
        x, depthwise = _unit(net, x, c, c, t, 1, residual=True, name=f"{name}_{j}")
    return x, depthwise


def _unit(net: LegacyNet, x: Any, in_c: int, out_c: int, t: int, stride: int, residual: bool,
          name: str) -> tuple[Any, Any]:
    """Legacy `inverted_residual_unit`: expand 1x1 -> depthwise 3x3 -> linear 1x1 [+ input]."""
    expanded = int(round(in_c * t))
    y = net.conv_bn_layer(x, 1, expanded, 1, 0, name=name + "_expand")
    depthwise = net.conv_bn_layer(y, 3, expanded, stride, 1, name=name + "_dwise", groups=expanded)
    y = net.conv_bn_layer(depthwise, 1, out_c, 1, 0, name=name + "_linear", act=False)
    return (net.ops.add(x, y) if residual else y), depthwise
