"""Every user-supplied string and every message prints verbatim: rich never reads `[...]` in them as
markup (which ate `[vdl]`, turned `run[red]x` into `runx` and crashed on `a[/b]`)."""
from __future__ import annotations

import io
import sys

import pytest

from segdistill_cli.cli import main

from conftest import ROOT

TRICKY = ["cfgs/a[/b].yaml", "cfgs/run[red]x.yaml", "cfgs/[bold]b[/bold].yaml", "c:x:fgs/:smile:.yaml"]


@pytest.mark.parametrize("name", TRICKY)
def test_a_path_with_brackets_is_printed_verbatim(name, capsys):
    assert main(["config", "show", "--cfg", name]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: config file not found: {name}"]


def test_vdl_hint_keeps_its_brackets(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "visualdl", None)  # import visualdl -> ImportError
    code = main(["train", "--cfg", str(ROOT / "configs" / "demo.yaml"), "--no-teacher", "--vdl",
                 "--preflight", "--set", f"TRAIN.MODEL_SAVE_DIR={tmp_path / 'run'}"])
    assert code == 2
    assert "pip install 'segdistill[vdl]'" in capsys.readouterr().err


def test_every_console_and_progress_bar_prints_verbatim():
    from rich.table import Table

    from segdistill_cli.commands._common import console, err_console, styled
    from segdistill_cli.terminal import plain_console, progress_bar

    text = "a[/b] run[red]x :smile: [bold]y"
    for target in (console, err_console):
        with target.capture() as captured:
            target.print(text)
            target.print(styled("ok", "green", " " + text))
            table = Table(title=text)
            table.add_column(text)
            table.add_row(text)
            target.print(table)
        out = captured.get()
        assert out.count(text) == 5, out
    stream = io.StringIO()
    bar = progress_bar(console=plain_console(file=stream, force_terminal=True, width=200))
    with bar:
        bar.add_task(text, total=2)
    assert text in stream.getvalue()
