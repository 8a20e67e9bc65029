"""Keys that one side never reads: a value the user gave there must not be silently without effect.

Distillation reads from the teacher config only what builds and loads the teacher
(`diff.TEACHER_TRAINING`: MODEL.*, classes, image type, MEAN/STD, its weights folder); every other
key there (TRAIN.*, SOLVER.*, BATCH_SIZE, AUG.*, the lists, DISTILL, ...) comes from the student
config. The student config's SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR is never read by any command.

* typed (`--set` / `--teacher-set`) on the side that does not read it: an error showing the right
  spelling;
* in the student YAML, the teacher folder with a value while distilling: an error (it would be
  ignored; legacy teacher YAMLs used as `--cfg` with `--no-teacher` keep it harmlessly);
* in the teacher YAML, an unread key that changes training (SOLVER.*, BATCH_SIZE, AUG.*, ...)
  whose value differs from the student YAML's (not from a `--set`): a warning. Not an error: legacy teacher YAMLs carry
  their own training keys (the tutorial's does), and keys that only say where the teacher's own
  run went (MODEL_SAVE_DIR, TEST_MODEL, ...) stay quiet.
"""
from __future__ import annotations

from .diff import NOT_TRAINING, TEACHER_TRAINING, _matches, flatten
from .loader import Configs, SegConfig
from .schema import _default
from .validate import Problem

TEACHER_DIR = "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR"
# Legacy markers of a teacher YAML, meaningless here; with its own data and NOT_TRAINING (where
# the teacher's own run went, its eval/test settings) a teacher YAML may carry them quietly.
_QUIET_IN_TEACHER_YAML = ("SLIM.KNOWLEDGE_DISTILL_IS_TEACHER", "SLIM.KNOWLEDGE_DISTILL",
                          "DATASET.DATA_DIR", "DATASET.TRAIN_FILE_LIST",
                          "DATASET.TRAIN_TOTAL_IMAGES", *NOT_TRAINING)


def check_one_side(configs: Configs, distilling: bool, training: bool) -> list[Problem]:
    """`distilling`: train with the teacher; `training`: the command is train (the teacher config
    is then only read when distilling)."""
    student, teacher = configs.student, configs.teacher
    problems = _student_side(student, distilling)
    if teacher is not None and training:
        problems += _teacher_side(student, teacher) if distilling else _unused_teacher(teacher)
    return problems


def _student_side(student: SegConfig, distilling: bool) -> list[Problem]:
    origin = student.origin(TEACHER_DIR)
    value = student.get_key(TEACHER_DIR)
    typed = origin == "--set"
    if typed or (distilling and value != _default(TEACHER_DIR)):
        return [Problem(TEACHER_DIR, "the teacher's weights folder is read from the teacher "
                        f"config, not the student's; give it as --teacher-set "
                        f"{TEACHER_DIR}={value}", origin)]
    return []


def _teacher_side(student: SegConfig, teacher: SegConfig) -> list[Problem]:
    problems = []
    student_values = dict(flatten(student.to_plain()))
    for key, value in flatten(teacher.to_plain()):
        if _matches(key, TEACHER_TRAINING):
            continue
        origin = teacher.origin(key)
        if origin == "--teacher-set":
            problems.append(Problem(key, "is not read from the teacher config (training takes "
                                    f"it from the student config); use --set {key}=...", origin))
        elif (not origin.startswith("default") and value != student_values.get(key)
              and student.origin(key) != "--set"  # the user chose the student's value
              and not _matches(key, _QUIET_IN_TEACHER_YAML)):
            problems.append(Problem(key, f"{value!r} is not read from the teacher config; "
                                    f"training uses the student's {student_values.get(key)!r}",
                                    origin, fatal=False))
    return problems


def _unused_teacher(teacher: SegConfig) -> list[Problem]:
    typed = sorted(k for k, o in teacher.origins().items() if o == "--teacher-set")
    if typed:
        return [Problem(key, "has no effect with --no-teacher", "--teacher-set") for key in typed]
    return [Problem("--teacher-cfg", "is not used with --no-teacher", teacher.source, fatal=False)]
