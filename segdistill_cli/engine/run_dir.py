"""What a MODEL_SAVE_DIR holds: finding an earlier run, clearing it for `--overwrite`, probing that
the folder can be written, and run.json, which keeps every invocation of the run.

A folder "holds a run" when it has run.json, train_log.jsonl or a checkpoint (a folder with
meta.json). `--overwrite` first renames every entry of the old run into one hidden folder
(`.overwritten.tmp-<pid>`, a temp folder that `checkpoints.clean_stale` removes if this process
dies) and then deletes it, before the new run writes anything: the folder never holds files of two
runs. Entries that are not part of a run (a user's notes, the launcher's `launch_logs/`) stay.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..atomic import write_text_atomic
from . import checkpoints

RUN_JSON = "run.json"
TRAIN_LOG = "train_log.jsonl"
_RUN_FILES = (RUN_JSON, TRAIN_LOG, "vdl")


@dataclass(frozen=True)
class ExistingRun:
    folder: Path
    last_epoch: Optional[int]  # the newest complete checkpoint's epoch; None: no checkpoint yet

    def describe(self) -> str:
        last = "none" if self.last_epoch is None else str(self.last_epoch)
        return f"{self.folder} already holds a run (last complete epoch: {last})"


def _is_run_entry(entry: Path) -> bool:
    if entry.name in _RUN_FILES:
        return True
    if checkpoints.is_temp_entry(entry.name):
        return True
    return entry.is_dir() and (entry / checkpoints.META_FILE).is_file()


def find_run(save_dir: Path) -> Optional[ExistingRun]:
    """The run `save_dir` holds, or None (absent, empty, or only foreign files)."""
    if not save_dir.is_dir():
        return None
    if not any(_is_run_entry(e) for e in save_dir.iterdir()):
        return None
    epochs = []
    for entry, meta in checkpoints.resumable_checkpoints(save_dir):
        if entry.name.startswith(checkpoints.STEP_PREFIX):
            continue  # mid-epoch: its epoch is not complete
        try:
            epochs.append(int(meta.get("epoch")))
        except (TypeError, ValueError):
            continue
    return ExistingRun(save_dir, max(epochs) if epochs else None)


def clear_run(save_dir: Path) -> int:
    """Remove the earlier run's entries (see the module doc); returns how many were removed."""
    entries = [e for e in sorted(save_dir.iterdir()) if _is_run_entry(e)]
    if not entries:
        return 0
    aside = save_dir / f".overwritten.tmp-{os.getpid()}"
    aside.mkdir()
    for entry in entries:
        os.rename(entry, aside / entry.name)
    shutil.rmtree(aside)
    return len(entries)


def probe_writable(folder: Path) -> Optional[str]:
    """Really create `folder` (with its missing parents) and write a file in it, then remove what
    the probe created. Returns None when that worked, else the reason."""
    folder = folder.absolute()
    created = []
    path = folder
    while not path.exists() and path.parent != path:
        created.append(path)
        path = path.parent
    try:
        for new in reversed(created):
            new.mkdir()
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        for new in created:  # deepest first
            try:
                new.rmdir()
            except OSError:
                pass
    return None


def record_invocation(save_dir: Path, first_start: dict[str, Any], invocation: dict[str, Any],
                      resumed: bool) -> None:
    """run.json = the first start's record (configs, versions, ...) plus `invocations`: every
    start and resume in order. A resume appends to the run.json it finds."""
    path = save_dir / RUN_JSON
    record = None
    if resumed and path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
    if not isinstance(record, dict):
        record = {**first_start, "invocations": []}
    # A run.json from before invocations were kept: its top level describes its first start.
    record.setdefault("invocations", [{k: record.get(k) for k in ("command", "started")}])
    record["invocations"].append(invocation)
    write_text_atomic(path, json.dumps(record, indent=2))
