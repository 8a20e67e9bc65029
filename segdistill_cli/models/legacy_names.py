"""The names (and program order) the legacy IR gives every variable, recorded over any backend.

Under Paddle 3's PIR, intermediate values have no names, yet names are segdistill's interface
(`inspect-vars`, DISTILL pairs, the `teacher_` prefix, the tutorial's pair
`teacher_bilinear_interp_v2_2.tmp_0` <-> `bilinear_interp_v2_0.tmp_0`). `NamedOps` wraps a backend
(`GraphOps` on the legacy IR, `PirOps` on PIR) and replays Paddle 2.6's naming rules for each
primitive the model code calls, so the same model code yields the same names on both IRs:

* one counter per op key in a program (what `unique_name.guard()` restarts): the layer is
  `<key>_<n>` (`conv2d_3`), its outputs `<layer>.tmp_<k>` in creation order; `paddle.add`'s output
  is `elementwise_add_<n>` with no `.tmp` part;
* `static.nn.conv2d` is a `depthwise_conv2d` layer when every input channel is its own group, and
  its bias add writes `<layer>.tmp_1`;
* `static.nn.batch_norm` (built for training) creates saved mean, saved variance, reserve space,
  output = `tmp_0 .. tmp_3`; `clone(for_test=True)` keeps the reserve-space variable but no op
  writes it any more;
* an op lists its inputs, then its outputs, slot by slot in alphabetical order (that is the order
  `describe_recorded` numbers first uses in, as `inspect.describe_program` does for a real
  program). tests/test_legacy_names.py checks all of it against real 2.6.2 programs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..inspect import DATA_FEEDS, VarInfo

FLOAT = "float32"


@dataclass
class _Var:
    name: str
    shape: tuple[int, ...]
    dtype: str
    persistable: bool


@dataclass
class _Op:
    type: str
    inputs: dict[str, list[str]]
    outputs: dict[str, list[str]]

    def arg_names(self) -> list[str]:
        """Inputs then outputs, each slot in alphabetical order (a legacy OpDesc's order)."""
        return [name for slots in (self.inputs, self.outputs)
                for slot in sorted(slots) for name in slots[slot]]


class LegacyNameGenerator:
    """Paddle 2.6's `unique_name` rules for the layers the model code uses."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def _next(self, key: str) -> int:
        n = self._ids.get(key, 0)
        self._ids[key] = n + 1
        return n

    def layer(self, key: str) -> str:
        return f"{key}_{self._next(key)}"

    def tmp(self, layer: str) -> str:
        return f"{layer}.tmp_{self._next(layer + '.tmp')}"


@dataclass
class NamedOps:
    """An `Ops` backend that delegates every op to `inner` and records legacy names, shapes and
    producing ops. `cloned_for_test`: name the program as legacy's teacher (built for training,
    then `clone(for_test=True)`), whatever mode `inner` builds in."""

    inner: Any
    cloned_for_test: bool = False
    names: LegacyNameGenerator = field(default_factory=LegacyNameGenerator)
    vars: dict[str, _Var] = field(default_factory=dict)
    ops: list[_Op] = field(default_factory=list)
    _name_by_id: dict[int, str] = field(default_factory=dict)
    _value_by_name: dict[str, Any] = field(default_factory=dict)  # also keeps ids unique

    # ---- recording ----------------------------------------------------------------------------
    def feed(self, value: Any, name: str) -> Any:
        """A data feed (`paddle.static.data`): named by the caller, produced by no op."""
        return self._bind(value, self._add_var(name, _shape(value), _dtype(value), False))

    def _add_var(self, name: str, shape: Sequence[int], dtype: str, persistable: bool) -> str:
        if name in self.vars:
            raise ValueError(f"variable {name} created twice")
        self.vars[name] = _Var(name, tuple(int(d) for d in shape), dtype, persistable)
        return name

    def _bind(self, value: Any, name: str) -> Any:
        self._name_by_id[id(value)] = name
        self._value_by_name[name] = value
        return value

    def _tmp_like(self, layer: str, value: Any) -> str:
        return self._add_var(self.names.tmp(layer), _shape(value), _dtype(value), False)

    def _op(self, type_: str, inputs: dict[str, list[str]], outputs: dict[str, list[str]]) -> None:
        self.ops.append(_Op(type_, inputs, outputs))

    def name_of(self, x: Any) -> Optional[str]:
        return self._name_by_id.get(id(x))

    def value_of(self, name: str) -> Optional[Any]:
        """The value recorded under a legacy name: a feed or an op's output (parameters are not
        kept, they are found by their real names)."""
        return self._value_by_name.get(name)

    def _name(self, x: Any) -> str:
        name = self.name_of(x)
        if name is None:
            raise ValueError("a value that no recorded op produced was passed to an op")
        return name

    # ---- the Ops protocol ---------------------------------------------------------------------
    def channels(self, x: Any) -> int:
        return self.inner.channels(x)

    def conv2d(self, x, filters, size, stride, padding, dilation, groups, weight_name, bias_name):
        cin = self.channels(x)
        out = self.inner.conv2d(x, filters, size, stride, padding, dilation, groups, weight_name,
                                bias_name)
        depthwise = groups != 1 and groups == cin and filters % cin == 0
        key = "depthwise_conv2d" if depthwise else "conv2d"
        layer = self.names.layer(key)
        self._add_var(weight_name, (filters, cin // groups, size, size), FLOAT, True)
        pre_bias = self._tmp_like(layer, out)
        self._op(key, {"Filter": [weight_name], "Input": [self._name(x)]}, {"Output": [pre_bias]})
        if bias_name is None:
            return self._bind(out, pre_bias)
        self._add_var(bias_name, (filters,), FLOAT, True)
        biased = self._tmp_like(layer, out)
        self._op("elementwise_add", {"X": [pre_bias], "Y": [bias_name]}, {"Out": [biased]})
        return self._bind(out, biased)

    def batch_norm(self, x, prefix, suffixes, epsilon, momentum, no_decay):
        channels = self.channels(x)
        out = self.inner.batch_norm(x, prefix, suffixes, epsilon, momentum, no_decay)
        scale, offset, mean, variance = (prefix + s for s in suffixes)
        for name in (scale, offset, mean, variance):
            self._add_var(name, (channels,), FLOAT, True)
        layer = self.names.layer("batch_norm")
        saved_mean = self._add_var(self.names.tmp(layer), (channels,), FLOAT, False)
        saved_variance = self._add_var(self.names.tmp(layer), (channels,), FLOAT, False)
        reserve = self._add_var(self.names.tmp(layer), (-1,), _dtype(x), False)
        y = self._tmp_like(layer, out)
        outputs = {"MeanOut": [mean], "SavedMean": [saved_mean],
                   "SavedVariance": [saved_variance], "VarianceOut": [variance], "Y": [y]}
        if not self.cloned_for_test:  # the test clone drops the output, keeps the variable
            outputs["ReserveSpace"] = [reserve]
        self._op("batch_norm", {"Bias": [offset], "Mean": [mean], "MeanOut": [mean],
                                "Scale": [scale], "Variance": [variance],
                                "VarianceOut": [variance], "X": [self._name(x)]}, outputs)
        return self._bind(out, y)

    def _unary(self, key: str, op_type: str, x: Any, out: Any) -> Any:
        name = self._tmp_like(self.names.layer(key), out)
        self._op(op_type, {"X": [self._name(x)]}, {"Out": [name]})
        return self._bind(out, name)

    def relu(self, x):
        return self._unary("relu", "relu", x, self.inner.relu(x))

    def relu6(self, x):
        return self._unary("relu6", "relu6", x, self.inner.relu6(x))

    def spatial_mean(self, x):
        return self._unary("mean", "reduce_mean", x, self.inner.spatial_mean(x))

    def resize_like(self, x, like):
        return self._unary("bilinear_interp_v2", "bilinear_interp_v2", x,
                           self.inner.resize_like(x, like))

    def add(self, x, y):
        out = self.inner.add(x, y)
        name = self._add_var(self.names.layer("elementwise_add"), _shape(out), _dtype(out), False)
        self._op("elementwise_add", {"X": [self._name(x)], "Y": [self._name(y)]}, {"Out": [name]})
        return self._bind(out, name)

    def concat(self, xs):
        out = self.inner.concat(xs)
        name = self._tmp_like(self.names.layer("concat"), out)
        self._op("concat", {"X": [self._name(x) for x in xs]}, {"Out": [name]})
        return self._bind(out, name)

    def dropout(self, x, p):
        out = self.inner.dropout(x, p)
        layer = self.names.layer("dropout")
        name = self._tmp_like(layer, out)
        mask = self._add_var(self.names.tmp(layer), _shape(out), "uint8", False)
        self._op("dropout", {"X": [self._name(x)]}, {"Mask": [mask], "Out": [name]})
        return self._bind(out, name)

    def op_scope(self, name):
        return self.inner.op_scope(name)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)


def _dtype(value: Any) -> str:
    from paddle.base.data_feeder import convert_dtype

    return convert_dtype(value.dtype)


def describe_recorded(ops: NamedOps, aliases: dict[str, str], prefix: str = "") -> list[VarInfo]:
    """What `inspect.describe_program` lists for the legacy program `ops` recorded: every
    variable, renamed with `prefix` (data feeds keep their names), in program order; variables no
    op uses go last, in the order the program lists them (a cloned program: sorted as strings)."""
    order: dict[str, int] = {}
    producers: dict[str, str] = {}
    for op in ops.ops:
        for name in op.arg_names():
            order.setdefault(name, len(order))
        for slot in sorted(op.outputs):
            for name in op.outputs[slot]:
                producers.setdefault(name, op.type)
    listed = sorted(ops.vars) if ops.cloned_for_test else list(ops.vars)
    for name in listed:
        order.setdefault(name, len(order))
    alias_of = {name: alias for alias, name in aliases.items()}
    infos = [VarInfo(v.name if (not prefix or v.name in DATA_FEEDS) else prefix + v.name, v.name,
                     v.shape, v.dtype, producers.get(v.name), v.persistable,
                     alias_of.get(v.name), order[v.name]) for v in ops.vars.values()]
    return sorted(infos, key=lambda info: info.position)
