"""Merge the teacher program into the student's with PaddleSlim, and prove it stays frozen.

`paddleslim.dist.merge` (2.6) clones the teacher `for_test=True` (BN uses moving statistics,
dropout is in inference mode), renames every teacher variable `teacher_<name>` except the mapped
data inputs, copies their values from the teacher scope into the student scope, and adds them to
the student program as plain persistable Variables (not Parameters) with stop_gradient=True, so
the optimizer never sees them (reference/legacy-paddleseg.md §1.6, paddle-compat.md §3).

What merge does not check, and a silent failure would hide, is checked here before merging:
teacher inputs that are not mapped to a student feed (they would be renamed and never fed) and
teacher persistables without a value (they would be copied as empty tensors).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from ..errors import SegDistillError
from ..paddle_env import import_paddle
from .pairs import DEFAULT_PREFIX

paddle = import_paddle()


def merge_teacher(teacher_program: Any, student_program: Any, place: Any, teacher_scope: Any,
                  student_scope: Any, data_name_map: Optional[Mapping[str, str]] = None,
                  prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Append the teacher to `student_program` (in place); return the merged teacher persistables.

    `teacher_scope` must hold the teacher's weights (startup run + weights loaded);
    `data_name_map` maps teacher input names to student input names ({'image': 'image'}).
    """
    from paddleslim.dist import merge  # heavy import, only when merging

    data_name_map = dict(data_name_map or {"image": "image"})
    _check_inputs(teacher_program, student_program, data_name_map)
    _check_values(teacher_program, teacher_scope)
    merge(teacher_program, student_program, data_name_map, place, scope=student_scope,
          teacher_scope=teacher_scope, name_prefix=prefix)
    return teacher_persistables(student_program, prefix)


def teacher_persistables(program: Any, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Names of the merged teacher's persistable variables (its weights and BN statistics)."""
    return sorted(v.name for v in program.list_vars()
                  if v.persistable and v.name.startswith(prefix))


def check_teacher_frozen(program: Any, prefix: str = DEFAULT_PREFIX) -> None:
    """Raise SegDistillError unless nothing on the teacher side can train (call after minimize).

    Checks: no teacher var is a Parameter or lacks stop_gradient; no gradient exists for a teacher
    var or for any variable computed from teacher vars only (e.g. the teacher's softmax inside a
    loss: backward work that would be wasted); no op other than the teacher's inference-mode
    forward writes a teacher persistable.
    """
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


def scope_values(scope: Any, names: list[str]) -> dict[str, np.ndarray]:
    """Copies of the named tensors (for before/after comparisons in tests and checks)."""
    return {n: np.array(scope.find_var(n).get_tensor()) for n in names}
