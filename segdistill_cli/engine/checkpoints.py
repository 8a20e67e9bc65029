"""Checkpoints that survive crashes: written to a temporary folder, then renamed into place.

Layout (legacy `fluid.save` names), `<MODEL_SAVE_DIR>/<name>/` with name = the
epoch number, `final` or `best_model`:

* `model.pdparams` — pickled `{name: ndarray}` of the **student's** Parameters, BN moving
  statistics included. This is what eval / export / legacy tools read (`paddle.static.load`
  and legacy `fluid.load` accept it). No `teacher_*` variables (the teacher has its own weights
  and legacy stored ~300 MB of them in every snapshot), no distillation adapters.
* `model.pdopt` — pickled `{name: ndarray}` of everything else a resumed run needs: optimizer
  accumulators (momentum velocities, Adam moments and beta powers), the LR variable, and the
  distillation adapters' Parameters (names starting with `distill_adapter_`: trained, but not
  part of the student a user deploys). Plus `"LR_Scheduler": scheduler.state_dict()` (the key
  Paddle's own optimizer state dicts use).
* `meta.json` — position (epoch, step within the epoch for a mid-epoch checkpoint, global
  step, LR step), best mIoU so far, seed, config digest, segdistill version, time, and under
  `files` the size and sha256 of every other file, hashed from the bytes as they are written.
  Written **last**: a folder without it is incomplete and never used.

Names: `<epoch>` at the end of an epoch, `step-<global step>` for a step or preemption
checkpoint (mid-epoch), `final` and `best_model`. `final/` and `best_model/` hold hard links to
the files of the checkpoint they name (one copy on disk; deleting either folder leaves the other
whole), with their own meta.json. `verify` checks a folder against its `files` record; folders
written before checksums existed load with a "not verified" note. `prune` applies the retention
rule (docs/design.md, "Checkpoints").

Writing: `<save_dir>/.<name>.tmp-<pid>/` gets the three files (each fsync'd), then it replaces
`<name>/` by renames (old one moved aside to `.<name>.old-<pid>`, new one renamed in, old one
deleted). A crash at any point leaves either the old or the new complete checkpoint.
`clean_stale(save_dir)` removes temp folders of writers that no longer run (and folders a pruning
writer had renamed `.<name>.del-<pid>` before deleting them) and puts back an `.old` folder whose
replacement never arrived.
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .. import __version__
from ..atomic import staged_dir
from ..distill.adapters import ADAPTER_PREFIX
from ..distill.teacher import TEACHER_PREFIX
from ..errors import ConfigError, SegDistillError
from ..program_vars import is_parameter, persistable_tensors
from ..weights import PDPARAMS_FILE

PARAMS_FILE = PDPARAMS_FILE  # the student's weights: the file eval and legacy tools read
OPT_FILE = "model.pdopt"
META_FILE = "meta.json"
LR_SCHEDULER_KEY = "LR_Scheduler"
TEACHER_PREFIXES: Tuple[str, ...] = (TEACHER_PREFIX,)
ADAPTER_PREFIXES: Tuple[str, ...] = (ADAPTER_PREFIX,)
# Test hook: seconds to sleep after each file of a save (lets a test kill a writer mid-save).
PAUSE_ENV = "SEGDISTILL_TEST_SAVE_PAUSE"


class DamagedCheckpoint(SegDistillError):
    """A checkpoint file whose size or sha256 differs from its meta.json: a corrupt file (exit 1,
    like an unreadable one; weights that read fine but do not fit the program are exit 2)."""


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|del)-(?P<pid>\d+)$")
FILES_KEY = "files"  # meta.json: {file name: {"size": bytes, "sha256": hex}}
STEP_PREFIX = "step-"
FINAL, BEST = "final", "best_model"
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Reading variables out of a scope / into a scope
# ---------------------------------------------------------------------------------------------


def _paddle():
    from ..paddle_env import import_paddle

    return import_paddle()


def _starts(name: str, prefixes: Iterable[str]) -> bool:
    return any(name.startswith(p) for p in prefixes)


def split_state(program: Any, exclude_prefixes: Sequence[str] = TEACHER_PREFIXES,
                adapter_prefixes: Sequence[str] = ADAPTER_PREFIXES) -> Tuple[List[Any], List[Any]]:
    """(model vars, other state vars): the persistable tensors of `program`, teacher ones dropped.

    Model vars are the student's Parameters (BN statistics are Parameters in legacy-style
    models); adapters and every non-Parameter persistable (optimizer state, LR) go to the other.
    """
    model, other = [], []
    for var in persistable_tensors(program):  # on either IR (program_vars.py)
        if _starts(var.name, exclude_prefixes):
            continue
        if is_parameter(var) and not _starts(var.name, adapter_prefixes):
            model.append(var)
        else:
            other.append(var)
    return model, other


def _read_vars(scope: Any, variables: Iterable[Any]) -> Dict[str, np.ndarray]:
    values = {}
    for var in variables:
        holder = scope.find_var(var.name)
        if holder is None or not holder.get_tensor()._is_initialized():
            continue  # declared but never run (e.g. a var only a later phase creates)
        values[var.name] = np.array(holder.get_tensor())
    return values


# ---------------------------------------------------------------------------------------------
# Durable file writing
# ---------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened; rename is still atomic there
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause_for_tests() -> None:
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    if pause:
        time.sleep(pause)


def _write_file(path: Path, data: bytes) -> Dict[str, Any]:
    """Write `data` durably; return its size and the sha256 of the very chunks written."""
    digest = hashlib.sha256()
    view = memoryview(data)
    with open(path, "wb") as fh:
        for start in range(0, len(view), _CHUNK):
            chunk = view[start:start + _CHUNK]
            fh.write(chunk)
            digest.update(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    _pause_for_tests()
    return {"size": len(data), "sha256": digest.hexdigest()}


def _link_file(src: Path, dst: Path, record: Dict[str, Any]) -> None:
    """`dst` as a hard link to `src` (no second copy); a byte copy where links are refused."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        copied = _write_file(dst, src.read_bytes())
        if copied != record:
            raise DamagedCheckpoint(f"checkpoint file damaged: {src} (it no longer matches "
                                    f"its {META_FILE})") from None
    _pause_for_tests()


