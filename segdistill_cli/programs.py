"""Build the student-train, eval and teacher static programs from a config.

Each program is built inside its own `program_guard` and a *fresh* unique-name generator, as legacy
did, so auto-generated names restart at 0 (the teacher's logits are `bilinear_interp_v2_2.tmp_0`).
The generator is kept on the result: whoever appends feeds, losses or an optimizer later must do it
inside `built.guard()` (same generator), otherwise two ops can write the same temporary name
(docs/design.md "Legacy facts").

Under Paddle 3's PIR the same model code builds through `recorded_programs.py` (values have no
names there; the recorder keeps the legacy ones, `BuiltProgram.recorded`), and the teacher is
built into the student's program instead of a program of its own (distill/teacher.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from .errors import ConfigError, SegDistillError
from .models import build_deeplabv3p
from .paddle_env import import_paddle
from .stack import PIR, ir_in_use

IMAGE_FEED = "image"


@dataclass
class BuiltProgram:
    """A built model program and what is needed to extend or run it."""

    main: Any  # paddle.static.Program
    startup: Any  # paddle.static.Program
    image: Any  # the 'image' feed Variable [-1, C, H, W]
    logits: Any  # full-resolution logits Variable
    aliases: dict[str, str]  # alias -> variable name
    name_generator: Any  # paddle.utils.unique_name generator used to build `main`
    role: str = "student"
    is_test: bool = False
    cfg: Any = field(default=None, repr=False)
    # PIR: the legacy-name recorder (models/legacy_names.NamedOps) the program was built through;
    # None on the legacy IR, where the program's variables carry the names themselves.
    recorded: Any = field(default=None, repr=False)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Enter this program's program_guard and name generator to append more ops."""
        paddle = import_paddle()
        with paddle.static.program_guard(self.main, self.startup), \
                paddle.utils.unique_name.guard(self.name_generator):
            yield

    def var(self, alias_or_name: str) -> Any:
        """The Variable for an alias (`logits`, `backbone.out`, ...) or a raw variable name."""
        name = self.aliases.get(alias_or_name, alias_or_name)
        if self.recorded is not None:
            value = self.recorded.value_of(name)
            if value is None:
                raise ConfigError(f"{self.role} program has no variable or alias {alias_or_name!r}")
            return value
        block = self.main.global_block()
        if not block.has_var(name):
            raise ConfigError(f"{self.role} program has no variable or alias {alias_or_name!r}")
        return block.var(name)

    @property
    def listing(self) -> Any:
        """What lists this program's variables by name (`.list_vars()`, each with name, shape,
        persistable): the program itself, or under PIR the recorder's legacy-named records."""
        if self.recorded is None:
            return self.main
        from .recorded_programs import RecordedVars

        return RecordedVars(self.recorded)


def crop_hw(cfg: Any, key: str) -> tuple[int, int]:
    """(H, W) from a (W, H) crop-size key such as TRAIN_CROP_SIZE."""
    crop = tuple(cfg[key])
    if len(crop) != 2:
        raise ConfigError(f"{key}: not set; give (width, height), e.g. (769, 769)")
    width, height = crop
    return int(height), int(width)


def feed_shape(cfg: Any, key: str = "TRAIN_CROP_SIZE") -> list[int]:
    """The image feed shape [-1, DATA_DIM, H, W] for a crop-size key."""
    height, width = crop_hw(cfg, key)
    return [-1, int(cfg.DATASET.DATA_DIM), height, width]


def _build(cfg: Any, shape: Sequence[int], is_test: bool, role: str) -> BuiltProgram:
    paddle = import_paddle()
    if ir_in_use(paddle) == PIR:
        from .recorded_programs import build_recorded_program

        return build_recorded_program(cfg, shape, is_test, role)
    main, startup = paddle.static.Program(), paddle.static.Program()
    # paddle.utils.unique_name does not re-export the generator class; base.unique_name does.
    generator = paddle.base.unique_name.UniqueNameGenerator()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard(generator):
        image = paddle.static.data(IMAGE_FEED, list(shape), "float32")
        model = build_deeplabv3p(cfg, image, is_test=is_test)
    return BuiltProgram(main, startup, image, model.logits, model.aliases, generator, role,
                        is_test, cfg)


def build_student_train(cfg: Any) -> BuiltProgram:
    """Student training program: input from TRAIN_CROP_SIZE, BN/dropout in training mode."""
    return _build(cfg, feed_shape(cfg, "TRAIN_CROP_SIZE"), is_test=False, role="student")


def build_eval(cfg: Any) -> BuiltProgram:
    """Evaluation program: input from EVAL_CROP_SIZE, BN moving stats, dropout in inference mode.
    Plain kernels (no oneDNN; distill/teacher.py says why)."""
    return _build(cfg, feed_shape(cfg, "EVAL_CROP_SIZE"), is_test=True, role="eval")


def teacher_shape(cfg: Any, image_shape: Optional[Sequence[int]]) -> list[int]:
    """The teacher's image shape: the student's ([-1, C, H, W]) or else the teacher config's
    TRAIN_CROP_SIZE; the channel count must be the teacher's DATA_DIM."""
    shape = list(image_shape) if image_shape is not None else feed_shape(cfg)
    if len(shape) != 4:
        raise SegDistillError(f"teacher image shape must be [N, C, H, W], got {shape}")
    if int(shape[1]) != int(cfg.DATASET.DATA_DIM):
        raise ConfigError(f"DATASET.DATA_DIM: teacher expects {cfg.DATASET.DATA_DIM} channels, the "
                          f"student feeds {shape[1]}")
    return shape


def build_teacher(cfg: Any, image_shape: Optional[Sequence[int]] = None) -> BuiltProgram:
    """Teacher program in inference mode (legacy: built for training, then clone(for_test=True)).

    `image_shape` should be the student's image shape ([-1, C, H, W]) so that `merge` can map the
    teacher's 'image' onto the student's; default: the teacher config's TRAIN_CROP_SIZE.
    """
    shape = teacher_shape(cfg, image_shape)
    if ir_in_use(import_paddle()) == PIR:  # no clone under PIR: built in inference mode
        from .recorded_programs import build_recorded_program

        return build_recorded_program(cfg, shape, True, "teacher", cloned_for_test=True)
    built = _build(cfg, shape, is_test=False, role="teacher")
    test_main = built.main.clone(for_test=True)  # kernels: distill/teacher.py, once merged
    block = test_main.global_block()
    return BuiltProgram(test_main, built.startup, block.var(IMAGE_FEED),
                        block.var(built.logits.name), built.aliases, built.name_generator,
                        "teacher", True, cfg)
