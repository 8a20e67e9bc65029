"""The teacher's life in a distillation run, in order, and the one home of its names.

1. `check_teacher_weights(teacher_cfg)` (pre-flight, file headers only): the weights folder holds
   every parameter the teacher config builds, with the right shape.
2. `build_teacher_program(configs, student)`: the teacher program in inference mode (own name
   generator, `clone(for_test=True)`), fed the student's image.
3. `load_teacher(configs, teacher, exe, place)`: its startup in a scope of its own, then its
   weights loaded strictly (every parameter, right shape: never a silently random teacher).
4. `merge_teacher(...)`: PaddleSlim's merge into the student program. Every teacher variable is
   then called `merged_name(name)`; merge adds them as plain persistable Variables (not
   Parameters) with stop_gradient=True, cloned for test, so the optimizer never sees them
   (docs/design.md, Legacy facts: The graph). Checked first, because merge does not: teacher
   inputs not mapped to a student feed (they would never be fed) and persistables without a value
   (they would be copied as empty tensors).
5. `use_teacher_kernels(program, first_op)`: oneDNN kernels for the teacher's inference ops.
6. `check_teacher_frozen(program)` (after minimize): nothing on the teacher side can train.

`attach_teacher` runs 3 to 5, as training needs them. Whether the loaded teacher is any good on
the data is `engine/teacher_check.py` (it needs the evaluator, which sits above this package).

The seam for the second graph backend, Paddle 3's PIR (a `BuiltProgram` with `recorded` names),
where PaddleSlim's merge cannot run and values are not found by name. There the same life has no
merge: 2. the teacher is built INTO the student's program in inference mode, its parameters
frozen under the merged names (`recorded_programs.build_teacher_into`); 3. after the one startup
run, `load_teacher_in_place` loads its weights strictly into those names; 4. `teacher_lookup`
finds a merged name's value (what `block.var` does after a merge); 5. the teacher's ops are
rewritten into Paddle's `onednn_op` dialect (PIR ops have no `use_mkldnn` attribute), after the
startup run; 6. `check_teacher_frozen` checks the PIR program's ops (before that rewrite).
`TEACHER_PREFIX` and `merged_name` are the names every backend shows the user.
Paddle is imported inside the functions: importing this module stays cheap (inspect, pairs).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional

import numpy as np

from ..config import Configs
from ..errors import ConfigError, SegDistillError
from ..models import parameter_manifest
from ..paddle_env import import_paddle
from ..program_vars import is_pir_program, persistable_tensors
from ..programs import IMAGE_FEED, BuiltProgram, build_teacher, teacher_shape
from ..weights import check_structure, load_weights

TEACHER_PREFIX = "teacher_"
# The teacher inputs merge maps onto the student's (teacher name -> student name); every other
# teacher variable is renamed with TEACHER_PREFIX.
TEACHER_FEEDS: Mapping[str, str] = {IMAGE_FEED: IMAGE_FEED}
WEIGHTS_KEY = "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR"
WEIGHTS_LABEL = f"teacher weights ({WEIGHTS_KEY})"
NEEDS_TEACHER_CFG = "distillation needs --teacher-cfg (or pass --no-teacher)"

# Op types that may run on oneDNN in the teacher program (inference only, inside training, where
# speed matters most). Measured on the CamVid teacher: CPU forward ~1.5x faster, logits equal to
# within 3e-8 (soft targets, not argmax decisions). Not the resize: oneDNN's resize
# ignores align_corners (logits 1.6 % off). Not training programs: Paddle 2.6's oneDNN training
# fails ("could not create a primitive descriptor for a reorder primitive"). Not eval, predict or
# export: they must agree pixel for pixel, and oneDNN's rounding flips the argmax of rare
# near-ties. On a GPU place the attribute is ignored (PIR: not applied, engine/graph.py).
# SEGDISTILL_ONEDNN=0 turns it off. Under PIR the same ops, by their PIR names (_PIR_ONEDNN_OPS).
ONEDNN_INFERENCE_OPS = frozenset({"conv2d", "depthwise_conv2d", "batch_norm", "relu", "relu6"})


def merged_name(name: str, data_name_map: Mapping[str, str] = TEACHER_FEEDS,
                prefix: str = TEACHER_PREFIX) -> str:
    """The name a teacher variable has after the merge (mapped inputs take the student's name)."""
    return data_name_map.get(name, prefix + name)


# ---- 1. pre-flight ------------------------------------------------------------------------------

def check_teacher_weights(teacher_cfg: Any) -> list[SegDistillError]:
    """What makes the teacher's weights unusable (empty: nothing). File headers only, fast: the
    values are loaded strictly later, still before step 1."""
    from ..engine.checkpoints import verify_weights_path  # (engine sits above this package)

    if teacher_cfg is None:
        return [ConfigError(NEEDS_TEACHER_CFG)]
    folder = teacher_cfg.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR
    try:
        if folder:
            verify_weights_path(folder)  # a damaged teacher checkpoint, named
        report = check_structure(folder, parameter_manifest(teacher_cfg))
    except SegDistillError as exc:
        return [exc]
    if not report.ok:
        return [ConfigError(f"teacher weights ({WEIGHTS_KEY}, {teacher_cfg.origin(WEIGHTS_KEY)}) "
                            f"do not fit the teacher config: {report.describe()}")]
    return []


# ---- 2. build -----------------------------------------------------------------------------------

def build_teacher_program(configs: Configs, student: BuiltProgram) -> BuiltProgram:
    """The teacher, fed the student's image (same shape), in inference mode. Under PIR it is
    built into the student's program (frozen, merged names) and shares `student.main`."""
    if configs.teacher is None:
        raise ConfigError(NEEDS_TEACHER_CFG)
    if student.recorded is not None:
        from ..recorded_programs import build_teacher_into

        teacher_shape(configs.teacher, list(student.image.shape))  # the same checks
        return build_teacher_into(configs.teacher, student, TEACHER_PREFIX)
    return build_teacher(configs.teacher, list(student.image.shape))


def teacher_lookup(student: BuiltProgram,
                   teacher: BuiltProgram) -> Optional[Callable[[str], Optional[Any]]]:
    """Merged name -> value for the PIR backend's one program (`teacher_<name>` -> the teacher's
    value recorded as `<name>`, a mapped feed -> the student's, anything else -> the student's);
    None on the legacy IR, where the merged program's block finds every name itself."""
    if student.recorded is None:
        return None
    merged = {merged_name(name): name for name in teacher.recorded.vars}

    def lookup(name: str) -> Optional[Any]:
        if name in merged:
            return teacher.recorded.value_of(merged[name])
        return student.recorded.value_of(name)

    return lookup


# ---- 3. strict load -----------------------------------------------------------------------------

def load_teacher(configs: Configs, teacher: BuiltProgram, exe: Any, place: Any,
                 log: Callable[[str], None]) -> Any:
    """Run the teacher's startup in its own scope and load its weights strictly (every parameter,
    right shape, or an error naming them); return that scope."""
    paddle = import_paddle()
    teacher_dir = _teacher_dir(configs)
    teacher_scope = paddle.static.Scope()
    exe.run(teacher.startup, scope=teacher_scope)
    report = load_weights(teacher.main, teacher_dir, scope=teacher_scope, place=place, strict=True,
                          label=WEIGHTS_LABEL)
    log(f"teacher: {len(report.loaded)}/{report.total} parameters loaded from {teacher_dir}")
    return teacher_scope


def load_teacher_in_place(configs: Configs, program: Any, scope: Any, place: Any,
                          log: Callable[[str], None]) -> None:
    """The PIR backend's strict load: the teacher's weights into its merged names
    (`teacher_<name>` from the file `<name>`) in the training scope, after the startup run gave
    them random values; every teacher persistable filled, right shape, or an error."""
    teacher_dir = _teacher_dir(configs)
    report = load_weights(program, teacher_dir, scope=scope, place=place, strict=True,
                          prefix=TEACHER_PREFIX, label=WEIGHTS_LABEL)
    log(f"teacher: {len(report.loaded)}/{report.total} parameters loaded from {teacher_dir}")


def _teacher_dir(configs: Configs) -> str:
    teacher_dir = configs.teacher.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR
    if not teacher_dir:
        raise ConfigError(f"{WEIGHTS_KEY} is not set in the teacher config: the teacher's weights "
                          "are required")
    return teacher_dir


# ---- 4. merge -----------------------------------------------------------------------------------

def merge_teacher(teacher_program: Any, student_program: Any, place: Any, teacher_scope: Any,
                  student_scope: Any, data_name_map: Optional[Mapping[str, str]] = None,
                  prefix: str = TEACHER_PREFIX) -> list[str]:
    """Append the teacher to `student_program` (in place); return the merged teacher persistables.

    `teacher_scope` must hold the teacher's weights (startup run + weights loaded);
    `data_name_map` maps teacher input names to student input names (default TEACHER_FEEDS).
    """
    from paddleslim.dist import merge  # heavy import, only when merging

    data_name_map = dict(data_name_map or TEACHER_FEEDS)
    _check_inputs(teacher_program, student_program, data_name_map)
    _check_values(teacher_program, teacher_scope)
    merge(teacher_program, student_program, data_name_map, place, scope=student_scope,
          teacher_scope=teacher_scope, name_prefix=prefix)
    return teacher_persistables(student_program, prefix)


def teacher_persistables(program: Any, prefix: str = TEACHER_PREFIX) -> list[str]:
    """Names of the merged teacher's persistable variables (its weights and BN statistics)."""
    return sorted(v.name for v in persistable_tensors(program) if v.name.startswith(prefix))


def _check_inputs(teacher_program: Any, student_program: Any,
                  data_name_map: Mapping[str, str]) -> None:
    read = {name for op in teacher_program.global_block().ops for name in op.input_arg_names}
    for var in teacher_program.list_vars():
        if getattr(var, "is_data", False) and var.name in read and var.name not in data_name_map:
            raise SegDistillError(
                f"the teacher reads input {var.name!r}, which is not mapped to a student input "
                f"(data_name_map={dict(data_name_map)}); build the teacher without it or map it")
    student_block = student_program.global_block()
    for teacher_name, student_name in data_name_map.items():
        if not student_block.has_var(student_name):
            raise SegDistillError(f"data_name_map maps teacher input {teacher_name!r} to "
                                  f"{student_name!r}, which is not in the student program")


def _check_values(teacher_program: Any, teacher_scope: Any) -> None:
    """Every teacher persistable must have a value: merge would silently copy an empty tensor."""
    missing = []
    for var in teacher_program.list_vars():
        if not var.persistable or var.name in ("feed", "fetch"):
            continue
        found = teacher_scope.find_var(var.name)
        if found is None or not found.get_tensor()._is_initialized():
            missing.append(var.name)
    if missing:
        raise SegDistillError(f"{len(missing)} teacher variable(s) have no value in the teacher "
                              f"scope (run its startup program and load its weights first): "
                              f"{', '.join(missing[:5])}")


# ---- 5. kernel choice ---------------------------------------------------------------------------

def use_teacher_kernels(program: Any, first_op: int = 0, prefix: str = TEACHER_PREFIX) -> int:
    """Put the teacher's ONEDNN_INFERENCE_OPS on oneDNN kernels; return how many ops now are.

    Legacy IR: mark the ops from index `first_op` on (the merged teacher's) `use_mkldnn`. Called
    once the program is final: PaddleSlim's merge copies only an op's main attributes, and
    `use_mkldnn` is an "extra" one. PIR: ops have no such attribute, so the teacher's ops are
    rewritten into Paddle's `onednn_op` dialect (`_place_on_onednn`); the teacher's ops are those
    computed from persistables named `prefix...` only (`prefix=""`: a program that is the
    teacher alone). Call it after the startup run: the oneDNN dialect is registered by then."""
    paddle = import_paddle()
    if os.environ.get("SEGDISTILL_ONEDNN", "1") == "0" or \
            not paddle.base.core.is_compiled_with_mkldnn():
        return 0
    if is_pir_program(program):
        return _place_on_onednn(program, prefix)
    count = 0
    for op in program.global_block().ops[first_op:]:
        if op.type in ONEDNN_INFERENCE_OPS and op.has_attr("use_mkldnn"):
            op._set_attr("use_mkldnn", True)
            count += 1
    return count


# Under PIR, a `pd_op.<name>` in inference mode becomes `onednn_op.<name>` (ONEDNN_INFERENCE_OPS;
# BN's PIR op is the in-place `batch_norm_`): the attributes it keeps (bound from the matched
# op), its inputs and outputs, in Paddle 3.3.1's op definitions. The oneDNN
# op's extra attributes get the values Paddle's own onednn_placement_pass gives them. That pass
# rewrites EVERY op it knows, training ops included, and sets their is_test (the student's BN
# would stop using batch statistics), so the teacher's ops are rewritten by these patterns instead.
_CONV_ATTRS = ("strides", "paddings", "padding_algorithm", "dilations", "groups", "data_format")
_PIR_ONEDNN_OPS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "conv2d": (_CONV_ATTRS, ("x", "w"), ("out",)),
    "depthwise_conv2d": (_CONV_ATTRS, ("x", "w"), ("out",)),
    "batch_norm_": (("is_test", "momentum", "epsilon", "data_format", "use_global_stats",
                     "trainable_statistics"), ("x", "mean", "var", "scale", "bias"),
                    ("out", "mean_out", "var_out", "saved_mean", "saved_var", "reserve")),
    "relu": ((), ("x",), ("out",)),
    "relu6": ((), ("x",), ("out",)),
}