def _pickle(obj: Any) -> bytes:
    # Protocol 2 like fluid.save, so Python-2-era legacy tools can still read model.pdparams.
    return pickle.dumps(obj, protocol=2)


def _temp_path(save_dir: Path, name: str, kind: str) -> Path:
    return save_dir / f".{name}.{kind}-{os.getpid()}"


def _write_checkpoint(save_dir: Path, name: str, files: Dict[str, bytes], meta: Dict[str, Any],
                      links: Optional[Dict[str, Tuple[Path, Dict[str, Any]]]] = None) -> Path:
    """`<save_dir>/<name>/` from `files` (bytes) and `links` (name -> (existing file, its
    record)), plus meta.json written LAST (it marks completeness) with every file's size and
    sha256, all in a temporary folder that is then swapped into place. On any error the
    temporary folder is removed and every existing checkpoint is left as it was."""
    final = save_dir / name
    # Names `clean_stale` recognises: it removes a dead writer's tmp folder and puts an `old`
    # one back after a crash mid-swap.
    with staged_dir(final, _temp_path(save_dir, name, "tmp"),
                    aside=_temp_path(save_dir, name, "old")) as tmp:
        records = {}
        for file_name, data in files.items():
            records[file_name] = _write_file(tmp / file_name, data)
        for file_name, (src, record) in (links or {}).items():
            _link_file(src, tmp / file_name, record)
            records[file_name] = dict(record)
        meta = dict(meta, **{FILES_KEY: records})
        _write_file(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
        _fsync_dir(tmp)
    _fsync_dir(save_dir)
    return final


def _check_name(name: str) -> str:
    name = str(name)
    if not name or name.startswith(".") or "/" in name or os.sep in name:
        raise SegDistillError(f"invalid checkpoint name {name!r}")
    return name


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def save_checkpoint(program: Any, scope: Any, save_dir: str | os.PathLike, name: str | int,
                    meta: Dict[str, Any], exclude_prefixes: Sequence[str] = TEACHER_PREFIXES,
                    lr_scheduler: Any = None,
                    adapter_prefixes: Sequence[str] = ADAPTER_PREFIXES) -> Path:
    """Save `program`'s state from `scope` as `<save_dir>/<name>/`; return that folder.

    `meta` is the trainer's record (epoch, global_step, best_miou, config_digest, ...); the
    version, time, LR step and variable counts are added here.
    """
    name = _check_name(name)
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    model_vars, other_vars = split_state(program, exclude_prefixes, adapter_prefixes)
    params = _read_vars(scope, model_vars)
    state: Dict[str, Any] = _read_vars(scope, other_vars)
    if lr_scheduler is not None:
        state[LR_SCHEDULER_KEY] = lr_scheduler.state_dict()
    full_meta = dict(meta)
    full_meta.update({
        "name": name,
        "segdistill_version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "num_params": len(params),
        "num_state": len(state) - (1 if lr_scheduler is not None else 0),
    })
    if lr_scheduler is not None:
        full_meta["lr_step"] = int(lr_scheduler.last_epoch)
        full_meta["lr"] = float(lr_scheduler.last_lr)

    return _write_checkpoint(save_dir, name, {PARAMS_FILE: _pickle(params),
                                              OPT_FILE: _pickle(state)}, full_meta)


def _meta_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def read_meta(path: str | os.PathLike) -> Optional[Dict[str, Any]]:
    """The meta.json of a checkpoint folder, or None if the folder is not a complete checkpoint."""
    path = Path(path)
    meta = _meta_json(path)
    if meta is None or not (path / PARAMS_FILE).is_file():
        return None
    return meta


def _file_problem(path: Path, record: Dict[str, Any], data: Optional[bytes] = None) -> Optional[str]:
    """Why `path` does not match its meta.json record (size first, then sha256), or None."""
    try:
        size = path.stat().st_size if data is None else len(data)
    except FileNotFoundError:
        return "missing"
    if size != record.get("size"):
        return f"{size} bytes, {META_FILE} records {record.get('size')}"
    digest = hashlib.sha256()
    if data is None:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    else:
        digest.update(data)
    if digest.hexdigest() != record.get("sha256"):
        return f"sha256 differs from {META_FILE}"
    return None


def _damaged(path: Path, problem: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(f"checkpoint file damaged: {path} ({problem})")


def verify(path: str | os.PathLike) -> bool:
    """Check every file meta.json records (size and sha256). True when all match; False for a
    folder written before checksums existed (nothing to check against). A missing, truncated or
    altered file raises DamagedCheckpoint naming it; a folder without meta.json raises too."""
    path = Path(path)
    meta = _meta_json(path)
    if meta is None:
        raise SegDistillError(f"not a complete checkpoint (no {META_FILE}): {path}")
    records = meta.get(FILES_KEY)
    if not isinstance(records, dict):
        if not (path / PARAMS_FILE).is_file():
            raise _damaged(path / PARAMS_FILE, "missing")
        return False
    for file_name, record in sorted(records.items()):
        problem = _file_problem(path / file_name, record)
        if problem:
            raise _damaged(path / file_name, problem)
    return True


def verify_weights_path(path: str | os.PathLike) -> Optional[bool]:
    """`verify` for what eval/predict/export accept: a checkpoint folder, or a file in one (only
    that file is checked). None when `path` is not part of a checkpoint (a legacy folder)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    meta = _meta_json(folder)
    if meta is None:
        return None
    if path.is_dir():
        return verify(folder)
    record = (meta.get(FILES_KEY) or {}).get(path.name)
    if record is None:
        return False
    problem = _file_problem(path, record)
    if problem:
        raise _damaged(path, problem)
    return True


def _load_pickle(path: Path, record: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Unpickle a checkpoint file, checking it against its meta.json `record` when there is one
    (the bytes are read once: hashed, then unpickled)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SegDistillError(f"checkpoint file missing: {path}") from None
    problem = _file_problem(path, record, data) if record is not None else None
    if problem:
        raise _damaged(path, problem)
    try:
        return pickle.loads(data, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise SegDistillError(f"checkpoint file unreadable: {path} ({exc})") from None


def load_checkpoint(program: Any, scope: Any, path: str | os.PathLike, place: Any,
                    exclude_prefixes: Sequence[str] = TEACHER_PREFIXES, lr_scheduler: Any = None,
                    with_optimizer: bool = True,
                    adapter_prefixes: Sequence[str] = ADAPTER_PREFIXES) -> Dict[str, Any]:
    """Restore a checkpoint into `scope` (run the startup program first); return its meta.

    Every student variable of `program` must be in the files with the same shape (a resumed run
    must continue exactly): otherwise SegDistillError names the first missing/mismatched ones.
    Files are checked against meta.json's sizes and sha256 (DamagedCheckpoint names a bad one).
    `with_optimizer=False` restores model.pdparams only.
    """
    path = Path(path)
    meta = _meta_json(path)
    if meta is None:
        raise SegDistillError(f"not a complete checkpoint (no {META_FILE}): {path}")
    records = meta.get(FILES_KEY) if isinstance(meta.get(FILES_KEY), dict) else {}
    values: Dict[str, Any] = dict(_load_pickle(path / PARAMS_FILE, records.get(PARAMS_FILE)))
    model_vars, other_vars = split_state(program, exclude_prefixes, adapter_prefixes)
    wanted = list(model_vars)
    if with_optimizer:
        values.update(_load_pickle(path / OPT_FILE, records.get(OPT_FILE)))
        wanted += other_vars
    missing, mismatched = [], []
    for var in wanted:
        if var.name not in values:
            missing.append(var.name)
            continue
        array = np.asarray(values[var.name])
        expected = tuple(var.shape)
        if len(expected) != array.ndim or any(d >= 0 and d != s for d, s in zip(expected, array.shape)):
            mismatched.append(f"{var.name} {array.shape} vs program {expected}")
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} variable(s) missing, e.g. {', '.join(missing[:3])}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[0]}")
        raise ConfigError(f"checkpoint {path} does not fit this program: " + "; ".join(parts))
    for var in wanted:
        holder = scope.var(var.name)
        array = np.asarray(values[var.name])
        holder.get_tensor().set(array.astype(_numpy_dtype(var), copy=False), place)
    if with_optimizer and lr_scheduler is not None:
        state = values.get(LR_SCHEDULER_KEY)
        if state is None:
            raise SegDistillError(f"checkpoint {path} has no LR scheduler state in {OPT_FILE}")
        lr_scheduler.set_state_dict(dict(state))
    return meta


def _numpy_dtype(var: Any) -> Any:
    paddle = _paddle()
    return paddle.base.data_feeder.convert_dtype(var.dtype)


_STEP, _EPOCH, _FINAL = 0, 1, 2  # kinds of resumable checkpoint, in their order at equal steps


def _kind_rank(name: str) -> Optional[int]:
    """Order of checkpoints at the same global step (step < epoch < final); None: not resumable."""
    if name.startswith(STEP_PREFIX) and name[len(STEP_PREFIX):].isdigit():
        return _STEP
    if name.isdigit():
        return _EPOCH
    return _FINAL if name == FINAL else None


def _number(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):  # a hand-edited or foreign meta.json: order it first
        return -1


def resumable_checkpoints(save_dir: str | os.PathLike) -> List[Tuple[Path, Dict[str, Any]]]:
    """Complete epoch, step and `final` checkpoints, oldest first by position (best_model/ is
    never a resume point: a newer checkpoint always exists)."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    found = []
    for entry in save_dir.iterdir():
        rank = _kind_rank(entry.name)
        if rank is None or not entry.is_dir():
            continue
        meta = _meta_json(entry)  # complete (meta.json is written last); verify checks the rest
        if meta is None:
            continue
        epoch = _number(meta.get("epoch", entry.name if entry.name.isdigit() else 0))
        found.append((_number(meta.get("global_step", 0)), epoch, rank, entry, meta))
    found.sort(key=lambda item: item[:3])
    return [(entry, meta) for *_, entry, meta in found]


def latest_checkpoint(save_dir: str | os.PathLike,
                      log: Optional[Callable[[str], None]] = None) -> Optional[Path]:
    """The newest intact checkpoint (`--resume auto`); temp, old, incomplete folders are ignored
    and damaged ones (sha256/size check) skipped, each with a line to `log`. None: there is none."""
    for entry, _meta in reversed(resumable_checkpoints(save_dir)):
        try:
            verify(entry)
        except SegDistillError as exc:
            if log:
                log(f"resume auto: skipping {entry}: {exc}")
            continue
        return entry
    return None


def link_as(save_dir: str | os.PathLike, src_name: str | int, dst_name: str) -> Path:
    """`<save_dir>/<dst_name>/` (e.g. best_model, final) holding hard links to checkpoint
    `src_name`'s files and its own meta.json, installed atomically like any checkpoint."""
    save_dir = Path(save_dir)
    src = save_dir / _check_name(src_name)
    dst_name = _check_name(dst_name)
    meta = read_meta(src)
    if meta is None:
        raise SegDistillError(f"not a complete checkpoint: {src}")
    records = meta.pop(FILES_KEY, None)
    if not isinstance(records, dict):  # written before checksums: hash the files now
        records = {f: _write_record(src / f) for f in (PARAMS_FILE, OPT_FILE) if (src / f).exists()}
    meta.update({"name": dst_name, "linked_from": str(src_name)})
    links = {f: (src / f, record) for f, record in records.items()}
    return _write_checkpoint(save_dir, dst_name, {}, meta, links)


def _write_record(path: Path) -> Dict[str, Any]:
    data = path.read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def prune(save_dir: str | os.PathLike, keep: int) -> List[str]:
    """Retention: keep the `keep` newest epoch checkpoints, and the `keep` newest step
    checkpoints that are newer than the newest epoch checkpoint (older ones can never be resumed
    from before it); `final/`, `best_model/` and everything else are never touched. `keep` 0
    keeps every checkpoint. Returns the names removed."""
    if keep <= 0:
        return []
    save_dir = Path(save_dir)
    found = [(entry, _number(meta.get("global_step", 0)))  # oldest first
             for entry, meta in resumable_checkpoints(save_dir)]
    epochs = [(entry, step) for entry, step in found if _kind_rank(entry.name) == _EPOCH]
    steps = [(entry, step) for entry, step in found if _kind_rank(entry.name) == _STEP]
    newest_epoch_step = epochs[-1][1] if epochs else -1
    superseded = [entry for entry, step in steps if step <= newest_epoch_step]
    current = [entry for entry, step in steps if step > newest_epoch_step]
    doomed = [entry for entry, _ in epochs[:-keep]] + superseded + current[:-keep]
    for entry in doomed:
        aside = _temp_path(save_dir, entry.name, "del")
        os.rename(entry, aside)  # a folder is gone at once, never half-deleted
        shutil.rmtree(aside, ignore_errors=True)
    return [e.name for e in doomed]


def is_temp_entry(name: str) -> bool:
    """A writer's temporary or set-aside folder (`.<name>.tmp-<pid>`, `.<name>.old-<pid>`)."""
    return _TEMP_RE.match(name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale(save_dir: str | os.PathLike) -> List[str]:
    """Remove temp folders left by dead writers; restore an `.old` folder whose replacement never
    arrived. Call once on start (rank 0). Returns what was done, for the log."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    actions = []
    for entry in sorted(save_dir.iterdir()):
        match = _TEMP_RE.match(entry.name)
        if not match or not entry.is_dir() or _pid_alive(int(match["pid"])):
            continue
        final = save_dir / match["name"]
        if match["kind"] == "old" and not final.exists() and read_meta(entry) is not None:
            os.rename(entry, final)
            actions.append(f"restored {final.name} from {entry.name}")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            actions.append(f"removed {entry.name}")
    return actions


def config_digest(cfg: Any) -> str:
    """A short, stable hash of a config (to warn when resuming with a different one)."""
    plain = cfg.to_plain() if hasattr(cfg, "to_plain") else cfg
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
