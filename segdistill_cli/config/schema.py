"""The legacy PaddleSeg config schema (docs/design.md "Legacy facts"): every key with its legacy
default, plus segdistill's additions (marked "new"), and the key sets that say how a value is typed.
Pure data: no parsing here."""
from __future__ import annotations

from typing import Any, Mapping

_DEFAULTS: dict[str, Any] = {
    "MEAN": [0.5, 0.5, 0.5],
    "STD": [0.5, 0.5, 0.5],
    "BATCH_SIZE": 1,
    "EVAL_CROP_SIZE": (),
    "TRAIN_CROP_SIZE": (),
    "NUM_TRAINERS": 1,
    "TRAINER_ID": 0,
    "DATALOADER": {"NUM_WORKERS": 8, "BUF_SIZE": 256},
    "DATASET": {
        "DATA_DIR": "./dataset/cityscapes/",
        "TRAIN_FILE_LIST": "./dataset/cityscapes/train.list",
        "TRAIN_TOTAL_IMAGES": 2975,
        "VAL_FILE_LIST": "./dataset/cityscapes/val.list",
        "VAL_TOTAL_IMAGES": 500,
        "TEST_FILE_LIST": "./dataset/cityscapes/test.list",
        "TEST_TOTAL_IMAGES": 500,
        "VIS_FILE_LIST": None,
        "NUM_CLASSES": 19,
        "IMAGE_TYPE": "rgb",
        "DATA_DIM": 3,
        "SEPARATOR": " ",
        "IGNORE_INDEX": 255,
        "PADDING_VALUE": [127.5, 127.5, 127.5],
        "CLASS_NAMES": None,  # new: names for eval tables and pictures
        # new: images without labels, distilled only (one path per line, relative to DATA_DIR)
        "UNLABELED_FILE_LIST": None,
        # new: how many of BATCH_SIZE come from it: a count, or a fraction in (0, 1); None = half
        "UNLABELED_PER_BATCH": None,
    },
    "AUG": {
        "AUG_METHOD": "unpadding",
        "FIX_RESIZE_SIZE": (512, 512),
        "MIN_SCALE_FACTOR": 0.5,
        "MAX_SCALE_FACTOR": 2.0,
        "SCALE_STEP_SIZE": 0.25,
        "MIN_RESIZE_VALUE": 400,
        "MAX_RESIZE_VALUE": 600,
        "INF_RESIZE_VALUE": 500,
        "MIRROR": True,
        "FLIP": False,
        "FLIP_RATIO": 0.5,
        "RICH_CROP": {
            "ENABLE": False,
            "MAX_ROTATION": 15,
            "MIN_AREA_RATIO": 0.5,
            "ASPECT_RATIO": 0.33,
            "BRIGHTNESS_JITTER_RATIO": 0.5,
            "SATURATION_JITTER_RATIO": 0.5,
            "CONTRAST_JITTER_RATIO": 0.5,
            "BLUR": False,
            "BLUR_RATIO": 0.1,
        },
    },
    "TRAIN": {
        "MODEL_SAVE_DIR": "",
        "PRETRAINED_MODEL_DIR": "",
        "RESUME_MODEL_DIR": "",
        "SYNC_BATCH_NORM": False,
        "SNAPSHOT_EPOCH": 10,
        # segdistill additions: a checkpoint every N steps (0 = off), and how many epoch / step
        # checkpoints to keep (0 = all; final/ and best_model/ are always kept).
        "CHECKPOINT_STEPS": 0,
        "KEEP_CHECKPOINTS": 3,
        # new: val images the loaded teacher is evaluated on before step 1 (0 = no check)
        "TEACHER_CHECK_IMAGES": 16,
    },
    "SOLVER": {
        "LR": 0.1,
        "LR_POLICY": "poly",
        "OPTIMIZER": "sgd",
        "MOMENTUM": 0.9,
        "MOMENTUM2": 0.999,
        "POWER": 0.9,
        "GAMMA": 0.1,
        "DECAY_EPOCH": [10, 20],
        "WEIGHT_DECAY": 0.00004,
        "BEGIN_EPOCH": 1,
        "NUM_EPOCHS": 30,
        "LOSS": ["softmax_loss"],
        "LOSS_WEIGHT": {
            "SOFTMAX_LOSS": 1.0,
            "DICE_LOSS": 1.0,
            "BCE_LOSS": 1.0,
            "LOVASZ_HINGE_LOSS": 1.0,
            "LOVASZ_SOFTMAX_LOSS": 1.0,
        },
        "LR_WARMUP": False,
        "LR_WARMUP_STEPS": 2000,
        "CROSS_ENTROPY_WEIGHT": None,
    },
    "TEST": {"TEST_MODEL": ""},
    "MODEL": {
        "MODEL_NAME": "",
        "DEFAULT_NORM_TYPE": "bn",
        "MULTI_LOSS_WEIGHT": [1.0],
        "DEFAULT_GROUP_NUMBER": 32,
        "DEFAULT_EPSILON": 1e-5,
        "BN_MOMENTUM": 0.99,
        "FP16": False,
        "SCALE_LOSS": "DYNAMIC",
        "DEEPLAB": {
            "BACKBONE": "xception_65",
            "OUTPUT_STRIDE": 16,
            "DEPTH_MULTIPLIER": 1.0,
            "ENCODER_WITH_ASPP": True,
            "ENABLE_DECODER": True,
            "ASPP_WITH_SEP_CONV": True,
            "DECODER_USE_SEP_CONV": True,
        },
        "UNET": {"UPSAMPLE_MODE": "bilinear"},
        "ICNET": {"DEPTH_MULTIPLIER": 0.5, "LAYERS": 50},
        "PSPNET": {"DEPTH_MULTIPLIER": 1.0, "LAYERS": 50},
        "HRNET": {
            "STAGE2": {"NUM_MODULES": 1, "NUM_CHANNELS": [40, 80]},
            "STAGE3": {"NUM_MODULES": 4, "NUM_CHANNELS": [40, 80, 160]},
            "STAGE4": {"NUM_MODULES": 3, "NUM_CHANNELS": [40, 80, 160, 320]},
        },
    },
    "FREEZE": {
        "MODEL_FILENAME": "__model__",
        "PARAMS_FILENAME": "__params__",
        "SAVE_DIR": "freeze_model",
    },
    "SLIM": {
        "KNOWLEDGE_DISTILL_IS_TEACHER": False,
        "KNOWLEDGE_DISTILL": False,
        "KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR": "",
        "NAS_PORT": 23333,
        "NAS_ADDRESS": "",
        "NAS_SEARCH_STEPS": 100,
        "NAS_START_EVAL_EPOCH": 0,
        "NAS_IS_SERVER": True,
        "NAS_SPACE_NAME": "",
        "PRUNE_PARAMS": "",
        "PRUNE_RATIOS": [],
        "PREPROCESS": False,
    },
    # new: list of distillation pairs; None means "the tutorial's pair" (see DEFAULT_DISTILL).
    "DISTILL": None,
}

