"""Turn resolved DISTILL pairs into weighted loss terms inside the merged training program (or,
under PIR, the one program holding student and frozen teacher: engine/graph.py).

The trainer's order: ONE name generator for student, losses and optimizer, otherwise two ops can
write the same temp name, e.g. `reshape2_0.tmp_0` (docs/design.md, Legacy facts: Name generators):

    from paddle.base import unique_name
    gen = unique_name.UniqueNameGenerator()
    with unique_name.guard(gen):                        # student
        build student into (main, startup)
    build teacher under its own guard; run its startup / load weights in teacher_scope
    pairs = resolve_pairs(cfg.distill_pairs, main, teacher_main, s_aliases, t_aliases)
    merge_teacher(teacher_main, main, place, teacher_scope, scope)     # distill/teacher.py
    with unique_name.guard(gen):                        # same generator again
        distill = add_distill_losses(main, startup, pairs, mask=mask)
        total = student_loss + distill.total
        optimizer.minimize(total)
    check_teacher_frozen(main)
    run startup in scope (initialises student AND adapter params), then load student weights
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..errors import SegDistillError
from ..paddle_env import import_paddle
from ..program_vars import find_var, is_pir_program
from .adapters import apply_adapter
from .custom import accepts_mask, call_custom
from .losses import at_resolution, confident_mask, correct_mask, valid_mask
from .pairs import ResolvedPair
from .registry import LOSSES

paddle = import_paddle()


@dataclass
class DistillLosses:
    """`terms`: pair NAME -> WEIGHT * loss (scalar Variables, fetch them for logs); `total`: sum.

    `logged`: more scalars for the log: `raw/NAME` the unweighted loss, `raw/NAME.PART` its parts
    (DIST's inter and intra), `mask/NAME` the fraction of the distilled pixels a MASK kept.
    """

    terms: dict[str, Any]
    total: Any
    logged: dict[str, Any] = field(default_factory=dict)


def add_distill_losses(program: Any, startup_program: Any, pairs: Sequence[ResolvedPair],
                       mask: Optional[Any] = None, label: Optional[Any] = None,
                       ignore_index: int = 255, label_mask: Optional[Any] = None,
                       lookup: Optional[Callable[[str], Optional[Any]]] = None) -> DistillLosses:
    """Append adapters and WEIGHTED losses for `pairs` to the merged `program`.

    Call under the student's unique_name generator (module docstring). `mask` (int [N,1,H,W],
    1 = a pixel the distillation sees) or else `label != ignore_index` feeds the masked losses
    (kl, dist) and custom functions that ask for a mask; kl without either raises
    SegDistillError. `MASK: correct` also needs `label` and `label_mask` (1 = the pixel has a
    label; default `label != ignore_index`). `lookup` finds a merged name's variable where the
    program cannot (PIR: distill/teacher.py `teacher_lookup`); default: the variable of that name
    in the program (`program_vars.find_var`; under PIR only data and persistables have names).
    """
    if not pairs:
        raise SegDistillError("no distillation pairs to build")
    terms: dict[str, Any] = {}
    logged: dict[str, Any] = {}
    first_new_op = len(program.global_block().ops)
    with paddle.static.program_guard(program, startup_program):
        for pair in pairs:
            students = [apply_adapter(_var(program, n, pair, "STUDENT", lookup), plan)
                        for n, plan in zip(pair.student, pair.adapters)]
            teachers = [_var(program, n, pair, "TEACHER", lookup) for n in pair.teacher]
            pair_mask = _mask_for(pair, students[0], mask, label, ignore_index)
            if pair.options.get("mask", "none") != "none":
                pair_mask, kept = _select_pixels(pair, teachers[0], pair_mask, label,
                                                 label_mask, ignore_index)
                logged[f"mask/{pair.name}"] = kept
            raw, parts = _loss(pair, students, teachers, pair_mask)
            terms[pair.name] = raw * pair.weight
            # A copy for the log: the executor may run `raw * weight` in place, leaving the
            # fetched `raw` without a value (seen with DIST's elementwise_add -> scale).
            logged[f"raw/{pair.name}"] = paddle.assign(raw)
            logged.update({f"raw/{pair.name}.{part}": v for part, v in parts.items()})
        total = paddle.add_n(list(terms.values())) if len(terms) > 1 else next(iter(terms.values()))
    if not is_pir_program(program):  # PIR values have no generated names that could clash
        _check_no_name_clash(program, first_new_op)
    return DistillLosses(terms=terms, total=total, logged=logged)


def _select_pixels(pair: ResolvedPair, teacher: Any, base: Any, label: Optional[Any],
                   label_mask: Optional[Any], ignore_index: int) -> tuple[Any, Any]:
    """The pair's MASK applied to the distilled pixels `base`; returns (mask, fraction kept)."""
    threshold = float(pair.options["threshold"])
    if pair.options["mask"] == "confident":
        chosen = confident_mask(teacher, threshold)
    else:  # correct
        if label is None:
            raise SegDistillError(f"{pair.where}: MASK correct needs the label variable")
        labelled = at_resolution(label_mask if label_mask is not None else label != ignore_index,
                                 teacher)
        chosen = correct_mask(teacher, at_resolution(label, teacher), labelled, threshold)
    selected = chosen * base
    kept = paddle.sum(selected) / paddle.clip(paddle.sum(base), min=1.0)
    return selected, kept


