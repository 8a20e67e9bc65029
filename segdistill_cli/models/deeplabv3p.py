"""DeepLabv3+ as legacy PaddleSeg built it (`pdseg/models/modeling/deeplab.py`).

Construction order matters for the auto-generated names: the bilinear resizes are created as
image-pool (only with ASPP), decoder (only with the decoder), logits. Built in a fresh
`unique_name.guard()`, the tutorial teacher's logits are `bilinear_interp_v2_2.tmp_0` and the
student's `bilinear_interp_v2_0.tmp_0`, the names the tutorial's distillation pair uses
(docs/design.md, Legacy facts: Name generators).

Aliases (alias -> variable name) published by every model:
  image             the input feed
  backbone.stride4  decoder tap: Xception decode-point block's 2nd unit / MobileNetV2 conv3_2_dwise
  backbone.stride8  last backbone block output at stride 8 (absent when it does not exist)
  backbone.stride16 last backbone block output at stride 16 (= backbone.out at OS16; absent at OS8)
  backbone.out      backbone output (Xception exit_flow/block2, MobileNetV2 conv8_1)
  aspp.concat       ASPP 5-branch concat (1280 ch)               [ENCODER_WITH_ASPP]
  aspp.out          ASPP projection after ReLU, *before* the p=0.9 dropout (the dropout output is
                    random in training and x0.1 in inference, so it is no stable target)
  aspp.dropout      the dropout output that feeds the decoder/head
  decoder.concat    decoder concat [upsampled encoder, 48-ch shortcut] (304 ch)   [ENABLE_DECODER]
  decoder.out       decoder output (256 ch, stride 4)
  logits_lowres     head 1x1 conv output with bias, before the final resize
  logits            full-resolution pre-softmax logits [N, NUM_CLASSES, H, W]
"""
from __future__ import annotations

from typing import Any

from .layers import DEFAULT_BN_EPSILON, LegacyNet
from .mobilenet_v2 import mobilenet_v2
from .xception import SPECS as XCEPTION_SPECS
from .xception import xception

ASPP_CHANNELS = 256
DECODER_SHORTCUT_CHANNELS = 48
DECODER_CHANNELS = 256
ASPP_DROPOUT = 0.9
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
MOBILENET_NAMES = ("mobilenet", "mobilenetv2")
BACKBONES = tuple(XCEPTION_SPECS) + MOBILENET_NAMES


def deeplabv3p(net: LegacyNet, image: Any, deeplab_cfg: Any, num_classes: int) -> Any:
    """Legacy `deeplabv3p(img, num_classes)`; returns full-resolution logits."""
    backbone = deeplab_cfg.BACKBONE
    output_stride = int(deeplab_cfg.OUTPUT_STRIDE)
    net.mark("image", image)
    if backbone in XCEPTION_SPECS:
        data = xception(net, image, backbone, output_stride)
    elif backbone in MOBILENET_NAMES:
        data = mobilenet_v2(net, image, float(deeplab_cfg.DEPTH_MULTIPLIER), output_stride)
    else:
        raise ValueError(f"unsupported backbone {backbone!r}; expected one of {BACKBONES}")
    shortcut = net.endpoints["backbone.stride4"]
    with net.epsilon(DEFAULT_BN_EPSILON):
        if deeplab_cfg.ENCODER_WITH_ASPP:
            data = _encoder(net, data, ASPP_RATES[output_stride], deeplab_cfg.ASPP_WITH_SEP_CONV)
        if deeplab_cfg.ENABLE_DECODER:
            data = _decoder(net, data, shortcut, deeplab_cfg.DECODER_USE_SEP_CONV)
    with net.scope("logit"):
        # Legacy op name scope 'last_conv': quantization's not_quant_pattern keys on it.
        with net.ops.op_scope("last_conv"):
            logit = net.conv(data, num_classes, 1, 1, padding=0, bias=True)
        net.mark("logits_lowres", logit)
        return net.mark("logits", net.ops.resize_like(logit, image))


def _encoder(net: LegacyNet, x: Any, rates: tuple[int, int, int], sep_conv: bool) -> Any:
    """ASPP: concat [image_pool, aspp0, aspp1, aspp2, aspp3] -> 1x1 -> BN-ReLU -> dropout 0.9."""
    with net.scope("encoder"):
        with net.scope("image_pool"):
            pooled = net.bn_relu(net.conv(net.ops.spatial_mean(x), ASPP_CHANNELS, 1, 1, padding=0))
            pooled = net.ops.resize_like(pooled, x)
        with net.scope("aspp0"):
            branches = [pooled, net.bn_relu(net.conv(x, ASPP_CHANNELS, 1, 1, padding=0))]
        for i, rate in enumerate(rates):
            with net.scope(f"aspp{i + 1}"):
                if sep_conv:
                    branches.append(net.separate_conv(x, ASPP_CHANNELS, 1, 3, rate, act=net.relu))
                else:
                    branches.append(net.bn_relu(net.conv(x, ASPP_CHANNELS, 3, 1, padding=rate,
                                                         dilation=rate)))
        with net.scope("concat"):
            data = net.mark("aspp.concat", net.ops.concat(branches))
            data = net.mark("aspp.out", net.bn_relu(net.conv(data, ASPP_CHANNELS, 1, 1, padding=0)))
            return net.mark("aspp.dropout", net.ops.dropout(data, ASPP_DROPOUT))


def _decoder(net: LegacyNet, x: Any, shortcut: Any, sep_conv: bool) -> Any:
    """Decoder: concat [upsampled encoder, 1x1-48 shortcut] -> two 3x3 (separable) convs."""
    with net.scope("decoder"):
        with net.scope("concat"):
            shortcut = net.bn_relu(net.conv(shortcut, DECODER_SHORTCUT_CHANNELS, 1, 1, padding=0))
            x = net.ops.resize_like(x, shortcut)
            x = net.mark("decoder.concat", net.ops.concat([x, shortcut]))
        for i in (1, 2):
            if sep_conv:
                with net.scope(f"separable_conv{i}"):
                    x = net.separate_conv(x, DECODER_CHANNELS, 1, 3, 1, act=net.relu)
            else:
                with net.scope(f"decoder_conv{i}"):
                    x = net.bn_relu(net.conv(x, DECODER_CHANNELS, 3, 1, padding=1))
        return net.mark("decoder.out", x)
