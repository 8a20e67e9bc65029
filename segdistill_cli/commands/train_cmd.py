"""`segdistill train`: distil the teacher into the student (or train one model with --no-teacher)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import (cfg_option, current_argv, read_configs, set_option, teacher_cfg_option,
                      teacher_set_option)

ORDER = 30


def train(
    cfg: Path = cfg_option(),
    teacher_cfg: Optional[Path] = teacher_cfg_option(),
    set_: Optional[List[str]] = set_option(),
    teacher_set: Optional[List[str]] = teacher_set_option(),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids, e.g. 0,1 (several = one "
                                       "worker per GPU via paddle.distributed.launch)."),
    cpu: bool = typer.Option(False, "--cpu", help="Force CPU even when a GPU is visible."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="With --cpu: N worker "
                                        "processes (data-parallel over Gloo, BATCH_SIZE split "
                                        "over them, each with its share of the cores)."),
    use_gpu: bool = typer.Option(False, "--use_gpu", "--use-gpu", hidden=True,
                                 help="Legacy flag: GPU is the default when available."),
    log_steps: int = typer.Option(10, "--log-steps", "--log_steps", min=1,
                                  help="Log every N steps."),
    do_eval: bool = typer.Option(True, "--do-eval/--no-eval", help="Evaluate each snapshot and "
                                 "keep best_model/ by mIoU."),
    legacy_do_eval: bool = typer.Option(False, "--do_eval", hidden=True,
                                        help="Legacy spelling of --do-eval."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Checkpoint folder, or 'auto' for "
                                         "the latest complete one in MODEL_SAVE_DIR."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a MODEL_SAVE_DIR "
                                   "that holds a run: its run is deleted once pre-flight passed "
                                   "(without this flag such a folder is refused)."),
    allow_config_change: bool = typer.Option(False, "--allow-config-change", help="Resume even "
                                             "though keys that change training differ from the "
                                             "checkpoint's (they are listed and kept in "
                                             "run.json)."),
    no_teacher: bool = typer.Option(False, "--no-teacher", help="Train the student config alone "
                                    "(the baseline; also how a teacher is trained)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Pre-flight + 3 real steps, print "
                                 "s/step, ETA and peak memory, write nothing."),
    preflight: bool = typer.Option(False, "--preflight", help="Run every pre-flight check (configs, "
                                   "data, teacher weights, pairs), then exit without training."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for weights init, shuffling and "
                                       "augmentation."),
    vdl: bool = typer.Option(False, "--vdl", "--use_vdl", help="Also log scalars to VisualDL."),
    check_data: str = typer.Option("sample", "--check-data", help="Pre-flight data check: "
                                   "sample (default), full or off."),
    allow_weak_teacher: bool = typer.Option(False, "--allow-weak-teacher", help="When the "
                                            "teacher check (TRAIN.TEACHER_CHECK_IMAGES val images "
                                            "before step 1) finds the teacher at chance level or "
                                            "predicting one class: warn and go on, not stop."),
    ips: Optional[str] = typer.Option(None, "--ips", help="Multi-node: comma-separated node IPs."),
    nnodes: Optional[int] = typer.Option(None, "--nnodes", help="Multi-node: number of nodes."),
    master: Optional[str] = typer.Option(None, "--master", help="Multi-node: master endpoint "
                                         "IP:PORT."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", min=0, help="Multi-node: this "
                                            "node's rank (paddle.distributed.launch --rank)."),
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
