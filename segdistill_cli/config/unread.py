"""Legacy keys whose value no command reads: a value the user gave must not be silently without
effect (docs/design.md, "Keys no command reads").

* `DATASET.TRAIN_TOTAL_IMAGES` / `VAL_TOTAL_IMAGES` are counts, not settings: the commands count
  the lists (legacy's `check_and_infer` overwrote them with the lists' lengths too). A given value
  that differs from the count is an error in any source: it describes a schedule (or an eval)
  that would not happen. The count itself is accepted.
* `UNREAD` keys (other models, NAS and pruning, the legacy vis and freeze scripts, fp16/gn
  details) change nothing here, nor did they in legacy for the models segdistill builds. A value
  typed with `--set` / `--teacher-set` is an error; one carried by a YAML file (legacy files are
  used unchanged) is a warning naming the file and line.

Keys that did change legacy's result but are not implemented are refused in `validate.py`
(`_UNSUPPORTED`).
"""
from __future__ import annotations

from ..errors import SegDistillError
from .diff import TEACHER_TRAINING, _matches, flatten
from .loader import SegConfig
from .schema import _default
from .validate import Problem
from .view import COUNTED_LISTS, image_count

TYPED = ("--set", "--teacher-set")

# Key (or section, ending in ".") -> why its value has no effect.
UNREAD = {
    "NUM_TRAINERS": "the worker count comes from --gpus or --cpu --nproc",
    "TRAINER_ID": "the rank comes from the launcher (PADDLE_TRAINER_ID)",
    "DATASET.TEST_TOTAL_IMAGES": "no command reads the test list",
    "DATASET.VIS_FILE_LIST": "predict takes --list, --dir or --image",
    "SOLVER.LOSS_WEIGHT.DICE_LOSS": "only softmax_loss is implemented",
    "SOLVER.LOSS_WEIGHT.BCE_LOSS": "only softmax_loss is implemented",
    "SOLVER.LOSS_WEIGHT.LOVASZ_HINGE_LOSS": "only softmax_loss is implemented",
    "SOLVER.LOSS_WEIGHT.LOVASZ_SOFTMAX_LOSS": "only softmax_loss is implemented",
    "MODEL.MULTI_LOSS_WEIGHT": "it weighs ICNet's several outputs; deeplabv3p has one",
    "MODEL.DEFAULT_GROUP_NUMBER": "it is for group norm, which is not implemented",
    "MODEL.SCALE_LOSS": "it is for fp16, which is not implemented",
    "MODEL.UNET.": "only deeplabv3p is implemented",
    "MODEL.ICNET.": "only deeplabv3p is implemented",
    "MODEL.PSPNET.": "only deeplabv3p is implemented",
    "MODEL.HRNET.": "only deeplabv3p is implemented",
    "FREEZE.": "export writes model.pdmodel and model.pdiparams into --out",
    "SLIM.NAS_": "architecture search is not implemented",
    "SLIM.PRUNE_": "pruning is not implemented",
    "SLIM.PREPROCESS": "it is for legacy's slim scripts, not implemented",
    "SLIM.KNOWLEDGE_DISTILL": "distillation is switched on by --teacher-cfg",
    "SLIM.KNOWLEDGE_DISTILL_IS_TEACHER": "the teacher is the --teacher-cfg config",
}


def check_unread(cfg: SegConfig, teacher: bool = False) -> list[Problem]:
    """Problems for the given values of unread keys in `cfg`; for a teacher config only the keys
    distillation reads from it (one_side.py reports the others)."""
    problems = [] if teacher else _count_problems(cfg)
    for key, value in flatten(cfg.to_plain()):
        why = _why_unread(key)
        if why is None or value == _default(key) or (teacher and not _matches(key,
                                                                              TEACHER_TRAINING)):
            continue
        origin = cfg.origin(key)
        problems.append(Problem(key, f"{value!r} has no effect: {why} (remove the key)", origin,
                                fatal=origin in TYPED))
    return problems


def _why_unread(key: str) -> str | None:
    """UNREAD's reason for `key` (an entry ending in "." or "_" covers every key it starts)."""
    return next((why for name, why in UNREAD.items()
                 if key == name or (name.endswith((".", "_")) and key.startswith(name))), None)


def _count_problems(cfg: SegConfig) -> list[Problem]:
    problems = []
    for count_key, list_key in COUNTED_LISTS.items():
        key = f"DATASET.{count_key}"
        origin = cfg.origin(key)
        if origin.startswith("default"):
            continue
        try:
            counted = image_count(cfg, count_key)
        except (OSError, SegDistillError):  # an unreadable list is reported by its own check
            continue
        given = cfg.get_key(key)
        if given != counted:
            used = (f"the LR schedule counts {counted} images an epoch from DATASET.{list_key}"
                    if count_key == "TRAIN_TOTAL_IMAGES" else
                    f"every eval reads the {counted} images of DATASET.{list_key}")
            problems.append(Problem(key, f"{given!r}, but {used}: this key is a count, not a "
                                    "setting (remove it)", origin))
    return problems
