"""Model programs built through the legacy-name recorder, on the legacy IR or on PIR (prototype).

The first step of the PIR graph backend (docs/design.md "Paddle 3.x"): the same model code builds
the student and teacher programs on whichever IR the installed Paddle runs (`PirOps` under PIR,
`GraphOps` under the legacy IR), and `NamedOps` gives every variable the name the legacy program
has, so that an inspect-vars listing reads the same on Paddle 2.6.2 and on 3.x. Nothing else uses
this module yet: train, eval and inspect-vars still build with `programs.py`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .inspect import TEACHER_PREFIX, Inspection
from .models import _check, _net
from .models.deeplabv3p import deeplabv3p
from .models.layers import GraphOps
from .models.legacy_names import NamedOps, describe_recorded
from .models.pir_ops import PirOps
from .paddle_env import import_paddle
from .programs import IMAGE_FEED, feed_shape
from .stack import PIR, ir_in_use


@dataclass
class RecordedProgram:
    main: Any
    startup: Any
    logits: Any
    aliases: dict[str, str]  # alias -> legacy variable name
    ops: NamedOps

    def describe(self, prefix: str = ""):
        return describe_recorded(self.ops, self.aliases, prefix)


def build_recorded(cfg: Any, shape: Sequence[int], teacher: bool,
                   backend: Optional[str] = None) -> RecordedProgram:
    """The student training program (`teacher=False`) or the teacher in inference mode, named
    as legacy names them (the teacher as built for training, then cloned for test). `backend`:
    "pir" or "graph"; default: PirOps under PIR, GraphOps under the legacy IR."""
    _check(cfg)
    paddle = import_paddle(any_ir=True)
    chosen = backend or ("pir" if ir_in_use(paddle) == PIR else "graph")
    inner = (PirOps if chosen == "pir" else GraphOps)(is_test=teacher)
    ops = NamedOps(inner, cloned_for_test=teacher)
    main, startup = paddle.static.Program(), paddle.static.Program()
    generator = paddle.base.unique_name.UniqueNameGenerator()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard(generator):
        image = ops.feed(paddle.static.data(IMAGE_FEED, list(shape), "float32"), IMAGE_FEED)
        net = _net(cfg, ops)
        logits = deeplabv3p(net, image, cfg.MODEL.DEEPLAB, int(cfg.DATASET.NUM_CLASSES))
    aliases = {alias: ops._name(value) for alias, value in net.endpoints.items()}
    return RecordedProgram(main, startup, logits, aliases, ops)


def inspect_recorded(student_cfg: Any, teacher_cfg: Any = None,
                     backend: Optional[str] = None) -> Inspection:
    """`inspect.inspect_configs` through the recorder: the listing inspect-vars prints."""
    start = time.perf_counter()
    shape = feed_shape(student_cfg, "TRAIN_CROP_SIZE")
    student = build_recorded(student_cfg, shape, teacher=False, backend=backend).describe()
    teacher = None
    if teacher_cfg is not None:
        teacher = build_recorded(teacher_cfg, shape, teacher=True,
                                 backend=backend).describe(TEACHER_PREFIX)
    return Inspection(student, teacher, (int(shape[2]), int(shape[3])),
                      time.perf_counter() - start)
