"""What the commands say must be true: the train log lines, pre-flight, resume, eval labels, help.

Each test names the wrong wording it guards against (issue #11, item 12)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from segdistill_cli.cli import main
from segdistill_cli.config import load_configs
from segdistill_cli.engine.train_log import TrainLogger
from segdistill_cli.engine.trainer import Trainer, TrainOptions
from segdistill_cli.errors import ConfigError
from segdistill_cli.launcher import RunContext

from conftest import CAMVID, ROOT, TEACHER_CFG, needs_camvid

# A tiny real run of the CamVid teacher config alone (--no-teacher): 4 images, 2 epochs.
TINY = ["TRAIN_CROP_SIZE=(64, 48)", "EVAL_CROP_SIZE=(64, 48)", "AUG.FIX_RESIZE_SIZE=(64, 48)",
        "BATCH_SIZE=2", "DATALOADER.NUM_WORKERS=0", "MODEL.DEEPLAB.DEPTH_MULTIPLIER=0.25",
        "TRAIN.SNAPSHOT_EPOCH=1", "SOLVER.NUM_EPOCHS=2", "SOLVER.LR=0.01",
        "TRAIN.PRETRAINED_MODEL_DIR="]


def _teacher_alone(tmp_path: Path, **options) -> tuple[Trainer, list[str]]:
    lines = (CAMVID / "train.txt").read_text().splitlines()[:4]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    sets = TINY + [f"DATASET.DATA_DIR={CAMVID}", f"DATASET.TRAIN_FILE_LIST={tmp_path}/list.txt",
                   f"DATASET.VAL_FILE_LIST={tmp_path}/list.txt",
                   f"TRAIN.MODEL_SAVE_DIR={tmp_path}/run"]
    log: list[str] = []
    trainer = Trainer(load_configs(TEACHER_CFG, None, sets),
                      TrainOptions(use_teacher=False, seed=1, log_steps=1, **options),
                      RunContext(), log=log.append)
    return trainer, log


@needs_camvid
def test_training_a_model_alone_says_what_it_does(tmp_path):
    """--no-teacher on a teacher config: no "student", the eval line says mIoU, the done line has
    the total time, and the ETA says the evals are still to come."""
    trainer, log = _teacher_alone(tmp_path)
    trainer.run()
    text = "\n".join(log)
    assert "student" not in text
    assert "model: no pretrained weights (TRAIN.PRETRAINED_MODEL_DIR not set), training from " \
           "scratch" in log
    evals = [line for line in log if line.startswith("[EVAL]")]
    assert len(evals) == 2 and all(re.search(r" mIoU=0\.\d{4} ", line) for line in evals)
    assert " IoU=" not in text
    done = [line for line in log if line.startswith("done: ")]
    assert len(done) == 1 and re.search(r", 2 epoch\(s\) in 0:00:\d\d$", done[0])
    steps = [line for line in log if line.startswith("epoch=")]
    # Epoch 1's lines come before any eval was timed: they say the evals are not in the ETA yet.
    assert steps[0].endswith(" + 2 eval(s)") and not steps[-1].endswith("eval(s)")


def test_eta_counts_the_evals_still_to_run(tmp_path):
    logger = TrainLogger(tmp_path, True, False, lambda m: None, total_steps=100, total_evals=4)
    logger.steps_done = 60
    assert logger._eta(speed=2.0) == (20.0, 4)  # 40 steps left at 2 steps/s; evals not timed yet
    logger.eval(1, 60, {"seconds": 30.0, "miou": 0.5, "acc": 0.9})
    assert logger._eta(speed=2.0) == (20.0 + 3 * 30.0, 0)  # 3 evals left at the measured 30 s
    logger.close()


@needs_camvid
def test_preflight_without_teacher_does_not_claim_teacher_checks(tmp_path):
    trainer, log = _teacher_alone(tmp_path, preflight_only=True)
    trainer.run()
    assert log[-1] == "pre-flight ok: configs, data and save folder checked"
    assert not (tmp_path / "run").exists()


@needs_camvid
def test_resume_from_a_missing_folder_says_not_found(tmp_path):
    trainer, _ = _teacher_alone(tmp_path, resume=str(tmp_path / "nope"))
    with pytest.raises(ConfigError) as error:
        trainer.run()
    assert str(error.value) == f"--resume: checkpoint folder not found: {tmp_path / 'nope'}"


def test_eval_of_a_config_alone_does_not_call_it_the_student():
    from segdistill_cli.model_choice import choose_model

    alone = load_configs(TEACHER_CFG)
    pair = load_configs(ROOT / "configs" / "camvid.yaml", TEACHER_CFG)
    assert choose_model(alone, "w").role == "model"
    assert choose_model(alone, "w").title == f"model {TEACHER_CFG}, weights w"
    assert choose_model(pair, "w").role == "student"
    assert choose_model(pair, "w", teacher=True).title == f"teacher {TEACHER_CFG}, weights w"


def _help(capsys, *command: str) -> str:
    assert main([*command, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [("train",), ("eval",), ("predict",), ("inspect-vars",),
                                     ("demo",), ("config", "show"), ("data", "check"), ()])
def test_flags_show_no_value_placeholder(capsys, command):
    """A flag takes no value (`--cpu=true` is refused), so the help must not show `<bool>`."""
    text = _help(capsys, *command)
    assert "--help" in text and "<bool>" not in text


def test_flag_rejects_a_value(capsys):
    assert main(["train", "--cfg", "x.yaml", "--cpu=true"]) == 2


def test_separator_default_is_visible(capsys):
    text = _help(capsys, "data", "lists")
    assert "[default: (one space)]" in text
