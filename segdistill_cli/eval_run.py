"""`segdistill eval` behind the command: which model, pre-flight, launch decision, (sharded) eval.

Model: the student config with `--model-dir` (default `TEST.TEST_MODEL`), or with `--teacher` the
teacher config with its weights (default `SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR`); with
`--teacher` everything (model, crop size, data lists) comes from the teacher config. A folder
written by `train` (`model.pdparams`), a legacy one-file-per-variable folder (the fetched
pretrained models) or a `.pdparams` file all load, strictly: every parameter of the eval program,
with the right shape.

Several GPUs (`--gpus 0,1`) or CPU workers (`--cpu --nproc N`): the command re-runs itself under
paddle.distributed.launch (the launcher module decides); each worker evaluates a contiguous part
of the val list. The per-worker confusion matrices are gathered through files (no collective
op, so the same on every build): each rank writes `shard-<rank>.npy` (+ a `.json` marker written last, both by
atomic rename) into a run folder; rank 0 waits for all of them, sums them (a sum of confusion
matrices is the matrix of the whole list) and writes `result.json`, which the launching process
reads and reports. No process but the launching one writes to stdout.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .atomic import atomic_open, write_text_atomic
from .config import Configs, SegConfig
from .errors import ConfigError, SegDistillError
from .launcher import LaunchRequest, RunContext, plan_launch, run_context, run_launch

GATHER_DIR_ENV = "SEGDISTILL_EVAL_GATHER_DIR"  # set by the launching process for its workers
GATHER_TIMEOUT_S = 1800.0  # how long rank 0 waits for the other workers after its own part
RESULT_FILE = "result.json"

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------
# Which model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    """The config that describes the model and the folder/file its weights come from."""

    cfg: SegConfig
    model_dir: Path
    role: str  # "teacher" (--teacher), "student" (of a --teacher-cfg pair) or "model" (--cfg alone)
    origin: str = "--model-dir"  # where model_dir came from (the option or a config key)

    @property
    def label(self) -> str:
        return f"{self.role} weights"

    @property
    def title(self) -> str:
        """The model as the user gave it: role, config file and weights."""
        return f"{self.role} {self.cfg.source or '(defaults)'}, weights {self.model_dir}"

    @property
    def configs(self) -> Configs:
        """The config to validate as the subject of eval/predict/export."""
        return Configs(self.cfg, None)


def choose_model(configs: Configs, model_dir: Optional[str | os.PathLike] = None,
                 teacher: bool = False) -> ModelChoice:
    """The --cfg model (default dir TEST.TEST_MODEL) or, with `teacher`, the teacher config (default
    dir SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR). The --cfg model is called the student only when
    a teacher config is given too: `--cfg T.yaml` alone may well be a teacher."""
    if teacher:
        if configs.teacher is None:
            raise ConfigError("--teacher needs --teacher-cfg (the teacher's config)")
        cfg, key, role = configs.teacher, "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR", "teacher"
        default = cfg.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR
    else:
        cfg, key = configs.student, "TEST.TEST_MODEL"
        role = "student" if configs.teacher is not None else "model"
        default = cfg.TEST.TEST_MODEL
    if not (model_dir or default):
        raise ConfigError(f"no model to load: give --model-dir or set {key} in {cfg.source}")
    if model_dir:
        return ModelChoice(cfg, Path(model_dir), role)
    return ModelChoice(cfg, Path(default), role, origin=f"{key} ({cfg.origin(key)})")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def check_model_dir(choice: ModelChoice, warn: Callable[[str], None] = _warn) -> None:
    """Fail before any work when the weights cannot fit: missing folder, no weights in it, a
    checkpoint file that differs from its meta.json (size/sha256), or a parameter missing /
    mis-shaped (checked from file headers, without Paddle)."""
    from .engine.checkpoints import verify_weights_path
    from .models import parameter_manifest
    from .weights import PDPARAMS_FILE, check_structure

    path = choice.model_dir
    if not path.exists():
        raise ConfigError(f"model dir not found: {path} (from {choice.origin}; give a folder "
                              "written by `segdistill train` or a pretrained model folder)")
    if path.is_dir() and not (path / PDPARAMS_FILE).is_file() and not any(path.iterdir()):
        raise ConfigError(f"model dir {path} is empty (expected {PDPARAMS_FILE} or one file "
                              "per parameter)")
    if verify_weights_path(path) is False:
        warn(f"{path}: its meta.json has no checksums (written by an earlier segdistill): "
             "not verified")
    report = check_structure(path, parameter_manifest(choice.cfg))
    if not report.ok:
        raise ConfigError(f"{choice.label} do not fit the {choice.role} model of "
                              f"{choice.cfg.source}: {report.describe()}")


def load_model(program: Any, choice: ModelChoice, scope: Any, place: Any) -> Any:
    """Strictly load every parameter of `program` from the chosen weights into `scope`.

    Every persistable of an eval program is a Parameter (BN statistics included), so no startup
    program needs to run: a strict load sets them all.
    """
    from .weights import load_weights

    return load_weights(program, choice.model_dir, scope=scope, place=place, strict=True,
                        label=choice.label)


# ---------------------------------------------------------------------------------------------
# Pre-flight and options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalOptions:
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    batch_size: Optional[int] = None
    check_data: str = "sample"  # sample | full | off
    gpus: Optional[str] = None
    cpu: bool = False
    nproc: Optional[int] = None  # with cpu: CPU worker processes
    gather_timeout: float = GATHER_TIMEOUT_S


def check_val_data(cfg: SegConfig, mode: str) -> None:
    """The val list's pre-flight data check (a seeded sample of lines by default)."""
    from .data.check import preflight_data

    preflight_data(cfg, ["val"], mode)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def evaluate_model(choice: ModelChoice, options: EvalOptions, ctx: RunContext = RunContext(),
                   progress: Optional[Progress] = None, list_file: Optional[str] = None,
                   num_workers: Optional[int] = None) -> Any:
    """Evaluate this process's part (`ctx.shard`) of the val list; returns an EvalResult."""
    from .engine.evaluator import Evaluator
    from .paddle_env import import_paddle

    paddle = import_paddle()
    place, scope = ctx.place(), paddle.static.Scope()
    evaluator = Evaluator(choice.cfg, scope, place, flip=options.flip, scales=options.scales,
                          batch_size=options.batch_size, shard=ctx.shard, list_file=list_file,
                          num_workers=num_workers)
    load_model(evaluator.main_program, choice, scope, place)
    return evaluator.evaluate(progress)


