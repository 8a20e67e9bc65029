"""Which model a command works on, and its weights: `choose_model` (eval, predict and export),
the pre-flight check that the weights fit (`check_model_dir`) and the strict load (`load_model`).

Model: the --cfg config with `--model-dir` (default `TEST.TEST_MODEL`), or with `--teacher` the
teacher config with its weights (default `SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR`); with
`--teacher` everything (model, crop size, data lists) comes from the teacher config. A folder
written by `train` (`model.pdparams`), a legacy one-file-per-variable folder (the fetched
pretrained models) or a `.pdparams` file all load, strictly: every parameter of the program,
with the right shape.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .config import Configs, SegConfig
from .errors import ConfigError


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
