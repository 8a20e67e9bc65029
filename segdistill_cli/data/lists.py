"""List files in the legacy format: one sample per line, `image<SEP>label`, paths relative to
`DATASET.DATA_DIR` (as legacy PaddleSeg reads them), plus a generic list builder.

Every entry remembers its list file and line number so that any later error can name the line.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..atomic import write_text_atomic
from ..errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file. `label` is None only for image-only (test/vis) lines."""

    list_file: str
    line_no: int  # 1-based, as an editor shows it
    image: str  # path as written in the list
    label: str | None
    data_dir: str

    @property
    def where(self) -> str:
        return f"{self.list_file}:{self.line_no}"

    @property
    def image_path(self) -> str:
        return os.path.join(self.data_dir, self.image)

    @property
    def label_path(self) -> str | None:
        return None if self.label is None else os.path.join(self.data_dir, self.label)


@dataclass(frozen=True)
class BadLine:
    """A line that does not parse (wrong number of fields)."""

    list_file: str
    line_no: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.list_file}:{self.line_no}: {self.reason}"


def split_line(text: str, separator: str) -> list[str]:
    """Legacy `line.strip().split(SEP)`; a single-space separator also tolerates runs of blanks
    and tabs (legacy would have produced empty fields and failed with a vague message)."""
    text = text.strip()
    if separator == " ":
        return text.split()
    return [part.strip() for part in text.split(separator)]


