"""The training loop: pre-flight, epochs over the loader, logs, snapshots, eval, best model, resume.

Order of a run (legacy's order, with legacy's quirks fixed and documented in the README):
pre-flight (every check before step 1) → build the graph → student init (resume, or tolerant
pretrained load) → epochs → every SNAPSHOT_EPOCH and at the end a checkpoint (+ eval and
best_model/ with --do-eval) → `final/`. Every TRAIN.CHECKPOINT_STEPS steps, and on SIGTERM /
SIGUSR1 (then exit 143), a step checkpoint of the exact position; old checkpoints are pruned by
TRAIN.KEEP_CHECKPOINTS. Only rank 0 logs, saves and evaluates.

Exact resume: the data order and augmentation are functions of (seed, epoch, sample), and the
global random generator (dropout) is reseeded from (seed, global step, rank) before every step,
so a run resumed from any checkpoint computes the same steps as the uninterrupted run.
"""
from __future__ import annotations

import contextlib
import math
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from .. import __version__
from ..config import Configs
from ..config.diff import training_changes
from ..config.values import with_origin
from ..config.view import used_values
from ..data.loader import BatchLoader, loader_from_config
from ..data.mixed import check_unlabeled_split, schedule_images, train_set as build_train_set
from ..distill.teacher import (TEACHER_PREFIX, WEIGHTS_KEY, build_teacher_program,
                               check_teacher_weights, teacher_persistables)
from ..errors import ConfigError, SegDistillError
from ..launcher import RunContext, per_rank_batch, shared_random_seed
from ..preflight import config_errors, data_errors, raise_all
from ..weights import load_weights
from . import checkpoints, run_dir
from .evaluator import Evaluator
from .teacher_check import TeacherCheck, check_teacher, enforce
from .graph import (TrainGraph, build_train_graph, plan_pairs, run_step, runnable_program,
                    seeded_student)
from .preemption import LINE_START, Preempted, StopRequest, resume_command
from .train_log import TrainLogger, format_duration, visualdl_log_writer

DRY_RUN_STEPS = 3


@dataclass
class TrainOptions:
    use_teacher: bool = True
    do_eval: bool = True
    log_steps: int = 10
    seed: Optional[int] = None
    resume: Optional[str] = None  # a checkpoint folder or "auto"
    dry_run: bool = False
    vdl: bool = False
    check_data: str = "sample"  # sample | full | off
    preflight_only: bool = False  # run every check, build the programs, then stop
    allow_weak_teacher: bool = False  # a failed teacher check warns instead of stopping
    overwrite: bool = False  # replace a run already in MODEL_SAVE_DIR (else: refused)
    allow_config_change: bool = False  # resume although training keys changed
    argv: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Position:
    """Where training stands: the epoch in progress and how many of its batches are done."""

    epoch: int
    step_in_epoch: int = 0


def resume_position(meta: dict[str, Any], steps_per_epoch: int) -> Position:
    """The position after checkpoint `meta`: inside its epoch for a mid-epoch checkpoint,
    otherwise the start of the next epoch (`final/` is the last epoch: nothing is left)."""
    epoch = int(meta.get("epoch", 0))
    done = int(meta.get("step_in_epoch") or 0)
    if 0 < done < steps_per_epoch:
        return Position(epoch, done)
    return Position(epoch + 1, 0)


def step_seed(seed: int, global_step: int, rank: int) -> int:
    """The global generator's seed for one step (dropout masks): a function of the position, not
    of the history, so a resumed run draws what the uninterrupted run drew."""
    state = np.random.SeedSequence([seed, global_step, rank, 2]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))  # a non-negative int64


@dataclass
class RunState:
    """What changes as the run goes: steps done, best mIoU, the newest checkpoint written."""

    global_step: int
    best: Optional[float]
    last_good: Optional[Path]


@dataclass
class TrainSummary:
    save_dir: Optional[str]
    epochs_run: int
    steps_run: int
    best_miou: Optional[float]
    final_checkpoint: Optional[str]
    seconds_per_step: Optional[float] = None
    eta_seconds: Optional[float] = None
    peak_rss_mb: Optional[float] = None