# Keys whose value must be one of a fixed set.
_CHOICES: dict[str, tuple[Any, ...]] = {
    "DATASET.IMAGE_TYPE": ("rgb", "rgba", "gray"),
    "AUG.AUG_METHOD": ("unpadding", "stepscaling", "rangescaling"),
    "SOLVER.LR_POLICY": ("poly", "piecewise", "cosine"),
    "SOLVER.OPTIMIZER": ("sgd", "adam"),
    "MODEL.DEFAULT_NORM_TYPE": ("bn", "gn"),
    "MODEL.MODEL_NAME": ("", "deeplabv3p"),
    "MODEL.DEEPLAB.BACKBONE": (
        "xception_41", "xception_65", "xception_71", "mobilenet", "mobilenetv2",
    ),
    "MODEL.DEEPLAB.OUTPUT_STRIDE": (8, 16),
}

# Keys whose type cannot be read off the default: (W, H) pairs, optional values, free lists.
_PAIR_KEYS = {"EVAL_CROP_SIZE", "TRAIN_CROP_SIZE", "AUG.FIX_RESIZE_SIZE"}
_OPTIONAL_STR = {"DATASET.VIS_FILE_LIST", "DATASET.UNLABELED_FILE_LIST"}
_OPTIONAL_POSITIVE_NUMBER = {"DATASET.UNLABELED_PER_BATCH"}
_OPTIONAL_LIST = {"DATASET.CLASS_NAMES"}
# CROSS_ENTROPY_WEIGHT: None, a list of per-class weights, or the string 'dynamic'.
_ANY_KEYS = {"SOLVER.CROSS_ENTROPY_WEIGHT", "DISTILL"}
_POSITIVE_INT = {"BATCH_SIZE", "DATASET.NUM_CLASSES", "SOLVER.NUM_EPOCHS", "TRAIN.SNAPSHOT_EPOCH",
                 "DATALOADER.BUF_SIZE"}
_NON_NEGATIVE_INT = {"TRAIN.CHECKPOINT_STEPS", "TRAIN.KEEP_CHECKPOINTS",
                     "TRAIN.TEACHER_CHECK_IMAGES"}


def _all_keys(node: Mapping[str, Any] = _DEFAULTS, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = prefix + k
        keys.append(full)
        if isinstance(v, Mapping):
            keys.extend(_all_keys(v, full + "."))
    return keys


_ALL_KEYS = _all_keys()


def _default(dotted: str) -> Any:
    node: Any = _DEFAULTS
    for part in dotted.split("."):
        node = node[part]
    return node