def _check_no_name_clash(program: Any, first_new_op: int) -> None:
    """Fail now, not at step 1 with a broadcast error, if a new op overwrites an existing var.

    That happens when the losses are built under another unique_name generator than the student
    (docs/design.md, Legacy facts: Name generators): both then generate e.g. `conv2d_0.tmp_0`.
    """
    ops = program.global_block().ops
    existing = {name for op in ops[:first_new_op] for name in op.output_arg_names}
    for op in ops[first_new_op:]:
        clash = existing.intersection(op.output_arg_names)
        if clash:
            raise SegDistillError(
                f"distillation op {op.type!r} writes {sorted(clash)[0]!r}, which the student "
                "already writes: build the student, the losses and the optimizer under ONE "
                "unique_name generator")


def _var(program: Any, name: str, pair: ResolvedPair, side: str,
         lookup: Optional[Callable[[str], Optional[Any]]] = None) -> Any:
    found = lookup(name) if lookup is not None else find_var(program, name)
    if found is None:
        hint = " (was the teacher merged into this program?)" if side == "TEACHER" else ""
        raise SegDistillError(f"{pair.where}.{side}: variable {name!r} is not in the training "
                              f"program{hint}")
    return found


def _mask_for(pair: ResolvedPair, like: Any, mask: Optional[Any], label: Optional[Any],
              ignore_index: int) -> Optional[Any]:
    if pair.loss == "custom":  # at label resolution, and only for functions that take it
        if not accepts_mask(pair.function):
            return None
        return valid_mask(label if mask is None else mask, mask, label, ignore_index)
    selecting = pair.options.get("mask", "none") != "none"
    if not LOSSES[pair.loss].reads_mask and not selecting:
        return None
    if mask is None and label is None:
        why = "to ignore IGNORE_INDEX pixels" if not selecting else f"for MASK {pair.options['mask']}"
        raise SegDistillError(f"{pair.where}: LOSS {pair.loss} needs the label or mask variable "
                              + why)
    return valid_mask(like, mask, label, ignore_index)


def _loss(pair: ResolvedPair, students: list, teachers: list,
          mask: Optional[Any]) -> tuple[Any, dict[str, Any]]:
    """(unweighted loss, its named parts for the log)."""
    if pair.loss == "custom":
        student = students if pair.student_is_list else students[0]
        teacher = teachers if pair.teacher_is_list else teachers[0]
        return call_custom(pair.function, student, teacher, dict(pair.options), mask,
                           f"{pair.where} ({pair.function_spec})"), {}
    result = LOSSES[pair.loss].build(students, teachers, pair.options, mask)
    if isinstance(result, dict):
        parts = dict(result)
        return parts.pop("loss"), parts
    return result, {}