def _onednn_extras(res: Any, name: str) -> dict[str, Any]:
    b, f32, s = res.BoolAttr, res.Float32Attr, res.StrAttr
    conv = {"is_test": b(True), "mkldnn_data_type": s("float32"), "onednn_data_type": s(""),
            "force_fp32_output": b(False)}
    if name == "conv2d":
        return conv
    if name == "depthwise_conv2d":
        return {**conv, "fuse_activation": s(""), "fuse_alpha": f32(0.0), "fuse_beta": f32(0.0),
                "fuse_relu": b(False), "fuse_relu_before_depthwise_conv": b(False),
                "fuse_residual_connection": b(False), "use_addto": b(False),
                "use_quantizer": b(False), "scale_in": f32(1.0), "scale_out": f32(1.0),
                "scale_in_eltwise": f32(1.0), "scale_weights": res.VectorFloat32Attr([1.0])}
    if name == "batch_norm_":
        return {"fuse_with_relu": b(False)}
    if name == "relu":
        return {"mkldnn_data_type": s("float32"), "onednn_data_type": s("")}
    return {"threshold": f32(6.0)}  # relu6


def _place_on_onednn(program: Any, prefix: str) -> int:
    paddle = import_paddle()
    pir = paddle.base.libpaddle.pir
    if _backward_reads(program, prefix):
        return 0  # a teacher that trains (never in a run: check_teacher_frozen) keeps its kernels
    teacher = _pir_teacher_ops(program, prefix)
    manager = pir.PassManager(opt_level=4)
    for name, (attrs, inputs, outputs) in _PIR_ONEDNN_OPS.items():
        ctx = pir.DrrPatternContext()
        src = ctx.SourcePattern()
        src.Op(f"pd_op.{name}", {a: src.Attr(a) for a in attrs})(
            [src.Tensor(t) for t in inputs], [src.Tensor(t) for t in outputs])
        # The matched op is the one defining "out"; op ids are stable, Python Values are not.
        src.AddConstraint(lambda match: match.Tensor("out").get_defining_op().id() in teacher)
        res = src.ResultPattern()
        kept = {a: src.Attr(a) for a in attrs}
        res.Op(f"onednn_op.{name}", {**kept, **_onednn_extras(res, name)})(
            [res.Tensor(t) for t in inputs], [res.Tensor(t) for t in outputs])
        manager.register_pass(f"segdistill_teacher_onednn_{name}", ctx)
    manager.run(program)
    wanted = {f"onednn_op.{name}" for name in _PIR_ONEDNN_OPS}
    return sum(op.name() in wanted for op in program.global_block().ops)


