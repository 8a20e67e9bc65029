"""The teacher check before step 1: an untrained teacher stops the run (or warns with
--allow-weak-teacher), the real CamVid teacher passes, and the result lands in the log and run.json."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segdistill_cli.config import load_configs
from segdistill_cli.engine.teacher_check import check_teacher, verdict
from segdistill_cli.errors import ConfigError
from conftest import CAMVID, CAMVID_TEACHER, STUDENT_CFG, TEACHER_CFG
from _train_fixtures import make_trainer

CHECK_ON = ["TRAIN.TEACHER_CHECK_IMAGES=4"]  # test_train's TINY turns it off


def test_verdicts_of_confusion_matrices():
    good = np.array([[80, 5, 5], [5, 40, 5], [5, 5, 50]])
    assert verdict(good)[0] == "ok"
    one_class = np.array([[90, 0, 0], [50, 1, 0], [60, 0, 0]])  # predicts class 0 everywhere
    name, majority, top, share = verdict(one_class)
    assert (name, top) == ("single class", 0) and share > 0.99
    # Spread predictions, but no better than "always the commonest class" (0.5 of the pixels).
    chance = np.array([[20, 15, 15], [10, 8, 7], [10, 8, 7]])
    assert verdict(chance)[0] == "chance"
    assert verdict(chance)[1] == pytest.approx(0.5)


def test_untrained_teacher_stops_the_run_before_step_1(lists, teacher_dir, tmp_path):  # noqa: F811
    trainer = make_trainer(lists, teacher_dir, tmp_path / "run", student_extra=CHECK_ON,
                           preflight_only=True)
    with pytest.raises(ConfigError, match=r"teacher check failed \((chance|single class)\): on 4 "
                                          r"val images .*--allow-weak-teacher"):
        trainer.run()
    assert not (tmp_path / "run").exists()


def test_allow_weak_teacher_warns_loudly_and_records_the_check(lists, teacher_dir, tmp_path):  # noqa: F811
    lines: list[str] = []
    trainer = make_trainer(lists, teacher_dir, tmp_path / "run",
                           student_extra=CHECK_ON + ["SOLVER.NUM_EPOCHS=1"], allow_weak_teacher=True,
                           do_eval=False)
    trainer.echo = lines.append
    trainer.run()
    assert any(line.startswith("WARNING: teacher check failed") for line in lines)
    summary = next(line for line in lines if line.startswith("teacher check: mIoU"))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    check = run["teacher_check"]
    assert check["images"] == 4 and check["verdict"] in ("chance", "single class")
    assert f"{check['miou']:.4f}" in summary
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["type"] == "teacher_check" and log[0]["verdict"] == check["verdict"]


@pytest.mark.skipif(not CAMVID_TEACHER.is_dir(), reason=f"{CAMVID_TEACHER} not found")
def test_the_trained_camvid_teacher_passes():
    crop = ["EVAL_CROP_SIZE=(160,120)", "AUG.FIX_RESIZE_SIZE=(160,120)",
            "TRAIN_CROP_SIZE=(160,120)", f"DATASET.DATA_DIR={CAMVID}",
            f"DATASET.VAL_FILE_LIST={CAMVID / 'val.txt'}", "DATALOADER.NUM_WORKERS=0"]
    configs = load_configs(STUDENT_CFG, TEACHER_CFG, crop, [
        f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={CAMVID_TEACHER}", "TRAIN_CROP_SIZE=(160,120)",
        "EVAL_CROP_SIZE=(160,120)"])
    from segdistill_cli.paddle_env import import_paddle

    check = check_teacher(configs.student, configs.teacher, import_paddle().CPUPlace(), 16)
    assert check.verdict == "ok" and check.images == 16
    assert check.acc > check.majority_acc + 0.3 and check.miou > 0.3
    assert check.seconds < 60
