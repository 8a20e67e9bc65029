"""`segdistill data check|cityscapes|lists`: validate datasets and build the files configs expect."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError
from ..terminal import progress_bar
from ._common import CfgOption, SetOption, console, err_console, is_terminal, read_configs, styled

ORDER = 80


data_app = typer.Typer(help="Check datasets; build list files and Cityscapes trainIds.",
                       no_args_is_help=True)


@data_app.command("check")
def check(
    cfg: CfgOption,
    set_: SetOption = None,
    split: str = typer.Option("all", help="Which list to check: train, val, test, unlabeled or all."),
    max_errors: int = typer.Option(20, "--max-errors", min=0, help="Offending lines to print."),
    sample: Optional[int] = typer.Option(None, "--sample", min=1,
                                         help="Check a random subset of N lines per list."),
    decode: bool = typer.Option(False, "--decode", help="Fully decode images too (slower; by "
                                "default images are checked from their header)."),
) -> None:
    """Check every list line: two fields, both files exist and decode, sizes match, label values in
    [0, NUM_CLASSES) or IGNORE_INDEX."""
    from ..data.check import check_data

    student = read_configs(cfg, None, set_, None).student
    report = check_data(student, [split], max_errors=max_errors, sample=sample,
                        decode_images=decode, show_progress=is_terminal())
    for issue in report.issues:
        err_console.print(styled("bad", "red", f" {issue}"), soft_wrap=True)
    if report.issue_count > len(report.issues):
        err_console.print(f"... and {report.issue_count - len(report.issues)} more")
    if not report.ok:
        raise ConfigError(report.summary())
    console.print(styled("ok", "green", f" {report.summary()}"), soft_wrap=True)


@data_app.command("cityscapes")
def cityscapes(
    root: Path = typer.Argument(..., help="Cityscapes root (holds leftImg8bit/ and gtFine/).",
                                file_okay=False),
    force: bool = typer.Option(False, "--force", help="Overwrite outputs that differ."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Parallel conversions."),
) -> None:
    """Write *_gtFine_labelTrainIds.png (19 classes, rest 255) and train/val/test.list."""
    from ..data.cityscapes import prepare_cityscapes

    with progress_bar(disable=not is_terminal(), transient=True, console=err_console) as bar:
        task = bar.add_task("converting labels", total=None)
        report = prepare_cityscapes(root, force=force, workers=workers,
                                    progress=lambda done, total: bar.update(task, completed=done,
                                                                            total=total))
    counts = ", ".join(f"{split}.list {n} lines" for split, n in report.list_counts.items())
    console.print(styled("ok", "green", f" {len(report.written)} file(s) written, "
                         f"{len(report.unchanged)} unchanged; {counts}"), soft_wrap=True)


@data_app.command("lists")
def lists(
    root: Path = typer.Argument(..., help="Dataset root; list paths are relative to it "
                                "(DATASET.DATA_DIR).", file_okay=False),
    images: Path = typer.Option(..., "--images", help="Folder of images (searched recursively)."),
    labels: Path = typer.Option(..., "--labels", help="Folder of label images, same stems."),
    split_ratio: str = typer.Option("0.8,0.2", "--split-ratio",
                                    help="train,val[,test] fractions summing to 1."),
    seed: int = typer.Option(0, "--seed", help="Shuffle seed for the split."),
    out_prefix: str = typer.Option("", "--out-prefix", help="Prefix of the list file names."),
    separator: str = typer.Option(" ", "--separator", help="DATASET.SEPARATOR to write.",
                                  show_default="one space"),
) -> None:
    """Pair images and labels by file stem and write train/val(/test) lists under ROOT."""
    from ..data.lists import build_lists, parse_ratios

    def inside(path: Path) -> Path:
        return path if path.is_absolute() else root / path if (root / path).is_dir() else path

    written = build_lists(root, inside(images), inside(labels), parse_ratios(split_ratio), seed,
                          out_prefix, separator)
    for split, path in written.items():
        count = sum(1 for _ in path.open(encoding="utf-8"))
        console.print(styled("wrote", "green", f" {path} ({count} lines)"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
