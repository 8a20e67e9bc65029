"""Pre-flight data validation: every list line parses, both files exist and decode, sizes match,
label values lie in [0, NUM_CLASSES) or equal IGNORE_INDEX. `check_data` makes the report that
`segdistill data check` prints; `require_valid_data` raises on a bad line, and is what `train` and
`eval` run before any work (per --check-data: preflight.data_errors).

Fast: a thread pool (PIL and numpy release the GIL while decoding); images are checked from the
header only (size, mode) unless `decode_images=True`; labels must be decoded to see their values.
"""
from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError
from .dataset import read_image, read_label
from .lists import ListEntry, parse_image_list, parse_list

SPLITS = ("train", "val", "test", "unlabeled")
_LIST_KEYS = {"train": "TRAIN_FILE_LIST", "val": "VAL_FILE_LIST", "test": "TEST_FILE_LIST",
              "unlabeled": "UNLABELED_FILE_LIST"}
# Pillow modes and the channel count OpenCV gives them with IMREAD_UNCHANGED.
_ALPHA_MODES = {"RGBA", "LA", "PA"}


@dataclass(frozen=True)
class Issue:
    """One offending list line."""

    list_file: str
    line_no: int
    reason: str

    def __str__(self) -> str:
        return f"{self.list_file}:{self.line_no}: {self.reason}"


@dataclass
class DataReport:
    """What a check found. `issues` holds the first `max_errors` (in list/line order);
    `issue_count` counts all of them."""

    checked: dict[str, int] = field(default_factory=dict)  # list file -> lines checked
    issues: list[Issue] = field(default_factory=list)
    issue_count: int = 0
    label_values: dict[int, int] = field(default_factory=dict)  # class id -> pixel count (valid lines)
    sampled: bool = False  # some list was checked on a random subset of its lines only

    @property
    def ok(self) -> bool:
        return self.issue_count == 0

    @property
    def total_checked(self) -> int:
        return sum(self.checked.values())

    def summary(self) -> str:
        lists = ", ".join(f"{path} ({n})" for path, n in self.checked.items())
        checked = "sampled lines" if self.sampled else "lines"
        if self.ok:
            return f"{self.total_checked} {checked} checked in {lists}"
        first = self.issues[0] if self.issues else "?"
        return (f"{self.issue_count} bad line(s) among {self.total_checked} {checked} checked; "
                f"first: {first}")


@dataclass(frozen=True)
class _Rules:
    num_classes: int
    ignore_index: int
    image_type: str
    decode_images: bool


def _image_size(entry: ListEntry, rules: _Rules) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) of the image, or an error reason."""
    path = entry.image_path
    if not os.path.isfile(path):
        return None, f"image not found: {path}"
    if rules.decode_images:
        img = read_image(path, rules.image_type)
        if img is None:
            return None, f"image does not decode: {path}"
        if rules.image_type == "rgba" and img.shape[2] != 4:
            return None, f"IMAGE_TYPE is rgba but the image has {img.shape[2]} channels: {path}"
        return (img.shape[1], img.shape[0]), None
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        return None, f"image does not decode ({type(exc).__name__}): {path}"
    if rules.image_type == "rgba" and mode not in _ALPHA_MODES:
        return None, f"IMAGE_TYPE is rgba but the image has no alpha channel (mode {mode}): {path}"
    return size, None


def _check_entry(entry: ListEntry, rules: _Rules) -> tuple[str | None, dict[int, int]]:
    """Reason the entry is bad (or None) and its label histogram."""
    size, reason = _image_size(entry, rules)
    if reason:
        return reason, {}
    if entry.label is None:
        return None, {}
    path = entry.label_path
    if not os.path.isfile(path):
        return f"label not found: {path}", {}
    try:
        label = read_label(path)
    except ValueError as exc:
        return str(exc), {}
    except Exception as exc:  # noqa: BLE001
        return f"label does not decode ({type(exc).__name__}): {path}", {}
    if (label.shape[1], label.shape[0]) != size:
        return (f"size mismatch: image {size[0]}x{size[1]}, label {label.shape[1]}x{label.shape[0]} "
                f"({entry.image} / {entry.label})"), {}
    values, counts = np.unique(label, return_counts=True)
    bad = [int(v) for v in values if not (v < rules.num_classes or v == rules.ignore_index)]
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
        return (f"label values {shown} outside [0, {rules.num_classes}) and not IGNORE_INDEX "
                f"{rules.ignore_index}: {path}"), {}
    return None, {int(v): int(c) for v, c in zip(values, counts)}


def split_lists(cfg: Any, splits: Iterable[str]) -> list[tuple[str, str]]:
    """[(split, list path)] without duplicates ('all' = train, val, test, unlabeled where set;
    CamVid's test = val)."""
    wanted = list(SPLITS) if "all" in splits else list(splits)
    seen, out = set(), []
    for split in wanted:
        if split not in _LIST_KEYS:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}, all")
        path = cfg.DATASET[_LIST_KEYS[split]]
        key = os.path.abspath(path) if path else path
        if path and key not in seen:
            seen.add(key)
            out.append((split, path))
    return out


