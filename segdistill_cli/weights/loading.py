"""Loading weights into a static program's scope (`load_weights`) and the report of what was
loaded, skipped or mismatched. The only part that touches Paddle, lazily."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import ConfigError, SegDistillError
from .sources import open_weights
from .structure import short_listing

_log = logging.getLogger(__name__)


@dataclass
class Mismatch:
    name: str  # variable name in the program
    file_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    file_dtype: str
    model_dtype: str

    def __str__(self) -> str:
        if self.file_shape != self.model_shape:
            return f"{self.name}: file {list(self.file_shape)}, model {list(self.model_shape)}"
        return f"{self.name}: file dtype {self.file_dtype}, model {self.model_dtype}"


@dataclass
class LoadReport:
    """What `load_weights` did. Names are program variable names, except `unexpected` (files in
    the source that no considered parameter asked for, e.g. optimizer velocity)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    total: int = 0  # parameters considered (loaded + missing + mismatched once done)
    found: bool = True  # False when a non-strict load found no source at all

    def summary(self) -> str:
        if not self.found:
            return f"Pretrained model dir {self.source} does not exist, training from scratch."
        if not self.loaded:
            return (f"No pretrained weights were loaded from {self.source}; check that it is "
                    "the right pretrained model.")
        return f"There are {len(self.loaded)}/{self.total} variables in {self.source} are loaded."


def _candidates(program: Any, prefix: str, exclude: Sequence[str]) -> list[tuple[Any, str]]:
    """(variable, name in the weights) for every variable the weights should fill."""
    from ..program_vars import parameters, persistable_tensors

    if not prefix:
        return [(var, var.name) for var in parameters(program)
                if not any(var.name.startswith(p) for p in exclude)]
    # After `paddleslim.dist.merge` the teacher's parameters are plain persistable variables
    # (not Parameters) named `<prefix><name>` (under PIR, frozen parameters so named); the
    # teacher is inference-only, so every persistable with the prefix is a parameter or a BN
    # statistic.
    return [(var, var.name[len(prefix):]) for var in persistable_tensors(program)
            if var.name.startswith(prefix)]


def _numpy_dtype_name(var: Any) -> str:
    from ..paddle_env import import_paddle

    import_paddle()
    from paddle.base.data_feeder import convert_dtype

    return convert_dtype(var.dtype)


def load_weights(program: Any, path: str | os.PathLike, *, scope: Any, place: Any,
                 strict: bool, prefix: str = "", label: str = "weights",
                 log: Optional[Callable[[str], None]] = None,
                 exclude_prefixes: Sequence[str] = ()) -> LoadReport:
    """Load a program's parameters from a legacy directory or pdparams into `scope`.

    Which variables: without `prefix`, `program.all_parameters()` — every parameter including BN
    moving mean/variance; optimizer state, LR counters and feed/fetch are never touched (legacy
    `load_pretrained_weights` semantics). With `prefix` (a program merged by PaddleSlim), the
    persistable variables named `<prefix><name>`, read from the files `<name>`; the rest of the
    program is left alone. `exclude_prefixes` (without `prefix`): parameters not to fill (the
    frozen teacher's, which under PIR are parameters of the student's program).

    For the teacher the trainer should load into the teacher's own program and scope *before*
    `merge` (`strict=True`, no prefix): merge then copies the values from `teacher_scope` under
    `teacher_` names. Loading after merge with `prefix="teacher_"` into the merged program and the
    student scope is equivalent. Student pretrained weights: `strict=False`, no prefix.

    strict=True: a missing path, or any missing or mis-shaped parameter, raises one
    SegDistillError naming the first few and the count; nothing is loaded then. A strict load
    that finds no variable to fill is an error too (never a silently random teacher).
    strict=False: skips them, logging `[SKIP] ...` lines like legacy, and logs the summary.
    """
    emit = log or _log.info
    path = Path(path)
    if not path.exists():
        if strict:
            raise ConfigError(f"{label} not found: {path} does not exist")
        report = LoadReport(str(path), found=False)
        emit(report.summary())
        return report
    source = open_weights(path)
    report = LoadReport(str(path))
    candidates = _candidates(program, prefix, exclude_prefixes)
    report.total = len(candidates)
    if strict and not candidates:
        raise SegDistillError(f"{label}: the program has no parameters"
                              + (f" named {prefix}*" if prefix else "") + f" to load from {path}")
    to_set: list[tuple[str, str]] = []  # (variable name, name in the source)
    for var, file_name in candidates:
        info = source.info(file_name)
        if info is None:
            report.missing.append(var.name)
            if not strict:
                emit(f"[SKIP] Pretrained weight {source.path(file_name)} doesn't exist")
            continue
        model_shape, model_dtype = tuple(var.shape), _numpy_dtype_name(var)
        if tuple(info.shape) != model_shape or info.dtype.name != model_dtype:
            report.mismatched.append(Mismatch(var.name, tuple(info.shape), model_shape,
                                              info.dtype.name, model_dtype))
            if not strict:
                emit(f"[SKIP] Shape of pretrained weight {source.path(file_name)} doesn't match. "
                     f"(Pretrained: {list(info.shape)} {info.dtype.name}, "
                     f"Actual: {list(model_shape)} {model_dtype})")
            continue
        to_set.append((var.name, file_name))
    wanted = {file_name for _, file_name in candidates}
    report.unexpected = [n for n in source.names() if n not in wanted]
    if strict and (report.missing or report.mismatched):
        raise ConfigError(_strict_message(label, path, report))
    # Values are set with numpy rather than `paddle.static.load_vars`: one code path serves legacy
    # directories and pdparams alike, file names may differ from variable names (`teacher_`
    # prefix after merge), the headers were already validated above, and it behaves the same
    # under PIR, where load_vars ignores its predicate (docs/design.md, Legacy facts: Loading
    # weights).
    for var_name, file_name in to_set:
        scope.var(var_name).get_tensor().set(source.read(file_name), place)
        report.loaded.append(var_name)
    if not strict:
        emit(report.summary())
    return report


def _strict_message(label: str, path: Path, report: LoadReport) -> str:
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing)} missing ({short_listing(report.missing)})")
    if report.mismatched:
        parts.append(f"{len(report.mismatched)} with the wrong shape or dtype "
                     f"({short_listing([str(m) for m in report.mismatched])})")
    return (f"{label} in {path} do not fit the model: {report.total} parameters, "
            + "; ".join(parts))