def _pir_teacher_ops(program: Any, prefix: str) -> set[int]:
    """Ids of the PIR ops on the teacher's side: those reading a persistable named `prefix...`,
    then (in program order) those whose every input comes from a teacher op or a constant. The
    student's image is neither, so the student's ops, the losses that also read the student, the
    adapters (their own parameters) and all gradient ops are not teacher ops."""
    teacher: set[int] = set()
    for op in program.global_block().ops:
        inputs = op.operands_source()
        if not inputs:
            continue
        makers = [v.get_defining_op() for v in inputs]
        reads_teacher = any(v.persistable and v.name.startswith(prefix) for v in inputs)
        from_teacher = all(m is not None and (m.id() in teacher or _is_constant(m)) for m in makers)
        if reads_teacher or from_teacher:
            teacher.add(op.id())
    return teacher


def _backward_reads(program: Any, prefix: str) -> bool:
    """Whether a gradient op reads a `prefix...` persistable: backward runs through the teacher,
    and its gradient ops need what only the training-mode forward ops produce."""
    return any(op.name().endswith("_grad") and
               any(v.persistable and v.name.startswith(prefix) for v in op.operands_source())
               for op in program.global_block().ops)


def _is_constant(op: Any) -> bool:
    return op.num_operands() == 0 and op.name() not in ("pd_op.data", "builtin.parameter")