def run_eval(choice: ModelChoice, options: EvalOptions, argv: Sequence[str],
             progress: Optional[Progress] = None, env: Optional[dict] = None) -> Optional[Any]:
    """The whole `eval` after config validation: data + weights pre-flight, then here or under
    the launcher. Returns the EvalResult to report, or None in a process that reports nothing
    (workers other than rank 0, and rank 0 of a launch started by us)."""
    env = dict(os.environ if env is None else env)
    plan = plan_launch(LaunchRequest(gpus=options.gpus, cpu=options.cpu, nproc=options.nproc),
                       argv, env=env)
    ctx = None if plan.kind == "launch" else run_context(plan, env)
    if ctx is None or ctx.is_main:  # workers > 0 trust rank 0's (identical) checks
        check_val_data(choice.cfg, options.check_data)
        check_model_dir(choice)
    if ctx is None:
        return launch_and_collect(plan, options, env)
    result = evaluate_model(choice, options, ctx, progress if not ctx.distributed else None)
    if not ctx.distributed:
        return result
    gather_dir = env.get(GATHER_DIR_ENV)
    if not gather_dir:
        raise SegDistillError(f"multi-worker eval needs {GATHER_DIR_ENV} (start it with "
                              "`segdistill eval --gpus ...`, not paddle.distributed.launch)")
    write_shard(gather_dir, ctx.rank, result)
    if not ctx.is_main:
        return None
    total = gather_shards(gather_dir, ctx.nranks, result, timeout=options.gather_timeout)
    write_result(Path(gather_dir) / RESULT_FILE, total)
    return None


