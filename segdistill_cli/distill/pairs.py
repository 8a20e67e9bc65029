"""Resolve the config's DISTILL pairs to variables and check them, without building anything.

`resolve_pairs` is the pre-flight check (run before step 1, before or after the merge): every
name exists, every shape fits the loss (or the pair asks for an adapter that makes it fit), custom
functions import. It returns `ResolvedPair`s that `build.add_distill_losses` turns into losses.

How a side's name is looked up (student side in the student program, teacher side in the teacher
program as built, i.e. before the `teacher_` prefix):
1. a raw variable name (`bilinear_interp_v2_0.tmp_0`),
2. an alias from the model's alias map (`logits`, `backbone.out`, ...),
3. teacher side only: the same two with the prefix given (`teacher_bilinear_interp_v2_2.tmp_0`).
Resolved teacher names are returned as they are in the merged program (`teacher_` + name, or the
student's name for a mapped data variable such as `image`).

This module does not import Paddle: it only reads `program.list_vars()` names and shapes.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..config.values import with_origin
from ..errors import ConfigError
from .adapters import adapter_param_prefix
from .custom import load_function
from .registry import LOSSES, loss_options
from .teacher import TEACHER_FEEDS, TEACHER_PREFIX, merged_name

Shape = tuple  # static shape; -1 marks an unknown dimension (the batch, usually)


@dataclass(frozen=True)
class AdapterPlan:
    """How one student variable is prepared before the loss (a no-op when `needed` is False)."""

    student_name: str
    param_prefix: str  # parameter names start with this: "distill_adapter_<pair>[/in<k>]"
    in_channels: int
    out_channels: Optional[int] = None  # conv1x1 (+BN) to this many channels
    out_hw: Optional[tuple[int, int]] = None  # bilinear resize (align_corners=True) to (H, W)

    @property
    def needed(self) -> bool:
        return self.out_channels is not None or self.out_hw is not None


@dataclass
class ResolvedPair:
    """One DISTILL pair, checked. Names are those of the merged program."""

    index: int
    name: str
    loss: str
    weight: float
    student: list[str]
    teacher: list[str]
    student_shapes: list[Shape]
    teacher_shapes: list[Shape]
    adapters: list[AdapterPlan]
    # Builtins: temperature/teacher_temperature/student_temperature (defaulted), mask and
    # threshold (kl, soft_label), inter_weight and intra_weight (dist).
    # custom: the keyword arguments passed to the function (temperatures set + OPTIONS).
    options: dict[str, Any] = field(default_factory=dict)
    function: Optional[Callable[..., Any]] = None
    function_spec: Optional[str] = None
    student_is_list: bool = False  # custom: pass lists (as written in the config) or single vars
    teacher_is_list: bool = False

    @property
    def where(self) -> str:
        return f"DISTILL[{self.index}]"

    @property
    def needs_adapters(self) -> bool:
        return any(plan.needed for plan in self.adapters)

    def describe(self) -> str:
        """One line for logs and `inspect-vars`."""
        sides = ", ".join(f"{s}{list(ss)} <- {t}{list(ts)}" for s, ss, t, ts in zip(
            self.student, self.student_shapes, self.teacher, self.teacher_shapes))
        extra = [f"{p.student_name}: " + " + ".join(_plan_steps(p))
                 for p in self.adapters if p.needed]
        adapt = f"; adapters: {'; '.join(extra)}" if extra else ""
        return f"{self.name}: {self.loss} x {self.weight:g} on {sides}{adapt}"


def _plan_steps(plan: AdapterPlan) -> list[str]:
    steps = []
    if plan.out_channels is not None:
        steps.append(f"conv1x1 {plan.in_channels}->{plan.out_channels}")
    if plan.out_hw is not None:
        steps.append(f"bilinear to {plan.out_hw[0]}x{plan.out_hw[1]}")
    return steps


class _VarTable:
    """Names, shapes and aliases of one program, with the lookup rules of the module docstring."""

    def __init__(self, program: Any, aliases: Optional[Mapping[str, str]], role: str,
                 exclude_prefix: Optional[str] = None):
        self.role = role
        self.shapes: dict[str, Shape] = {}
        self.activations: list[str] = []  # what a pair distils; parameters are never offered
        for var in program.list_vars():
            name = var.name
            if name in ("feed", "fetch") or "@" in name:  # @GRAD, @LR_DECAY_COUNTER@, ...
                continue
            if exclude_prefix and name.startswith(exclude_prefix):
                continue  # a merged student program also holds the teacher's variables
            self.shapes[name] = tuple(var.shape)
            if not var.persistable:
                self.activations.append(name)
        self.aliases = dict(aliases or {})

    def lookup(self, name: str) -> Optional[str]:
        if name in self.shapes:
            return name
        target = self.aliases.get(name)
        return target if target in self.shapes else None

    def suggestions(self, name: str, n: int = 5) -> list[str]:
        """Close activation names and aliases (a misspelt `logits` must not get `logit/biases`)."""
        return difflib.get_close_matches(name, self.activations + list(self.aliases), n=n,
                                         cutoff=0.5)


def resolve_pairs(pairs: Sequence[Mapping[str, Any]], student_program: Any, teacher_program: Any,
                  student_aliases: Optional[Mapping[str, str]] = None,
                  teacher_aliases: Optional[Mapping[str, str]] = None,
                  prefix: str = TEACHER_PREFIX,
                  data_name_map: Optional[Mapping[str, str]] = None,
                  source: Optional[str] = None) -> list[ResolvedPair]:
    """Check every pair (names, shapes, adapters, custom imports); build nothing.

    `pairs`: `cfg.distill_pairs` (parsed by config.parse_distill). `student_program` may already be
    merged; `teacher_program` is the teacher as built (unprefixed names). `data_name_map` is the
    one given to the merge ({'image': 'image'} by default). `source` names the YAML in messages.
    Raises ConfigError with one line naming the pair, the side and the variable.
    """
    if not pairs:
        raise ConfigError(
            with_origin("DISTILL", source) + ": no pairs; remove the section to use the "
            "tutorial's pair (teacher logits -> student logits, l2, 0.1)")
    student = _VarTable(student_program, student_aliases, "student", exclude_prefix=prefix)
    teacher = _VarTable(teacher_program, teacher_aliases, "teacher")
    mapped = dict(data_name_map or TEACHER_FEEDS)
    resolved: list[ResolvedPair] = []
    names_seen: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        item = _resolve_one(index, pair, student, teacher, prefix, mapped, source)
        if item.name in names_seen:
            raise ConfigError(
                f"{with_origin(item.where + '.NAME', source)}: {item.name!r} is also the "
                f"name of DISTILL[{names_seen[item.name]}]; give each pair its own "
                "NAME")
        names_seen[item.name] = index
        resolved.append(item)
    return resolved


def _names(value: Any) -> tuple[list[str], bool]:
    return (list(value), True) if isinstance(value, (list, tuple)) else ([value], False)


def _resolve_one(index: int, pair: Mapping[str, Any], student: _VarTable, teacher: _VarTable,
                 prefix: str, data_name_map: Mapping[str, str],
                 source: Optional[str]) -> ResolvedPair:
    where = f"DISTILL[{index}]"
    loss = str(pair.get("LOSS", "l2")).lower()
    s_raw, s_is_list = _names(pair["STUDENT"])
    t_raw, t_is_list = _names(pair["TEACHER"])
    s_names = [_find(student, n, f"{where}.STUDENT", k if s_is_list else None, None, source)
               for k, n in enumerate(s_raw)]
    t_names = [_find(teacher, n, f"{where}.TEACHER", k if t_is_list else None, prefix, source)
               for k, n in enumerate(t_raw)]
    s_shapes = [student.shapes[n] for n in s_names]
    t_shapes = [teacher.shapes[n] for n in t_names]
    adapters = _plan_adapters(index, pair, s_names, s_shapes, t_shapes, source)
    if loss != "custom":
        _check_shapes(where, loss, s_names, _after_adapters(s_shapes, adapters), t_names,
                      t_shapes, pair, source)
    item = ResolvedPair(
        index=index, name=str(pair.get("NAME") or f"{loss}_{index}"), loss=loss,
        weight=float(pair.get("WEIGHT", 1.0)), student=s_names,
        teacher=[merged_name(n, data_name_map, prefix) for n in t_names],
        student_shapes=s_shapes, teacher_shapes=t_shapes, adapters=adapters,
        student_is_list=s_is_list, teacher_is_list=t_is_list)
    temperatures = _temperatures(pair)
    if loss == "custom":
        spec = str(pair.get("FUNCTION", ""))
        item.function = load_function(spec, with_origin(f"{where}.FUNCTION", source))
        item.function_spec = spec
        explicit = {k: v for k, v in temperatures.items() if _explicit(pair, k)}
        item.options = {**explicit, **dict(pair.get("OPTIONS") or {})}
    else:
        item.options = {**temperatures, **loss_options(loss, pair)}
    return item


def _find(table: _VarTable, name: str, side: str, list_index: Optional[int],
          prefix: Optional[str], source: Optional[str]) -> str:
    found = table.lookup(name)
    if found is None and prefix and name.startswith(prefix):
        found = table.lookup(name[len(prefix):])
    if found is not None:
        return found
    key = side + (f"[{list_index}]" if list_index is not None else "")
    bare = name[len(prefix):] if prefix and name.startswith(prefix) else name
    close = table.suggestions(bare)
    hint = ("closest: " + ", ".join(close)) if close else \
        "no similar names (list them with `segdistill inspect-vars`)"
    raise ConfigError(
        f"{with_origin(key, source)}: no variable or alias {name!r} in the {table.role} "
        f"program; {hint}")


def _temperatures(pair: Mapping[str, Any]) -> dict[str, float]:
    both = float(pair.get("TEMPERATURE", 1.0))
    return {
        "temperature": both,
        "teacher_temperature": float(pair.get("TEACHER_TEMPERATURE", both)),
        "student_temperature": float(pair.get("STUDENT_TEMPERATURE", both)),
    }


def _explicit(pair: Mapping[str, Any], option: str) -> bool:
    return option.upper() in pair


def _plan_adapters(index: int, pair: Mapping[str, Any], s_names: list[str],
                   s_shapes: list[Shape], t_shapes: list[Shape],
                   source: Optional[str]) -> list[AdapterPlan]:
    """Plan the conv1x1 / bilinear step for each student variable (student k -> teacher k)."""
    want_conv = str(pair.get("ADAPTER", "none")).lower() == "conv1x1"
    want_resize = str(pair.get("RESIZE", "none")).lower() == "bilinear"
    where = f"DISTILL[{index}]"
    if (want_conv or want_resize) and len(s_names) != len(t_shapes):
        raise ConfigError(
            f"{with_origin(where, source)}: ADAPTER/RESIZE need as many STUDENT as TEACHER "
            f"variables (got {len(s_names)} and {len(t_shapes)})")
    plans = []
    for k, (name, s_shape) in enumerate(zip(s_names, s_shapes)):
        prefix = adapter_param_prefix(index, k, len(s_names))
        in_channels = s_shape[1] if len(s_shape) > 1 else -1
        if not (want_conv or want_resize):
            plans.append(AdapterPlan(name, prefix, in_channels))
            continue
        t_shape = t_shapes[k]
        if len(s_shape) != 4 or len(t_shape) != 4:
            raise ConfigError(
                f"{with_origin(where, source)}: ADAPTER/RESIZE need NCHW variables; student "
                f"{name} is {list(s_shape)}, teacher is {list(t_shape)}")
        out_channels = t_shape[1] if want_conv else None
        out_hw = (t_shape[2], t_shape[3]) if want_resize else None
        if (want_conv and in_channels <= 0) or (out_channels is not None and out_channels <= 0):
            raise ConfigError(
                f"{with_origin(where, source)}: ADAPTER conv1x1 needs known channel counts "
                f"(student {list(s_shape)}, teacher {list(t_shape)})")
        if out_hw is not None and min(out_hw) <= 0:
            raise ConfigError(
                f"{with_origin(where, source)}: RESIZE bilinear needs the teacher's static "
                f"height and width (teacher is {list(t_shape)})")
        plans.append(AdapterPlan(name, prefix, in_channels, out_channels, out_hw))
    return plans


def _after_adapters(shapes: list[Shape], plans: list[AdapterPlan]) -> list[Shape]:
    result = []
    for shape, plan in zip(shapes, plans):
        shape = list(shape)
        if plan.out_channels is not None:
            shape[1] = plan.out_channels
        if plan.out_hw is not None:
            shape[2], shape[3] = plan.out_hw
        result.append(tuple(shape))
    return result


def _dims_agree(a: Shape, b: Shape, dims: Sequence[int]) -> bool:
    """Equal on `dims`; an unknown (-1) dimension agrees with anything."""
    return all(a[d] == b[d] or a[d] < 0 or b[d] < 0 for d in dims)


def _check_shapes(where: str, loss: str, s_names: list[str], s_shapes: list[Shape],
                  t_names: list[str], t_shapes: list[Shape], pair: Mapping[str, Any],
                  source: Optional[str]) -> None:
    spec = LOSSES[loss]
    for name, shape in list(zip(s_names, s_shapes)) + list(zip(t_names, t_shapes)):
        if len(shape) < spec.min_rank:
            raise ConfigError(f"{with_origin(where, source)}: LOSS {loss} needs at least "
                              f"{spec.min_rank}-D variables; {name} is {list(shape)}")
    if spec.same_shape:
        s_shape, t_shape = s_shapes[0], t_shapes[0]
        if len(s_shape) != len(t_shape) or not _dims_agree(s_shape, t_shape,
                                                           range(1, len(s_shape))):
            raise ConfigError(f"{with_origin(where, source)}: student {s_names[0]} has shape "
                              f"{list(s_shape)} but teacher {t_names[0]} has {list(t_shape)}"
                              f"{_adapter_hint(s_shape, t_shape, pair)}")
    elif loss == "fsp":
        _check_fsp(where, s_names, s_shapes, t_names, t_shapes, pair, source)


def _adapter_hint(s_shape: Shape, t_shape: Shape, pair: Mapping[str, Any]) -> str:
    hints = []
    if len(s_shape) == len(t_shape) == 4:
        if not _dims_agree(s_shape, t_shape, [1]) and pair.get("ADAPTER", "none") == "none":
            hints.append("ADAPTER: conv1x1")
        if not _dims_agree(s_shape, t_shape, [2, 3]) and pair.get("RESIZE", "none") == "none":
            hints.append("RESIZE: bilinear")
    return f" (set {' and '.join(hints)} on this pair to adapt the student)" if hints else ""


def _check_fsp(where: str, s_names: list[str], s_shapes: list[Shape], t_names: list[str],
               t_shapes: list[Shape], pair: Mapping[str, Any], source: Optional[str]) -> None:
    """FSP matrices: H, W equal and static within a side; channel counts equal across sides."""
    for side, names, shapes in (("student", s_names, s_shapes), ("teacher", t_names, t_shapes)):
        if not _dims_agree(shapes[0], shapes[1], [2, 3]) or min(shapes[0][2:]) <= 0:
            raise ConfigError(
                f"{with_origin(where, source)}: fsp needs two {side} variables with the same "
                f"static height and width; {names[0]} is {list(shapes[0])}, "
                f"{names[1]} is {list(shapes[1])}")
    for k in range(2):
        if not _dims_agree(s_shapes[k], t_shapes[k], [1]):
            raise ConfigError(f"{with_origin(where, source)}: fsp student {s_names[k]} has shape "
                              f"{list(s_shapes[k])} but teacher {t_names[k]} has "
                              f"{list(t_shapes[k])}; their channel counts must match"
                              + ("" if pair.get("ADAPTER", "none") != "none"
                                 else " (set ADAPTER: conv1x1 on this pair to adapt the student)"))
