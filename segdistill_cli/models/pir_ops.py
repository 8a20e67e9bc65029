"""The model primitives on Paddle 3's PIR (the PIR backend; see docs/design.md "Paddle 3.x").

`paddle.static.nn.conv2d` / `batch_norm` refuse to build under PIR, so conv and BN are written
with explicitly named parameters (`paddle.static.create_parameter`) and `paddle.nn.functional`;
every other primitive is the IR-independent code of `GraphOps`. The parameters get the legacy
names, initializers and regularizers that `GraphOps` gives them, so checkpoints (matched by
name) load the same way. PIR values have no names: wrap this backend in
`legacy_names.NamedOps` to get them.
"""
from __future__ import annotations

from typing import Any

from .layers import GraphOps


class PirOps(GraphOps):
    """`GraphOps` with conv2d and batch_norm that build under PIR (also under the legacy IR).

    `param_prefix` goes in front of every parameter name (the teacher inside the student's
    program: `teacher_`), `frozen` makes every parameter non-trainable (stop_gradient): the
    teacher of the one-program distillation (docs/design.md "Paddle 3.x")."""

    def __init__(self, is_test: bool = False, param_prefix: str = "", frozen: bool = False) -> None:
        from ..paddle_env import import_paddle

        self.paddle = import_paddle(any_ir=True)
        self.is_test = is_test
        self.param_prefix = param_prefix
        self.frozen = frozen

    def _attr(self, name: str, initializer: Any, trainable: bool = True,
              regularizer: Any = None) -> Any:
        trainable = trainable and not self.frozen
        return self.paddle.ParamAttr(name=self.param_prefix + name, initializer=initializer,
                                     regularizer=regularizer if trainable else None,
                                     trainable=trainable)

    def conv2d(self, x, filters, size, stride, padding, dilation, groups, weight_name, bias_name):
        paddle = self.paddle
        cin = self.channels(x)
        # static.nn.conv2d's default: Normal(0, sqrt(2 / (k * k * input channels))).
        std = (2.0 / (size * size * cin)) ** 0.5
        weight = paddle.static.create_parameter(
            [filters, cin // groups, size, size], "float32",
            attr=self._attr(weight_name, paddle.nn.initializer.Normal(0.0, std)))
        bias = None
        if bias_name is not None:
            bias = paddle.static.create_parameter(
                [filters], "float32", is_bias=True,
                attr=self._attr(bias_name, paddle.nn.initializer.Constant(0.0)))
        return paddle.nn.functional.conv2d(x, weight, bias=bias, stride=stride, padding=padding,
                                           dilation=dilation, groups=groups)

    def batch_norm(self, x, prefix, suffixes, epsilon, momentum, no_decay):
        paddle = self.paddle
        channels = self.channels(x)
        # Legacy bn(): gamma/beta excluded from weight decay; conv_bn_layer: global decay applies.
        regularizer = paddle.regularizer.L2Decay(0.0) if no_decay else None
        scale_name, offset_name, mean_name, variance_name = (prefix + s for s in suffixes)

        def param(name: str, value: float, trainable: bool = True, is_bias: bool = False) -> Any:
            attr = self._attr(name, paddle.nn.initializer.Constant(value), trainable, regularizer)
            return paddle.static.create_parameter([channels], "float32", attr=attr,
                                                  is_bias=is_bias)

        scale, offset = param(scale_name, 1.0), param(offset_name, 0.0, is_bias=True)
        mean, variance = param(mean_name, 0.0, False), param(variance_name, 1.0, False)
        return paddle.nn.functional.batch_norm(x, mean, variance, weight=scale, bias=offset,
                                               training=not self.is_test, momentum=momentum,
                                               epsilon=epsilon)

    def name_of(self, x):
        return None  # PIR values have no names; NamedOps records the legacy ones
