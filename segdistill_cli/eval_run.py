"""`segdistill eval` behind the command: pre-flight, launch decision, (sharded) eval, gathering.

The model and its weights come from model_choice.py (`choose_model`, `load_model`).

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
from .errors import SegDistillError
from .launcher import (LaunchKind, LaunchRequest, RunContext, plan_launch, run_context,
                       run_launch)
from .model_choice import ModelChoice, check_model_dir, load_model
from .preflight import data_errors, raise_all

GATHER_DIR_ENV = "SEGDISTILL_EVAL_GATHER_DIR"  # set by the launching process for its workers
GATHER_TIMEOUT_S = 1800.0  # how long rank 0 waits for the other workers after its own part
RESULT_FILE = "result.json"

Progress = Callable[[int, int], None]


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
    ctx = None if plan.kind == LaunchKind.LAUNCH else run_context(plan, env)
    if ctx is None or ctx.is_main:  # workers > 0 trust rank 0's (identical) checks
        raise_all(data_errors(choice.cfg, ["val"], options.check_data))
        check_model_dir(choice)
    if ctx is None:  # the launching process: start the workers, read their result
        return launch_and_collect(plan, options, env)
    if not ctx.distributed:  # one process: evaluate here
        return evaluate_model(choice, options, ctx, progress)
    run_worker(choice, options, ctx, env)
    return None


def run_worker(choice: ModelChoice, options: EvalOptions, ctx: RunContext, env: dict) -> None:
    """One worker of a launch: evaluate its part and write it; rank 0 then gathers every part
    and writes the result the launching process reads."""
    gather_dir = env.get(GATHER_DIR_ENV)
    if not gather_dir:
        raise SegDistillError(f"multi-worker eval needs {GATHER_DIR_ENV} (start it with "
                              "`segdistill eval --gpus ...`, not paddle.distributed.launch)")
    result = evaluate_model(choice, options, ctx)
    write_shard(gather_dir, ctx.rank, result)
    if ctx.is_main:
        total = gather_shards(gather_dir, ctx.nranks, result, timeout=options.gather_timeout)
        write_result(Path(gather_dir) / RESULT_FILE, total)


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

    return EvalResult.from_json(json.loads(path.read_text()))
