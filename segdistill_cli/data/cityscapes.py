"""Cityscapes preparation: `*_gtFine_labelTrainIds.png` from `*_gtFine_labelIds.png` and the
train/val/test lists the tutorial configs expect.

Layout read (official): leftImg8bit/{split}/<city>/*_leftImg8bit.png,
gtFine/{split}/<city>/*_gtFine_labelIds.png. Outputs are written atomically (temp file + rename),
identical existing outputs are skipped, and a differing existing file is an error unless `force`.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..atomic import atomic_open, write_text_atomic
from ..errors import ConfigError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
IGNORE = 255

# labelId -> trainId for the 19 evaluated classes (cityscapesScripts labels.py); the rest -> 255.
LABEL_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                     24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def train_id_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelIds array (any integer dtype; ids >= 256 or < 0 -> 255) to uint8 trainIds."""
    ids = np.asarray(label_ids)
    out = np.full(ids.shape, IGNORE, dtype=np.uint8)
    inside = (ids >= 0) & (ids < 256)
    out[inside] = train_id_lut()[ids[inside]]
    return out


@dataclass
class PrepareReport:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    list_counts: dict[str, int] = field(default_factory=dict)


def _existing_label_matches(path: Path, label: np.ndarray) -> bool:
    with Image.open(path) as im:
        old = np.asarray(im)
    return old.shape == label.shape and np.array_equal(old, label)


def convert_label(src: Path, force: bool = False) -> tuple[Path, bool]:
    """Write the trainIds PNG next to `src`. Returns (path, written?)."""
    dst = src.with_name(src.name[: -len(LABEL_ID_SUFFIX)] + TRAIN_ID_SUFFIX)
    with Image.open(src) as im:
        train_ids = to_train_ids(np.asarray(im))
    if dst.exists():
        if _existing_label_matches(dst, train_ids):
            return dst, False
        if not force:
            raise ConfigError(f"{dst} exists and differs from the conversion of {src.name}; "
                                  "use --force to overwrite")
    with atomic_open(dst) as fh:
        Image.fromarray(train_ids, mode="L").save(fh, format="PNG")
    return dst, True


def write_if_changed(path: Path, text: str, force: bool) -> bool:
    """Write unless identical; refuse to replace different content without `force`."""
    if path.exists():
        if path.read_text(encoding="utf-8") == text:
            return False
        if not force:
            raise ConfigError(f"{path} exists with different content; use --force to overwrite")
    write_text_atomic(path, text)
    return True


def _split_lines(root: Path, split: str, separator: str) -> list[str]:
    images = sorted((root / "leftImg8bit" / split).glob(f"*/*{IMAGE_SUFFIX}"))
    lines, orphans = [], []
    for image in images:
        city = image.parent.name
        stem = image.name[: -len(IMAGE_SUFFIX)]
        label = root / "gtFine" / split / city / f"{stem}{TRAIN_ID_SUFFIX}"
        rel_image = image.relative_to(root).as_posix()
        if label.exists():
            lines.append(f"{rel_image}{separator}{label.relative_to(root).as_posix()}\n")
        elif split == "test":
            lines.append(f"{rel_image}\n")  # test images without ground truth: image-only lines
        else:
            orphans.append(image)
    if orphans:
        shown = ", ".join(str(p) for p in orphans[:5])
        raise ConfigError(f"{len(orphans)} {split} image(s) have no {TRAIN_ID_SUFFIX} label "
                              f"(and no {LABEL_ID_SUFFIX} to convert): {shown}")
    return lines


def prepare_cityscapes(root: str | os.PathLike, force: bool = False, workers: int | None = None,
                       separator: str = " ",
                       progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Convert every labelIds PNG under ROOT/gtFine and write ROOT/{train,val,test}.list.
    `progress(done, total)` is called after each converted label."""
    root = Path(root)
    if not (root / "leftImg8bit").is_dir():
        raise ConfigError(f"{root} does not look like Cityscapes: no leftImg8bit/ folder")
    sources = sorted(p for split in SPLITS
                     for p in (root / "gtFine" / split).glob(f"*/*{LABEL_ID_SUFFIX}"))
    report = PrepareReport()
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (path, written) in enumerate(pool.map(lambda s: convert_label(s, force), sources), 1):
            (report.written if written else report.unchanged).append(path)
            if progress:
                progress(done, len(sources))
    for split in SPLITS:
        if not (root / "leftImg8bit" / split).is_dir():
            continue
        lines = _split_lines(root, split, separator)
        path = root / f"{split}.list"
        (report.written if write_if_changed(path, "".join(lines), force)
         else report.unchanged).append(path)
        report.list_counts[split] = len(lines)
    return report
