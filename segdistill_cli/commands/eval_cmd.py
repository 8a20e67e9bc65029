"""`segdistill eval`: mIoU, accuracy, kappa and a per-class table for a checkpoint or pretrained dir."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..terminal import progress_callback
from ._common import (Annotated, DEVICES_PANEL, CfgOption, SetOption, TeacherCfgOption,
                      TeacherSetOption, console, current_argv, err_console, read_configs,
                      require_valid, styled, write_json)

ORDER = 40


EVAL_HELP = (
    'Evaluate a model on the val list exactly as legacy PaddleSeg did.'
    '\n\n'
    'Images are resized per AUG_METHOD and padded bottom/right to EVAL_CROP_SIZE; the argmax '
    'at full resolution is compared with the labels over valid pixels (label != '
    'IGNORE_INDEX). Metrics (legacy definitions): mIoU = mean IoU over ALL NUM_CLASSES (a '
    'class absent from labels and predictions counts as 0); acc = overall pixel accuracy; '
    'per-class "Acc" = correct / pixels PREDICTED as that class (legacy\'s column-normalised '
    "definition, i.e. precision, not recall); kappa = Cohen's kappa."
    '\n\n'
    '--model-dir takes a folder written by `segdistill train` (model.pdparams), a legacy '
    'pretrained folder (one file per variable) or a .pdparams file; default TEST.TEST_MODEL. '
    'Every parameter must be present with the right shape. --teacher evaluates the --teacher-'
    'cfg model with its weights (default SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR), data '
    'lists from the teacher config.'
)


EvalModelDirOption = Annotated[Optional[str], typer.Option(
    "--model-dir", help="Weights to evaluate (default: TEST.TEST_MODEL).", show_default=False)]


def eval_command(
    cfg: CfgOption,
    set_: SetOption = None,
    model_dir: EvalModelDirOption = None,
    teacher_cfg: TeacherCfgOption = None,
    teacher: bool = typer.Option(False, "--teacher", help="Evaluate the teacher config's model "
                                 "instead of the student."),
    teacher_set: TeacherSetOption = None,
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids; several = one worker per "
                                       "GPU, each on a part of the val list (matrices summed).",
                                       rich_help_panel=DEVICES_PANEL),
    cpu: bool = typer.Option(False, "--cpu", help="Force CPU even when a GPU is visible.",
                             rich_help_panel=DEVICES_PANEL),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="With --cpu: N worker "
                                        "processes, each on a part of the val list.",
                                        rich_help_panel=DEVICES_PANEL),
    flip: bool = typer.Option(False, "--flip", help="Test-time augmentation: add the mirrored "
                              "image (softmax averaged)."),
    scales: Optional[str] = typer.Option(None, "--scales", help="Test-time augmentation: scales, "
                                         "e.g. 0.75,1.0,1.25 (softmax averaged)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per batch "
                                             "and worker (default BATCH_SIZE)."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the metrics as JSON to "
                                           "PATH, or '-' for stdout (then stdout holds only the "
                                           "JSON)."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write confusion_matrix.png "
                                         "(row-normalised) and class_iou.png into this folder.",
                                         file_okay=False),
    check_data: str = typer.Option("sample", "--check-data", help="Pre-flight data check of the "
                                   "val list: sample (default), full or off."),
) -> None:
    from ..engine.evaluator import parse_scales
    from ..eval_run import EvalOptions, run_eval
    from ..model_choice import choose_model

    configs = read_configs(cfg, teacher_cfg, set_, teacher_set, "eval")
    choice = choose_model(configs, model_dir, teacher)
    options = EvalOptions(flip=flip, scales=parse_scales(scales), batch_size=batch_size,
                          check_data=check_data, gpus=gpus, cpu=cpu, nproc=nproc)
    out = err_console if json_out == "-" else console
    with _quiet_stdout(json_out == "-"):
        require_valid(choice.configs, "eval")
        with progress_callback(out, "eval") as progress:
            result = run_eval(choice, options, current_argv(), progress=progress)
    if result is None:  # a worker process: rank 0 of the launcher's run reports
        return
    data = result.to_json(str(choice.model_dir))
    print_report(out, result, choice)
    if plots is not None:
        from ..eval_plots import write_plots

        with _quiet_stdout(json_out == "-"):
            paths = write_plots(result, plots, title=plot_title(result, choice))
        out.print("plots: " + ", ".join(str(p) for p in paths))
    if json_out == "-":
        typer.echo(json.dumps(data, indent=2))
    elif json_out:
        write_json(Path(json_out), data)
        out.print(f"json: {json_out}")


def plot_title(result: Any, choice: Any) -> str:
    """Which model, on which list, how many images: a plot must say what it shows."""
    return (f"{choice.title}\n{choice.cfg.DATASET.VAL_FILE_LIST}, {result.num_images} images"
            + (" (test-time augmentation)" if result.tta else ""))


def _quiet_stdout(active: bool):
    """With --json -, anything a library prints (Paddle's glog, warnings) goes to stderr."""
    import contextlib

    if not active:
        return contextlib.nullcontext()
    from ..eval_run import stdout_to_stderr

    return stdout_to_stderr()


def print_report(out: Console, result: Any, choice: Any) -> None:
    """The per-class table and the summary lines."""
    m = result.matrix
    iou, acc = m.class_iou(), m.class_accuracy()
    gt, predicted = m.matrix.sum(axis=1), m.matrix.sum(axis=0)
    table = Table(title=choice.title, title_justify="left")
    for column, justify in (("#", "right"), ("class", "left"), ("IoU", "right"),
                            ("Acc (precision)", "right"), ("label px", "right"),
                            ("predicted px", "right")):
        table.add_column(column, justify=justify)
    for i, name in enumerate(result.class_names):
        style = "dim" if gt[i] == 0 else None
        table.add_row(str(i), name, f"{iou[i]:.4f}", f"{acc[i]:.4f}", f"{int(gt[i]):,}",
                      f"{int(predicted[i]):,}", style=style)
    out.print(table)
    tta = []
    if result.flip:
        tta.append("flip")
    if tuple(result.scales) != (1.0,):
        tta.append("scales " + ",".join(f"{s:g}" for s in result.scales))
    out.print(styled(f"mIoU {m.mean_iou():.4f}", "bold",
                     f" (mean over all {m.num_classes} classes; {m.mean_iou_present():.4f} over "
                     f"classes present)  acc {m.accuracy():.4f}  kappa {m.kappa():.4f}"))
    workers = f" on {result.shards} workers" if result.shards > 1 else ""
    out.print(f"{result.num_images} images in {result.seconds:.1f} s "
              f"({result.images_per_second:.2f} images/s{workers}); test-time augmentation: "
              + (", ".join(tta) if tta else "none"))


def register(app: typer.Typer) -> None:
    app.command("eval", help=EVAL_HELP)(eval_command)