def parse_list(path: str | os.PathLike, data_dir: str | os.PathLike, separator: str = " ",
               require_label: bool = True) -> tuple[list[ListEntry], list[BadLine]]:
    """Read a list file (UTF-8). Blank lines are skipped. Returns (entries, bad lines)."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"list file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"list file {path} is not UTF-8: {exc}") from None
    entries, bad = [], []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        fields = split_line(text, separator)
        if len(fields) == 2 and all(fields):
            entries.append(ListEntry(path, number, fields[0], fields[1], str(data_dir)))
        elif len(fields) == 1 and not require_label:
            entries.append(ListEntry(path, number, fields[0], None, str(data_dir)))
        else:
            bad.append(BadLine(path, number, text, f"expected 'image{separator}label' "
                               f"(separator {separator!r}), found {len(fields)} field(s)"))
    return entries, bad


def read_list(path: str | os.PathLike, data_dir: str | os.PathLike, separator: str = " ",
              require_label: bool = True) -> list[ListEntry]:
    """Like `parse_list` but raises on the first bad line (naming it) or on an empty list."""
    return _entries_or_raise(path, *parse_list(path, data_dir, separator, require_label))


def _entries_or_raise(path: str | os.PathLike, entries: list[ListEntry],
                      bad: list[BadLine]) -> list[ListEntry]:
    if bad:
        raise ConfigError(str(bad[0]) + (f" (and {len(bad) - 1} more bad lines)" if len(bad) > 1 else ""))
    if not entries:
        raise ConfigError(f"list file {path} has no samples")
    return entries


def parse_image_list(path: str | os.PathLike, data_dir: str | os.PathLike,
                     separator: str = " ") -> tuple[list[ListEntry], list[BadLine]]:
    """A list of images without labels (DATASET.UNLABELED_FILE_LIST): one image path per line,
    split by the legacy separator rules; a line with more fields is bad (it looks like a
    labelled list, whose labels would be ignored here)."""
    entries, bad = parse_list(path, data_dir, separator, require_label=False)
    kept = []
    for entry in entries:
        if entry.label is None:
            kept.append(entry)
        else:
            bad.append(BadLine(entry.list_file, entry.line_no, entry.image,
                               f"expected one image path per line (separator {separator!r}), "
                               "found 2 fields"))
    return kept, sorted(bad, key=lambda b: b.line_no)


def read_image_list(path: str | os.PathLike, data_dir: str | os.PathLike,
                    separator: str = " ") -> list[ListEntry]:
    """Like `parse_image_list` but raises on the first bad line (naming it) or an empty list."""
    return _entries_or_raise(path, *parse_image_list(path, data_dir, separator))


def write_list(path: Path, pairs: Iterable[tuple[str, str]], separator: str = " ") -> int:
    """Write `image<SEP>label` lines atomically (temp file + rename). Returns the line count."""
    lines = [f"{image}{separator}{label}\n" for image, label in pairs]
    write_text_atomic(path, "".join(lines))
    return len(lines)


# ---------------------------------------------------------------------------------------------
# Generic list builder: pair images and labels by file stem, split by ratios.
# ---------------------------------------------------------------------------------------------

SPLIT_NAMES = ("train", "val", "test")


def _files_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            stem = str(path.relative_to(folder).with_suffix(""))
            if stem in found:
                raise ConfigError(f"two files share the stem {stem!r}: {found[stem]} and {path}")
            found[stem] = path
    return found


def pair_by_stem(images_dir: Path, labels_dir: Path) -> list[tuple[Path, Path]]:
    """Pairs (image, label) whose paths below their folders match without the extension.
    Raises naming the unpaired files (up to 5 per side)."""
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise ConfigError(f"directory not found: {folder}")
    images, labels = _files_by_stem(images_dir), _files_by_stem(labels_dir)
    lonely_images = sorted(set(images) - set(labels))
    lonely_labels = sorted(set(labels) - set(images))
    if lonely_images or lonely_labels:
        parts = []
        if lonely_images:
            parts.append(f"{len(lonely_images)} image(s) without label: "
                         + ", ".join(str(images[s]) for s in lonely_images[:5]))
        if lonely_labels:
            parts.append(f"{len(lonely_labels)} label(s) without image: "
                         + ", ".join(str(labels[s]) for s in lonely_labels[:5]))
        raise ConfigError("; ".join(parts))
    if not images:
        raise ConfigError(f"no images found in {images_dir}")
    return [(images[s], labels[s]) for s in sorted(images)]


def parse_ratios(text: str) -> list[float]:
    """'0.8,0.2' -> [0.8, 0.2]; 2 or 3 non-negative numbers summing to 1."""
    try:
        ratios = [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--split-ratio {text!r}: expected numbers like 0.8,0.2") from None
    if len(ratios) not in (2, 3) or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ConfigError(f"--split-ratio {text!r}: give 2 or 3 non-negative ratios summing to 1")
    return ratios


def split_sizes(n: int, ratios: Sequence[float]) -> list[int]:
    """Sizes per split; rounding leftovers go to the first split (train)."""
    sizes = [int(n * r) for r in ratios]
    sizes[0] += n - sum(sizes)
    return sizes


def build_lists(root: Path, images_dir: Path, labels_dir: Path, ratios: Sequence[float] = (0.8, 0.2),
                seed: int = 0, out_prefix: str = "", separator: str = " ") -> dict[str, Path]:
    """Pair files, shuffle with `seed`, split, write `<root>/<prefix>train.list` etc. with paths
    relative to `root`. Returns {split: list path}. Each split's lines are sorted."""
    root = root.resolve()
    pairs = pair_by_stem(images_dir.resolve(), labels_dir.resolve())
    rel = []
    for image, label in pairs:
        try:
            rel.append((image.relative_to(root).as_posix(), label.relative_to(root).as_posix()))
        except ValueError:
            raise ConfigError(f"{image} / {label} are not inside ROOT {root}; list paths are "
                                  "relative to ROOT (DATASET.DATA_DIR)") from None
    if any(separator in part for pair in rel for part in pair):
        raise ConfigError(f"a path contains the separator {separator!r}; choose another --separator")
    random.Random(seed).shuffle(rel)
    written: dict[str, Path] = {}
    start = 0
    for name, size in zip(SPLIT_NAMES, split_sizes(len(rel), ratios)):
        chunk = sorted(rel[start:start + size])
        start += size
        path = root / f"{out_prefix}{name}.list"
        write_list(path, chunk, separator)
        written[name] = path
    return written
