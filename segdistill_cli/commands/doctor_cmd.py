"""`segdistill doctor`: the installed stack (Paddle version, build, IR, PaddleSlim, GPUs) and
whether segdistill supports it."""
from __future__ import annotations

import json

import typer
from rich.text import Text

from ._common import console, print_error

ORDER = 95


def doctor(
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of the table."),
) -> None:
    """Print segdistill's, Python's, Paddle's and PaddleSlim's versions, Paddle's build (CPU or
    CUDA), the IR in use, the visible GPUs, and whether this stack is supported.

    Exits 1 when it is not (each reason on one error line), so scripts can check a venv first.
    """
    from ..stack import collect, report_lines  # imports Paddle; keep --help fast

    stack = collect()
    if as_json:
        typer.echo(json.dumps(stack.to_json()))
    else:
        rows = report_lines(stack)
        width = max(len(label) for label, _ in rows)
        for label, text in rows:
            console.print(Text.assemble((label.ljust(width), "bold"), "  ", text), soft_wrap=True)
    for problem in stack.problems():
        print_error(problem)
    if not stack.supported:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
