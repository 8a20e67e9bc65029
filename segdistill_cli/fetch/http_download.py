"""One HTTP download into a `.part` file: retries with backoff, Range resume, sha256 computed
while the bytes arrive, one-line errors for DNS, HTTP and disk failures."""
from __future__ import annotations

import errno
import hashlib
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import SegDistillError
from .progress import default_progress

CHUNK = 1 << 16


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
            last = f"{type(exc).__name__}: {short_error(exc)}"
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
                             f"({short_error(exc)})") from exc
    except OSError as exc:
        raise failure_from_os_error(exc, f"writing {part}", keep=part) from exc


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


def short_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


def failure_from_os_error(exc: OSError, doing: str, keep: Optional[Path] = None) -> SegDistillError:
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
