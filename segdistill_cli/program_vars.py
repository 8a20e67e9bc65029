"""The state a static program holds, on either IR: its persistable tensors and which of them are
parameters.

Checkpoints, weight loading and the teacher's frozen check ask "which persistable tensors does
this program have?". The legacy IR answers with `Variable.type == LOD_TENSOR`; under Paddle 3's PIR
a `Value` has no such type, so that test matches nothing and a checkpoint comes out empty without
an error (docs/design.md "Paddle 3.x"). Here one question has one answer per IR:

* legacy: `program.list_vars()`, persistable, type LOD_TENSOR; parameters are `Parameter`s.
* PIR: `program.list_vars()`, persistable, a dense tensor type; parameters are the values with
  `is_parameter` (model weights and BN statistics, trainable or not). Optimizer state (a
  persistable `pd_op.data`) and the LR (a `builtin.parameter` that is no parameter) are not.

Only persistable PIR values have names (`Value.name` raises for the others), so nothing here
asks a non-persistable value for its name.
"""
from __future__ import annotations

from typing import Any, Optional

from .paddle_env import import_paddle


def is_pir_program(program: Any) -> bool:
    """True for a PIR `Program` (Paddle 3's default), False for a legacy ProgramDesc one."""
    pir = getattr(import_paddle(any_ir=True).base.libpaddle, "pir", None)
    return pir is not None and isinstance(program, pir.Program)


def persistable_tensors(program: Any) -> list[Any]:
    """Every persistable dense tensor of `program` (parameters, BN statistics, optimizer state,
    LR), each once, in the program's order."""
    if not is_pir_program(program):
        core = import_paddle().base.core
        return [var for var in program.list_vars()
                if var.persistable and var.type == core.VarDesc.VarType.LOD_TENSOR]
    seen: set[str] = set()
    found = []
    for value in program.list_vars():
        if value.persistable and value.is_dense_tensor_type() and value.name not in seen:
            seen.add(value.name)
            found.append(value)
    return found


def is_parameter(var: Any) -> bool:
    """A model parameter (BN statistics included), not optimizer state or the LR."""
    framework = import_paddle(any_ir=True).base.framework
    if isinstance(var, framework.Variable):  # legacy IR
        return isinstance(var, framework.Parameter)
    return bool(var.is_parameter)


def parameters(program: Any) -> list[Any]:
    """`program.all_parameters()` on either IR (a PIR Program has it on its global block only),
    in the order the model created them on both.

    PIR's `create_parameter` inserts each `builtin.parameter` op at the *start* of the main block,
    so the block lists them newest first; reversed, they come in the legacy IR's (creation)
    order, and so do the names a weight-load report lists first ("7 missing (conv1/weights, ...").
    """
    if is_pir_program(program):
        return list(reversed(program.global_block().all_parameters()))
    return list(program.all_parameters())


def find_var(program: Any, name: str) -> Optional[Any]:
    """The variable called `name` in `program`'s global block, or None, on either IR. Under PIR
    only data, parameters and persistables have a name to find (an intermediate value is reached
    through what recorded it: `BuiltProgram.var`, `teacher.teacher_lookup`)."""
    if is_pir_program(program):
        return next((v for v in program.list_vars() if v.has_name and v.name == name), None)
    block = program.global_block()
    return block.var(name) if block.has_var(name) else None
