"""Run by tests/test_cross_stack.py under each stack's own interpreter (Paddle 2.6 legacy IR or
Paddle 3.x PIR; one Paddle per process), with the repository on PYTHONPATH:

    python tests/_cross_stack.py save FOLDER [--perturb NAME]
        two training steps of the tiny CamVid student on a fixed batch (Momentum, poly LR), then
        the trainer's `save_checkpoint` into FOLDER (`--perturb`: that tensor x1.5 first)
    python tests/_cross_stack.py load FOLDER LOGITS.npy
        resume FOLDER into a fresh training program (every variable, optimizer state and LR step
        included, as `train --resume` does), then load it into an eval program as eval/export
        do (`check_model_dir` + `load_model`) and write that program's logits for a fixed input

The last line printed is JSON: this stack's Paddle version and IR, and what was loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "camvid.yaml"
OVERRIDES = ["TRAIN_CROP_SIZE=(64, 48)", "EVAL_CROP_SIZE=(64, 48)", "BATCH_SIZE=2",
             "MODEL.DEEPLAB.DEPTH_MULTIPLIER=0.25", "SOLVER.LR=0.01", "SOLVER.NUM_EPOCHS=2"]
TRAIN_IMAGES = 8  # the poly schedule's length: 2 epochs of 4 steps
STEPS = 2


def _cfg() -> Any:
    from segdistill_cli.config import load_config

    return load_config(CONFIG, OVERRIDES)


def fixed_images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (2, 3, 48, 64)).astype(np.float32)


def _train_program(cfg: Any) -> tuple[Any, Any]:
    """The seeded student's training program with a loss and the configured optimizer:
    (built, LR scheduler)."""
    from segdistill_cli.engine.graph import seeded_student
    from segdistill_cli.engine.solver import build_optimizer
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    built = seeded_student(cfg, 3)
    with built.guard():
        loss = paddle.mean(paddle.square(built.logits))
        optimizer, scheduler = build_optimizer(cfg, train_total_images=TRAIN_IMAGES)
        optimizer.minimize(loss)
    return built, scheduler


def _stack() -> dict[str, str]:
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.stack import ir_in_use

    paddle = import_paddle()
    return {"paddle": paddle.__version__, "ir": ir_in_use(paddle)}


def save(folder: Path, perturb: Optional[str]) -> dict[str, Any]:
    from segdistill_cli.engine.checkpoints import save_checkpoint
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    cfg = _cfg()
    built, scheduler = _train_program(cfg)
    scope, place = paddle.static.Scope(), paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    # scope_guard, not run(scope=): Paddle 3's executor sets a scheduled LR in the global scope
    with paddle.static.scope_guard(scope):
        exe.run(built.startup)
        for step in range(STEPS):
            exe.run(built.main, feed={"image": fixed_images(10 + step)})
            scheduler.step()
    if perturb:
        tensor = scope.find_var(perturb).get_tensor()
        tensor.set(np.array(tensor) * 1.5, place)
    save_checkpoint(built.main, scope, folder.parent, folder.name,
                    {"epoch": 1, "global_step": STEPS}, lr_scheduler=scheduler)
    return _stack()


def load(folder: Path, logits_file: Path) -> dict[str, Any]:
    from segdistill_cli.engine.checkpoints import load_checkpoint
    from segdistill_cli.model_choice import ModelChoice, check_model_dir, load_model
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.programs import build_eval

    paddle = import_paddle()
    cfg = _cfg()
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    # resume: the strict check that every variable (optimizer state too) is there, same shape
    built, scheduler = _train_program(cfg)
    train_scope = paddle.static.Scope()
    exe.run(built.startup, scope=train_scope)
    meta = load_checkpoint(built.main, train_scope, folder, place, lr_scheduler=scheduler)
    # eval/export: the eval program loads the weights strictly
    choice = ModelChoice(cfg, folder, "model")
    check_model_dir(choice, warn=lambda message: None)
    evaluated = build_eval(cfg)
    scope = paddle.static.Scope()
    report = load_model(evaluated.main, choice, scope, place)
    (logits,) = exe.run(evaluated.main, feed={"image": fixed_images(0)},
                        fetch_list=[evaluated.logits], scope=scope)
    np.save(logits_file, np.asarray(logits))
    return {**_stack(), "global_step": meta["global_step"], "lr_step": scheduler.last_epoch,
            "eval_params_loaded": len(report.loaded)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p_save = sub.add_parser("save")
    p_save.add_argument("folder", type=Path)
    p_save.add_argument("--perturb")
    p_load = sub.add_parser("load")
    p_load.add_argument("folder", type=Path)
    p_load.add_argument("logits", type=Path)
    args = parser.parse_args(argv)
    if args.command == "save":
        result = save(args.folder, args.perturb)
    else:
        result = load(args.folder, args.logits)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
