"""`segdistill fetch`: download, verify, safely extract and check the pretrained models.

Flow per model (DESIGN.md decision 9, "nothing lost"):

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
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

from .errors import SegDistillError
from .weights import check_structure

LOCK_FILE = "fetch.lock.json"
DEFAULT_DEST = "pretrained_model"
MIRROR_ENV = "SEGDISTILL_MIRROR"
CHUNK = 1 << 16


# ---------------------------------------------------------------------------------------------
# Registry of known models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    name: str  # also the folder it becomes: <dest>/<name>, what the tutorial configs point at
    role: str  # "teacher" or "student"
    url: str
    config: str  # the tutorial config this model belongs to (documentation, drift test)
    # The keys of `config` that decide the parameter names and shapes. Applied to the defaults
    # so the structural check works from an installed package without the repo's configs/.
    config_keys: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_DEEPLAB = ("MODEL.MODEL_NAME=deeplabv3p", "MODEL.DEFAULT_NORM_TYPE=bn", "DATASET.NUM_CLASSES=19",
            "DATASET.IMAGE_TYPE=rgb", "MODEL.DEEPLAB.ASPP_WITH_SEP_CONV=True",
            "MODEL.DEEPLAB.DECODER_USE_SEP_CONV=True")

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec for spec in (
        ModelSpec("xception65_bn_cityscapes", "teacher",
                  "https://paddleseg.bj.bcebos.com/models/xception65_bn_cityscapes.tgz",
                  "configs/cityscape_teacher.yaml",
                  _DEEPLAB + ("MODEL.DEEPLAB.BACKBONE=xception_65",
                              "MODEL.DEEPLAB.ENCODER_WITH_ASPP=True",
                              "MODEL.DEEPLAB.ENABLE_DECODER=True")),
        ModelSpec("mobilenet_cityscapes", "student",
                  "https://paddleseg.bj.bcebos.com/models/mobilenet_cityscapes.tgz",
                  "configs/cityscape.yaml",
                  _DEEPLAB + ("MODEL.DEEPLAB.BACKBONE=mobilenet",
                              "MODEL.DEEPLAB.ENCODER_WITH_ASPP=False",
                              "MODEL.DEEPLAB.ENABLE_DECODER=False")),
    )
}
ROLES = {spec.role: spec.name for spec in REGISTRY.values()}


def model_name(name: str, where: str = "model") -> str:
    """A registry name from a model name or `teacher`/`student`."""
    if name in REGISTRY:
        return name
    if name in ROLES:
        return ROLES[name]
    known = ", ".join(["all", *ROLES, *REGISTRY])
    raise SegDistillError(f"unknown {where} {name!r} (known: {known})")


def select_models(which: Sequence[str] = ()) -> list[ModelSpec]:
    """`teacher`, `student`, model names or `all` (also the default) -> specs, in registry order."""
    if not which or "all" in which:
        return list(REGISTRY.values())
    chosen = {model_name(w) for w in which}
    return [spec for spec in REGISTRY.values() if spec.name in chosen]


def model_manifest(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter name -> shape that the model's config needs."""
    from .config import load_config
    from .models import parameter_manifest

    return parameter_manifest(load_config(None, spec.config_keys))


# ---------------------------------------------------------------------------------------------
# Results and the lock file
# ---------------------------------------------------------------------------------------------


