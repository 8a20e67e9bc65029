"""`segdistill config show|check`: the resolved configs with the values the commands use."""
from __future__ import annotations

import json

import typer
import yaml

from ..config import PURPOSES
from ..config.view import used_values
from ..errors import ConfigError
from ._common import (CfgOption, SetOption, TeacherCfgOption, TeacherSetOption, console,
                      err_console, read_configs, require_valid, styled)

ORDER = 90


config_app = typer.Typer(help="Show or check the resolved configs.", no_args_is_help=True)


@config_app.command("show")
def show(
    cfg: CfgOption,
    teacher_cfg: TeacherCfgOption = None,
    set_: SetOption = None,
    teacher_set: TeacherSetOption = None,
    as_json: bool = typer.Option(False, "--json", help="One JSON object {student, teacher}."),
) -> None:
    """Print the student (and teacher) config as the commands use it: defaults and overrides
    applied, the DISTILL pairs train uses, the image counts of the lists."""
    configs = read_configs(cfg, teacher_cfg, set_, teacher_set)
    views = {"student": used_values(configs.student, "student"),
             "teacher": used_values(configs.teacher, "teacher") if configs.teacher else None}
    for view in views.values():
        for note in view.notes if view else ():
            err_console.print(f"note: {note}", soft_wrap=True)
    resolved = {role: view.data if view else None for role, view in views.items()}
    if as_json:
        typer.echo(json.dumps(resolved, indent=2))
        return
    for role, data in resolved.items():
        if data is None:
            continue
        source = configs.student.source if role == "student" else configs.teacher.source
        console.rule(styled(role, "bold", f" ({source})"))
        console.print(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), end="")


@config_app.command("check")
def check(
    cfg: CfgOption,
    teacher_cfg: TeacherCfgOption = None,
    set_: SetOption = None,
    teacher_set: TeacherSetOption = None,
    purpose: str = typer.Option("train", help="What the configs are for: " + ", ".join(PURPOSES)),
) -> None:
    """Validate the configs against the filesystem (list files, crop sizes, weight folders)."""
    if purpose not in PURPOSES:
        raise ConfigError(f"--purpose: {purpose!r} is not one of {', '.join(PURPOSES)}")
    configs = read_configs(cfg, teacher_cfg, set_, teacher_set, purpose)
    require_valid(configs, purpose)
    console.print(styled("ok", "green"))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
