"""Download progress: a rich bar on a terminal, plain lines otherwise (logs, CI)."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class PlainProgress:
    """One line per 10 % (or per 16 MiB when the size is unknown), for logs and CI."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream = stream

    def start(self, label: str, total: Optional[int], done: int) -> None:
        self.label, self.total, self.done, self.start_done = label, total, done, done
        self.t0, self.next_mark = time.monotonic(), self._mark_after(done)
        size = format_size(total) if total else "(size unknown)"
        self._line(f"{label}: resuming at {format_size(done)} of {size}" if done
                   else f"{label}: downloading {size}")

    def _mark_after(self, done: int) -> int:
        step = self.total // 10 if self.total else 16 << 20
        return (done // max(step, 1) + 1) * max(step, 1)

    def advance(self, n: int) -> None:
        self.done += n
        if self.done >= self.next_mark:
            self.next_mark = self._mark_after(self.done)
            speed = (self.done - self.start_done) / max(time.monotonic() - self.t0, 1e-6)
            text = f"{self.label}: {format_size(self.done)}"
            if self.total:
                eta = (self.total - self.done) / speed if speed else 0
                text += f" / {format_size(self.total)} ({100 * self.done // self.total}%)"
                text += f", {format_size(speed)}/s, ETA {eta:.0f}s"
            self._line(text)

    def finish(self) -> None:
        pass

    def _line(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)


class RichProgress:
    """Size, speed and ETA bar (rich) on stderr, so `--json` on stdout stays clean."""

    def start(self, label: str, total: Optional[int], done: int) -> None:
        from rich.progress import (BarColumn, DownloadColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        from ..terminal import progress_bar, text_column

        self.bar = progress_bar(text_column("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
        self.bar.start()
        self.task = self.bar.add_task(label, total=total, completed=done)

    def advance(self, n: int) -> None:
        self.bar.update(self.task, advance=n)

    def finish(self) -> None:
        self.bar.stop()


def default_progress() -> "PlainProgress | RichProgress":
    return RichProgress() if sys.stderr.isatty() else PlainProgress()


def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
