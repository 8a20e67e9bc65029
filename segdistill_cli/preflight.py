"""Pre-flight: the checks a command runs before it does any work, and the one way their problems
are reported (all at once, one `error:` line each; exit 2 when any is a usage/config problem).

Every command that works on configs runs, in this order:
1. `config_errors(configs, purpose, warn)`: config/validate.py's checks (files that must exist,
   keys across both configs); warnings go to `warn`, the fatal problems come back as errors.
2. `data_errors(cfg, splits, mode)`: the data check per `--check-data` (data/check.py).
3. what only that command knows: train's batch split, save folder, resume and the teacher's weights
   (`engine/trainer.Trainer.preflight`, `distill/teacher.check_teacher_weights`); eval's, predict's
   and export's weights folder (`eval_run.check_model_dir`).
4. `raise_all(errors)`.
`require_valid_configs` is 1 + 4, for commands with nothing of 2 and 3 to add at that point.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from .config import Configs, Problem, fatal, validate
from .errors import ConfigError, SegDistillError, combine

CHECK_DATA_MODES = ("sample", "full", "off")
DATA_CHECK_SAMPLE = 64  # lines per list checked in "sample" mode


def config_errors(configs: Configs, purpose: str, warn: Callable[[Problem], None],
                  **validate_options: Any) -> list[SegDistillError]:
    """Step 1: every config problem; the non-fatal ones are passed to `warn`."""
    problems = validate(configs, purpose, **validate_options)
    for problem in problems:
        if not problem.fatal:
            warn(problem)
    return [ConfigError(str(p)) for p in fatal(problems)]


def check_data_mode(mode: str) -> None:
    """`--check-data` is one of CHECK_DATA_MODES (checked before any worker is launched too)."""
    if mode not in CHECK_DATA_MODES:
        raise ConfigError(f"--check-data: {mode!r} is not one of {', '.join(CHECK_DATA_MODES)}")


def data_errors(cfg: Any, splits: Sequence[str], mode: str = "sample",
                seed: int = 0) -> list[SegDistillError]:
    """Step 2, per `--check-data`: a seeded sample of lines per list (`sample`, the default),
    every line (`full`) or nothing (`off`)."""
    from .data.check import require_valid_data

    check_data_mode(mode)
    if mode == "off":
        return []
    try:
        require_valid_data(cfg, splits, sample=None if mode == "full" else DATA_CHECK_SAMPLE,
                           seed=seed)
    except SegDistillError as exc:
        return [exc]
    return []


def raise_all(errors: list[SegDistillError]) -> None:
    """Step 4: nothing, one error as itself, or several as `Problems` (one line each)."""
    if errors:
        raise combine(errors)


def require_valid_configs(configs: Configs, purpose: str, warn: Callable[[Problem], None],
                          **validate_options: Any) -> None:
    """Steps 1 and 4."""
    raise_all(config_errors(configs, purpose, warn, **validate_options))
