"""The `segdistill` command line: a Typer app assembled from `segdistill_cli/commands/*`.

Each module in `commands/` owns one command (or command group), exposes `ORDER` (its place in
`--help`) and `register(app)`, and keeps logic in the library. Modules are discovered so that
adding a command never means editing this file. Nothing here imports Paddle (`--help` < 1 s).
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any, Sequence

import typer
from typer.core import TyperGroup

try:  # typer >= 0.22 vendors click as typer._click; older versions use click itself
    from typer._click import Context
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import Context
    from click import exceptions as click_errors

from . import __version__, commands
from .errors import Interrupted, SegDistillError
from .commands._common import print_error, print_line, remember_argv


class _Group(TyperGroup):
    """The root group. Typer turns a KeyboardInterrupt inside a command into a silent exit 130;
    converting it here, around every (sub)command, lets `main` print its one line."""

    def invoke(self, ctx: Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted() from exc


app = typer.Typer(
    cls=_Group,
    name="segdistill",
    help="Knowledge distillation for semantic segmentation on PaddlePaddle: "
    "fetch | inspect-vars | train | eval, faithful to the legacy PaddleSeg recipe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segdistill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Knowledge distillation for semantic segmentation on PaddlePaddle."""


def _register_commands() -> None:
    modules = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.register(app)


_register_commands()


def build_command() -> Any:
    """The click command tree of `app`, with flags shown as flags: Typer's help would print a
    `<bool>` value placeholder for them, yet a flag takes no value (`--cpu=true` is an error)."""
    command = typer.main.get_command(app)
    _hide_flag_placeholders(command, app.info.context_settings["help_option_names"])
    return command


def _hide_flag_placeholders(command: Any, help_names: list[str]) -> None:
    # The help option is made on first use and cached; make it now (with the app's names, which
    # sub-commands inherit) so that it is covered too.
    help_option = command.get_help_option(command.context_class(command,
                                                                help_option_names=help_names))
    for param in [*command.params, help_option]:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_placeholders(sub, help_names)


def _bare_group(command: Any, args: Sequence[str]) -> tuple[Any, list[str]] | None:
    """(group, its path) when `args` name groups only (`segdistill`, `segdistill data`). Checked
    here because click 8.2 raises NoArgsIsHelpError for it, while click 8.1 (the last release for
    Python 3.8 and 3.9) prints the help and exits 0."""
    path: list[str] = []
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            return None
        command = sub
        path.append(arg)
    return (command, path) if hasattr(command, "commands") else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (errors.py: 0 ok, 1 failure while working, 2 usage /
    config / input problem, 130 Ctrl-C). Every error is one line on stderr."""
    args = list(argv) if argv is not None else sys.argv[1:]
    remember_argv(args)
    command = build_command()
    bare = _bare_group(command, args)
    if bare is not None:  # a group without its subcommand: its help, as a usage problem
        group, path = bare
        typer.echo(group.get_help(Context(group, info_name=" ".join(["segdistill", *path]))))
        return 2
    try:
        code = command(args=args, prog_name="segdistill", standalone_mode=False)
    except click_errors.ClickException as exc:  # usage errors: one line, not rich's box
        print_error(_usage_line(exc))
        return 2
    except typer.Abort:
        print_line("interrupted")
        return 130
    except Interrupted as exc:
        print_line(str(exc))
        return exc.exit_code
    except SegDistillError as exc:
        for line in getattr(exc, "lines", None) or [str(exc)]:
            print_error(line)
        return exc.exit_code
    except KeyboardInterrupt:  # outside any command (e.g. while importing)
        print_line("interrupted")
        return 130
    return code if isinstance(code, int) else 0


def _usage_line(exc: click_errors.ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return " ".join(exc.format_message().split()) + hint


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
