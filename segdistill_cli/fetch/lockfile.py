"""What a fetch produced (`FetchResult`) and `<dest>/fetch.lock.json`, which pins each model's
url, size and sha256 after its first successful fetch."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..atomic import write_text_atomic
from ..errors import SegDistillError
from .http_download import failure_from_os_error

LOCK_FILE = "fetch.lock.json"


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
        try:
            write_text_atomic(self.path, text + "\n")
        except OSError as exc:
            raise failure_from_os_error(exc, f"writing {self.path}") from exc
