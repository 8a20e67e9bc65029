"""Errors that the CLI turns into one clear line and an exit code.

The exit-code rule (README "Exit codes"), applied by every command:

* 2 — a usage, config or input problem, found before the work starts: a bad option, an unknown
  key or wrong type, a file or folder given that does not exist or does not fit (weights that
  read fine but miss parameters or have other shapes), an output folder that must not be written,
  a device this build cannot use (`ConfigError`);
* 1 — a failure while working: a download, a corrupt file (bytes that do not parse or do not
  match their recorded size/sha256, whenever it is found), a NaN, a worker that died
  (`SegDistillError`);
* 130 — interrupted by Ctrl-C (`Interrupted`);
* 143 — `train` stopped on SIGTERM/SIGUSR1 after writing a resumable checkpoint
  (`engine.preemption.Preempted`; printed as its line, not as an error).

Library code raises these; `cli.py` catches them, prints `error: <message>` and exits with
`exit_code`. Anything else that escapes is a bug and keeps its traceback.
"""
from __future__ import annotations


class SegDistillError(Exception):
    """A failure while working (bad data found mid-run, network, corrupt file, ...). Exit code 1."""

    exit_code = 1


class ConfigError(SegDistillError):
    """A usage, config or input problem (unknown key, wrong type, missing file). Exit code 2."""

    exit_code = 2


class Problems(SegDistillError):
    """Several problems found at once (pre-flight, config checks): printed one `error:` line
    each. Exit 2 when any of them is a usage/config/input problem, else 1."""

    def __init__(self, problems: "list[SegDistillError | str]"):
        self.problems = list(problems)
        self.lines = [str(p) for p in problems]
        self.exit_code = max((p.exit_code if isinstance(p, SegDistillError) else 2)
                             for p in problems)
        super().__init__("; ".join(self.lines))


def combine(problems: "list[SegDistillError | str]") -> SegDistillError:
    """One problem as itself, several as `Problems`."""
    if len(problems) == 1 and isinstance(problems[0], SegDistillError):
        return problems[0]
    return Problems(problems)


class Interrupted(SegDistillError):
    """Ctrl-C (KeyboardInterrupt), with a line saying what is left and how to go on. Exit 130."""

    exit_code = 130

    def __init__(self, message: str = "interrupted"):
        super().__init__(message)