def attach_teacher(configs: Configs, student: BuiltProgram, teacher: BuiltProgram, exe: Any,
                   place: Any, scope: Any, log: Callable[[str], None]) -> None:
    """Steps 3 to 5: load the teacher strictly, merge it into `student.main` (values into
    `scope`) and give its ops the oneDNN kernels."""
    teacher_scope = load_teacher(configs, teacher, exe, place, log)
    first_teacher_op = len(student.main.global_block().ops)
    merge_teacher(teacher.main, student.main, place, teacher_scope, scope)
    use_teacher_kernels(student.main, first_teacher_op)


# ---- 6. frozen check ----------------------------------------------------------------------------

def check_teacher_frozen(program: Any, prefix: str = TEACHER_PREFIX) -> None:
    """Raise SegDistillError unless nothing on the teacher side can train (call after minimize).

    Checks: no teacher var is a Parameter or lacks stop_gradient; no gradient exists for a teacher
    var or for any variable computed from teacher vars only (e.g. the teacher's softmax inside a
    loss: backward work that would be wasted); no op other than the teacher's inference-mode
    forward writes a teacher persistable.
    """
    if is_pir_program(program):
        _check_frozen_pir(program, prefix)
        return
    paddle = import_paddle()
    block = program.global_block()
    for var in program.list_vars():
        if var.name.startswith(prefix) and "@GRAD" not in var.name and (
                isinstance(var, paddle.base.framework.Parameter) or not var.stop_gradient):
            raise SegDistillError(f"teacher variable {var.name!r} is trainable")
    for name in sorted(_teacher_only_vars(program, prefix)):
        if block.has_var(name + "@GRAD"):
            raise SegDistillError(f"a gradient is computed for teacher-side variable {name!r}; "
                                  "mark it stop_gradient (was the teacher merged?)")
    persistables = set(teacher_persistables(program, prefix))
    for op in block.ops:
        inference = op.has_attr("is_test") and op.attr("is_test")  # BN names its stats as outputs
        written = persistables.intersection(op.output_arg_names)
        if written and not inference:
            raise SegDistillError(f"op {op.type!r} writes teacher weights: "
                                  f"{', '.join(sorted(written)[:5])}")


