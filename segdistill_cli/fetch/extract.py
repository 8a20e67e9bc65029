"""Safe extraction of a model archive (no absolute paths, `..`, links or devices), its structural
check, and the atomic swap into `<dest>/<model name>`."""
from __future__ import annotations

import errno
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from ..atomic import replace_dir
from ..errors import SegDistillError
from ..weights import check_structure
from .http_download import failure_from_os_error, short_error


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = PurePosixPath(member.name)
    why = None
    if member.name.startswith(("/", "\\")) or name.is_absolute() or ":" in name.parts[0]:
        why = "has an absolute path"
    elif ".." in name.parts:
        why = "contains '..'"
    elif member.issym() or member.islnk():
        why = f"is a link (to {member.linkname!r})"
    elif member.isdev():
        why = "is a device or FIFO"
    elif not (member.isfile() or member.isdir()):
        why = "is not a regular file or folder"
    if why:
        raise SegDistillError(f"unsafe archive {archive}: member {member.name!r} {why}; "
                              "nothing was extracted")


def _corrupt(archive: Path, exc: BaseException) -> SegDistillError:
    return SegDistillError(f"corrupt archive {archive} (truncated or not a .tgz): "
                           f"{short_error(exc) or type(exc).__name__}")


def install_archive(archive: Path, folder: Path, manifest: Mapping[str, Sequence[int]]) -> None:
    """Extract `archive` safely, check it against `manifest`, and swap it in as `folder`.
    On any failure `folder` is untouched and no temporary folder remains."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.extract-", dir=folder.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()  # reads the whole archive: truncation shows here
                for member in members:
                    _check_member(member, archive)
                # Our checks above are the policy; the 'data' filter (Python >= 3.8.17) is a
                # second line of defence and also drops setuid bits and odd permissions.
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **extra)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise _corrupt(archive, exc) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise failure_from_os_error(
                    exc, f"extracting {archive.name} into {folder.parent}") from exc
            raise _corrupt(archive, exc) from exc
        root = _archive_root(tmp, archive)
        report = check_structure(root, manifest)
        if not report.ok:
            raise SegDistillError(f"{archive.name} is not the expected model {folder.name}: "
                                  f"{report.describe().split(': ', 1)[1]}")
        replace_dir(root, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _archive_root(tmp: Path, archive: Path) -> Path:
    entries = list(tmp.iterdir())
    if not entries:
        raise SegDistillError(f"archive {archive} is empty")
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return tmp  # flat archive: its top level is the model folder
