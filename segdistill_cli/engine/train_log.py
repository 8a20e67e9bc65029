"""Training logs: the console (a rich progress bar on a terminal, plain lines otherwise),
`<MODEL_SAVE_DIR>/train_log.jsonl` (one JSON object per logged step or eval), and VisualDL
scalars with --vdl. Only rank 0 writes anything."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError


class TrainLogger:
    """`total_steps` and `total_evals` are what this run still has to do: the ETA counts both
    (the evals at the mean duration of those already run, or "+ N eval(s)" before the first)."""

    def __init__(self, save_dir: Path, is_main: bool, vdl: bool, echo: Callable[[str], None],
                 total_steps: int, total_evals: int = 0):
        self.is_main, self.echo, self.total_steps = is_main, echo, max(1, total_steps)
        self.save_dir = save_dir
        self.started = time.perf_counter()
        self.steps_done = 0
        self.total_evals = total_evals
        self._eval_seconds: list[float] = []
        self._window: dict[str, list[float]] = {}
        self._window_start = time.perf_counter()
        self._window_steps = 0
        self._jsonl = open(save_dir / "train_log.jsonl", "a", encoding="utf-8") if is_main else None
        self._vdl = _vdl_writer(save_dir / "vdl") if (vdl and is_main) else None
        self._progress = None
        self._task = None
        if is_main and sys.stdout.isatty():
            from rich.progress import BarColumn, TimeRemainingColumn

            from ..terminal import plain_console, progress_bar, text_column

            self._progress = progress_bar(text_column("train", "bold"), BarColumn(),
                                          text_column("{task.completed}/{task.total}"),
                                          TimeRemainingColumn(), text_column("{task.fields[info]}"),
                                          console=plain_console())
            self._task = self._progress.add_task("train", total=self.total_steps, info="")
            self._progress.start()

    def step(self, epoch: int, step_in_epoch: int, steps_per_epoch: int, global_step: int,
             lr: float, values: dict[str, float], force: bool) -> None:
        self.steps_done += 1
        self._window_steps += 1
        for name, value in values.items():
            self._window.setdefault(name, []).append(value)
        if self._progress is not None:
            self._progress.update(self._task, advance=1,
                                  info=f"epoch {epoch} loss {values.get('total', 0.0):.4f}")
        if not force or not self.is_main:
            return
        elapsed = time.perf_counter() - self._window_start
        speed = self._window_steps / elapsed if elapsed > 0 else 0.0
        means = {k: sum(v) / len(v) for k, v in self._window.items()}
        eta, unmeasured_evals = self._eta(speed)
        record = {"type": "train", "epoch": epoch, "step": global_step, "lr": lr,
                  **{log_key(k): v for k, v in means.items()}, "step_per_sec": round(speed, 4),
                  "eta_sec": round(eta, 1), "eta_evals_not_counted": unmeasured_evals,
                  "time": time.time()}
        self._write(record)
        if self._vdl is not None:
            for key, value in means.items():
                self._vdl.add_scalar(f"train/{key}", value, global_step)
            self._vdl.add_scalar("train/lr", lr, global_step)
        losses = " ".join(f"{k}={v:.4f}" for k, v in means.items())
        line = (f"epoch={epoch} step={global_step} ({step_in_epoch}/{steps_per_epoch}) lr={lr:.6f} "
                f"{losses} step/sec={speed:.3f} | ETA {format_duration(eta)}"
                + (f" + {unmeasured_evals} eval(s)" if unmeasured_evals else ""))
        if self._progress is not None:
            self._progress.console.print(line)
        else:
            self.echo(line)
        self._window, self._window_steps = {}, 0
        self._window_start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the logger started (the run's training and eval time)."""
        return time.perf_counter() - self.started

    def _eta(self, speed: float) -> tuple[float, int]:
        """(seconds left: steps at `speed` + evals at their mean time, evals not yet timed)."""
        steps = (self.total_steps - self.steps_done) / speed if speed > 0 else 0.0
        evals_left = max(0, self.total_evals - len(self._eval_seconds))
        if not self._eval_seconds:
            return steps, evals_left
        mean_eval = sum(self._eval_seconds) / len(self._eval_seconds)
        return steps + evals_left * mean_eval, 0

    def eval(self, epoch: int, global_step: int, metrics: dict[str, Any]) -> None:
        self._eval_seconds.append(float(metrics.get("seconds", 0.0)))
        if not self.is_main:
            return
        self._write({"type": "eval", "epoch": epoch, "step": global_step, **metrics,
                     "time": time.time()})
        if self._vdl is not None:
            self._vdl.add_scalar("eval/miou", metrics["miou"], global_step)
            self._vdl.add_scalar("eval/acc", metrics["acc"], global_step)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """A one-off record (e.g. the teacher check) in train_log.jsonl."""
        if self.is_main:
            self._write({"type": kind, **data, "time": time.time()})

    def _write(self, record: dict[str, Any]) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._vdl is not None:
            self._vdl.close()
            self._vdl = None


def log_key(term: str) -> str:
    """The train_log.jsonl key of a fetched term: `loss/ce`, `loss/kl_0` (weighted), `loss/total`;
    terms that name their kind keep it: `raw/kl_0` (unweighted), `mask/kl_0` (fraction kept)."""
    return term if "/" in term else f"loss/{term}"


def visualdl_log_writer() -> Any:
    """VisualDL's LogWriter class; a ConfigError when VisualDL is not installed (train's
    pre-flight calls this for --vdl, before step 1)."""
    try:
        from visualdl import LogWriter
    except ImportError:
        raise ConfigError("--vdl needs VisualDL: pip install 'segdistill[vdl]'") from None
    return LogWriter


def _vdl_writer(logdir: Path) -> Any:
    return visualdl_log_writer()(logdir=str(logdir))


def format_duration(seconds: float) -> str:
    """`H:MM:SS`, to the nearest second (elapsed times and ETAs)."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
