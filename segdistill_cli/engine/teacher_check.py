"""The teacher check before step 1: is the loaded teacher any good on this data?

The commonest silent failure of distillation is a teacher that did not really load, or that was
trained for other data: training then goes on, and only the student's poor mIoU tells, hours later.
So before the first step the teacher is evaluated on a few validation images
(TRAIN.TEACHER_CHECK_IMAGES, default 16, spread evenly over the val list; 0 = no check) with
the student's eval pipeline (DATASET, AUG, EVAL_CROP_SIZE: the teacher sees the student's
input) and its own weights, loaded strictly into a scope of its own.

Verdicts (docs/design.md "Teacher check"): `single class` when one class takes >= 95 % of the
valid pixels' predictions; `chance` when its pixel accuracy is no better than predicting the
images' commonest label class everywhere; otherwise `ok`. A bad verdict stops the run before
step 1 unless the user accepts it (`train --allow-weak-teacher`), which turns it into a warning.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError
from ..palettes import class_names

SINGLE_CLASS_SHARE = 0.95
# Config sections that describe the data and its pipeline: taken from the student config.
_DATA_KEYS = ("DATASET", "AUG", "EVAL_CROP_SIZE", "MEAN", "STD", "DATALOADER", "BATCH_SIZE")


@dataclass
class TeacherCheck:
    images: int
    miou: float
    acc: float
    majority_acc: float  # accuracy of predicting the commonest label class everywhere
    top_class: str  # the class the teacher predicts most
    top_class_share: float  # its share of the valid pixels' predictions
    verdict: str  # ok | chance | single class
    seconds: float

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"teacher check: mIoU {self.miou:.4f}, pixel accuracy {self.acc:.4f} on "
                f"{self.images} val images ({self.seconds:.1f} s): {self.verdict}")

    def problem(self) -> str:
        """Why the verdict is bad, in words."""
        if self.verdict == "single class":
            return (f"it predicts {self.top_class} on {self.top_class_share:.0%} of the pixels")
        return (f"its pixel accuracy {self.acc:.4f} is no better than predicting the commonest "
                f"class everywhere ({self.majority_acc:.4f})")


def verdict(matrix: np.ndarray) -> tuple[str, float, int, float]:
    """(verdict, majority-class accuracy, most predicted class, its share) of a confusion matrix
    (rows = label, columns = prediction, valid pixels only)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    total = max(matrix.sum(), 1.0)
    majority = matrix.sum(axis=1).max() / total
    predicted = matrix.sum(axis=0)
    top = int(predicted.argmax())
    share = predicted[top] / total
    acc = np.trace(matrix) / total
    if share >= SINGLE_CLASS_SHARE:
        return "single class", majority, top, share
    if acc <= majority:
        return "chance", majority, top, share
    return "ok", majority, top, share


def teacher_eval_config(student: Any, teacher: Any) -> Any:
    """The teacher's model with the student's data and eval pipeline."""
    cfg = copy.deepcopy(teacher)
    for key in _DATA_KEYS:
        cfg[key] = copy.deepcopy(student[key])
    return cfg


def check_teacher(student_cfg: Any, teacher_cfg: Any, place: Any,
                  num_images: int) -> Optional[TeacherCheck]:
    """Evaluate the teacher's weights on `num_images` val images; None when num_images is 0."""
    if num_images <= 0:
        return None
    from ..paddle_env import import_paddle
    from ..distill.teacher import WEIGHTS_LABEL
    from ..weights import load_weights
    from .evaluator import Evaluator

    paddle = import_paddle()
    start = time.perf_counter()
    cfg = teacher_eval_config(student_cfg, teacher_cfg)
    if not cfg.DATASET.VAL_FILE_LIST:
        raise ConfigError("TRAIN.TEACHER_CHECK_IMAGES: the teacher check needs "
                          "DATASET.VAL_FILE_LIST (or set TRAIN.TEACHER_CHECK_IMAGES=0)")
    scope = paddle.static.Scope()
    evaluator = Evaluator(cfg, scope, place, num_workers=0)
    entries = evaluator.dataset.entries
    step = max(1, len(entries) // num_images)
    evaluator.dataset.entries = entries[::step][:num_images]
    load_weights(evaluator.main_program, cfg.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR, scope=scope,
                 place=place, strict=True, label=WEIGHTS_LABEL)
    result = evaluator.evaluate()
    matrix = result.matrix
    name, majority, top, share = verdict(matrix.matrix)
    names = class_names(cfg) or [str(i) for i in range(matrix.num_classes)]
    return TeacherCheck(images=result.num_images, miou=float(matrix.mean_iou()),
                        acc=float(matrix.accuracy()), majority_acc=float(majority),
                        top_class=names[top] if top < len(names) else str(top),
                        top_class_share=float(share), verdict=name,
                        seconds=round(time.perf_counter() - start, 2))


def enforce(check: Optional[TeacherCheck], allow_weak: bool, teacher_dir: str,
            warn: Any) -> None:
    """Stop on a bad verdict, or with `allow_weak` warn loudly and go on."""
    if check is None or check.ok:
        return
    message = (f"teacher check failed ({check.verdict}): on {check.images} val images the teacher "
               f"from {teacher_dir} scores mIoU {check.miou:.4f}; {check.problem()}. Is "
               "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR a trained teacher for this data?")
    if not allow_weak:
        raise ConfigError(message + " Pass --allow-weak-teacher to distil from it anyway, or "
                          "set TRAIN.TEACHER_CHECK_IMAGES=0 to skip the check")
    banner = "!" * 100
    for line in (banner, f"WARNING: {message}", "WARNING: going on (--allow-weak-teacher)", banner):
        warn(line)
