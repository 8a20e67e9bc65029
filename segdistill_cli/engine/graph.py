"""The distillation training graph, built the legacy way (docs/design.md "Legacy facts"):

student train program (own name generator) + label/mask feeds + CE  →  the teacher, built, loaded
strictly, merged and given its kernels (distill/teacher.py)  →  distill losses between named
variables  →  ONE optimizer on `CE + Σ weighted distill terms` (legacy's second optimizer on CE
alone was a bug)  →  the teacher's frozen check.

Everything the student adds after the model (feeds, losses, adapters, optimizer) is appended under
the student's own name generator: otherwise two ops can write the same temp name (docs/design.md "Legacy facts").

Under Paddle 3's PIR (programs built through recorded_programs.py) the same function builds the
merge-free one-program graph: the teacher is built into the student's program in inference mode
with frozen parameters under the merged `teacher_` names (distill/teacher.py), the pairs resolve
through the recorded legacy names, the same losses, CE and optimizer are appended, and the
teacher's weights are loaded strictly after the startup run, then its ops are put on oneDNN
(docs/design.md "Paddle 3.x").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import Configs
from ..distill.build import DistillLosses, add_distill_losses
from ..distill.pairs import ResolvedPair, resolve_pairs
from ..distill.teacher import (TEACHER_PREFIX, attach_teacher, build_teacher_program,
                               check_teacher_frozen, load_teacher_in_place, teacher_lookup,
                               use_teacher_kernels)
from ..launcher import RunContext, distributed_optimizer, launch_log_dir
from ..paddle_env import import_paddle
from ..program_vars import is_pir_program, parameters
from ..programs import BuiltProgram, build_student_train, crop_hw
from .seg_loss import softmax_ce_loss
from .solver import build_optimizer

@dataclass
class TrainGraph:
    """The merged, optimisable program and the handles the loop fetches."""

    student: BuiltProgram
    teacher: Optional[BuiltProgram]
    scope: Any
    place: Any
    exe: Any
    label: Any
    mask: Any
    ce: Any
    distill: Optional[DistillLosses]
    total: Any
    lr_scheduler: Any
    pairs: list[ResolvedPair] = field(default_factory=list)
    # Fraction of the batch's pixels each mask keeps: "mask/ce" (labelled pixels) and, when
    # distilling, "mask/distill" (image pixels, padding excluded; also unlabelled images).
    coverage: dict[str, Any] = field(default_factory=dict)
    collective: Any = None  # collective.CollectiveReport of a data-parallel program

    def student_trainable(self) -> list[str]:
        """Names of the parameters the optimizer updates (the same on every rank)."""
        return sorted(p.name for p in parameters(self.main) if p.trainable)

    @property
    def main(self) -> Any:
        return self.student.main

    @property
    def startup(self) -> Any:
        return self.student.startup

    def fetch_terms(self) -> dict[str, Any]:
        """Name → scalar Variable for every logged term: CE, each distill pair (weighted), total,
        then `raw/<pair>` (unweighted, and its parts), `mask/<pair>` and the masks' coverage."""
        terms = {"ce": self.ce}
        if self.distill is not None:
            terms.update(self.distill.terms)
        terms["total"] = self.total
        if self.distill is not None:
            terms.update(self.distill.logged)
            terms.update(self.coverage)
        return terms


def seeded_student(cfg: Any, seed: int) -> BuiltProgram:
    """Student program whose initialisers draw from `seed` (program.random_seed is read by the
    initializer ops when they are created, so it must be set on the programs being built)."""
    paddle = import_paddle()
    paddle.seed(seed)
    return build_student_train(cfg)


def plan_pairs(configs: Configs, student: BuiltProgram, teacher: BuiltProgram) -> list[ResolvedPair]:
    """Resolve and check every DISTILL pair against the two programs (names, shapes, adapters)."""
    return resolve_pairs(configs.student.distill_pairs, student.listing, teacher.listing,
                         student.aliases, teacher.aliases, prefix=TEACHER_PREFIX,
                         source=configs.student.origin("DISTILL"))


def add_student_loss(student: BuiltProgram, cfg: Any) -> tuple[Any, Any, Any, Any]:
    """label/mask feeds ([-1,1,H,W] int32, legacy), the distillation's pixel mask
    (`distill_mask`: image pixels, padding excluded; data/dataset.py) and the CE loss, under
    the student's names."""
    paddle = import_paddle()
    height, width = crop_hw(cfg, "TRAIN_CROP_SIZE")
    with student.guard():
        label = paddle.static.data("label", [-1, 1, height, width], "int32")
        mask = paddle.static.data("mask", [-1, 1, height, width], "int32")
        pixels = paddle.static.data("distill_mask", [-1, 1, height, width], "int32")
        ce = softmax_ce_loss(student.logits, label, mask, int(cfg.DATASET.IGNORE_INDEX))
    return label, mask, pixels, ce


