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

This is the seam for a second graph backend (Paddle 3's PIR, where PaddleSlim's merge cannot run
and variables are not found by name): such a backend provides these steps for its own program
type; `TEACHER_PREFIX` and `merged_name` are the names every backend shows the user.
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
from ..programs import IMAGE_FEED, BuiltProgram, build_teacher
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
# near-ties. On a GPU place the attribute is ignored. SEGDISTILL_ONEDNN=0 turns it off.
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
    """The teacher, fed the student's image (same shape), in inference mode."""
    if configs.teacher is None:
        raise ConfigError(NEEDS_TEACHER_CFG)
    return build_teacher(configs.teacher, list(student.image.shape))


# ---- 3. strict load -----------------------------------------------------------------------------

def load_teacher(configs: Configs, teacher: BuiltProgram, exe: Any, place: Any,
                 log: Callable[[str], None]) -> Any:
    """Run the teacher's startup in its own scope and load its weights strictly (every parameter,
    right shape, or an error naming them); return that scope."""
    paddle = import_paddle()
    teacher_dir = configs.teacher.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR
    if not teacher_dir:
        raise ConfigError(f"{WEIGHTS_KEY} is not set in the teacher config: the teacher's weights "
                          "are required")
    teacher_scope = paddle.static.Scope()
    exe.run(teacher.startup, scope=teacher_scope)
    report = load_weights(teacher.main, teacher_dir, scope=teacher_scope, place=place, strict=True,
                          label=WEIGHTS_LABEL)
    log(f"teacher: {len(report.loaded)}/{report.total} parameters loaded from {teacher_dir}")
    return teacher_scope


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
    return sorted(v.name for v in program.list_vars()
                  if v.persistable and v.name.startswith(prefix))


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

def use_teacher_kernels(program: Any, first_op: int = 0) -> int:
    """Mark the ONEDNN_INFERENCE_OPS of `program` (from op index `first_op` on: the merged
    teacher's ops) to use oneDNN kernels; return how many. Called once the program is final:
    PaddleSlim's merge copies only an op's main attributes, and `use_mkldnn` is an "extra" one."""
    paddle = import_paddle()
    if os.environ.get("SEGDISTILL_ONEDNN", "1") == "0" or \
            not paddle.base.core.is_compiled_with_mkldnn():
        return 0
    count = 0
    for op in program.global_block().ops[first_op:]:
        if op.type in ONEDNN_INFERENCE_OPS and op.has_attr("use_mkldnn"):
            op._set_attr("use_mkldnn", True)
            count += 1
    return count


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
