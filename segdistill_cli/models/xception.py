"""Xception backbones as legacy PaddleSeg built them (`pdseg/models/backbone/xception.py`).

Reproduced on purpose: a block's stride is dropped to 1 when the running stride would exceed the
output stride, *without* adding dilation (only exit block2 has its fixed dilation 2); the decoder
shortcut is the second unit's output of the decode-point block (before its strided unit, stride 4).
The pretrained weights were trained with this behaviour.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .layers import XCEPTION_BN_EPSILON, LegacyNet


@dataclass(frozen=True)
class XceptionSpec:
    entry_strides: tuple[int, ...]
    entry_channels: tuple[int, ...]
    middle_blocks: int
    decode_point: int  # 1-based block index whose second unit feeds the decoder


EXIT_STRIDES = (2, 1)
EXIT_CHANNELS = ((728, 1024, 1024), (1536, 1536, 2048))
MIDDLE_CHANNELS = 728

SPECS: dict[str, XceptionSpec] = {
    "xception_41": XceptionSpec((2, 2, 2), (128, 256, 728), 8, 2),
    "xception_65": XceptionSpec((2, 2, 2), (128, 256, 728), 16, 2),
    "xception_71": XceptionSpec((2, 1, 2, 1, 2), (128, 256, 256, 728, 728), 16, 3),
}


class _Stride:
    """Running stride with legacy `check_stride`: keep a stride only if s*stride <= output_stride."""

    def __init__(self, output_stride: int) -> None:
        self.value = 2  # after entry_flow/conv1
        self.output_stride = output_stride

    def take(self, stride: int) -> int:
        used = stride if self.value * stride <= self.output_stride else 1
        self.value *= used
        return used


def xception(net: LegacyNet, image: Any, backbone: str, output_stride: int) -> Any:
    """Build the backbone under scope `<backbone>/`; returns its output (2048 ch).

    Marks `backbone.stride4` (the decoder shortcut), `backbone.stride8` / `backbone.stride16` (the
    last block output at that stride) and `backbone.out`.
    """
    spec = SPECS[backbone]
    stride = _Stride(output_stride)
    block_point = 0
    with net.epsilon(XCEPTION_BN_EPSILON), net.scope(backbone):
        with net.scope("entry_flow"):
            with net.scope("conv1"):
                x = net.bn_relu(net.conv(image, 32, 3, stride=2, padding=1))
            with net.scope("conv2"):
                x = net.bn_relu(net.conv(x, 64, 3, stride=1, padding=1))
            for i, (s, ch) in enumerate(zip(spec.entry_strides, spec.entry_channels)):
                block_point += 1
                with net.scope(f"block{i + 1}"):
                    x, units = _block(net, x, ch, stride.take(s))
                if block_point == spec.decode_point:
                    net.mark("backbone.stride4", units[1])
                _mark_stride(net, x, stride.value)
        with net.scope("middle_flow"):
            for i in range(spec.middle_blocks):
                with net.scope(f"block{i + 1}"):
                    x, _ = _block(net, x, MIDDLE_CHANNELS, 1, skip_conv=False)
        _mark_stride(net, x, stride.value)
        with net.scope("exit_flow"):
            with net.scope("block1"):
                x, _ = _block(net, x, EXIT_CHANNELS[0], stride.take(EXIT_STRIDES[0]))
            _mark_stride(net, x, stride.value)
            with net.scope("block2"):
                x, _ = _block(net, x, EXIT_CHANNELS[1], stride.take(EXIT_STRIDES[1]), dilation=2,
                              has_skip=False, act_inside=True)
            _mark_stride(net, x, stride.value)
    return net.mark("backbone.out", x)


def _mark_stride(net: LegacyNet, x: Any, stride: int) -> None:
    if stride in (8, 16):
        net.mark(f"backbone.stride{stride}", x)


def _block(net: LegacyNet, x: Any, channels: Any, stride: int, dilation: int = 1,
           skip_conv: bool = True, has_skip: bool = True,
           act_inside: bool = False) -> tuple[Any, list[Any]]:
    """Legacy `xception_block`: three separable units (last one strided) + optional skip."""
    chs = list(channels) if isinstance(channels, (list, tuple)) else [channels] * 3
    strides = [1, 1, stride]
    data, units = x, []
    for i in range(3):
        with net.scope(f"separable_conv{i + 1}"):
            if act_inside:
                data = net.separate_conv(data, chs[i], strides[i], 3, dilation, act=net.relu)
            else:
                data = net.separate_conv(net.relu(data), chs[i], strides[i], 3, dilation)
        units.append(data)
    if not has_skip:
        return data, units
    if skip_conv:
        with net.scope("shortcut"):
            skip = net.bn(net.conv(x, chs[-1], 1, strides[-1], padding=0))
    else:
        skip = x
    return net.ops.add(data, skip), units
