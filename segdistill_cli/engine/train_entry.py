"""`segdistill train` behind the command: launch decision, then one Trainer per process."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..config import Configs
from ..errors import ConfigError, Interrupted
from ..launcher import (SEED_ENV, SYNC_BN_NEEDS_GPU, LaunchKind, LaunchRequest, draw_seed,
                        launch_log_dir, per_rank_batch, plan_launch, run_context, run_launch)
from ..preflight import check_data_mode
from .preemption import Preempted, ignore_stop_signals, resume_command
from .trainer import Trainer, TrainOptions


def run_train(configs: Configs, argv: Sequence[str], gpus: Optional[str] = None,
              force_cpu: bool = False, log_steps: int = 10, do_eval: bool = True,
              resume: Optional[str] = None, use_teacher: bool = True, dry_run: bool = False,
              seed: Optional[int] = None, vdl: bool = False, check_data: str = "sample",
              preflight_only: bool = False, allow_weak_teacher: bool = False,
              overwrite: bool = False, allow_config_change: bool = False,
              ips: Optional[str] = None, nnodes: Optional[int] = None,
              master: Optional[str] = None, node_rank: Optional[int] = None,
              nproc: Optional[int] = None) -> int:
    """Run training here, or re-run this command under paddle.distributed.launch (one worker per
    GPU, or `nproc` CPU workers). Returns the exit code."""
    check_data_mode(check_data)  # here too: before any worker is launched
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume contradict each other: choose one")
    save_dir = Path(configs.student.TRAIN.MODEL_SAVE_DIR or ".")
    request = LaunchRequest(gpus=gpus, cpu=force_cpu, nproc=nproc, ips=ips, nnodes=nnodes,
                            master=master, node_rank=node_rank,
                            log_dir=str(launch_log_dir(save_dir, node_rank)))
    plan = plan_launch(request, argv)
    if plan.kind == LaunchKind.LAUNCH:
        check_before_launch(configs, request, seed)
        # Every worker must draw the same data order: one seed, drawn here, for all of them.
        try:
            return run_launch(plan, extra_env={SEED_ENV: str(draw_seed() if seed is None
                                                             else seed)})
        except KeyboardInterrupt:  # the workers have stopped (and checkpointed): say where
            raise Interrupted(interrupted_line(save_dir, argv)) from None
    # Legacy's TRAIN.RESUME_MODEL_DIR means the same as --resume DIR (the flag wins).
    resume = resume or configs.student.TRAIN.RESUME_MODEL_DIR or None
    options = TrainOptions(use_teacher=use_teacher, do_eval=do_eval, log_steps=log_steps,
                           seed=seed, resume=resume, dry_run=dry_run, vdl=vdl,
                           check_data=check_data, preflight_only=preflight_only,
                           allow_weak_teacher=allow_weak_teacher, overwrite=overwrite,
                           allow_config_change=allow_config_change, argv=list(argv))
    try:
        Trainer(configs, options, run_context(plan)).run()
    except Preempted as stop:  # a requested stop, not an error: its line, then exit 143
        if plan.kind == "worker":
            ignore_stop_signals()
        print(stop, flush=True)
        return stop.exit_code
    except KeyboardInterrupt:
        raise Interrupted(interrupted_line(save_dir, argv)) from None
    return 0


def interrupted_line(save_dir: Path, argv: Sequence[str]) -> str:
    """What Ctrl-C leaves behind and the command that continues from it."""
    from .checkpoints import latest_checkpoint, read_meta

    latest = latest_checkpoint(save_dir) if save_dir.is_dir() else None
    if latest is None:
        return (f"interrupted: no complete checkpoint in {save_dir} yet; start again with: "
                + resume_command(argv))
    epoch = (read_meta(latest) or {}).get("epoch")
    return (f"interrupted: last complete checkpoint {latest} (epoch {epoch}); resume with: "
            + resume_command(argv))


def check_before_launch(configs: Configs, request: LaunchRequest, seed: Optional[int]) -> None:
    """What can be refused here, once, rather than in every worker."""
    cfg = configs.student
    per_rank_batch(int(cfg.BATCH_SIZE), world_size(request))
    if request.cpu_workers and cfg.TRAIN.SYNC_BATCH_NORM:
        raise ConfigError(SYNC_BN_NEEDS_GPU)
    if request.multi_node and seed is None:
        raise ConfigError("multi-node training needs --seed N: every node's workers must use the "
                          "same seed (one data order), and the nodes cannot agree on a random one")


def world_size(request: LaunchRequest) -> int:
    """Workers over all nodes: per node (GPUs listed, or --nproc) times --nnodes."""
    per_node = int(request.nproc) if request.gpus is None else len(request.gpus.split(","))
    return per_node * int(request.nnodes or 1)