def _check_frozen_pir(program: Any, prefix: str) -> None:
    """`check_teacher_frozen` for a PIR program, where only persistable values have names: every
    teacher persistable is stop_gradient and not trainable; no gradient op reads one (backward
    would run through the teacher); no in-place op writes one except batch norm in inference
    mode (it names its statistics as outputs and copies them)."""
    for value in persistable_tensors(program):
        if value.name.startswith(prefix) and (not value.stop_gradient
                                              or getattr(value, "trainable", False)):
            raise SegDistillError(f"teacher variable {value.name!r} is trainable")
    for op in program.global_block().ops:
        read = sorted({v.name for v in op.operands_source()
                       if v.persistable and v.name.startswith(prefix)})
        if not read:
            continue
        name = op.name()
        if name.endswith("_grad"):
            raise SegDistillError(f"a gradient is computed through the teacher's {name!r} "
                                  f"(reads {read[0]!r}); mark the teacher stop_gradient")
        inference_bn = name == "pd_op.batch_norm_" and bool(op.attrs().get("is_test"))
        if name.endswith("_") and not inference_bn:
            raise SegDistillError(f"op {name!r} writes teacher weights: {', '.join(read[:5])}")


def _teacher_only_vars(program: Any, prefix: str) -> set[str]:
    """Teacher vars plus every var computed (in op order) from teacher-only inputs."""
    derived = {v.name for v in program.list_vars() if v.name.startswith(prefix)}
    for op in program.global_block().ops:
        inputs = [n for n in op.input_arg_names if n]
        if inputs and all(n in derived for n in inputs):
            derived.update(n for n in op.output_arg_names if "@GRAD" not in n)
    return derived


def scope_values(scope: Any, names: list[str]) -> dict[str, np.ndarray]:
    """Copies of the named tensors (for before/after comparisons in tests and checks)."""
    return {n: np.array(scope.find_var(n).get_tensor()) for n in names}
