"""`segdistill predict`: colour-coded prediction PNGs and overlays for images."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..terminal import progress_callback
from ._common import (CfgOption, ModelDirOption, SetOption, TeacherCfgOption, TeacherSetOption,
                      console, read_configs, styled)

ORDER = 45


PREDICT_HELP = (
    "Predict images: class-id PNGs at each image's original size, and overlay pictures."
    '\n\n'
    '<out>/pred/<name>.png: palette PNG whose pixel values are class ids (dataset colours); '
    '<out>/overlay/<name>.png: input | prediction | ground truth (--with-label, lists with '
    'labels), each panel titled, a legend naming every class colour (black: ignored); small '
    'images are enlarged. <name> is the image path without its extension: relative to '
    'DATA_DIR (--list; its subfolders are kept), to --dir, or the file name (--image). '
    'Images go through the eval pipeline '
    '(AUG_METHOD resize, pad to EVAL_CROP_SIZE); one still larger than EVAL_CROP_SIZE is '
    'first shrunk keeping its aspect ratio, and the prediction is resized back (nearest).'
)


def predict_command(
    cfg: CfgOption,
    set_: SetOption = None,
    model_dir: ModelDirOption = None,
    image: Optional[str] = typer.Option(None, "--image", help="One image file."),
    list_file: Optional[str] = typer.Option(None, "--list", help="A list file (legacy format, "
                                            "paths relative to DATASET.DATA_DIR; labels "
                                            "optional)."),
    directory: Optional[str] = typer.Option(None, "--dir", help="A folder of images "
                                            "(searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Output folder.", file_okay=False),
    with_label: bool = typer.Option(False, "--with-label", help="Add the ground truth panel "
                                    "(needs --list with labels)."),
    teacher_cfg: TeacherCfgOption = None,
    teacher: bool = typer.Option(False, "--teacher", help="Predict with the teacher config's "
                                 "model instead of the student."),
    teacher_set: TeacherSetOption = None,
    flip: bool = typer.Option(False, "--flip", help="Test-time augmentation: add the mirror."),
    scales: Optional[str] = typer.Option(None, "--scales", help="Test-time augmentation: scales, "
                                         "e.g. 0.75,1.0,1.25."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per forward pass."),
    cpu: bool = typer.Option(False, "--cpu", help="Force CPU even when a GPU is visible."),
) -> None:
    from ..engine.evaluator import parse_scales
    from ..model_choice import check_model_dir, choose_model
    from ..launcher import LaunchRequest, plan_launch, run_context
    from ..predict import collect_inputs, run_predict

    configs = read_configs(cfg, teacher_cfg, set_, teacher_set)
    choice = choose_model(configs, model_dir, teacher)
    inputs = collect_inputs(choice.cfg, image, list_file, directory)
    if with_label and not any(i.label for i in inputs):
        console.print(styled("warning:", "yellow", " --with-label: these inputs have no labels "
                             "(labels come from a --list with 'image label' lines)"))
    check_model_dir(choice)
    ctx = run_context(plan_launch(LaunchRequest(cpu=cpu), []))
    with progress_callback(console, "predict", len(inputs)) as progress:
        summary = run_predict(choice, inputs, out, with_label=with_label, batch_size=batch_size,
                              flip=flip, scales=parse_scales(scales), place=ctx.place(),
                              progress=progress)
    rate = summary.images / summary.seconds if summary.seconds else 0.0
    console.print(f"{summary.images} image(s) predicted in {summary.seconds:.1f} s "
                  f"({rate:.2f} images/s) with {choice.role} {choice.model_dir}")
    console.print(f"predictions: {summary.out_dir / 'pred'}/  overlays: "
                  f"{summary.out_dir / 'overlay'}/"
                  + (f"  (ground truth shown for {summary.labels_used})" if with_label else ""))


def register(app: typer.Typer) -> None:
    app.command("predict", help=PREDICT_HELP)(predict_command)
