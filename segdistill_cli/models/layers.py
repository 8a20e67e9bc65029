"""Legacy PaddleSeg layer helpers (`pdseg/models/libs/model_libs.py`) over two interchangeable backends.

The model code (xception.py, mobilenet_v2.py, deeplabv3p.py) is written once against `LegacyNet`, which
reproduces the legacy naming rules: a "/"-joined scope (`xception_65/entry_flow/conv1/`), `conv()`
weights called `<scope>weights`, `bn()` in a `BatchNorm/` sub-scope, MobileNetV2's flat
`<name>_weights` / `<name>_bn_scale` names (the pretrained files are named so).

A backend does the actual work:
* `GraphOps` appends Paddle static-graph ops (legacy IR) to the current default program;
* `ManifestOps` only tracks channel counts and records every persistable parameter's name and shape.
Because both run the *same* model code, `parameter_manifest()` equals the built program's
persistables by construction (tests/test_models.py checks it) and costs microseconds instead of the
seconds needed to build the Xception65 program.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

# Legacy BN settings: `bn()` uses cfg.MODEL.BN_MOMENTUM (0.99) and the epsilon the model code set
# (1e-3 inside the Xception backbone, 1e-5 elsewhere); MobileNetV2's conv_bn_layer uses fluid's
# batch_norm defaults (momentum 0.9, epsilon 1e-5).
XCEPTION_BN_EPSILON = 1e-3
DEFAULT_BN_EPSILON = 1e-5
MOBILENET_BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Feature:
    """What `ManifestOps` passes around instead of a tensor: only the channel count matters."""

    channels: int


class Ops(Protocol):
    """The primitive operations the legacy model code needs."""

    def channels(self, x: Any) -> int: ...
    def conv2d(self, x: Any, filters: int, size: int, stride: int, padding: int, dilation: int,
               groups: int, weight_name: str, bias_name: Optional[str]) -> Any: ...
    def batch_norm(self, x: Any, prefix: str, suffixes: Sequence[str], epsilon: float,
                   momentum: float, no_decay: bool) -> Any: ...
    def relu(self, x: Any) -> Any: ...
    def relu6(self, x: Any) -> Any: ...
    def add(self, x: Any, y: Any) -> Any: ...
    def concat(self, xs: Sequence[Any]) -> Any: ...
    def spatial_mean(self, x: Any) -> Any: ...
    def resize_like(self, x: Any, like: Any) -> Any: ...
    def dropout(self, x: Any, p: float) -> Any: ...
    def name_of(self, x: Any) -> Optional[str]: ...
    def op_scope(self, name: str) -> Any: ...


class GraphOps:
    """Appends ops to Paddle's current default program (static graph, legacy IR).

    `is_test` builds BN with moving statistics and dropout in inference mode; a program built with
    `is_test=False` still switches both when cloned with `clone(for_test=True)`.
    """

    def __init__(self, is_test: bool = False) -> None:
        from ..paddle_env import import_paddle

        self.paddle = import_paddle()
        self.is_test = is_test

    def channels(self, x: Any) -> int:
        return int(x.shape[1])

    def conv2d(self, x, filters, size, stride, padding, dilation, groups, weight_name, bias_name):
        paddle = self.paddle
        bias_attr: Any = False
        if bias_name is not None:
            bias_attr = paddle.ParamAttr(name=bias_name,
                                         initializer=paddle.nn.initializer.Constant(0.0))
        # use_cudnn=False for grouped convs makes Paddle emit `depthwise_conv2d`, as legacy did.
        return paddle.static.nn.conv2d(
            x, num_filters=filters, filter_size=size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, param_attr=paddle.ParamAttr(name=weight_name),
            bias_attr=bias_attr, use_cudnn=groups == 1)

    def batch_norm(self, x, prefix, suffixes, epsilon, momentum, no_decay):
        paddle = self.paddle
        # Legacy bn(): gamma/beta excluded from weight decay; conv_bn_layer: global decay applies.
        regularizer = paddle.regularizer.L2Decay(0.0) if no_decay else None
        scale, offset, mean, variance = (prefix + s for s in suffixes)
        return paddle.static.nn.batch_norm(
            x, is_test=self.is_test, momentum=momentum, epsilon=epsilon,
            param_attr=paddle.ParamAttr(name=scale, regularizer=regularizer),
            bias_attr=paddle.ParamAttr(name=offset, regularizer=regularizer),
            moving_mean_name=mean, moving_variance_name=variance)

    def relu(self, x):
        return self.paddle.nn.functional.relu(x)

    def relu6(self, x):
        return self.paddle.nn.functional.relu6(x)

    def add(self, x, y):
        return self.paddle.add(x, y)

    def concat(self, xs):
        return self.paddle.concat(list(xs), axis=1)

    def spatial_mean(self, x):
        return self.paddle.mean(x, axis=[2, 3], keepdim=True)

    def resize_like(self, x, like):
        """Bilinear resize to `like`'s H, W with align_corners=True (fluid's resize_bilinear)."""
        paddle = self.paddle
        size: Any = [int(d) for d in like.shape[2:4]]
        if any(d < 0 for d in size):  # unknown spatial size at build time: take it at run time
            size = paddle.shape(like)[2:4]
        return paddle.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def dropout(self, x, p):
        # fluid.layers.dropout's default 'downgrade_in_infer': train keeps 1-p unscaled, infer x*(1-p).
        return self.paddle.nn.functional.dropout(x, p=p, training=not self.is_test,
                                                 mode="downscale_in_infer")

    def name_of(self, x):
        return x.name

    def op_scope(self, name):
        return self.paddle.static.name_scope(name)


class ManifestOps:
    """Records persistable parameter names and shapes; tensors are `Feature(channels)`."""

    def __init__(self) -> None:
        self.params: dict[str, tuple[int, ...]] = {}

    def _record(self, name: str, shape: tuple[int, ...]) -> None:
        if name in self.params:  # Paddle would silently share the parameter; legacy never does
            raise ValueError(f"parameter {name} created twice")
        self.params[name] = shape

    def channels(self, x: Feature) -> int:
        return x.channels

    def conv2d(self, x, filters, size, stride, padding, dilation, groups, weight_name, bias_name):
        self._record(weight_name, (filters, x.channels // groups, size, size))
        if bias_name is not None:
            self._record(bias_name, (filters,))
        return Feature(filters)

    def batch_norm(self, x, prefix, suffixes, epsilon, momentum, no_decay):
        for suffix in suffixes:
            self._record(prefix + suffix, (x.channels,))
        return x

    def relu(self, x):
        return x

    relu6 = relu

    def add(self, x, y):
        return x

    def concat(self, xs):
        return Feature(sum(x.channels for x in xs))

    def spatial_mean(self, x):
        return x

    def resize_like(self, x, like):
        return x

    def dropout(self, x, p):
        return x

    def name_of(self, x):
        return None

    def op_scope(self, name):
        return contextlib.nullcontext()


_BN_SCOPE_SUFFIXES = ("gamma", "beta", "moving_mean", "moving_variance")
_BN_FLAT_SUFFIXES = ("_scale", "_offset", "_mean", "_variance")


@dataclass
class LegacyNet:
    """Legacy model_libs helpers with an explicit scope instead of the module-global `name_scope`.

    `endpoints` collects the semantic aliases the model code marks (alias -> tensor).
    """

    ops: Ops
    bn_momentum: float = 0.99
    bn_epsilon: float = DEFAULT_BN_EPSILON
    prefix: str = ""
    endpoints: dict[str, Any] = field(default_factory=dict)

    # ---- naming -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        saved = self.prefix
        self.prefix = saved + name + "/"
        try:
            yield
        finally:
            self.prefix = saved

    @contextlib.contextmanager
    def epsilon(self, value: float) -> Iterator[None]:
        """Legacy xception() set cfg.MODEL.DEFAULT_EPSILON=1e-3 and deeplabv3p() reset it to 1e-5."""
        saved = self.bn_epsilon
        self.bn_epsilon = value
        try:
            yield
        finally:
            self.bn_epsilon = saved

    def mark(self, alias: str, x: Any) -> Any:
        self.endpoints[alias] = x
        return x

    def channels(self, x: Any) -> int:
        return self.ops.channels(x)

    # ---- model_libs.py ------------------------------------------------------------------------
    def conv(self, x: Any, filters: int, size: int, stride: int = 1, padding: int = 0,
             dilation: int = 1, groups: int = 1, bias: bool = False) -> Any:
        """`conv()`: weights `<scope>weights`, optional bias `<scope>biases` (init 0)."""
        return self.ops.conv2d(x, filters, size, stride, padding, dilation, groups,
                               self.prefix + "weights", self.prefix + "biases" if bias else None)

    def bn(self, x: Any) -> Any:
        """`bn()`: `<scope>BatchNorm/{gamma,beta,moving_mean,moving_variance}`, no weight decay."""
        return self.ops.batch_norm(x, self.prefix + "BatchNorm/", _BN_SCOPE_SUFFIXES,
                                   self.bn_epsilon, self.bn_momentum, no_decay=True)

    def bn_relu(self, x: Any) -> Any:
        return self.ops.relu(self.bn(x))

    def relu(self, x: Any) -> Any:
        return self.ops.relu(x)

    def separate_conv(self, x: Any, channels: int, stride: int, size: int, dilation: int = 1,
                      act: Optional[Callable[[Any], Any]] = None) -> Any:
        """Depthwise (k x k, dilated, padding (k//2)*d) + BN [+act], pointwise 1x1 + BN [+act]."""
        cin = self.channels(x)
        with self.scope("depthwise"):
            x = self.bn(self.conv(x, cin, size, stride, padding=(size // 2) * dilation,
                                  dilation=dilation, groups=cin))
            if act is not None:
                x = act(x)
        with self.scope("pointwise"):
            x = self.bn(self.conv(x, channels, 1, 1, padding=0))
            if act is not None:
                x = act(x)
        return x

    def conv_bn_layer(self, x: Any, size: int, filters: int, stride: int, padding: int, name: str,
                      groups: int = 1, act: bool = True) -> Any:
        """MobileNetV2 `conv_bn_layer`: flat names `<name>_weights`, `<name>_bn_{scale,...}`, ReLU6."""
        x = self.ops.conv2d(x, filters, size, stride, padding, 1, groups, name + "_weights", None)
        x = self.ops.batch_norm(x, name + "_bn", _BN_FLAT_SUFFIXES, DEFAULT_BN_EPSILON,
                                MOBILENET_BN_MOMENTUM, no_decay=False)
        return self.ops.relu6(x) if act else x
