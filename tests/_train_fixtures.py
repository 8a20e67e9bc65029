"""Helpers of the tiny real-CamVid training tests (the fixtures `lists` and `teacher_dir` are in
conftest.py): config overrides, a Trainer, the CLI arguments, a CLI subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from segdistill_cli.config import load_configs
from segdistill_cli.engine.trainer import Trainer, TrainOptions
from segdistill_cli.launcher import RunContext

from conftest import ROOT, STUDENT_CFG, TEACHER_CFG, TINY


def overrides(lists: dict[str, str], save_dir: Path, *extra: str) -> list[str]:
    return TINY + [f"{k}={v}" for k, v in lists.items()] + [f"TRAIN.MODEL_SAVE_DIR={save_dir}",
                                                             *extra]


def teacher_overrides(teacher_dir: Path, *extra: str) -> list[str]:
    # Only what distillation reads from the teacher config (its input is the student's image).
    return ["MODEL.DEEPLAB.DEPTH_MULTIPLIER=0.5",
            f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={teacher_dir}", *extra]


def make_trainer(lists, teacher_dir, save_dir, student_extra=(), teacher_extra=(), **options):
    configs = load_configs(STUDENT_CFG, TEACHER_CFG, overrides(lists, save_dir, *student_extra),
                           teacher_overrides(teacher_dir, *teacher_extra))
    options.setdefault("seed", 3)
    options.setdefault("log_steps", 2)
    return Trainer(configs, TrainOptions(**options), RunContext(), log=lambda m: None)


def cli_args(lists, teacher_dir, save_dir, *extra: str) -> list[str]:
    args = ["train", "--cfg", str(STUDENT_CFG), "--teacher-cfg", str(TEACHER_CFG), "--seed", "3"]
    for item in overrides(lists, save_dir):
        args += ["--set", item]
    for item in teacher_overrides(teacher_dir):
        args += ["--teacher-set", item]
    return args + list(extra)


def spawn(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """`segdistill ARGS` in a subprocess, output (stdout and stderr) on its stdout pipe."""
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "segdistill_cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out")
