"""Model programs built through the legacy-name recorder, on the legacy IR or on PIR.

The PIR graph backend (docs/design.md "Paddle 3.x"): the same model code builds the student,
eval and teacher programs on whichever IR the installed Paddle runs (`PirOps` under PIR,
`GraphOps` under the legacy IR), and `NamedOps` gives every variable the name the legacy program
has, so that an inspect-vars listing, DISTILL pairs and the aliases read the same on Paddle 2.6.2
and on 3.x. `programs.py` builds here under PIR; the teacher of a distillation goes into the
student's program (`build_teacher_into`: PaddleSlim's merge does not run under PIR).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .inspect import TEACHER_PREFIX, Inspection, VarInfo
from .models import _check, _net
from .models.deeplabv3p import deeplabv3p
from .models.layers import GraphOps
from .models.legacy_names import NamedOps, describe_recorded
from .models.pir_ops import PirOps
from .paddle_env import import_paddle
from .programs import IMAGE_FEED, BuiltProgram, feed_shape
from .stack import PIR, ir_in_use


@dataclass
class RecordedVars:
    """A recorded program's variables as `resolve_pairs` reads a legacy program: `list_vars()`,
    each with `name`, `shape` and `persistable` (the legacy names; feeds, activations, params)."""

    ops: NamedOps

    def list_vars(self) -> list[Any]:
        return list(self.ops.vars.values())


def _backend(paddle: Any, backend: Optional[str]) -> str:
    return backend or ("pir" if ir_in_use(paddle) == PIR else "graph")


def _record(cfg: Any, image: Any, ops: NamedOps) -> tuple[Any, dict[str, str]]:
    """Append the model for `cfg` to the current program, reading `image`, through `ops`;
    (logits, alias -> legacy name). The caller owns program_guard and unique_name.guard."""
    net = _net(cfg, ops)
    image = ops.feed(image, IMAGE_FEED)
    logits = deeplabv3p(net, image, cfg.MODEL.DEEPLAB, int(cfg.DATASET.NUM_CLASSES))
    return logits, {alias: ops._name(value) for alias, value in net.endpoints.items()}


def build_recorded_program(cfg: Any, shape: Sequence[int], is_test: bool, role: str,
                           cloned_for_test: bool = False,
                           backend: Optional[str] = None) -> BuiltProgram:
    """A program of its own, as `programs.py` builds one, named as legacy names it
    (`cloned_for_test`: as a program built for training, then `clone(for_test=True)`)."""
    _check(cfg)
    paddle = import_paddle(any_ir=True)
    inner = (PirOps if _backend(paddle, backend) == "pir" else GraphOps)(is_test=is_test)
    ops = NamedOps(inner, cloned_for_test=cloned_for_test)
    main, startup = paddle.static.Program(), paddle.static.Program()
    generator = paddle.base.unique_name.UniqueNameGenerator()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard(generator):
        image = paddle.static.data(IMAGE_FEED, list(shape), "float32")
        logits, aliases = _record(cfg, image, ops)
    return BuiltProgram(main, startup, image, logits, aliases, generator, role, is_test, cfg,
                        recorded=ops)


def build_recorded(cfg: Any, shape: Sequence[int], teacher: bool,
                   backend: Optional[str] = None) -> BuiltProgram:
    """The student training program (`teacher=False`) or the teacher in inference mode, named
    as legacy names them (the teacher as built for training, then cloned for test). `backend`:
    "pir" or "graph"; default: PirOps under PIR, GraphOps under the legacy IR."""
    return build_recorded_program(cfg, shape, is_test=teacher,
                                  role="teacher" if teacher else "student",
                                  cloned_for_test=teacher, backend=backend)


def build_teacher_into(cfg: Any, student: BuiltProgram, prefix: str,
                       frozen: bool = True) -> BuiltProgram:
    """The teacher in inference mode (BN moving statistics, dropout off) appended to the
    student's program under PIR, reading the student's image: its parameters are called
    `prefix + legacy name` and frozen (not trainable, stop_gradient), its values keep the legacy
    teacher program's names (its own counters, named as cloned for test), so DISTILL pairs
    resolve as against legacy's merged program. The returned program shares `student.main`.
    (`frozen=False`: the tests' negative control, a teacher the optimizer would train.)"""
    _check(cfg)
    paddle = import_paddle(any_ir=True)
    ops = NamedOps(PirOps(is_test=True, param_prefix=prefix, frozen=frozen), cloned_for_test=True)
    generator = paddle.base.unique_name.UniqueNameGenerator()
    with paddle.static.program_guard(student.main, student.startup), \
            paddle.utils.unique_name.guard(generator):
        logits, aliases = _record(cfg, student.image, ops)
    return BuiltProgram(student.main, student.startup, student.image, logits, aliases,
                        generator, "teacher", True, cfg, recorded=ops)


def describe(built: BuiltProgram, prefix: str = "") -> list[VarInfo]:
    """What inspect-vars lists for a recorded program (`prefix`: the merged teacher's)."""
    return describe_recorded(built.recorded, built.aliases, prefix)


def inspect_recorded(student_cfg: Any, teacher_cfg: Any = None,
                     backend: Optional[str] = None) -> Inspection:
    """`inspect.inspect_configs` through the recorder: the listing inspect-vars prints."""
    start = time.perf_counter()
    shape = feed_shape(student_cfg, "TRAIN_CROP_SIZE")
    student = describe(build_recorded(student_cfg, shape, teacher=False, backend=backend))
    teacher = None
    if teacher_cfg is not None:
        teacher = describe(build_recorded(teacher_cfg, shape, teacher=True, backend=backend),
                           TEACHER_PREFIX)
    return Inspection(student, teacher, (int(shape[2]), int(shape[3])),
                      time.perf_counter() - start)