@dataclass
class FetchResult:
    name: str
    url: str
    path: str
    bytes: int
    sha256: str
    status: str  # downloaded | resumed | present | installed-from-file

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LockFile:
    """`<dest>/fetch.lock.json`: {"version": 1, "models": {name: {url, bytes, sha256}}}."""

    def __init__(self, dest: Path):
        self.path = dest / LOCK_FILE
        self.models: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.models = dict(data["models"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SegDistillError(f"corrupt lock file {self.path}: {exc} (fix or delete "
                                      "it; it pins the sha256 of each downloaded model)") from exc

    def get(self, name: str) -> Optional[dict[str, Any]]:
        return self.models.get(name)

    def record(self, name: str, url: str, size: int, sha256: str) -> None:
        self.models[name] = {"url": url, "bytes": size, "sha256": sha256}
        text = json.dumps({"version": 1, "models": self.models}, indent=2, sort_keys=True)
        _atomic_write(self.path, text + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _os_error(exc, f"writing {path}") from exc


# ---------------------------------------------------------------------------------------------
# Progress: a rich bar on a terminal, plain lines otherwise
# ---------------------------------------------------------------------------------------------


class PlainProgress:
    """One line per 10 % (or per 16 MiB when the size is unknown), for logs and CI."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream = stream

    def start(self, label: str, total: Optional[int], done: int) -> None:
        self.label, self.total, self.done, self.start_done = label, total, done, done
        self.t0, self.next_mark = time.monotonic(), self._mark_after(done)
        size = _size(total) if total else "(size unknown)"
        self._line(f"{label}: resuming at {_size(done)} of {size}" if done
                   else f"{label}: downloading {size}")

    def _mark_after(self, done: int) -> int:
        step = self.total // 10 if self.total else 16 << 20
        return (done // max(step, 1) + 1) * max(step, 1)

    def advance(self, n: int) -> None:
        self.done += n
        if self.done >= self.next_mark:
            self.next_mark = self._mark_after(self.done)
            speed = (self.done - self.start_done) / max(time.monotonic() - self.t0, 1e-6)
            text = f"{self.label}: {_size(self.done)}"
            if self.total:
                eta = (self.total - self.done) / speed if speed else 0
                text += f" / {_size(self.total)} ({100 * self.done // self.total}%)"
                text += f", {_size(speed)}/s, ETA {eta:.0f}s"
            self._line(text)

    def finish(self) -> None:
        pass

    def _line(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)


class RichProgress:
    """Size, speed and ETA bar (rich) on stderr, so `--json` on stdout stays clean."""

    def start(self, label: str, total: Optional[int], done: int) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.bar.start()
        self.task = self.bar.add_task(label, total=total, completed=done)

    def advance(self, n: int) -> None:
        self.bar.update(self.task, advance=n)

    def finish(self) -> None:
        self.bar.stop()


def default_progress() -> "PlainProgress | RichProgress":
    return RichProgress() if sys.stderr.isatty() else PlainProgress()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# ---------------------------------------------------------------------------------------------
# Download with retries, resume and streaming hash
# ---------------------------------------------------------------------------------------------


class FetchInterrupted(SegDistillError):
    """Ctrl-C during a download: the `.part` is kept so the next run resumes."""

    exit_code = 130


@dataclass
class Downloaded:
    path: Path
    size: int
    sha256: str
    resumed: bool


@dataclass
class _PartState:
    """The `.part` hash carried across attempts, so resuming does not re-read what was hashed."""

    hasher: Any = field(default_factory=hashlib.sha256)
    hashed: int = 0
    resumed: bool = False

    def sync(self, part: Path) -> int:
        """Make the hash cover exactly the bytes in `part`; return that size."""
        size = part.stat().st_size if part.exists() else 0
        if size != self.hashed:  # e.g. a .part left by an earlier run: hash it once
            self.hasher, self.hashed = hashlib.sha256(), 0
            with open(part, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    self.hasher.update(chunk)
                    self.hashed += len(chunk)
        return size

    def restart(self, part: Path) -> None:
        part.unlink(missing_ok=True)
        self.hasher, self.hashed = hashlib.sha256(), 0


class _Retry(Exception):
    """This attempt failed in a way worth retrying (connection, 5xx, short body)."""


def download(url: str, part: Path, *, session: Any = None, timeout: tuple[float, float] = (10, 60),
             retries: int = 5, backoff: float = 1.0, progress: Any = None,
             label: str = "") -> Downloaded:
    """Stream `url` into `part` (resuming what is there), hashing as it goes.

    Retries connection errors, timeouts, 5xx/429 and short bodies `retries` times with
    exponential backoff `backoff * 2**i` seconds; 4xx and DNS failures fail at once.
    """
    import requests

    if session is None:
        with requests.Session() as own:
            return download(url, part, session=own, timeout=timeout, retries=retries,
                            backoff=backoff, progress=progress, label=label)
    progress = progress or default_progress()
    state = _PartState()
    label = label or url
    last = "no attempt"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _attempt(url, part, session, timeout, progress, state, label)
            return Downloaded(part, state.hashed, state.hasher.hexdigest(), state.resumed)
        except _Retry as why:
            last = str(why)
        except requests.exceptions.RequestException as exc:
            if _is_dns_failure(exc):
                raise SegDistillError(f"no network: cannot resolve the host of {url} "
                                      "(offline? use --mirror or --from FILE)") from exc
            last = f"{type(exc).__name__}: {_short(exc)}"
        except KeyboardInterrupt:
            size = part.stat().st_size if part.exists() else 0
            raise FetchInterrupted(f"interrupted; kept the partial download {part} ({size} "
                                   "bytes): run the same fetch again to resume") from None
    raise SegDistillError(f"download of {url} failed after {retries + 1} attempts: {last} "
                          f"(partial data kept in {part}; run again to resume)")


def _attempt(url: str, part: Path, session: Any, timeout: tuple[float, float], progress: Any,
             state: _PartState, label: str) -> None:
    have = state.sync(part)
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, stream=True, timeout=timeout, headers=headers) as resp:
        if resp.status_code == 416 and have:  # .part is longer than the file: start over
            state.restart(part)
            raise _Retry("HTTP 416 for the partial download, restarting")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
        if resp.status_code not in (200, 206):
            raise SegDistillError(f"{url}: HTTP {resp.status_code} {resp.reason}"
                                  + (" (wrong URL or no access; check --url/--mirror)"
                                     if resp.status_code in (401, 403, 404, 410) else ""))
        total = _expected_total(resp, have)
        if resp.status_code == 206 and total is None:  # Content-Range not for our offset
            state.restart(part)
            raise _Retry("server answered a different range, restarting")
        if resp.status_code == 200 and have:  # server ignored Range: clean restart
            state.restart(part)
        if state.hashed:
            state.resumed = True
        progress.start(label, total, state.hashed)
        try:
            _stream_body(resp, part, state, progress)
        finally:
            progress.finish()
    if total is not None and state.hashed != total:
        raise _Retry(f"connection closed after {state.hashed} of {total} bytes")


def _expected_total(resp: Any, have: int) -> Optional[int]:
    """Full file size from Content-Length (200) or Content-Range (206); None if unknown/bad."""
    if resp.status_code == 206:
        value = resp.headers.get("Content-Range", "")  # "bytes 100-999/1000"
        try:
            unit, rest = value.split(" ", 1)
            span, size = rest.split("/")
            start = int(span.split("-")[0])
            return int(size) if unit == "bytes" and start == have else None
        except ValueError:
            return None
    length = resp.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _stream_body(resp: Any, part: Path, state: _PartState, progress: Any) -> None:
    import requests

    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(part, "ab") as fh:
            try:
                for chunk in resp.iter_content(CHUNK):
                    fh.write(chunk)
                    state.hasher.update(chunk)
                    state.hashed += len(chunk)
                    progress.advance(len(chunk))
            except (requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ConnectionError) as exc:
                raise _Retry(f"connection dropped after {state.hashed} bytes "
                             f"({_short(exc)})") from exc
    except OSError as exc:
        raise _os_error(exc, f"writing {part}", keep=part) from exc


def _is_dns_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return True
        stack.extend([getattr(e, "__cause__", None), getattr(e, "__context__", None),
                      getattr(e, "reason", None), *[a for a in getattr(e, "args", ())
                                                     if isinstance(a, BaseException)]])
    return False


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _os_error(exc: OSError, doing: str, keep: Optional[Path] = None) -> SegDistillError:
    kept = f"; partial data kept in {keep} to resume" if keep else ""
    if exc.errno == errno.ENOSPC:
        return SegDistillError(f"disk full while {doing}: free some space and run again{kept}")
    return SegDistillError(f"{exc.strerror or exc} while {doing}{kept}")


def sha256_file(path: Path) -> tuple[int, str]:
    hasher, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
            size += len(chunk)
    return size, hasher.hexdigest()


# ---------------------------------------------------------------------------------------------
# Safe extraction and the atomic swap
# ---------------------------------------------------------------------------------------------


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
                           f"{_short(exc) or type(exc).__name__}")


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
                raise _os_error(exc, f"extracting {archive.name} into {folder.parent}") from exc
            raise _corrupt(archive, exc) from exc
        root = _archive_root(tmp, archive)
        report = check_structure(root, manifest)
        if not report.ok:
            raise SegDistillError(f"{archive.name} is not the expected model {folder.name}: "
                                  f"{report.describe().split(': ', 1)[1]}")
        _swap_into_place(root, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _archive_root(tmp: Path, archive: Path) -> Path:
    entries = list(tmp.iterdir())
    if not entries:
        raise SegDistillError(f"archive {archive} is empty")
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return tmp  # flat archive: its top level is the model folder


def _swap_into_place(new: Path, final: Path) -> None:
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


# ---------------------------------------------------------------------------------------------
# The whole thing
# ---------------------------------------------------------------------------------------------


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
            raise SegDistillError(f"--sha256 for {name}: {digest!r} is not a 64-digit hex sha256")
    for name, file in opts.from_files.items():
        if not file.is_file():
            raise SegDistillError(f"--from for {name}: file not found: {file}")
    try:
        opts.dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, f"creating {opts.dest}") from exc
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
    opts.log(f"{spec.name}: {status}, {_size(size)}, sha256 {digest[:16]}..., into {folder}")
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
