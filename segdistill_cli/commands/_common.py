"""What every command shares: the config options, the consoles, error and problem printing."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

try:
    from typing import Annotated
except ImportError:  # Python 3.8 (typer depends on typing_extensions, which has it)
    from typing_extensions import Annotated

import typer
from rich.text import Text

from ..config import Configs, Problem, fatal, load_configs, validate
from ..errors import ConfigError, SegDistillError, combine
from ..preflight import require_valid_configs
from ..terminal import plain_console

# Piped output (logs, CI) gets a wide fixed width instead of rich's 80 columns, so variable names
# and shapes stay on one line. Both print verbatim (terminal.py); colour comes from `styled`.
console = plain_console(width=None if sys.stdout.isatty() else 160)
err_console = plain_console(stderr=True, soft_wrap=True)

# Options shared by the commands that read configs, as `Annotated` types: a command declares
# `cfg: CfgOption` (required) or `teacher_cfg: TeacherCfgOption = None`. Legacy spellings are
# aliases. They stay in the first panel of `--help`, "Options".
CfgOption = Annotated[Path, typer.Option(
    "--cfg", help="Student config (legacy PaddleSeg YAML).", dir_okay=False, show_default=False)]
TeacherCfgOption = Annotated[Optional[Path], typer.Option(
    "--teacher-cfg", "--teacher_cfg", help="Teacher config (legacy PaddleSeg YAML).",
    dir_okay=False, show_default=False)]
SetOption = Annotated[Optional[List[str]], typer.Option(
    "--set", help="Override a student config key, e.g. --set SOLVER.LR=0.01 (repeatable).",
    metavar="KEY=VALUE", show_default=False)]
TeacherSetOption = Annotated[Optional[List[str]], typer.Option(
    "--teacher-set", help="Override a teacher config key, e.g. --teacher-set "
    "MODEL.DEEPLAB.OUTPUT_STRIDE=8.", metavar="KEY=VALUE", show_default=False)]
ModelDirOption = Annotated[Optional[str], typer.Option(
    "--model-dir", help="Weights (default: TEST.TEST_MODEL).", show_default=False)]
# `--help` panels the commands share (`rich_help_panel=`).
DEVICES_PANEL = "Devices"
MULTI_NODE_PANEL = "Multi-node"


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


def print_warning(problem: Problem) -> None:
    """A non-fatal config problem: one `warning:` line on stderr."""
    err_console.print(styled("warning", "yellow", f": {problem}"), soft_wrap=True)


def require_valid(configs: Configs, purpose: str, **kwargs) -> None:
    """The config pre-flight every command runs before doing work (preflight.py): warnings are
    printed, fatal problems become one error that prints them all, one line each."""
    require_valid_configs(configs, purpose, print_warning, **kwargs)


_ARGV: List[str] = []


def remember_argv(argv: List[str]) -> None:
    """Keep the command line as given: the launcher re-runs it in each worker, run.json records it."""
    _ARGV[:] = argv


def current_argv() -> List[str]:
    return list(_ARGV)


def write_json(path: Path, data: dict) -> None:
    """`--json PATH`: the report as indented JSON, written atomically (folders created)."""
    from ..atomic import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2))


def is_terminal() -> bool:
    return sys.stdout.isatty()