def launch_and_collect(plan: Any, options: EvalOptions, env: dict) -> Any:
    gather_dir = Path(tempfile.mkdtemp(prefix="segdistill-eval-"))
    try:
        env[GATHER_DIR_ENV] = str(gather_dir)
        with stdout_to_stderr():  # the launcher's and workers' chatter must not mix with results
            code = run_launch(plan, env)  # a failed worker raises, naming its log
        if code:  # 143: stopped by a signal passed on to the workers
            raise SegDistillError(f"eval stopped by a signal before its result (exit code {code})")
        result_file = gather_dir / RESULT_FILE
        if not result_file.is_file():
            raise SegDistillError(f"eval workers finished without a result ({result_file})")
        return read_result(result_file)
    finally:
        shutil.rmtree(gather_dir, ignore_errors=True)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr (children inherit it), then restore it."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# ---------------------------------------------------------------------------------------------
# Gathering per-worker matrices through files
# ---------------------------------------------------------------------------------------------


def write_shard(gather_dir: str | os.PathLike, rank: int, result: Any) -> None:
    """Rank `rank`'s matrix (`shard-<rank>.npy`) then its marker (`shard-<rank>.json`)."""
    folder = Path(gather_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / f"shard-{rank}.npy") as fh:
        np.save(fh, result.matrix.matrix)
    marker = {"rank": rank, "num_images": result.num_images, "seconds": result.seconds}
    write_text_atomic(folder / f"shard-{rank}.json", json.dumps(marker))


def gather_shards(gather_dir: str | os.PathLike, nranks: int, own: Any,
                  timeout: float = GATHER_TIMEOUT_S, poll: float = 0.2) -> Any:
    """Wait until all `nranks` shards are written, then return their sum as one EvalResult
    (`own` supplies flip/scales/names). Raises naming the missing ranks on timeout."""
    from .engine.evaluator import EvalResult
    from .engine.metrics import ConfusionMatrix

    folder = Path(gather_dir)
    deadline = time.monotonic() + timeout
    while True:
        missing = [r for r in range(nranks) if not (folder / f"shard-{r}.json").is_file()]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise SegDistillError(f"eval: no result from worker(s) {missing} after {timeout:.0f} s "
                                  f"(in {folder})")
        time.sleep(poll)
    total = ConfusionMatrix(own.matrix.num_classes, own.matrix.ignore_index)
    images, seconds = 0, 0.0
    for rank in range(nranks):
        marker = json.loads((folder / f"shard-{rank}.json").read_text())
        matrix = np.load(folder / f"shard-{rank}.npy")
        if matrix.shape != total.matrix.shape:
            raise SegDistillError(f"eval: worker {rank} sent a {matrix.shape} matrix, expected "
                                  f"{total.matrix.shape}")
        total.merge(ConfusionMatrix.from_matrix(matrix))
        images += int(marker["num_images"])
        seconds = max(seconds, float(marker["seconds"]))  # workers run side by side
    return EvalResult(total, images, seconds, own.flip, tuple(own.scales), list(own.class_names),
                      shards=nranks)


def write_result(path: Path, result: Any, model_dir: Optional[str] = None) -> None:
    data = result.to_json(model_dir)
    write_text_atomic(path, json.dumps(data))


def read_result(path: Path) -> Any:
    from .engine.evaluator import EvalResult
    from .engine.metrics import ConfusionMatrix

    data = json.loads(path.read_text())
    matrix = ConfusionMatrix.from_matrix(np.asarray(data["confusion_matrix"], dtype=np.int64))
    return EvalResult(matrix, int(data["num_images"]), float(data["seconds"]), bool(data["flip"]),
                      tuple(data["scales"]), list(data["class_names"]), int(data["shards"]))
