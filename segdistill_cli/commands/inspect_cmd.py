"""`segdistill inspect-vars`: list both programs' variables, diff shapes, suggest distill pairs."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.syntax import Syntax
from rich.table import Table

from ._common import (CfgOption, SetOption, TeacherCfgOption, TeacherSetOption, console,
                      read_configs, styled)

ORDER = 20


def inspect_vars(
    cfg: CfgOption,
    teacher_cfg: TeacherCfgOption = None,
    set_: SetOption = None,
    teacher_set: TeacherSetOption = None,
    grep: Optional[str] = typer.Option(None, "--grep", metavar="REGEX",
                                       help="Only variables whose name or alias matches."),
    op: Optional[str] = typer.Option(None, "--op", metavar="TYPE",
                                     help="Only variables produced by this op type, e.g. relu."),
    params: bool = typer.Option(False, "--params/--no-params",
                                help="Also list parameters and other persistables."),
    suggest: bool = typer.Option(False, "--suggest", help="Rank distillation pairs, print DISTILL blocks."),
    top: int = typer.Option(5, "--top", min=1, help="How many suggestions to show (--json: all)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object {student, teacher, pairs}."),
) -> None:
    """Build both programs (no data, no weights) and show their variables, equal shapes and pairs.

    Teacher names are shown as they will be after the merge (prefix teacher_). A DISTILL entry may name a variable by its alias (logits, backbone.out, ...) or by that name.
    """
    from ..inspect import inspect_configs

    configs = read_configs(cfg, teacher_cfg, set_, teacher_set)
    result = inspect_configs(configs.student, configs.teacher)
    if as_json:
        typer.echo(json.dumps(result.to_json(grep, op, params)))  # all pairs, ranked
        return
    _print_vars("student", result.student, grep, op, params)
    if result.teacher is not None:
        _print_vars("teacher (names after merge)", result.teacher, grep, op, params)
        _print_groups(result)
        if suggest:
            _print_suggestions(result.pairs()[:top])
    elif suggest:
        from ..errors import ConfigError

        raise ConfigError("--suggest needs --teacher-cfg")
    console.print(styled(f"built in {result.build_seconds:.1f} s", "dim"))


def _print_vars(title: str, infos, grep, op, params) -> None:
    from ..inspect import filter_vars

    rows = filter_vars(infos, grep, op, params)
    # Without --params every row is an activation: a persistable column would only say "no".
    kind = "variables" if params else "activations (--params adds parameters)"
    columns = ["name", "shape", "dtype", "op"] + (["persistable"] if params else []) + ["alias"]
    table = Table(title=f"{title}: {len(rows)} {kind}, in program order", show_lines=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("name", "shape"), overflow="fold")
    for v in rows:
        persistable = ["yes" if v.persistable else "no"] if params else []
        table.add_row(v.name, str(list(v.shape)), v.dtype, v.op or "-", *persistable,
                      v.alias or "")
    console.print(table)


def _print_groups(result) -> None:
    groups = result.groups()
    table = Table(title=f"equal feature shapes in both programs: {len(groups)}")
    for column in ("shape", "student", "teacher"):
        table.add_column(column, overflow="fold")
    for shape, student, teacher in groups:
        table.add_row(str(list(shape)), "\n".join(_label(v) for v in student),
                      "\n".join(_label(v) for v in teacher))
    console.print(table)


def _label(v) -> str:
    return f"{v.name} ({v.alias})" if v.alias else v.name


def _print_suggestions(pairs) -> None:
    table = Table(title="suggested distillation pairs (best first)")
    for column in ("#", "teacher", "student", "loss", "weight", "adapter", "reason"):
        table.add_column(column, overflow="fold")
    for i, p in enumerate(pairs, 1):
        table.add_row(str(i), _label(p.teacher), _label(p.student), p.loss, str(p.weight),
                      p.adapter or "-", p.reason)
    console.print(table)
    for i, p in enumerate(pairs, 1):
        console.print(styled(f"#{i}", "bold", " paste into the student config:"))
        console.print(Syntax(p.yaml_block(), "yaml", theme="ansi_dark", background_color="default"))


def register(app: typer.Typer) -> None:
    app.command("inspect-vars")(inspect_vars)
