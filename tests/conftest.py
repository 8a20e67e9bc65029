"""What many test modules share: the repository's paths, the CamVid marker, and the module-scoped
fixtures of the tiny real-CamVid training runs (`lists`, `teacher_dir`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository
TESTS = ROOT / "tests"
CAMVID = ROOT.parent / "shared" / "data" / "camvid"  # real CamVid (read-only)
CAMVID_TEACHER = ROOT.parent / "shared" / "models" / "camvid-teacher"  # a trained teacher
STUDENT_CFG = ROOT / "configs" / "camvid.yaml"
TEACHER_CFG = ROOT / "configs" / "camvid_teacher.yaml"

needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(),
                                  reason=f"real CamVid data not found at {CAMVID}")


def _ir_in_use() -> str:
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.stack import ir_in_use

    return ir_in_use(import_paddle(any_ir=True))


IR = _ir_in_use()  # "legacy" (Paddle 2.6) or "pir" (Paddle 3.3): which graph backend runs here


def legacy_ir_only(why: str):
    """Skip a test that is about the legacy IR itself (ProgramDesc, PaddleSlim's merge) on PIR,
    saying why it does not apply there."""
    return pytest.mark.skipif(IR != "legacy", reason=f"legacy IR only: {why}")


def pir_only(why: str):
    """Skip a test that is about the PIR backend itself on the legacy IR, saying why."""
    return pytest.mark.skipif(IR != "pir", reason=f"PIR only: {why}")

# Tiny but real: 64x48 crops, batch 2, the smallest MobileNetV2 widths.
TINY = ["TRAIN_CROP_SIZE=(64, 48)", "EVAL_CROP_SIZE=(64, 48)", "AUG.FIX_RESIZE_SIZE=(64, 48)",
        "BATCH_SIZE=2", "DATALOADER.NUM_WORKERS=0", "MODEL.DEEPLAB.DEPTH_MULTIPLIER=0.25",
        "TRAIN.SNAPSHOT_EPOCH=1", "SOLVER.NUM_EPOCHS=2", "SOLVER.LR=0.01",
        # The teachers here are initialised, not trained: the teacher check would (rightly) stop
        # every run; tests/test_teacher_check.py tests it.
        "TRAIN.TEACHER_CHECK_IMAGES=0"]
TINY_TEACHER = ["MODEL.DEEPLAB.DEPTH_MULTIPLIER=0.5", "TRAIN_CROP_SIZE=(64, 48)",
                "EVAL_CROP_SIZE=(64, 48)"]


@pytest.fixture(scope="module")
def lists(tmp_path_factory) -> dict[str, str]:
    """The first 8 train and 4 val images of CamVid, as DATASET overrides."""
    folder = tmp_path_factory.mktemp("lists")
    train = (CAMVID / "train.txt").read_text().splitlines()[:8]
    val = (CAMVID / "val.txt").read_text().splitlines()[:4]
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "val.txt").write_text("\n".join(val) + "\n")
    return {"DATASET.DATA_DIR": str(CAMVID), "DATASET.TRAIN_FILE_LIST": str(folder / "train.txt"),
            "DATASET.VAL_FILE_LIST": str(folder / "val.txt")}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A teacher in the legacy one-file-per-variable format, initialised (not trained)."""
    from segdistill_cli.config import load_configs
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.program_vars import parameters
    from segdistill_cli.programs import build_teacher
    from segdistill_cli.weights import write_legacy_dir

    paddle = import_paddle()
    configs = load_configs(TEACHER_CFG, None, TINY_TEACHER)
    paddle.seed(7)
    teacher = build_teacher(configs.student)
    scope = paddle.static.Scope()
    paddle.static.Executor(paddle.CPUPlace()).run(teacher.startup, scope=scope)
    tensors = {p.name: np.array(scope.find_var(p.name).get_tensor())
               for p in parameters(teacher.main)}
    # Give the BN statistics non-trivial values so "unchanged" means something.
    for name, value in tensors.items():
        if name.endswith("moving_variance") or name.endswith("_bn_variance"):
            tensors[name] = value + np.float32(0.5)
    return write_legacy_dir(tmp_path_factory.mktemp("teacher") / "xteacher", tensors)
