"""`segdistill train`: distil the teacher into the student (or train one model with --no-teacher)."""
from __future__ import annotations

from typing import Optional

import typer

from ._common import (DEVICES_PANEL, MULTI_NODE_PANEL, CfgOption, SetOption, TeacherCfgOption,
                      TeacherSetOption, current_argv, read_configs)

ORDER = 30

RESUME_PANEL = "Resume and overwrite"
CHECKS_PANEL = "Checks before step 1"


def train(
    cfg: CfgOption,
    teacher_cfg: TeacherCfgOption = None,
    set_: SetOption = None,
    teacher_set: TeacherSetOption = None,
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids, e.g. 0,1 (several = one "
                                       "worker per GPU via paddle.distributed.launch).",
                                       rich_help_panel=DEVICES_PANEL),
    cpu: bool = typer.Option(False, "--cpu", help="Force CPU even when a GPU is visible.",
                             rich_help_panel=DEVICES_PANEL),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="With --cpu: N worker "
                                        "processes (data-parallel over Gloo, BATCH_SIZE split "
                                        "over them, each with its share of the cores).",
                                        rich_help_panel=DEVICES_PANEL),
    use_gpu: bool = typer.Option(False, "--use_gpu", "--use-gpu", hidden=True,
                                 help="Legacy flag: GPU is the default when available.",
                                 rich_help_panel=DEVICES_PANEL),
    log_steps: int = typer.Option(10, "--log-steps", "--log_steps", min=1,
                                  help="Log every N steps."),
    do_eval: bool = typer.Option(True, "--do-eval/--no-eval", help="Evaluate each snapshot and "
                                 "keep best_model/ by mIoU."),
    legacy_do_eval: bool = typer.Option(False, "--do_eval", hidden=True,
                                        help="Legacy spelling of --do-eval."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Checkpoint folder, or 'auto' for "
                                         "the latest complete one in MODEL_SAVE_DIR.",
                                         rich_help_panel=RESUME_PANEL),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a MODEL_SAVE_DIR "
                                   "that holds a run: its run is deleted once pre-flight passed "
                                   "(without this flag such a folder is refused).",
                                   rich_help_panel=RESUME_PANEL),
    allow_config_change: bool = typer.Option(False, "--allow-config-change", help="Resume even "
                                             "though keys that change training differ from the "
                                             "checkpoint's (they are listed and kept in "
                                             "run.json).",
                                             rich_help_panel=RESUME_PANEL),
    no_teacher: bool = typer.Option(False, "--no-teacher", help="Train the student config alone "
                                    "(the baseline; also how a teacher is trained)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Pre-flight + 3 real steps, print "
                                 "s/step, ETA and peak memory, write nothing.",
                                 rich_help_panel=CHECKS_PANEL),
    preflight: bool = typer.Option(False, "--preflight", help="Run every pre-flight check (configs, "
                                   "data, teacher weights, pairs), then exit without training.",
                                   rich_help_panel=CHECKS_PANEL),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for weights init, shuffling and "
                                       "augmentation."),
    vdl: bool = typer.Option(False, "--vdl", "--use_vdl", help="Also log scalars to VisualDL."),
    check_data: str = typer.Option("sample", "--check-data", help="Pre-flight data check: "
                                   "sample (default), full or off.",
                                   rich_help_panel=CHECKS_PANEL),
    allow_weak_teacher: bool = typer.Option(False, "--allow-weak-teacher", help="When the "
                                            "teacher check (TRAIN.TEACHER_CHECK_IMAGES val images "
                                            "before step 1) finds the teacher at chance level or "
                                            "predicting one class: warn and go on, not stop.",
                                            rich_help_panel=CHECKS_PANEL),
    ips: Optional[str] = typer.Option(None, "--ips", help="Multi-node: comma-separated node IPs.",
                                      rich_help_panel=MULTI_NODE_PANEL),
    nnodes: Optional[int] = typer.Option(None, "--nnodes", help="Multi-node: number of nodes.",
                                         rich_help_panel=MULTI_NODE_PANEL),
    master: Optional[str] = typer.Option(None, "--master", help="Multi-node: master endpoint "
                                         "IP:PORT.",
                                         rich_help_panel=MULTI_NODE_PANEL),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", min=0, help="Multi-node: this "
                                            "node's rank (paddle.distributed.launch --rank).",
                                            rich_help_panel=MULTI_NODE_PANEL),
) -> None:
    """Distil the teacher into the student with the legacy recipe (static graph, PaddleSlim merge).

    Every check runs before the first step: configs, data lists, teacher weights, distill pairs.
    """
    from ..engine.train_entry import run_train  # imports Paddle; keep --help fast

    configs = read_configs(cfg, teacher_cfg, set_, teacher_set, "train",
                           do_eval=do_eval or legacy_do_eval, use_teacher=not no_teacher)
    code = run_train(
        configs, argv=current_argv(), gpus=gpus, force_cpu=cpu, log_steps=log_steps,
        do_eval=do_eval or legacy_do_eval, resume=resume, use_teacher=not no_teacher,
        dry_run=dry_run, seed=seed, vdl=vdl, check_data=check_data, preflight_only=preflight,
        allow_weak_teacher=allow_weak_teacher,
        overwrite=overwrite, allow_config_change=allow_config_change,
        ips=ips, nnodes=nnodes, master=master, node_rank=node_rank, nproc=nproc,
    )
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
