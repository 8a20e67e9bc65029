"""`segdistill fetch`: download, verify, safely extract and check the pretrained models.

Flow per model (nothing is lost: an interrupted fetch resumes, a bad archive never replaces a good
folder):

1. Already there? A lock entry, the folder, and a passing structural check -> `present`, no network.
2. Get the archive: `--from FILE` (no network), or stream the URL into `<dest>/<file>.part` with
   retries, HTTP Range resume and sha256 computed while the bytes arrive.
3. Verify the sha256: against `--sha256` if given, else against `<dest>/fetch.lock.json` if this
   model was fetched before (trust on first use; the first success records url, size and sha256).
4. Extract into a temporary folder inside `<dest>` (no absolute paths, `..`, links, devices or
   FIFOs), check every parameter the model's config needs is there with the right shape, then
   rename into place (an older folder is moved aside first and deleted only after the swap).
5. Record the lock entry, delete the archive.

Archives: the real tarballs have one root folder (`mobilenet_cityscapes/...`); whatever that folder
is called, its contents become `<dest>/<model name>` (legacy `download_file_and_uncompress` also
took the first member, whatever its name). A flat archive (files at the top level) is used as is.
The structural check is what decides whether the contents are right.

    registry.py   known models, name/role lookup     lockfile.py  FetchResult, fetch.lock.json
    progress.py   rich bar or plain lines            http_download.py  retries, resume, streaming sha256
    extract.py    safe extraction, atomic swap       (here)       fetch_models: the flow above
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import ConfigError, SegDistillError
from ..weights import check_structure
from .http_download import (CHUNK, Downloaded, FetchInterrupted, download, failure_from_os_error,
                            sha256_file)
from .extract import install_archive
from .lockfile import LOCK_FILE, FetchResult, LockFile
from .progress import PlainProgress, RichProgress, default_progress, format_size
from .registry import REGISTRY, ROLES, ModelSpec, model_manifest, model_name, select_models

__all__ = ["CHUNK", "DEFAULT_DEST", "Downloaded", "FetchInterrupted", "FetchOptions",
           "FetchResult", "LOCK_FILE", "LockFile", "MIRROR_ENV", "ModelSpec", "PlainProgress",
           "REGISTRY", "ROLES", "RichProgress", "default_progress", "download", "fetch_models",
           "install_archive", "model_manifest", "model_name", "select_models", "sha256_file"]

DEFAULT_DEST = "pretrained_model"
MIRROR_ENV = "SEGDISTILL_MIRROR"


@dataclass
class FetchOptions:
    dest: Path
    mirror: Optional[str] = None
    urls: Mapping[str, str] = field(default_factory=dict)
    sha256s: Mapping[str, str] = field(default_factory=dict)
    from_files: Mapping[str, Path] = field(default_factory=dict)
    force: bool = False
    manifest_for: Callable[[ModelSpec], Mapping[str, Sequence[int]]] = model_manifest
    progress: Any = None
    session: Any = None
    retries: int = 5
    backoff: float = 1.0
    timeout: tuple[float, float] = (10.0, 60.0)
    log: Callable[[str], None] = field(default=lambda text: print(text, file=sys.stderr))


def _by_model(mapping: Optional[Mapping[str, Any]], where: str) -> dict[str, Any]:
    return {model_name(k, where): v for k, v in (mapping or {}).items()}


def fetch_models(names: Sequence[str] = (), dest: str | os.PathLike = DEFAULT_DEST, *,
                 mirror: Optional[str] = None, urls: Optional[Mapping[str, str]] = None,
                 sha256s: Optional[Mapping[str, str]] = None,
                 from_files: Optional[Mapping[str, str | os.PathLike]] = None,
                 force: bool = False, **options: Any) -> list[FetchResult]:
    """Fetch the selected models (`teacher`, `student`, names; default all) into `dest`.

    `urls`/`sha256s`/`from_files` are keyed by model name or role. `mirror` (default env
    SEGDISTILL_MIRROR) replaces the host: `<mirror>/<file name>`. Further keyword options:
    manifest_for, progress, session, retries, backoff, timeout, log (see FetchOptions).
    """
    opts = FetchOptions(
        dest=Path(dest), mirror=mirror if mirror is not None else os.environ.get(MIRROR_ENV),
        urls=_by_model(urls, "model in --url"),
        sha256s={k: v.lower() for k, v in _by_model(sha256s, "model in --sha256").items()},
        from_files={k: Path(v) for k, v in _by_model(from_files, "model in --from").items()},
        force=force, **options)
    for name, digest in opts.sha256s.items():
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"--sha256 for {name}: {digest!r} is not a 64-digit hex sha256")
    for name, file in opts.from_files.items():
        if not file.is_file():
            raise ConfigError(f"--from for {name}: file not found: {file}")
    try:
        opts.dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise failure_from_os_error(exc, f"creating {opts.dest}") from exc
    lock = LockFile(opts.dest)
    return [_fetch_one(spec, opts, lock) for spec in select_models(names)]


def _url_for(spec: ModelSpec, opts: FetchOptions) -> str:
    if spec.name in opts.urls:
        return opts.urls[spec.name]
    if opts.mirror:
        return f"{opts.mirror.rstrip('/')}/{spec.filename}"
    return spec.url


def _fetch_one(spec: ModelSpec, opts: FetchOptions, lock: LockFile) -> FetchResult:
    folder = opts.dest / spec.name
    url = _url_for(spec, opts)
    entry = lock.get(spec.name)
    pinned = opts.sha256s.get(spec.name)
    manifest = opts.manifest_for(spec)
    if not opts.force and _is_present(folder, entry, pinned, manifest, opts):
        opts.log(f"{spec.name}: already present and verified in {folder} (no download; "
                 "--force to fetch again)")
        return FetchResult(spec.name, entry["url"], str(folder), int(entry["bytes"]),
                           entry["sha256"], "present")
    from_file = opts.from_files.get(spec.name)
    if from_file is not None:
        size, digest = sha256_file(from_file)
        archive, status, source = from_file, "installed-from-file", str(from_file.resolve())
    else:
        got = download(url, opts.dest / f"{spec.filename}.part", session=opts.session,
                       timeout=opts.timeout, retries=opts.retries, backoff=opts.backoff,
                       progress=opts.progress, label=spec.name)
        archive, size, digest = got.path, got.size, got.sha256
        status, source = ("resumed" if got.resumed else "downloaded"), url
    _verify_hash(spec, digest, size, source, pinned, entry, lock, archive, from_file is None)
    try:
        install_archive(archive, folder, manifest)
    except SegDistillError:
        if from_file is None:  # a bad download must not be "resumed" next time
            archive.unlink(missing_ok=True)
        raise
    lock.record(spec.name, source, size, digest)
    if from_file is None:
        archive.unlink(missing_ok=True)
    opts.log(f"{spec.name}: {status}, {format_size(size)}, sha256 {digest[:16]}..., into {folder}")
    return FetchResult(spec.name, source, str(folder), size, digest, status)


def _is_present(folder: Path, entry: Optional[dict], pinned: Optional[str],
                manifest: Mapping[str, Sequence[int]], opts: FetchOptions) -> bool:
    if entry is None or not folder.is_dir() or (pinned and pinned != entry.get("sha256")):
        return False
    report = check_structure(folder, manifest)
    if not report.ok:
        opts.log(f"{folder.name}: folder is incomplete, fetching again ({report.describe()})")
    return report.ok


def _verify_hash(spec: ModelSpec, digest: str, size: int, source: str, pinned: Optional[str],
                 entry: Optional[dict], lock: LockFile, archive: Path, downloaded: bool) -> None:
    if pinned:
        expected, origin = pinned, "--sha256"
    elif entry is not None:
        expected, origin = entry["sha256"], f"{lock.path} (first fetch from {entry['url']})"
    else:
        return  # trust on first use: recorded after a successful install
    if digest == expected:
        return
    if downloaded:  # useless to resume onto wrong bytes
        archive.unlink(missing_ok=True)
    hint = ("" if pinned else f"; if the new file is intended, delete the {spec.name!r} entry "
            f"from {lock.path}")
    raise SegDistillError(f"sha256 mismatch for {spec.name} from {source}: expected {expected} "
                          f"(from {origin}), got {digest} ({size} bytes){hint}")
