"""Writing files and folders so that nobody ever sees half of one.

Files: written to a temporary file in the same folder, flushed and fsync'd, then renamed over the
target (`os.replace` is atomic within one filesystem). Folders: built elsewhere in the same parent,
then swapped in by renames, the previous one moved aside first and put back if the swap fails.
The writers of results (lists, labels, pictures, JSON, checkpoints, exports, downloads) use these.
`demo` does not: it writes its configs straight into its own marked scratch folder, which an
interrupted demo simply writes again.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Iterator, Optional


def _temp_name(path: Path, kind: str) -> Path:
    # pid + random part: unique across processes and across threads of one process.
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb",
                encoding: Optional[str] = None) -> Iterator[IO]:
    """`open(path, mode)` whose content appears at `path` only when the block ends without error."""
    path = Path(path)
    tmp = _temp_name(path, "tmp")
    try:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


@contextlib.contextmanager
def staged_dir(final: Path, tmp: Optional[Path] = None,
               aside: Optional[Path] = None) -> Iterator[Path]:
    """A fresh temporary folder next to `final` (default name: a hidden sibling) to build the new
    folder in. When the block ends without error it is swapped in as `final` (`replace_dir`,
    old one set aside as `aside`); on any error it is removed and `final` is left as it was."""
    tmp = tmp or _temp_name(final, "tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, final, aside)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, final: Path, aside: Optional[Path] = None) -> None:
    """Rename the finished folder `new` to `final`. An existing `final` is first renamed to `aside`
    (default: a hidden sibling), put back if the rename fails, and deleted afterwards."""
    old = None
    if final.exists() or final.is_symlink():
        old = aside or _temp_name(final, "old")
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
