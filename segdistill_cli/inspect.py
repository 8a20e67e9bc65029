"""Variable listing, shape diff and distillation-pair suggestions for a student/teacher pair.

Teacher names are shown as they will be *after* the merge (`distill/teacher.merged_name`: every
teacher variable except the shared image feed gets the `teacher_` prefix).
Only 4-D floating-point activations (NCHW feature maps) take part in the diff and the suggestions;
BN batch statistics, dropout masks and parameters are never distillation targets.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from .distill.teacher import TEACHER_PREFIX, merged_name
from .errors import ConfigError

DATA_FEEDS = ("image", "label", "mask")  # the programs' inputs: never distillation targets
LOGIT_ALIASES = ("logits", "logits_lowres")
# The tutorial's pair weight; feature pairs start at 1.0 (tune with the loss magnitudes you see).
LOGITS_WEIGHT = 0.1
FEATURE_WEIGHT = 1.0


@dataclass(frozen=True)
class VarInfo:
    """One variable of a program, under the name it will have in the merged program."""

    name: str
    program_name: str
    shape: tuple[int, ...]
    dtype: str
    op: Optional[str]
    persistable: bool
    alias: Optional[str]
    position: int  # program order: first use by an op (deeper layers come later)

    @property
    def is_feature(self) -> bool:
        return (len(self.shape) == 4 and not self.persistable and self.op is not None
                and self.dtype in ("float32", "float16", "float64", "bfloat16"))

    @property
    def ref(self) -> str:
        """How a DISTILL entry should name it: the alias when there is one."""
        return self.alias or self.name

    def to_json(self, with_program_name: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                                "op": self.op, "persistable": self.persistable, "alias": self.alias}
        if with_program_name:
            data["program_name"] = self.program_name
        return data


@dataclass(frozen=True)
class PairSuggestion:
    teacher: VarInfo
    student: VarInfo
    reason: str
    loss: str = "l2"
    weight: float = FEATURE_WEIGHT

    @property
    def shape_match(self) -> bool:
        return self.teacher.shape == self.student.shape

    @property
    def adapter(self) -> Optional[str]:
        return None if self.shape_match else "conv1x1"

    def distill_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"TEACHER": self.teacher.ref, "STUDENT": self.student.ref,
                                 "LOSS": self.loss, "WEIGHT": self.weight}
        if self.adapter:
            entry["ADAPTER"] = self.adapter
        return entry

    def yaml_block(self) -> str:
        import yaml

        return yaml.safe_dump({"DISTILL": [self.distill_entry()]}, sort_keys=False)

    def to_json(self) -> dict[str, Any]:
        return {"teacher": self.teacher.name, "student": self.student.name,
                "teacher_alias": self.teacher.alias, "student_alias": self.student.alias,
                "shape_match": self.shape_match, "teacher_shape": list(self.teacher.shape),
                "student_shape": list(self.student.shape), "reason": self.reason,
                "distill": self.distill_entry()}


# ---- listing ------------------------------------------------------------------------------------


def describe_program(program: Any, aliases: dict[str, str], prefix: str = "") -> list[VarInfo]:
    """Every variable of `program` (feed/fetch holders excluded), renamed with `prefix`, in
    program order. (`list_vars()` order is no guide: a cloned program lists its variables sorted
    as strings, batch_norm_0, batch_norm_1, batch_norm_10, ...)"""
    from paddle.base.data_feeder import convert_dtype

    producers: dict[str, str] = {}
    order: dict[str, int] = {}
    for op in program.global_block().ops:
        for name in [*op.input_arg_names, *op.output_arg_names]:
            order.setdefault(name, len(order))
        for out in op.output_arg_names:
            producers.setdefault(out, op.type)
    alias_of = {name: alias for alias, name in aliases.items()}
    infos = []
    for var in program.list_vars():
        if var.name in ("feed", "fetch"):
            continue
        renamed = merged_name(var.name, prefix=prefix) if prefix else var.name
        position = order.setdefault(var.name, len(order))  # unused variables go last
        infos.append(VarInfo(renamed, var.name, tuple(int(d) for d in var.shape),
                             convert_dtype(var.dtype), producers.get(var.name),
                             bool(var.persistable), alias_of.get(var.name), position))
    return sorted(infos, key=lambda info: info.position)


def _is_activation(info: VarInfo) -> bool:
    return len(info.shape) >= 2 and info.shape[0] == -1


def filter_vars(infos: Iterable[VarInfo], grep: Optional[str] = None, op: Optional[str] = None,
                params: bool = False) -> list[VarInfo]:
    """Activations only unless `params`; `grep` searches name and alias; `op` is the producer type.

    An activation has a batch dimension and at least one more: BN's saved mean/variance ([C]) and
    reserve space ([-1]) are bookkeeping, never distillation targets, and would drown the list."""
    try:
        pattern = re.compile(grep) if grep else None
    except re.error as exc:
        raise ConfigError(f"--grep: invalid regular expression {grep!r}: {exc}") from None
    kept = []
    for info in infos:
        if not params and (info.persistable or not _is_activation(info)):
            continue
        if op and info.op != op:
            continue
        if pattern and not (pattern.search(info.name) or (info.alias and pattern.search(info.alias))):
            continue
        kept.append(info)
    return kept


# ---- diff and suggestions ----------------------------------------------------------------------


def equal_shape_groups(student: Sequence[VarInfo],
                       teacher: Sequence[VarInfo]) -> list[tuple[tuple[int, ...], list[VarInfo], list[VarInfo]]]:
    """Feature shapes present in both programs: (shape, student vars, teacher vars), largest first."""
    by_shape: dict[tuple[int, ...], tuple[list[VarInfo], list[VarInfo]]] = {}
    for side, infos in ((0, student), (1, teacher)):
        for info in infos:
            if info.is_feature and info.name not in DATA_FEEDS:
                by_shape.setdefault(info.shape, ([], []))[side].append(info)
    groups = [(shape, s, t) for shape, (s, t) in by_shape.items() if s and t]
    return sorted(groups, key=lambda g: (-_numel(g[0]), g[0]))


def suggest_pairs(student: Sequence[VarInfo], teacher: Sequence[VarInfo],
                  image_hw: tuple[int, int]) -> list[PairSuggestion]:
    """Ranked pairs. The model's named points (aliases: backbone.*, aspp.out, decoder.out,
    logits) come first: equal shape (same alias first), then same spatial size with a 1x1 conv
    adapter for the channels. Then one pair per remaining equal shape, whose only link is that
    shape."""
    suggestions: list[PairSuggestion] = []
    seen: set[tuple[str, str]] = set()

    def add(t: VarInfo, s: VarInfo, reason: str) -> None:
        if (t.name, s.name) in seen:
            return
        seen.add((t.name, s.name))
        is_logits = t.alias in LOGIT_ALIASES and s.alias in LOGIT_ALIASES
        suggestions.append(PairSuggestion(t, s, reason, "l2",
                                          LOGITS_WEIGHT if is_logits else FEATURE_WEIGHT))

    groups = equal_shape_groups(student, teacher)
    aliased_equal = [(t, s) for _, ss, ts in groups for t in ts for s in ss if t.alias and s.alias]
    aliased_equal.sort(key=lambda p: (p[0].alias != p[1].alias, -_numel(p[0].shape)))
    for t, s in aliased_equal:
        same = "same alias" if t.alias == s.alias else "both aliased"
        add(t, s, f"equal shape {_fmt(s.shape)}, {same} ({t.alias} / {s.alias})")
    for t, s in _adapter_candidates(student, teacher):
        stride = _stride(s.shape, image_hw)
        add(t, s, f"same spatial size {s.shape[2]}x{s.shape[3]} (stride {stride}), channels "
                  f"{t.shape[1]} -> {s.shape[1]}: needs a 1x1 conv adapter")
    for shape, ss, ts in groups:  # one representative pair per remaining shape
        t, s = _representative_pair(ts, ss)
        add(t, s, f"equal shape {_fmt(shape)} only ({len(ts)} teacher x {len(ss)} student vars "
                  "share it)")
    return suggestions


def _adapter_candidates(student: Sequence[VarInfo],
                        teacher: Sequence[VarInfo]) -> list[tuple[VarInfo, VarInfo]]:
    features = [(t, s) for t in teacher for s in student
                if t.is_feature and s.is_feature and t.alias and s.alias
                and t.alias not in LOGIT_ALIASES + ("image",) and s.alias not in LOGIT_ALIASES + ("image",)
                and t.shape[2:] == s.shape[2:] and t.shape[1] != s.shape[1]]
    # Same alias first, then the deepest features (smallest maps are the cheapest to match).
    return sorted(features, key=lambda p: (p[0].alias != p[1].alias, _numel(p[1].shape[2:]),
                                           -p[0].position, -p[1].position))


# Block outputs make better targets than raw conv / pre-activation BN outputs of the same shape.
_BLOCK_OUTPUT_OPS = ("relu", "relu6", "elementwise_add", "concat", "bilinear_interp_v2")


def _representative_pair(teacher: Sequence[VarInfo],
                         student: Sequence[VarInfo]) -> tuple[VarInfo, VarInfo]:
    """The pair of a shape group most alike: an alias, then the same producing op (a conv output
    with a conv output, not with a relu6), then block outputs, then the deepest."""
    def score(pair: tuple[VarInfo, VarInfo]) -> tuple:
        t, s = pair
        return (bool(t.alias) + bool(s.alias), t.op == s.op,
                (t.op in _BLOCK_OUTPUT_OPS) + (s.op in _BLOCK_OUTPUT_OPS), t.position + s.position)

    return max(((t, s) for t in teacher for s in student), key=score)


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= abs(d)
    return n


def _stride(shape: Sequence[int], image_hw: tuple[int, int]) -> str:
    """The output stride, a power of two: a 180-pixel input gives 12 rows at stride 16 (ceil)."""
    h = shape[2]
    return f"1/{2 ** round(math.log2(image_hw[0] / h))}" if h > 0 else "?"


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# ---- the whole inspection -----------------------------------------------------------------------


@dataclass
class Inspection:
    student: list[VarInfo]
    teacher: Optional[list[VarInfo]]
    image_hw: tuple[int, int]
    build_seconds: float

    def pairs(self) -> list[PairSuggestion]:
        if self.teacher is None:
            return []
        return suggest_pairs(self.student, self.teacher, self.image_hw)

    def groups(self):
        return equal_shape_groups(self.student, self.teacher or [])

    def to_json(self, grep: Optional[str] = None, op: Optional[str] = None,
                params: bool = False, limit: Optional[int] = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "student": {"vars": [v.to_json(False) for v in filter_vars(self.student, grep, op, params)]},
            "teacher": None,
            "pairs": [p.to_json() for p in self.pairs()[:limit]],
            "equal_shapes": [{"shape": list(shape), "student": [v.name for v in s],
                              "teacher": [v.name for v in t]} for shape, s, t in self.groups()],
            "build_seconds": round(self.build_seconds, 3),
        }
        if self.teacher is not None:
            data["teacher"] = {"prefix": TEACHER_PREFIX, "vars": [
                v.to_json(True) for v in filter_vars(self.teacher, grep, op, params)]}
        return data


def inspect_configs(student_cfg: Any, teacher_cfg: Any = None) -> Inspection:
    """Build the student training program and (if given) the teacher program, without weights."""
    import time

    from .paddle_env import import_paddle
    from .programs import build_student_train, build_teacher
    from .stack import PIR, ir_in_use

    if ir_in_use(import_paddle()) == PIR:  # values have no names: the recorder lists them
        from .recorded_programs import inspect_recorded

        return inspect_recorded(student_cfg, teacher_cfg)
    start = time.perf_counter()
    student = build_student_train(student_cfg)
    student_vars = describe_program(student.main, student.aliases)
    teacher_vars = None
    if teacher_cfg is not None:
        teacher = build_teacher(teacher_cfg, student.image.shape)
        teacher_vars = describe_program(teacher.main, teacher.aliases, TEACHER_PREFIX)
    hw = (int(student.image.shape[2]), int(student.image.shape[3]))
    return Inspection(student_vars, teacher_vars, hw, time.perf_counter() - start)
