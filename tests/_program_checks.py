"""Questions tests ask of a built training program, answered on either IR."""
from __future__ import annotations

from typing import Any

from segdistill_cli.program_vars import is_pir_program


def gradients_of(program: Any, prefix: str) -> list[str]:
    """What computes a gradient for a variable named `prefix...`: on the legacy IR its `@GRAD`
    variables; under PIR (gradients have no names) the gradient ops that read such a named
    value (a parameter, a persistable)."""
    if not is_pir_program(program):
        return [v.name for v in program.list_vars()
                if v.name.startswith(prefix) and v.name.endswith("@GRAD")]
    return [op.name() for op in program.global_block().ops if op.name().endswith("_grad")
            and any(v.has_name and v.name.startswith(prefix) for v in op.operands_source())]