def _coverage(mask: Any) -> Any:
    paddle = import_paddle()
    return paddle.mean(paddle.cast(mask, "float32"))


def build_train_graph(configs: Configs, ctx: RunContext, train_total_images: int, seed: int,
                      use_teacher: bool, log: Callable[[str], None],
                      pairs: Optional[list[ResolvedPair]] = None,
                      teacher: Optional[BuiltProgram] = None,
                      student: Optional[BuiltProgram] = None) -> TrainGraph:
    """Build (or finish building, when pre-flight already built `student`/`teacher`/`pairs`) the
    whole training graph and initialise it in a fresh scope."""
    paddle = import_paddle()
    cfg = configs.student
    place = ctx.place()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    student = student or seeded_student(cfg, seed)
    pir = is_pir_program(student.main)
    label, mask, pixels, ce = add_student_loss(student, cfg)
    distill, coverage = None, {}
    if use_teacher:
        teacher = teacher or build_teacher_program(configs, student)
        pairs = pairs if pairs is not None else plan_pairs(configs, student, teacher)
        if not pir:  # legacy: load and merge it now (under PIR it was built into student.main)
            attach_teacher(configs, student, teacher, exe, place, scope, log)
        with student.guard():
            distill = add_distill_losses(student.main, student.startup, pairs, mask=pixels,
                                         label=label, ignore_index=int(cfg.DATASET.IGNORE_INDEX),
                                         label_mask=mask, lookup=teacher_lookup(student, teacher))
            coverage = {"mask/ce": _coverage(mask), "mask/distill": _coverage(pixels)}
    else:
        teacher, pairs = None, []
    with student.guard():
        total = ce + distill.total if distill is not None else ce * 1.0
        optimizer, scheduler = build_optimizer(cfg, train_total_images)
        optimizer = distributed_optimizer(optimizer, ctx, bool(cfg.TRAIN.SYNC_BATCH_NORM),
                                          TEACHER_PREFIX,
                                          launch_log_dir(Path(cfg.TRAIN.MODEL_SAVE_DIR)))
        optimizer.minimize(total)
    if distill is not None:
        check_teacher_frozen(student.main)  # no teacher grads, no teacher updates
    # Seeded again: loading the teacher (its own start-up program, on the legacy IR) or checking
    # it has drawn from the global generator since, and the student's initial weights must not
    # depend on whether a teacher is used (a distilled run and its baseline start alike).
    paddle.seed(seed)
    exe.run(student.startup, scope=scope)
    if distill is not None and pir:
        # PIR: the startup just gave the teacher's parameters random values.
        load_teacher_in_place(configs, student.main, scope, place, log)
        if isinstance(place, paddle.CPUPlace):  # oneDNN is a CPU library
            use_teacher_kernels(student.main)
    return TrainGraph(student, teacher, scope, place, exe, label, mask, ce, distill, total,
                      scheduler, pairs or [], coverage, getattr(optimizer, "report", None))


def runnable_program(graph: TrainGraph, distributed: bool) -> Any:
    """What the executor runs each step. Single process, legacy IR: a CompiledProgram with
    legacy's build strategy. Distributed: fleet has already rewritten the main program, which
    runs as it is. PIR: the program itself (CompiledProgram refuses a PIR program)."""
    if distributed or is_pir_program(graph.main):
        return graph.main
    paddle = import_paddle()
    strategy = paddle.static.BuildStrategy()
    strategy.fuse_elewise_add_act_ops = True  # legacy setting
    return paddle.static.CompiledProgram(graph.main, build_strategy=strategy)


def run_step(graph: TrainGraph, program: Any, feed: dict, fetch_list: list) -> list:
    """One run of `program` in the graph's scope. Under PIR the run also makes that scope the
    global one: Paddle 3.3.1's PIR executor writes the LR scheduler's value into
    `global_scope()`, not into the scope it was given (docs/design.md "Paddle 3.x")."""
    if not is_pir_program(graph.main):
        return graph.exe.run(program, feed=feed, fetch_list=fetch_list, scope=graph.scope)
    with import_paddle().static.scope_guard(graph.scope):
        return graph.exe.run(program, feed=feed, fetch_list=fetch_list, scope=graph.scope)
