"""`segdistill compare RUN_DIR [RUN_DIR ...]`: several training runs side by side."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ._common import console, err_console, write_json

ORDER = 42


def compare_command(
    run_dirs: List[Path] = typer.Argument(..., help="Training output folders "
                                          "(TRAIN.MODEL_SAVE_DIR), each with run.json and/or "
                                          "train_log.jsonl.", show_default=False),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write val_miou.png (every run's "
                                         "val mIoU per epoch) and loss_<term>.png (each loss "
                                         "term per step) into this folder.", file_okay=False),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the comparison as JSON to "
                                           "PATH, or '-' for stdout (then stdout holds only the "
                                           "JSON)."),
) -> None:
    """Compare training runs: final and best val mIoU, pixel accuracy, per-class IoU, steps, wall
    time, distill terms and teacher check side by side, with plots."""
    from ..compare import summarize_all, table_rows, write_plots

    runs = summarize_all(run_dirs)
    out = err_console if json_out == "-" else console
    table = Table(title="segdistill compare", title_justify="left")
    table.add_column("")
    for run in runs:
        table.add_column(run.name, overflow="fold")
    for label, cells in table_rows(runs):
        table.add_row(label, *cells, style="dim" if label.startswith("IoU ") else None)
    out.print(table)
    if plots is not None:
        paths = write_plots(runs, plots)
        out.print("plots: " + ", ".join(str(p) for p in paths))
    data = {"runs": [run.to_json() for run in runs]}
    if json_out == "-":
        typer.echo(json.dumps(data, indent=2))
    elif json_out:
        write_json(Path(json_out), data)
        out.print(f"json: {json_out}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
