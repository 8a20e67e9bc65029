"""Which config keys change the training, and how two resolved configs differ in them.

`train --resume` compares the configs stored in the checkpoint with the ones given now and refuses
a change in any key that changes the training (the weights a run ends with), unless
`--allow-config-change`. Keys that only say where things go, how evaluation or export is done or
how fast data is loaded may change freely.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

# Student keys (and sections, ending in ".") that never change the trained weights.
NOT_TRAINING = (
    "TRAIN.MODEL_SAVE_DIR", "TRAIN.RESUME_MODEL_DIR", "TRAIN.SNAPSHOT_EPOCH",
    "TRAIN.CHECKPOINT_STEPS", "TRAIN.KEEP_CHECKPOINTS",  # when and how many checkpoints
    "TRAIN.TEACHER_CHECK_IMAGES",  # a pre-flight eval of the teacher
    "TRAIN.PRETRAINED_MODEL_DIR",  # a resumed run starts from the checkpoint, not from these
    "DATALOADER.",  # samples draw their randomness from (seed, epoch, index), not from workers
    "DATASET.VAL_FILE_LIST", "DATASET.VAL_TOTAL_IMAGES", "DATASET.TEST_FILE_LIST",
    "DATASET.TEST_TOTAL_IMAGES", "DATASET.VIS_FILE_LIST", "DATASET.CLASS_NAMES",
    "EVAL_CROP_SIZE", "TEST.", "FREEZE.",
)

# What distillation reads from the teacher config (everything else there is unread).
TEACHER_TRAINING = ("MODEL.", "DATASET.NUM_CLASSES", "DATASET.IMAGE_TYPE", "DATASET.DATA_DIM",
                    "MEAN", "STD", "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR")


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def flatten(plain: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) of a nested config dict; DISTILL stays one value."""
    for key, value in plain.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, dotted + ".")
        else:
            yield dotted, value


def training_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                     teacher: bool = False) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for each training key whose value differs; `teacher` compares
    the keys distillation reads from the teacher config."""
    old_flat, new_flat = dict(flatten(old)), dict(flatten(new))
    changes = []
    for key in sorted(set(old_flat) | set(new_flat)):
        relevant = _matches(key, TEACHER_TRAINING) if teacher else not _matches(key, NOT_TRAINING)
        if relevant and old_flat.get(key) != new_flat.get(key):
            changes.append((key, old_flat.get(key), new_flat.get(key)))
    return changes
