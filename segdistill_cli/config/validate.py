"""Checks that need the filesystem or look across keys, run once by every command before it does
work (`validate`); each problem names its key and file, and says whether it is fatal."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .loader import Configs, SegConfig
from .schema import _default
from .values import _where


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    source: str | None = None
    fatal: bool = True

    def __str__(self) -> str:
        return f"{_where(self.key, self.source)}: {self.message}"


def _problem(cfg: SegConfig, key: str, message: str, fatal: bool = True) -> Problem:
    """A problem with `key`, naming where its value came from (file.yaml:LINE, --set, ...)."""
    return Problem(key, message, cfg.origin(key), fatal)


PURPOSES = ("train", "eval", "any")


def list_path(cfg: SegConfig, key: str) -> Path:
    """A list file path as legacy opened it: as written (relative to the working directory)."""
    return Path(cfg.DATASET[key])


def validate(configs: Configs, purpose: str = "any", do_eval: bool = True,
             use_teacher: bool = True) -> list[Problem]:
    """Checks that need the filesystem. Returns every problem found (empty list = ok)."""
    from .one_side import check_one_side  # they build on Problem, defined here
    from .unread import check_unread

    student, teacher = configs.student, configs.teacher
    problems: list[Problem] = []
    problems += check_one_side(configs, distilling=purpose == "train" and use_teacher and
                               teacher is not None, training=purpose == "train")
    problems += _check_crops(student, purpose)
    problems += _check_unsupported(student)
    problems += check_unread(student)
    if teacher is not None:
        problems += check_unread(teacher, teacher=True)
    needed_lists = {"train": ["TRAIN_FILE_LIST"] + (["VAL_FILE_LIST"] if do_eval else []),
                    "eval": ["VAL_FILE_LIST"],
                    "any": []}[purpose]
    for key in needed_lists:
        path = list_path(student, key)
        if not path.is_file():
            problems.append(_problem(student, f"DATASET.{key}", f"list file not found: {path}"))
    data_dir = Path(student.DATASET.DATA_DIR)
    if needed_lists and not data_dir.is_dir():
        problems.append(_problem(student, "DATASET.DATA_DIR", f"directory not found: {data_dir}"))
    if purpose == "train":
        pretrained = student.TRAIN.PRETRAINED_MODEL_DIR
        if pretrained and not Path(pretrained).exists():
            problems.append(_problem(student, "TRAIN.PRETRAINED_MODEL_DIR",
                                    f"directory not found: {pretrained} (training would start "
                                    "from random weights)", fatal=False))
        if not student.TRAIN.MODEL_SAVE_DIR:
            problems.append(_problem(student, "TRAIN.MODEL_SAVE_DIR", "not set"))
        if student.BATCH_SIZE % max(1, student.NUM_TRAINERS) != 0:
            problems.append(_problem(student, "BATCH_SIZE", f"{student.BATCH_SIZE} is not "
                                     f"divisible by the {student.NUM_TRAINERS} trainers"))
    problems += _check_unlabeled(student, purpose, use_teacher)
    if teacher is not None and use_teacher and purpose == "train":
        teacher_dir = teacher.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR
        if not teacher_dir:
            problems.append(_problem(teacher, "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR",
                                    "not set: the teacher's weights are required"))
        elif not Path(teacher_dir).is_dir():
            problems.append(_problem(teacher, "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR",
                                    f"directory not found: {teacher_dir} (legacy would have "
                                    "distilled from a random teacher)"))
        problems += _check_teacher_input(student, teacher)
        if teacher.DATASET.NUM_CLASSES != student.DATASET.NUM_CLASSES:
            problems.append(_problem(teacher, "DATASET.NUM_CLASSES",
                                    f"teacher has {teacher.DATASET.NUM_CLASSES} classes, student "
                                    f"{student.DATASET.NUM_CLASSES}"))
    return problems


# Legacy keys that load (so legacy YAMLs stay valid) but that segdistill does not implement: a
# non-default value must not be silently ignored. (TRAIN.RESUME_MODEL_DIR is honoured by train.)
_UNSUPPORTED = {
    "SOLVER.CROSS_ENTROPY_WEIGHT": "class-weighted cross-entropy is not implemented",
    "SOLVER.LOSS": "dice/bce/lovasz losses are not implemented (only softmax_loss)",
    "SOLVER.LOSS_WEIGHT.SOFTMAX_LOSS": "a weighted cross-entropy is not implemented",
    "MODEL.FP16": "mixed precision is not implemented",
    "MODEL.DEFAULT_NORM_TYPE": "only 'bn' is implemented",
}


def _check_unsupported(cfg: SegConfig) -> list[Problem]:
    problems = []
    for key, why in _UNSUPPORTED.items():
        if why and cfg.get_key(key) != _default(key):
            problems.append(_problem(cfg, key, f"{cfg.get_key(key)!r}: {why} (remove the key or "
                                               f"set it to {_default(key)!r})"))
    return problems


def unlabeled_per_batch(cfg: SegConfig) -> int:
    """How many of the global BATCH_SIZE images come from DATASET.UNLABELED_FILE_LIST (0 without
    one): UNLABELED_PER_BATCH as a count, or as a fraction in (0, 1) of BATCH_SIZE (rounded);
    unset = half the batch."""
    if not cfg.DATASET.UNLABELED_FILE_LIST:
        return 0
    batch, share = int(cfg.BATCH_SIZE), cfg.DATASET.UNLABELED_PER_BATCH
    if share is None:
        return batch // 2
    if isinstance(share, float):
        return int(round(batch * share))
    return int(share)


def _check_unlabeled(cfg: SegConfig, purpose: str, use_teacher: bool) -> list[Problem]:
    key, share = "DATASET.UNLABELED_FILE_LIST", cfg.DATASET.UNLABELED_PER_BATCH
    if not cfg.DATASET.UNLABELED_FILE_LIST:
        if share is not None:
            return [_problem(cfg, "DATASET.UNLABELED_PER_BATCH", "set, but "
                             "DATASET.UNLABELED_FILE_LIST is not: it would have no effect")]
        return []
    if purpose != "train":
        return []
    problems = []
    path = list_path(cfg, "UNLABELED_FILE_LIST")
    if not path.is_file():
        problems.append(_problem(cfg, key, f"list file not found: {path}"))
    if not use_teacher:
        problems.append(_problem(cfg, key, "set, but --no-teacher: only distillation learns from "
                                "unlabelled images (remove the key or give a teacher)"))
    if isinstance(share, float) and share >= 1:
        problems.append(_problem(cfg, "DATASET.UNLABELED_PER_BATCH", f"{share!r}: give a whole "
                                 "count or a fraction in (0, 1) of BATCH_SIZE"))
    elif not 1 <= unlabeled_per_batch(cfg) <= int(cfg.BATCH_SIZE) - 1:
        problems.append(_problem(cfg, "DATASET.UNLABELED_PER_BATCH",
                                f"{unlabeled_per_batch(cfg)} unlabelled images per batch of "
                                f"BATCH_SIZE {cfg.BATCH_SIZE}: need 1..{int(cfg.BATCH_SIZE) - 1} "
                                "(every batch keeps at least one labelled image)"))
    return problems


def _check_teacher_input(student: SegConfig, teacher: SegConfig) -> list[Problem]:
    """The teacher is fed the student's normalised image: both must normalise alike."""
    problems = []
    for key in ("MEAN", "STD", "DATASET.IMAGE_TYPE"):
        if student.get_key(key) != teacher.get_key(key):
            problems.append(_problem(teacher, key, f"teacher {teacher.get_key(key)!r} differs from "
                                              f"student {student.get_key(key)!r} "
                                              f"({student.origin(key)}): the teacher sees the "
                                              "student's input, normalised the student's way"))
    return problems


def _check_crops(cfg: SegConfig, purpose: str) -> list[Problem]:
    wanted = {"train": ["TRAIN_CROP_SIZE", "EVAL_CROP_SIZE"], "eval": ["EVAL_CROP_SIZE"],
              "any": ["TRAIN_CROP_SIZE", "EVAL_CROP_SIZE"]}[purpose]
    return [_problem(cfg, k, "not set: give (width, height), e.g. (769, 769)")
            for k in wanted if len(cfg[k]) != 2]


def fatal(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.fatal]
