"""Stopping on request: SIGTERM or SIGUSR1 (what schedulers send before a kill) make `train`
finish the step in flight, write a checkpoint of the exact position and exit 143.

The handler only records the signal; the trainer asks `requested` at each step boundary, so a
save is never interrupted by it (a second SIGTERM during the save is recorded and ignored).
SIGKILL cannot be caught: the atomic checkpoint writes cover it.

Several workers (rank 0 saves, every rank must stop at the same step or the others hang in the
next all-reduce): the stop decision is collective. `StopRequest.agree` is the one place that
makes it: in one process the local flag, under the launcher a max all-reduce of every rank's flag
(`collective.stop_vote`). docs/design.md, "Preemption".
"""
from __future__ import annotations

import shlex
import signal
import threading
from typing import Any, Callable, Optional, Sequence

from ..errors import SegDistillError

EXIT_CODE = 143  # 128 + SIGTERM, what schedulers and shells expect after a SIGTERM
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
LINE_START = "stopped by "  # every `Preempted` line starts so (the launcher looks for it)


class Preempted(SegDistillError):
    """Training stopped on request after a complete checkpoint; the message is the one line."""

    exit_code = EXIT_CODE


class StopRequest:
    """Context manager: while active, SIGTERM/SIGUSR1 set `signal_name` instead of killing.

    `agree(local)` turns this process's flag into the decision every rank takes at the same step
    (identity in one process; a collective max under the multi-worker launcher, so a signal to
    any one worker, or to all at different moments, stops every rank after the same step)."""

    def __init__(self, agree: Optional[Callable[[bool], bool]] = None):
        self.signal_name: Optional[str] = None
        self.count = 0
        self.agree = agree or (lambda local: local)
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        """The agreed decision; a collective under the launcher: ask once after every step."""
        return self.agree(self.signal_name is not None)

    def wait_for_all(self) -> None:
        """After an agreed stop, rank 0's save: no rank returns before every rank is here, so no
        worker exits (which makes the launcher stop the others) while the checkpoint is written."""
        self.agree(True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def ignore_stop_signals() -> None:
    """A worker that has stopped with the others: later SIGTERMs (the launcher stops the job's
    remaining workers once one exits) must not turn its clean exit 143 into a crash."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues this run: the same arguments with `--resume auto` instead of
    any --resume or --overwrite (an overwrite would delete what is to be continued)."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        if arg.startswith("--resume=") or arg == "--overwrite":
            continue
        args.append(arg)
    return shlex.join(["segdistill", *args, "--resume", "auto"])