def check_data(cfg: Any, splits: Sequence[str] = ("train", "val"), max_errors: int = 20,
               sample: int | None = None, decode_images: bool = False, workers: int | None = None,
               show_progress: bool = False, seed: int = 0) -> DataReport:
    """Check the list files of `splits`. `sample` checks a random (seeded) subset of N lines per
    list. Missing list files raise ConfigError at once; bad lines are collected in the report."""
    rules = _Rules(int(cfg.DATASET.NUM_CLASSES), int(cfg.DATASET.IGNORE_INDEX),
                   cfg.DATASET.IMAGE_TYPE, decode_images)
    report, issues, jobs = DataReport(), [], []
    for split, path in split_lists(cfg, splits):
        if split == "unlabeled":  # images only: exists and decodes, naming the line
            entries, bad = parse_image_list(path, cfg.DATASET.DATA_DIR, cfg.DATASET.SEPARATOR)
        else:
            entries, bad = parse_list(path, cfg.DATASET.DATA_DIR, cfg.DATASET.SEPARATOR,
                                      require_label=(split != "test"))
        if sample is not None and sample < len(entries):
            entries = sorted(random.Random(seed).sample(entries, sample), key=lambda e: e.line_no)
            report.sampled = True
        issues += [Issue(b.list_file, b.line_no, b.reason) for b in bad]
        if not entries and not bad:
            issues.append(Issue(str(path), 0, "list file has no samples"))
        report.checked[str(path)] = len(entries) + len(bad)
        jobs += entries
    for entry, (reason, histogram) in _run_parallel(jobs, rules, workers, show_progress):
        if reason:
            issues.append(Issue(entry.list_file, entry.line_no, reason))
        for value, count in histogram.items():
            report.label_values[value] = report.label_values.get(value, 0) + count
    order = {path: i for i, path in enumerate(report.checked)}
    issues.sort(key=lambda i: (order.get(i.list_file, 0), i.line_no))
    report.issue_count = len(issues)
    report.issues = issues[:max(0, max_errors)]
    return report


def _run_parallel(jobs: list[ListEntry], rules: _Rules, workers: int | None, show_progress: bool):
    from ..terminal import progress_bar

    workers = workers or min(16, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            progress_bar(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("checking samples", total=len(jobs))
        for entry, result in zip(jobs, pool.map(lambda e: _check_entry(e, rules), jobs)):
            progress.advance(task)
            yield entry, result


def require_valid_data(cfg: Any, splits: Sequence[str] = ("train", "val"), max_errors: int = 5,
                       show_progress: bool = False, **kwargs: Any) -> DataReport:
    """The pre-flight check `train`/`eval` run: raises ConfigError with a summary naming the
    first bad line (the report's issues are in the exception's `report` attribute)."""
    for split, path in split_lists(cfg, splits):
        if not os.path.isfile(path):
            key = f"DATASET.{_LIST_KEYS[split]}"
            raise ConfigError(f"{key} ({cfg.origin(key)}): list file not found: {path}")
    report = check_data(cfg, splits, max_errors=max_errors, show_progress=show_progress, **kwargs)
    if not report.ok:
        error = ConfigError(report.summary())
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
