"""What every command shares: the config options, the consoles, error and problem printing."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from ..config import Configs, Problem, fatal, load_configs, validate
from ..errors import ConfigError, SegDistillError, combine
from ..terminal import plain_console

# Piped output (logs, CI) gets a wide fixed width instead of rich's 80 columns, so variable names
# and shapes stay on one line. Both print verbatim (terminal.py); colour comes from `styled`.
console = plain_console(width=None if sys.stdout.isatty() else 160)
err_console = plain_console(stderr=True, soft_wrap=True)

# Options shared by the commands that read configs. Legacy spellings are aliases.
CFG_HELP = "Student config (legacy PaddleSeg YAML)."
TEACHER_CFG_HELP = "Teacher config (legacy PaddleSeg YAML)."
SET_HELP = "Override a student config key, e.g. --set SOLVER.LR=0.01 (repeatable)."
TEACHER_SET_HELP = "Override a teacher config key, e.g. --teacher-set MODEL.DEEPLAB.OUTPUT_STRIDE=8."


def cfg_option(required: bool = True):
    return typer.Option(... if required else None, "--cfg", help=CFG_HELP,
                        dir_okay=False, show_default=False)


def teacher_cfg_option():
    return typer.Option(None, "--teacher-cfg", "--teacher_cfg", help=TEACHER_CFG_HELP,
                        dir_okay=False, show_default=False)


def set_option():
    return typer.Option(None, "--set", help=SET_HELP, metavar="KEY=VALUE", show_default=False)


def teacher_set_option():
    return typer.Option(None, "--teacher-set", help=TEACHER_SET_HELP, metavar="KEY=VALUE",
                        show_default=False)


def model_dir_option(help_text: str = "Weights (default: TEST.TEST_MODEL)."):
    return typer.Option(None, "--model-dir", help=help_text, show_default=False)


def read_configs(cfg: Optional[Path], teacher_cfg: Optional[Path],
                 sets: Optional[List[str]], teacher_sets: Optional[List[str]],
                 purpose: Optional[str] = None, **validate_options) -> Configs:
    """Load the configs. When they do not load and `purpose` is given, the error also lists what
    `validate` finds in the rest: every config problem, then the filesystem ones, one line each."""
    try:
        return load_configs(cfg, teacher_cfg, sets or (), teacher_sets or ())
    except SegDistillError as exc:
        partial = getattr(exc, "partial", None)
        if purpose is None or partial is None:
            raise
        loading = list(getattr(exc, "problems", [exc]))
        bad_keys = {getattr(p, "key", None) for p in loading}
        more = [ConfigError(str(p)) for p in fatal(validate(partial, purpose, **validate_options))
                if p.key not in bad_keys]
        if not more:
            raise
        raise combine(loading + more) from None


def styled(tag: str, style: str, rest: str = "") -> Text:
    """`tag` in `style`, then `rest` verbatim (no markup is ever parsed)."""
    return Text.assemble((tag, style), rest)


def print_error(message: str) -> None:
    """One line on stderr, never wrapped (scripts grep it)."""
    err_console.print(styled("error:", "bold red", f" {message}"), soft_wrap=True)


def print_line(message: str) -> None:
    """A plain line on stderr (the Ctrl-C line)."""
    err_console.print(Text(message), soft_wrap=True)


def print_problems(problems: List[Problem]) -> None:
    for p in problems:
        tag, style = ("error", "red") if p.fatal else ("warning", "yellow")
        err_console.print(styled(tag, style, f": {p}"), soft_wrap=True)


def require_valid(configs: Configs, purpose: str, **kwargs) -> None:
    """The validate step every command runs before doing work: warnings are printed, fatal
    problems become one error that prints them all, one line each."""
    problems = validate(configs, purpose, **kwargs)
    print_problems([p for p in problems if not p.fatal])
    bad = fatal(problems)
    if bad:
        raise combine([ConfigError(str(p)) for p in bad])


_ARGV: List[str] = []


def remember_argv(argv: List[str]) -> None:
    """Keep the command line as given: the launcher re-runs it in each worker, run.json records it."""
    _ARGV[:] = argv


def current_argv() -> List[str]:
    return list(_ARGV)


def is_terminal() -> bool:
    return sys.stdout.isatty()
