"""Legacy-faithful DeepLabv3+ (Xception / MobileNetV2) in Paddle's static graph, legacy parameter names.

Public API:
  build_deeplabv3p(cfg, image, is_test=False) -> ModelOutputs   ops into the *current* program/guard
  parameter_manifest(cfg) -> {param name: shape}                  every persistable, no Paddle needed
See deeplabv3p.py for the alias table.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .deeplabv3p import BACKBONES, deeplabv3p
from .layers import Feature, GraphOps, LegacyNet, ManifestOps

__all__ = ["ModelOutputs", "build_deeplabv3p", "parameter_manifest", "BACKBONES"]


@dataclass
class ModelOutputs:
    """What a built model hands to its caller.

    `aliases` maps semantic names (`logits`, `backbone.out`, ...) to variable names;
    `variables` maps the same aliases to the Variables themselves.
    """

    logits: Any
    aliases: dict[str, str] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)


def _check(cfg: Any) -> None:
    deeplab = cfg.MODEL.DEEPLAB
    if cfg.MODEL.MODEL_NAME not in ("", "deeplabv3p"):
        raise ConfigError(f"MODEL.MODEL_NAME: only deeplabv3p is supported, got {cfg.MODEL.MODEL_NAME!r}")
    if cfg.MODEL.DEFAULT_NORM_TYPE != "bn":
        raise ConfigError("MODEL.DEFAULT_NORM_TYPE: only 'bn' is implemented (the tutorial's models)")
    if deeplab.BACKBONE not in BACKBONES:
        raise ConfigError(f"MODEL.DEEPLAB.BACKBONE: {deeplab.BACKBONE!r} is not one of {BACKBONES}")
    if int(deeplab.OUTPUT_STRIDE) not in (8, 16):
        raise ConfigError(f"MODEL.DEEPLAB.OUTPUT_STRIDE: must be 8 or 16, got {deeplab.OUTPUT_STRIDE}")
    if not 0.25 <= float(deeplab.DEPTH_MULTIPLIER) <= 2.0:
        raise ConfigError("MODEL.DEEPLAB.DEPTH_MULTIPLIER: must be within 0.25..2.0, got "
                          f"{deeplab.DEPTH_MULTIPLIER}")


def _net(cfg: Any, ops: Any) -> LegacyNet:
    return LegacyNet(ops, bn_momentum=float(cfg.MODEL.BN_MOMENTUM))


def build_deeplabv3p(cfg: Any, image: Any, is_test: bool = False) -> ModelOutputs:
    """Append the model for `cfg` to the current default program, reading `image` [N, C, H, W].

    The caller owns `program_guard` and `unique_name.guard`. With `is_test=True` BN uses its moving
    statistics and dropout runs in inference mode (x0.1); otherwise clone(for_test=True) does that.
    """
    _check(cfg)
    net = _net(cfg, GraphOps(is_test=is_test))
    logits = deeplabv3p(net, image, cfg.MODEL.DEEPLAB, int(cfg.DATASET.NUM_CLASSES))
    return ModelOutputs(logits=logits,
                        aliases={k: v.name for k, v in net.endpoints.items()},
                        variables=dict(net.endpoints))


def parameter_manifest(cfg: Any) -> dict[str, tuple[int, ...]]:
    """Every persistable parameter (BN moving stats included) of the model for `cfg` -> shape.

    Runs the same model code as `build_deeplabv3p` on shape-only tensors, so no Paddle is imported.
    """
    _check(cfg)
    deeplab = cfg.MODEL.DEEPLAB
    return dict(_manifest(str(deeplab.BACKBONE), int(deeplab.OUTPUT_STRIDE),
                          float(deeplab.DEPTH_MULTIPLIER), bool(deeplab.ENCODER_WITH_ASPP),
                          bool(deeplab.ENABLE_DECODER), bool(deeplab.ASPP_WITH_SEP_CONV),
                          bool(deeplab.DECODER_USE_SEP_CONV), int(cfg.DATASET.NUM_CLASSES),
                          int(cfg.DATASET.DATA_DIM)))


@functools.lru_cache(maxsize=32)
def _manifest(backbone: str, output_stride: int, depth_multiplier: float, aspp: bool,
              decoder: bool, aspp_sep: bool, decoder_sep: bool, num_classes: int,
              channels: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from ..config import SegConfig  # only for the attribute-access dict

    deeplab = SegConfig(BACKBONE=backbone, OUTPUT_STRIDE=output_stride,
                        DEPTH_MULTIPLIER=depth_multiplier, ENCODER_WITH_ASPP=aspp,
                        ENABLE_DECODER=decoder, ASPP_WITH_SEP_CONV=aspp_sep,
                        DECODER_USE_SEP_CONV=decoder_sep)
    ops = ManifestOps()
    deeplabv3p(LegacyNet(ops), Feature(channels), deeplab, num_classes)
    return tuple(ops.params.items())