class Trainer:
    def __init__(self, configs: Configs, options: TrainOptions, ctx: RunContext,
                 log: Optional[Callable[[str], None]] = None):
        self.configs, self.options, self.ctx = configs, options, ctx
        self.cfg = configs.student
        self.echo = log or (lambda message: print(message, flush=True))
        self.save_dir = Path(self.cfg.TRAIN.MODEL_SAVE_DIR)
        self.seed = options.seed if options.seed is not None else shared_random_seed()
        self.resume_from: Optional[Path] = None
        self.resume_meta: dict[str, Any] = {}
        self.config_changes: list[str] = []  # allowed with --allow-config-change; in run.json
        self.clear_old_run = False  # --overwrite (or resume auto with nothing to resume)
        self.graph: Optional[TrainGraph] = None  # set by run(); tests and benchmarks inspect it
        self.teacher_check: Optional[TeacherCheck] = None  # set by preflight() when distilling
        self.schedule_images = 0  # the image count the LR schedule is built from, set by run()

    # ---- pre-flight ----------------------------------------------------------------------------

    def preflight(self) -> tuple[Any, Any, list]:
        """Every check that can fail, before the first step; all errors at once where possible.

        Returns the student/teacher programs and resolved pairs so the build does not repeat them.
        """
        errors = config_errors(self.configs, "train", lambda p: self.echo(f"warning: {p}"),
                               do_eval=self.options.do_eval, use_teacher=self.options.use_teacher)
        configs_ok = not errors
        if configs_ok:
            errors += data_errors(self.cfg, self._data_splits(), self.options.check_data,
                                  self.seed)
        errors += self._check_batch_and_save_dir()
        errors += self._check_resume()
        errors += self._check_existing_run()
        if self.options.use_teacher and configs_ok:
            errors += check_teacher_weights(self.configs.teacher)
        raise_all(errors)
        student = seeded_student(self.cfg, self.seed)
        teacher, pairs = None, []
        if self.options.use_teacher:
            teacher = build_teacher_program(self.configs, student)
            pairs = plan_pairs(self.configs, student, teacher)
            for pair in pairs:
                self.echo(f"distill: {pair.describe()}")
            self.teacher_check = self._check_teacher_quality()
        return student, teacher, pairs

    def _check_teacher_quality(self) -> Optional[TeacherCheck]:
        """Evaluate the teacher on a few val images; stop (or warn) if it looks untrained."""
        images = int(self.cfg.TRAIN.TEACHER_CHECK_IMAGES)
        check = check_teacher(self.cfg, self.configs.teacher, self.ctx.place(), images)
        self.echo(check.summary() if check else "teacher check: off (TRAIN.TEACHER_CHECK_IMAGES=0)")
        enforce(check, self.options.allow_weak_teacher, self.configs.teacher.get_key(WEIGHTS_KEY),
                self.echo)
        return check

    def _data_splits(self) -> list[str]:
        """The lists this run reads: train, val with --do-eval, the unlabelled images if any."""
        return ["train"] + (["val"] if self.options.do_eval else []) + (
            ["unlabeled"] if self.cfg.DATASET.UNLABELED_FILE_LIST else [])

    def _check_batch_and_save_dir(self) -> list[SegDistillError]:
        errors = []
        try:
            per_rank_batch(int(self.cfg.BATCH_SIZE), self.ctx.nranks)
            check_unlabeled_split(self.cfg, self.ctx.nranks)
        except SegDistillError as exc:
            errors.append(exc)
        if self.options.vdl:
            try:
                visualdl_log_writer()
            except ConfigError as exc:
                errors.append(exc)
        if self.ctx.is_main and self.cfg.TRAIN.MODEL_SAVE_DIR:
            reason = run_dir.probe_writable(self.save_dir)
            if reason:
                errors.append(ConfigError(f"{self._key('TRAIN.MODEL_SAVE_DIR')}: cannot create or "
                                          f"write to {self.save_dir} ({reason})"))
        return errors

    def _key(self, key: str) -> str:
        """`KEY (where the student's value came from)` for messages."""
        return with_origin(key, self.cfg.origin(key))

    def _check_existing_run(self) -> list[SegDistillError]:
        """A fresh start into a folder that holds a run is refused (nothing is written) unless
        --overwrite; the old run is then cleared just before the new one writes."""
        if self.resume_from is not None or self.options.dry_run or not self.ctx.is_main:
            return []
        existing = run_dir.find_run(self.save_dir)
        if existing is None:
            return []
        if self.options.overwrite or self.options.resume == "auto":
            self.clear_old_run = True
            return []
        return [ConfigError(f"{self._key('TRAIN.MODEL_SAVE_DIR')}: {existing.describe()}; "
                            "continue it with --resume auto, or start over with --overwrite")]

    def _check_resume(self) -> list[SegDistillError]:
        resume = self.options.resume
        if not resume:
            return []
        if resume == "auto":
            self.resume_from = checkpoints.latest_checkpoint(self.save_dir, log=self.echo)
            if self.resume_from is None:
                self.echo(f"resume auto: no intact checkpoint in {self.save_dir}; starting fresh")
                return []
        else:
            self.resume_from = Path(resume)
            if not self.resume_from.exists():
                return [ConfigError(f"--resume: checkpoint folder not found: {resume}")]
        meta = checkpoints.read_meta(self.resume_from)
        if meta is None:
            return [ConfigError(f"--resume: {self.resume_from} is not a complete checkpoint "
                                "(no meta.json; was it interrupted while saving?)")]
        try:
            if not checkpoints.verify(self.resume_from):
                self.echo(f"resume: {self.resume_from} has no checksums (written by an earlier "
                          "version): not verified")
        except SegDistillError as exc:
            return [exc]
        self.resume_meta = meta
        if self.options.seed is None and "seed" in meta:
            self.seed = int(meta["seed"])  # same data order and augmentation as the first run
        return self._check_resume_config(meta)

    def _check_resume_config(self, meta: dict[str, Any]) -> list[SegDistillError]:
        """A resume continues the same training: any key that changes it must be as it was."""
        stored = meta.get("config")
        if not isinstance(stored, dict):  # a checkpoint from before configs were stored
            if meta.get("config_digest") in (None, checkpoints.config_digest(self.cfg)):
                return []
            changes = ["the student config (its digest differs; this checkpoint stores no "
                       "per-key record)"]
        else:
            changes = [f"{key} {old!r} -> {new!r}" for key, old, new in
                       self._config_changes(stored)]
        if not changes:
            return []
        self.config_changes = changes
        listing = ", ".join(changes)
        if self.options.allow_config_change:
            self.echo(f"warning: resuming with changed training settings (--allow-config-change): "
                      f"{listing}")
            return []
        return [ConfigError(f"--resume: {self.resume_from} was trained with other settings: "
                            f"{listing}; resume with the same config, or pass "
                            "--allow-config-change to continue with the new one")]

    def _config_changes(self, stored: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        changes = training_changes(stored.get("student") or {}, self.cfg.to_plain())
        use_teacher = self.options.use_teacher and self.configs.teacher is not None
        if bool(stored.get("use_teacher")) != use_teacher:
            changes.append(("--no-teacher", not stored.get("use_teacher"), not use_teacher))
        elif use_teacher:
            changes += [(f"teacher {key}", old, new) for key, old, new in training_changes(
                stored.get("teacher") or {}, self.configs.teacher.to_plain(), teacher=True)]
        stored_seed = self.resume_meta.get("seed")
        if self.options.seed is not None and stored_seed is not None \
                and int(stored_seed) != self.options.seed:
            changes.append(("--seed", int(stored_seed), self.options.seed))
        return changes

    # ---- the run -------------------------------------------------------------------------------

    def run(self) -> TrainSummary:
        student, teacher, pairs = self.preflight()
        if self.options.preflight_only:
            self.echo(f"pre-flight ok: {self._checked()} checked")
            return TrainSummary(None, 0, 0, None, None)
        batch = per_rank_batch(int(self.cfg.BATCH_SIZE), self.ctx.nranks)
        train_set = build_train_set(self.cfg, self.ctx.shard, self.seed, batch)
        self.schedule_images = schedule_images(train_set)  # run.json records it
        graph = build_train_graph(self.configs, self.ctx, self.schedule_images, self.seed,
                                  self.options.use_teacher, self.echo, pairs=pairs,
                                  teacher=teacher, student=student)
        self.graph = graph
        if graph.collective is not None:
            self.echo(f"data-parallel rank {self.ctx.rank}/{self.ctx.nranks}: "
                      f"{graph.collective.describe(TEACHER_PREFIX)}")
        loader = loader_from_config(self.cfg, train_set, batch)
        if loader.num_batches(0) == 0:
            raise ConfigError(f"DATASET.TRAIN_FILE_LIST has {len(train_set)} samples for this "
                                  f"trainer, fewer than one batch of {batch}")
        start = self._init_student(graph, loader.num_batches(0))
        self._log_rank_state(graph, "start")
        with loader:
            if self.options.dry_run:
                return self._dry_run(graph, loader)
            return self._train(graph, loader, start)

    @property
    def model_role(self) -> str:
        """What the --cfg model is in this run: the student, or (--no-teacher) the only model."""
        return "student" if self.options.use_teacher else "model"

    def _checked(self) -> str:
        """What the pre-flight checked, as a phrase."""
        parts = ["configs", "data" if self.options.check_data != "off" else None,
                 "teacher weights" if self.options.use_teacher else None,
                 "distill pairs" if self.options.use_teacher else None,
                 "the teacher on val images" if self.teacher_check else None, "save folder"]
        parts = [p for p in parts if p]
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def _init_student(self, graph: TrainGraph, steps_per_epoch: int) -> Position:
        """Resume (student + optimizer + LR step + position) or load pretrained weights
        tolerantly."""
        if self.resume_from is not None:
            meta = checkpoints.load_checkpoint(graph.main, graph.scope, self.resume_from,
                                               graph.place, lr_scheduler=graph.lr_scheduler)
            self.echo(f"resumed from {self.resume_from} (epoch {meta.get('epoch')}, "
                      f"step {meta.get('global_step')}, lr step {graph.lr_scheduler.last_epoch})")
            self.resume_meta = meta
            # `final/` holds the last epoch's number: resuming from it has nothing left to run
            # (legacy re-ran the last epoch).
            return resume_position(meta, steps_per_epoch)
        pretrained = self.cfg.TRAIN.PRETRAINED_MODEL_DIR
        if pretrained and Path(pretrained).exists():
            load_weights(graph.main, pretrained, scope=graph.scope, place=graph.place,
                         strict=False, label=f"{self.model_role} pretrained weights",
                         log=self.echo, exclude_prefixes=(TEACHER_PREFIX,))
        else:
            why = f"{pretrained} not found" if pretrained else "TRAIN.PRETRAINED_MODEL_DIR not set"
            self.echo(f"{self.model_role}: no pretrained weights ({why}), training from scratch")
        return Position(int(self.cfg.SOLVER.BEGIN_EPOCH))

    def _program(self, graph: TrainGraph) -> Any:
        """Single process: a CompiledProgram with legacy's build strategy. Distributed: fleet has
        already rewritten the main program, which runs as it is."""
        return runnable_program(graph, self.ctx.distributed)

    def _step(self, graph: TrainGraph, program: Any, batch: dict, names: list[str],
              fetch: list[Any], global_step: int) -> dict[str, float]:
        """One optimiser step (`global_step` steps were done before it)."""
        self._seed_generator(global_step)
        values = run_step(graph, program, batch, fetch)
        graph.lr_scheduler.step()
        return {n: float(np.asarray(v).reshape(-1)[0]) for n, v in zip(names, values)}

    def _seed_generator(self, global_step: int) -> None:
        """Reseed Paddle's global generator (dropout draws from it) for this step."""
        from ..paddle_env import import_paddle

        import_paddle().seed(step_seed(self.seed, global_step, self.ctx.rank))

    def _dry_run(self, graph: TrainGraph, loader: BatchLoader) -> TrainSummary:
        program, terms = self._program(graph), graph.fetch_terms()
        names, fetch = list(terms), list(terms.values())
        times = []
        batches = loader.epoch(0)
        for step in range(DRY_RUN_STEPS):
            batch = next(batches, None)
            if batch is None:
                break
            start = time.perf_counter()
            values = self._step(graph, program, batch, names, fetch, step)
            times.append(time.perf_counter() - start)
            _check_finite(values, 1, step + 1, None)
            self.echo(f"dry-run step {step + 1}: {time.perf_counter() - start:.3f} s  "
                      + "  ".join(f"{k}={v:.4f}" for k, v in values.items()))
        batches.close()
        steady = times[1:] or times
        per_step = float(np.median(steady))
        total_steps = loader.num_batches(0) * int(self.cfg.SOLVER.NUM_EPOCHS)
        peak = peak_rss_mb()
        self.echo(f"dry run: {per_step:.3f} s/step (median of steps 2-{len(times)}), "
                  f"{loader.num_batches(0)} steps/epoch x {self.cfg.SOLVER.NUM_EPOCHS} epochs = "
                  f"{total_steps} steps, ETA {format_duration(per_step * total_steps)}, "
                  f"peak host memory {peak:.0f} MB{_gpu_memory()}. Nothing was written.")
        return TrainSummary(None, 0, len(times), None, None, per_step, per_step * total_steps, peak)

    def _train(self, graph: TrainGraph, loader: BatchLoader, start: Position) -> TrainSummary:
        cfg, ctx = self.cfg, self.ctx
        num_epochs = int(cfg.SOLVER.NUM_EPOCHS)
        program, terms = self._program(graph), graph.fetch_terms()
        names, fetch = list(terms), list(terms.values())
        steps_per_epoch = loader.num_batches(0)
        state = RunState(int(self.resume_meta.get("global_step", 0)),
                         self.resume_meta.get("best_miou"), self.resume_from)
        if ctx.is_main:
            self._prepare_save_dir()
            self._write_run_json(graph, steps_per_epoch)
        epochs = range(start.epoch, num_epochs + 1)
        snapshot = int(cfg.TRAIN.SNAPSHOT_EPOCH)
        eval_epochs = [e for e in epochs if _is_snapshot(e, snapshot, num_epochs)]
        logger = TrainLogger(self.save_dir, ctx.is_main, self.options.vdl, self.echo,
                             total_steps=steps_per_epoch * len(epochs) - start.step_in_epoch,
                             total_evals=len(eval_epochs) if self.options.do_eval else 0)
        self._evaluator: Optional[Evaluator] = None
        if self.teacher_check is not None:
            logger.event("teacher_check", self.teacher_check.to_json())
        epochs_run = 0
        if start.epoch > num_epochs:
            self.echo(f"nothing to do: the checkpoint is at epoch {start.epoch - 1} of {num_epochs}")
        try:
            with StopRequest(agree=self._stop_vote(graph)) as stop:
                for epoch in range(start.epoch, num_epochs + 1):
                    skip = start.step_in_epoch if epoch == start.epoch else 0
                    for step_in_epoch, batch in enumerate(loader.epoch(epoch, skip), start=skip + 1):
                        lr = float(graph.lr_scheduler.last_lr)
                        values = self._step(graph, program, batch, names, fetch, state.global_step)
                        state.global_step += 1
                        _check_finite(values, epoch, state.global_step, state.last_good)
                        logger.step(epoch, step_in_epoch, steps_per_epoch, state.global_step, lr,
                                    values, force=(state.global_step % self.options.log_steps == 0
                                                   or step_in_epoch == steps_per_epoch))
                        if step_in_epoch < steps_per_epoch:
                            self._step_boundary(graph, Position(epoch, step_in_epoch), state, stop,
                                                steps_per_epoch)
                    epochs_run += 1
                    self._epoch_end(graph, epoch, state, stop, logger, steps_per_epoch)
            final = self._final(num_epochs) if ctx.is_main else None
            if final is not None:
                self.echo(f"done: {final}" + (f", best mIoU {state.best:.4f}" if state.best else "")
                          + f", {epochs_run} epoch(s) in {format_duration(logger.elapsed)}")
        finally:
            logger.close()
        self._log_rank_state(graph, f"end (step {state.global_step})")
        return TrainSummary(str(self.save_dir), epochs_run, state.global_step, state.best,
                            str(final) if final else None)

    def _stop_vote(self, graph: TrainGraph) -> Optional[Callable[[bool], bool]]:
        """Several workers: the collective stop decision (any rank signalled -> all stop after
        the same step). One process: None, the local flag decides."""
        if not self.ctx.distributed:
            return None
        from ..collective import stop_vote

        return stop_vote(graph.exe)

    def _step_boundary(self, graph: TrainGraph, pos: Position, state: RunState,
                       stop: StopRequest, steps_per_epoch: int) -> None:
        """After a step inside an epoch: a step checkpoint when TRAIN.CHECKPOINT_STEPS says so
        or a stop was requested (then stop)."""
        every = int(self.cfg.TRAIN.CHECKPOINT_STEPS)
        stopping = stop.requested  # the same answer on every rank (collective under a launcher)
        if stopping or (every and state.global_step % every == 0):
            self._save(graph, f"{checkpoints.STEP_PREFIX}{state.global_step}", pos, state,
                       steps_per_epoch)
        if stopping:
            stop.wait_for_all()
            raise self._preempted(stop, pos, state, steps_per_epoch)

    def _epoch_end(self, graph: TrainGraph, epoch: int, state: RunState, stop: StopRequest,
                   logger: TrainLogger, steps_per_epoch: int) -> None:
        """Eval + epoch checkpoint (+ best_model/) when a snapshot is due, else a step checkpoint
        on schedule or on a stop request; then stop if one was requested."""
        num_epochs, snapshot = int(self.cfg.SOLVER.NUM_EPOCHS), int(self.cfg.TRAIN.SNAPSHOT_EPOCH)
        every = int(self.cfg.TRAIN.CHECKPOINT_STEPS)
        pos = Position(epoch, steps_per_epoch)
        stopping = stop.requested
        if _is_snapshot(epoch, snapshot, num_epochs):
            miou = None
            if self.options.do_eval and self.ctx.is_main:
                self._evaluator = self._evaluator or Evaluator(self.cfg, graph.scope, graph.place,
                                                               graph.exe)
                miou = self._evaluate(self._evaluator, epoch, state.global_step, logger)
            is_best = miou is not None and (state.best is None or miou > state.best)
            state.best = miou if is_best else state.best
            self._save(graph, epoch, pos, state, steps_per_epoch)
            if is_best:
                self._link(epoch, checkpoints.BEST)
                self.echo(f"best_model <- epoch {epoch} (mIoU {miou:.4f})")
        elif stopping or (every and state.global_step % every == 0):
            self._save(graph, f"{checkpoints.STEP_PREFIX}{state.global_step}", pos, state,
                       steps_per_epoch)
        if stopping:
            stop.wait_for_all()
            raise self._preempted(stop, pos, state, steps_per_epoch)

    def _final(self, num_epochs: int) -> Optional[Path]:
        """`final/`: hard links to the last epoch's checkpoint (also after a resume that found
        the last epoch saved but final/ missing)."""
        last = self.save_dir / str(num_epochs)
        if checkpoints.read_meta(last) is None:
            return None
        return self._link(num_epochs, checkpoints.FINAL)

    def _preempted(self, stop: StopRequest, pos: Position, state: RunState,
                   steps_per_epoch: int) -> Preempted:
        cause = stop.signal_name or ("a signal to another worker" if self.ctx.distributed
                                     else "a stop request")
        return Preempted(f"{LINE_START}{cause} after step "
                         f"{state.global_step} (epoch {pos.epoch}, batch {pos.step_in_epoch}/"
                         f"{steps_per_epoch}); checkpoint: {state.last_good}; resume with: "
                         f"{resume_command(self.options.argv)}")

    def _prepare_save_dir(self) -> None:
        if self.clear_old_run and self.save_dir.is_dir():
            removed = run_dir.clear_run(self.save_dir)
            why = "--overwrite" if self.options.overwrite else "resume auto found no checkpoint"
            self.echo(f"{why}: removed the earlier run in {self.save_dir} ({removed} entries)")
        self.save_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.clean_stale(self.save_dir)

    def _log_rank_state(self, graph: TrainGraph, when: str) -> None:
        """Every worker logs digests of its trained parameters and of the teacher: equal digests
        across ranks show the workers hold the same model (workerlog.<rank>)."""
        if not self.ctx.distributed:
            return
        from ..collective import scope_sha256

        student = graph.student_trainable()
        teacher = teacher_persistables(graph.main) if graph.teacher else []
        self.echo(f"rank {self.ctx.rank}/{self.ctx.nranks} {when}: student sha256 "
                  f"{scope_sha256(graph.scope, student)} ({len(student)} trained parameters), "
                  f"teacher sha256 {scope_sha256(graph.scope, teacher)} ({len(teacher)} variables)")

    def _save(self, graph: TrainGraph, name: Any, pos: Position, state: RunState,
              steps_per_epoch: int) -> None:
        """Rank 0: write checkpoint `name` at `pos`, then apply the retention rule. The other
        ranks only note the folder rank 0 writes (their stop line names it too)."""
        if not self.ctx.is_main:
            state.last_good = self.save_dir / str(name)
            return
        use_teacher = self.options.use_teacher and self.configs.teacher is not None
        meta = {"epoch": pos.epoch, "step_in_epoch": pos.step_in_epoch,
                "steps_per_epoch": steps_per_epoch, "global_step": state.global_step,
                "best_miou": state.best, "seed": self.seed,
                "config_digest": checkpoints.config_digest(self.cfg),
                # what `--resume` compares against (config/diff.py)
                "config": {"student": self.cfg.to_plain(), "use_teacher": use_teacher,
                           "teacher": self.configs.teacher.to_plain() if use_teacher else None}}
        with self._disk_errors(name):
            path = checkpoints.save_checkpoint(graph.main, graph.scope, self.save_dir, name, meta,
                                               lr_scheduler=graph.lr_scheduler)
        state.last_good = path
        self.echo(f"checkpoint: {path}")
        with self._disk_errors(name):
            removed = checkpoints.prune(self.save_dir, int(self.cfg.TRAIN.KEEP_CHECKPOINTS))
        if removed:
            self.echo(f"retention (TRAIN.KEEP_CHECKPOINTS={self.cfg.TRAIN.KEEP_CHECKPOINTS}): "
                      f"removed {', '.join(removed)}")

    def _link(self, src: Any, dst: str) -> Path:
        with self._disk_errors(dst):
            return checkpoints.link_as(self.save_dir, src, dst)

    @contextlib.contextmanager
    def _disk_errors(self, name: Any) -> Iterator[None]:
        """A failed write (full disk, permissions, ...) stops training with one line; the save
        code has already removed its temporary folder, earlier checkpoints are untouched."""
        try:
            yield
        except OSError as exc:
            newest = checkpoints.latest_checkpoint(self.save_dir)
            raise SegDistillError(
                f"cannot write checkpoint {name} in {self.save_dir}: "
                f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}; training "
                f"stopped, earlier checkpoints are intact (newest: {newest or 'none'})") from None

    def _evaluate(self, evaluator: Evaluator, epoch: int, global_step: int,
                  logger: TrainLogger) -> float:
        result = evaluator.evaluate()
        miou, acc = result.matrix.mean_iou(), result.matrix.accuracy()
        self.echo(f"[EVAL] epoch={epoch} #image={result.num_images} acc={acc:.4f} "
                  f"mIoU={miou:.4f} ({result.images_per_second:.1f} images/s)")
        logger.eval(epoch, global_step, result.to_json())
        return float(miou)

    def _write_run_json(self, graph: TrainGraph, steps_per_epoch: int) -> None:
        from importlib.metadata import version

        import paddle

        invocation = {
            "command": ["segdistill", *self.options.argv],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "resumed_from": str(self.resume_from) if self.resume_from else None,
            "config_changes": self.config_changes,
            "teacher_check": self.teacher_check.to_json() if self.teacher_check else None,
            "versions": {"segdistill": __version__, "paddle": paddle.__version__,
                         "paddleslim": version("paddleslim"),
                         "numpy": np.__version__, "python": platform.python_version()},
            "device": self.ctx.device, "num_trainers": self.ctx.nranks,
        }
        first_start = {
            **{k: invocation[k] for k in ("command", "versions", "device", "num_trainers",
                                          "teacher_check")},
            # The values used (config show's view): the schedule's image count, not legacy's 2975.
            "student": used_values(self.cfg, "student", self.schedule_images).data,
            "teacher": used_values(self.configs.teacher, "teacher").data if self.configs.teacher
            and self.options.use_teacher else None,
            "distill_pairs": [p.describe() for p in graph.pairs],
            "global_batch": int(self.cfg.BATCH_SIZE),
            "per_trainer_batch": per_rank_batch(int(self.cfg.BATCH_SIZE), self.ctx.nranks),
            "steps_per_epoch": steps_per_epoch, "seed": self.seed,
            "resumed_from": invocation["resumed_from"], "started": invocation["started"],
        }
        run_dir.record_invocation(self.save_dir, first_start, invocation,
                                  resumed=self.resume_from is not None)


def _is_snapshot(epoch: int, snapshot_epoch: int, num_epochs: int) -> bool:
    """Epochs that end with a checkpoint (and an eval with --do-eval): every SNAPSHOT_EPOCH, the last."""
    return epoch % snapshot_epoch == 0 or epoch == num_epochs


def _check_finite(values: dict[str, float], epoch: int, step: int, last_good: Optional[Path]) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint written yet"
            raise SegDistillError(f"loss {name} is {value} at epoch {epoch}, step {step}; training "
                                  f"stopped ({where}). Lower SOLVER.LR or the pair's WEIGHT?")


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its biggest child (loader workers), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
    return (own + children) * scale


def _gpu_memory() -> str:
    try:
        import paddle

        if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
            return f", peak GPU memory {paddle.device.cuda.max_memory_allocated() / 2**20:.0f} MB"
    except Exception:  # noqa: BLE001 - memory reporting must never fail a run
        pass
    return ""
