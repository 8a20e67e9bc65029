"""`segdistill demo`: teacher → suggestions → distilled student → eval → pictures, on generated data."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from ._common import console, styled

ORDER = 5


def demo(
    out: Path = typer.Option(Path("segdistill_demo"), "--out", file_okay=False,
                             help="Folder for data, configs, checkpoints and pictures (a folder "
                             "from an earlier demo is replaced)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the generated data (by default it is "
                              "deleted at the end; configs, models, pictures and summary.json "
                              "stay). Needed to re-run the printed commands."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also train the student "
                                  "without a teacher, to show what distillation adds."),
    seed: int = typer.Option(0, "--seed", help="Seed for the data, weights and augmentation."),
    size: str = typer.Option("default", "--size", hidden=True, help="default | tiny (tests)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every training log line."),
) -> None:
    """Run the whole flow on generated scenes, on the CPU, in a few minutes, with no network.

    Trains a teacher, ranks distillation pairs, distils a student, evaluates and draws predictions.
    """
    from ..demo import run_demo  # imports Paddle; keep --help fast

    def log(message: str) -> None:
        if verbose or message.startswith(("[EVAL]", "warning")):
            console.print(styled(f"    {message}", "dim"))

    def stage(message: str) -> None:
        console.print(styled(">", "bold cyan", f" {message}"))

    result = run_demo(out, size=size, keep_data=keep, baseline=baseline, seed=seed, log=log,
                      stage=stage)
    _print_summary(result)


def _print_summary(result) -> None:
    table = Table(title=f"segdistill demo: {result.total_seconds:.0f} s in total")
    for column in ("model", "architecture", "val mIoU", "val acc", "train time", "weights"):
        table.add_column(column, overflow="fold")
    for row in result.rows:
        table.add_row(row.name, row.description, _num(row.miou), _num(row.acc),
                      f"{row.train_seconds:.0f} s", row.model_dir)
    console.print(table)
    rows = {r.name: r for r in result.rows}
    distilled, alone = rows.get("student (distilled)"), rows.get("student (no teacher)")
    if distilled and alone and distilled.miou is not None and alone.miou is not None:
        console.print(Text.assemble("distillation changed the student's val mIoU by ",
                                    (f"{distilled.miou - alone.miou:+.4f}", "bold"),
                                    f" ({alone.miou:.4f} -> {distilled.miou:.4f})"))
    if result.predictions_dir:
        console.print(f"pictures: {result.predictions_dir}/overlay/ "
                      f"({result.prediction_images} images: input | prediction | ground truth)")
    console.print(f"everything else: {result.out_dir} (summary.json, configs/, checkpoints)")
    if result.data_kept:
        console.print("try next:")
        for command in result.commands:
            console.print(f"  {command}", soft_wrap=True)
    else:
        console.print(styled("the generated data was deleted; run with --keep to try the commands "
                             "on the demo's configs yourself", "dim"))


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
