"""`segdistill export`: the student as a verified Paddle inference model plus deploy.yaml."""
from __future__ import annotations

from pathlib import Path

import typer

from ._common import CfgOption, ModelDirOption, SetOption, console, read_configs

ORDER = 50


EXPORT_HELP = (
    'Export the student alone as a Paddle inference model.'
    '\n\n'
    "<out>/model.pdmodel + model.pdiparams: input 'image' float32 [N, C, H, W] at "
    'EVAL_CROP_SIZE (BGR, (x/255 - MEAN)/STD); outputs the label map (int64 [N, H, W]) and '
    'the softmax probabilities (float32 [N, C, H, W]); with --labels-only the label map alone.'
    ' <out>/deploy.yaml records the pre-'
    'processing, class names and ignore index. The export is reloaded and checked against the'
    ' checkpoint on a few validation images before it is moved into place (label maps '
    'identical, probabilities allclose).'
)


def export_command(
    cfg: CfgOption,
    set_: SetOption = None,
    model_dir: ModelDirOption = None,
    out: Path = typer.Option(..., "--out", help="Output folder (replaced only if it holds a "
                                                "previous export).", file_okay=False),
    labels_only: bool = typer.Option(False, "--labels-only", help="Export the label map as the "
                                     "only output (no softmax probabilities: a full-resolution "
                                     "softmax is a large share of a small model's CPU time)."),
) -> None:
    from ..config import Configs
    from ..model_choice import choose_model
    from ..export import export_model

    configs = read_configs(cfg, None, set_, None)
    choice = choose_model(Configs(configs.student, None), model_dir)
    summary = export_model(choice, out, probabilities=not labels_only)
    console.print(f"exported {choice.role} {choice.model_dir} -> {summary.out_dir}/ "
                  f"({', '.join(p.name for p in summary.files)})")
    probs = "" if labels_only else f", probabilities max |diff| {summary.max_prob_diff:.2e}"
    console.print(f"verified on {summary.verified_on}: label maps identical{probs}")


def register(app: typer.Typer) -> None:
    app.command("export", help=EXPORT_HELP)(export_command)
