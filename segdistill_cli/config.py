"""The one config loader: the legacy PaddleSeg schema, the DISTILL section, overrides, validation.

Every command reads its configs through `load_config`. Student and teacher are independent objects
(legacy overlaid the teacher YAML onto the student's global config, so CLI overrides were lost and
`SLIM.*` leaked; reference/legacy-paddleseg.md §2.4).

Values are parsed as legacy did (`ast.literal_eval` on strings, so `(769, 769)` becomes a pair and
`u"dir"` a plain path) and then checked against the schema's type for that key.
"""
from __future__ import annotations

import ast
import copy
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from .errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Schema: every legacy default (reference §2.3) plus segdistill's additions, marked "new".
# ---------------------------------------------------------------------------------------------

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
_OPTIONAL_STR = {"DATASET.VIS_FILE_LIST"}
_OPTIONAL_LIST = {"DATASET.CLASS_NAMES"}
# CROSS_ENTROPY_WEIGHT: None, a list of per-class weights, or the string 'dynamic'.
_ANY_KEYS = {"SOLVER.CROSS_ENTROPY_WEIGHT", "DISTILL"}
_POSITIVE_INT = {"BATCH_SIZE", "DATASET.NUM_CLASSES", "SOLVER.NUM_EPOCHS", "TRAIN.SNAPSHOT_EPOCH",
                 "DATALOADER.BUF_SIZE"}

# ---- DISTILL section -------------------------------------------------------------------------

DISTILL_LOSSES = ("l2", "soft_label", "kl", "fsp", "cwd", "custom")
# Losses that take two variables from each side.
_TWO_VAR_LOSSES = {"fsp"}
_PAIR_KEYS_ALLOWED = {
    "TEACHER": "teacher variable name or alias (a list of two for fsp)",
    "STUDENT": "student variable name or alias (a list of two for fsp)",
    "LOSS": "one of " + ", ".join(DISTILL_LOSSES),
    "WEIGHT": "a number >= 0",
    "NAME": "a label used in logs (default: LOSS_index)",
    "TEMPERATURE": "a number > 0 (kl, cwd; soft_label uses it for both sides)",
    "TEACHER_TEMPERATURE": "a number > 0 (soft_label)",
    "STUDENT_TEMPERATURE": "a number > 0 (soft_label)",
    "FUNCTION": '"package.module:function" (custom)',
    "ADAPTER": "none or conv1x1",
    "RESIZE": "none or bilinear",
    "OPTIONS": "a mapping passed to a custom loss",
}
_NUMERIC_PAIR_KEYS = ("WEIGHT", "TEMPERATURE", "TEACHER_TEMPERATURE", "STUDENT_TEMPERATURE")

# The legacy tutorial's only pair: full-resolution logits, mean squared error, weight 0.1.
DEFAULT_DISTILL: list[dict[str, Any]] = [
    {"TEACHER": "logits", "STUDENT": "logits", "LOSS": "l2", "WEIGHT": 0.1}
]


# ---------------------------------------------------------------------------------------------
# The config object
# ---------------------------------------------------------------------------------------------


class SegConfig(dict):
    """A nested dict with attribute access: `cfg.MODEL.DEEPLAB.BACKBONE` or `cfg["MODEL"][...]`.

    `source` is the YAML file it came from (for messages); `distill_pairs` gives the DISTILL section
    with its default applied.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __deepcopy__(self, memo: dict) -> "SegConfig":
        clone = SegConfig({k: copy.deepcopy(v, memo) for k, v in self.items()})
        clone._source = getattr(self, "_source", None)
        return clone

    @property
    def source(self) -> str | None:
        return getattr(self, "_source", None)

    @property
    def distill_pairs(self) -> list[dict[str, Any]]:
        pairs = self.get("DISTILL")
        return copy.deepcopy(DEFAULT_DISTILL if pairs is None else pairs)

    def get_key(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = node[part]
        return node

    def to_plain(self) -> dict[str, Any]:
        """JSON-ready nested dict: UPPER-CASE legacy keys, pairs as [W, H] lists."""
        return json.loads(json.dumps(self, default=list))


def _to_segconfig(node: Any) -> Any:
    if isinstance(node, Mapping):
        return SegConfig({k: _to_segconfig(v) for k, v in node.items()})
    return copy.deepcopy(node)


def default_config() -> SegConfig:
    """A fresh config holding every legacy default."""
    return _to_segconfig(_DEFAULTS)


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


# ---------------------------------------------------------------------------------------------
# Value parsing and checking
# ---------------------------------------------------------------------------------------------


def _legacy_literal(value: Any) -> Any:
    """Legacy `SegConfig.__setitem__`: `ast.literal_eval` on strings, errors ignored."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    return value


def _where(key: str, source: str | None) -> str:
    return f"{key} (in {source})" if source else key


def _bad(key: str, source: str | None, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{_where(key, source)}: invalid value {value!r}; expected {allowed}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def coerce_value(key: str, raw: Any, source: str | None = None) -> Any:
    """Parse `raw` the legacy way and check it against the schema type of `key`."""
    default = _default(key)
    value = _legacy_literal(raw)
    if key in _ANY_KEYS:
        return value
    if key in _PAIR_KEYS:
        if isinstance(value, (list, tuple)) and (
            len(value) == 0 or (len(value) == 2 and all(_is_int(v) for v in value))
        ):
            if any(int(v) <= 0 for v in value):
                raise _bad(key, source, raw, "two positive integers (width, height)")
            return tuple(int(v) for v in value)
        raise _bad(key, source, raw, "a (width, height) pair such as (769, 769)")
    if key in _OPTIONAL_STR:
        if value is None or isinstance(raw, str):
            return None if value is None else str(raw)
        raise _bad(key, source, raw, "a path or null")
    if key in _OPTIONAL_LIST:
        if value is None or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            return None if value is None else list(value)
        raise _bad(key, source, raw, "a list of names or null")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise _bad(key, source, raw, "true or false")
    if isinstance(default, int):
        if _is_int(value):
            value = int(value)
            if key in _POSITIVE_INT and value <= 0:
                raise _bad(key, source, raw, "a positive integer")
            return _check_choice(key, value, source)
        raise _bad(key, source, raw, "an integer")
    if isinstance(default, float):
        if _is_number(value):
            return _check_choice(key, float(value), source)
        raise _bad(key, source, raw, "a number")
    if isinstance(default, str):
        # A path such as "2024" must stay a string: keep the raw text if literal_eval changed type.
        if not isinstance(value, str):
            if isinstance(raw, str):
                value = raw
            elif raw is None:
                raise _bad(key, source, raw, "a string")
            else:
                value = str(raw)
        return _check_choice(key, value, source)
    if isinstance(default, list):
        if isinstance(value, (list, tuple)):
            return _check_list(key, list(value), default, source, raw)
        raise _bad(key, source, raw, "a list")
    if isinstance(default, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise _bad(key, source, raw, "a list")
    return value


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


def _check_list(key: str, value: list, default: list, source: str | None, raw: Any) -> list:
    if default and all(_is_number(d) for d in default):
        if not all(_is_number(v) for v in value):
            raise _bad(key, source, raw, "a list of numbers")
        if key in ("MEAN", "STD", "DATASET.PADDING_VALUE") and len(value) not in (1, 3, 4):
            raise _bad(key, source, raw, "one value per image channel")
        if key == "STD" and any(v == 0 for v in value):
            raise _bad(key, source, raw, "non-zero values")
    return value


def _check_choice(key: str, value: Any, source: str | None) -> Any:
    choices = _CHOICES.get(key)
    if choices is not None and value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise _bad(key, source, value, f"one of {shown}")
    return value


def _suggest(key: str) -> str:
    match = difflib.get_close_matches(key, _ALL_KEYS, n=1, cutoff=0.5)
    if not match:
        # Try the last component alone: "LR" -> "SOLVER.LR".
        tail = key.split(".")[-1]
        match = [k for k in _ALL_KEYS if k.split(".")[-1] == tail][:1]
    return f"; did you mean {match[0]}?" if match else ""


def _set_key(cfg: SegConfig, key: str, raw: Any, source: str | None) -> None:
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise ConfigError(
                f"{_where(key, source)}: unknown config key {key!r}{_suggest(key)}"
            )
        node = node[part]
    leaf = parts[-1]
    if not isinstance(node, dict) or leaf not in node:
        raise ConfigError(f"{_where(key, source)}: unknown config key {key!r}{_suggest(key)}")
    if isinstance(node[leaf], dict):
        if not isinstance(raw, Mapping):
            raise _bad(key, source, raw, "a section (mapping)")
        for sub, sub_raw in raw.items():
            _set_key(cfg, f"{key}.{sub}", sub_raw, source)
        return
    if key == "DISTILL":
        node[leaf] = parse_distill(raw, source)
        return
    node[leaf] = coerce_value(key, raw, source)


# ---------------------------------------------------------------------------------------------
# DISTILL
# ---------------------------------------------------------------------------------------------


def parse_distill(raw: Any, source: str | None = None) -> list[dict[str, Any]] | None:
    """Check the DISTILL list; return it normalised (upper-case keys, numbers as floats)."""
    raw = _legacy_literal(raw)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _bad("DISTILL", source, raw, "a list of pairs (TEACHER, STUDENT, LOSS, WEIGHT, ...)")
    pairs = []
    for index, item in enumerate(raw):
        pairs.append(_parse_pair(index, item, source))
    return pairs


def _parse_pair(index: int, item: Any, source: str | None) -> dict[str, Any]:
    where = f"DISTILL[{index}]"
    if not isinstance(item, Mapping):
        raise _bad(where, source, item, "a mapping with TEACHER, STUDENT, LOSS, WEIGHT")
    pair: dict[str, Any] = {}
    for k, v in item.items():
        key = str(k).upper()
        if key not in _PAIR_KEYS_ALLOWED:
            near = difflib.get_close_matches(key, list(_PAIR_KEYS_ALLOWED), n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]}?" if near else ""
            allowed = ", ".join(_PAIR_KEYS_ALLOWED)
            raise ConfigError(
                f"{_where(where, source)}: unknown key {k!r}{hint} (allowed: {allowed})"
            )
        pair[key] = v
    for required in ("TEACHER", "STUDENT"):
        if required not in pair:
            raise ConfigError(f"{_where(where, source)}: missing {required} "
                              f"({_PAIR_KEYS_ALLOWED[required]})")
    pair["LOSS"] = str(pair.get("LOSS", "l2")).lower()
    if pair["LOSS"] not in DISTILL_LOSSES:
        raise _bad(f"{where}.LOSS", source, pair["LOSS"], "one of " + ", ".join(DISTILL_LOSSES))
    pair.setdefault("WEIGHT", 1.0)
    for key in _NUMERIC_PAIR_KEYS:
        if key in pair:
            value = _legacy_literal(pair[key])
            if not _is_number(value) or value < 0 or (key != "WEIGHT" and value == 0):
                rule = "a number >= 0" if key == "WEIGHT" else "a number > 0"
                raise _bad(f"{where}.{key}", source, pair[key], rule)
            pair[key] = float(value)
    n_vars = 2 if pair["LOSS"] in _TWO_VAR_LOSSES else 1
    for side in ("TEACHER", "STUDENT"):
        pair[side] = _parse_side(f"{where}.{side}", pair[side], n_vars, pair["LOSS"], source)
    if pair["LOSS"] == "custom":
        function = pair.get("FUNCTION")
        if not isinstance(function, str) or ":" not in function:
            raise _bad(f"{where}.FUNCTION", source, function, '"package.module:function"')
    elif "FUNCTION" in pair:
        raise ConfigError(f"{_where(where, source)}: FUNCTION is only for LOSS: custom")
    for key, allowed in (("ADAPTER", ("none", "conv1x1")), ("RESIZE", ("none", "bilinear"))):
        if key in pair:
            value = "none" if pair[key] in (None, False) else str(pair[key]).lower()
            if value not in allowed:
                raise _bad(f"{where}.{key}", source, pair[key], " or ".join(allowed))
            pair[key] = value
    if "OPTIONS" in pair and not isinstance(pair["OPTIONS"], Mapping):
        raise _bad(f"{where}.OPTIONS", source, pair["OPTIONS"], "a mapping")
    pair.setdefault("NAME", f"{pair['LOSS']}_{index}")
    return pair


def _parse_side(where: str, value: Any, n_vars: int, loss: str, source: str | None) -> Any:
    names = value if isinstance(value, list) else [value]
    if not all(isinstance(n, str) and n for n in names):
        raise _bad(where, source, value, "a variable name or alias")
    if loss == "custom":
        return value
    if len(names) != n_vars:
        raise _bad(where, source, value,
                   f"{n_vars} variable name(s) for LOSS {loss}" + (" (a list)" if n_vars > 1 else ""))
    return names if n_vars > 1 else names[0]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{line} is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` → (KEY, value parsed like a YAML scalar)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. SOLVER.LR=0.01")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> SegConfig:
    """Defaults ← YAML file ← `KEY=VALUE` overrides. Raises ConfigError naming key and file."""
    cfg = default_config()
    source = None
    if path is not None:
        source = str(path)
        for key, raw in _read_yaml(Path(path)).items():
            _set_key(cfg, str(key), raw, source)
    for text in overrides:
        key, raw = parse_override(text)
        if _is_plain_string_key(key):
            raw = text.partition("=")[2]  # "|" or "#" are values here, not YAML syntax
        _set_key(cfg, key, raw, "--set")
    cfg._source = source
    _infer(cfg)
    return cfg


def _is_plain_string_key(key: str) -> bool:
    try:
        default = _default(key)
    except (KeyError, TypeError):
        return False
    return isinstance(default, str) and key not in _CHOICES


def _infer(cfg: SegConfig) -> None:
    """Legacy `check_and_infer` parts that need no filesystem."""
    cfg.DATASET.DATA_DIM = 4 if cfg.DATASET.IMAGE_TYPE == "rgba" else 3
    cfg.DATASET.PADDING_VALUE = [x * 255.0 for x in cfg.MEAN]
    if cfg.DATASET.SEPARATOR == "":
        raise ConfigError(f"{_where('DATASET.SEPARATOR', cfg.source)}: must not be empty")
    if len(cfg.MEAN) != len(cfg.STD):
        raise ConfigError(f"{_where('MEAN', cfg.source)}: MEAN and STD must have the same length "
                          f"({len(cfg.MEAN)} vs {len(cfg.STD)})")


@dataclass(frozen=True)
class Configs:
    """What every command works with: the student config and (optionally) the teacher's."""

    student: SegConfig
    teacher: SegConfig | None = None


def load_configs(
    cfg: str | os.PathLike | None,
    teacher_cfg: str | os.PathLike | None = None,
    student_overrides: Sequence[str] = (),
    teacher_overrides: Sequence[str] = (),
) -> Configs:
    """Load the student and teacher configs as independent objects."""
    student = load_config(cfg, student_overrides)
    teacher = None
    if teacher_cfg is not None:
        teacher = load_config(teacher_cfg, teacher_overrides)
    elif teacher_overrides:
        raise ConfigError("--teacher-set needs --teacher-cfg")
    return Configs(student, teacher)


# ---------------------------------------------------------------------------------------------
# Validation that needs the filesystem
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    source: str | None = None
    fatal: bool = True

    def __str__(self) -> str:
        return f"{_where(self.key, self.source)}: {self.message}"


PURPOSES = ("train", "eval", "any")


def list_path(cfg: SegConfig, key: str) -> Path:
    """A list file path as legacy opened it: as written (relative to the working directory)."""
    return Path(cfg.DATASET[key])


def validate(configs: Configs, purpose: str = "any", do_eval: bool = True,
             use_teacher: bool = True) -> list[Problem]:
    """Checks that need the filesystem. Returns every problem found (empty list = ok)."""
    student, teacher = configs.student, configs.teacher
    problems: list[Problem] = []
    problems += _check_crops(student, purpose)
    problems += _check_unsupported(student)
    needed_lists = {"train": ["TRAIN_FILE_LIST"] + (["VAL_FILE_LIST"] if do_eval else []),
                    "eval": ["VAL_FILE_LIST"],
                    "any": []}[purpose]
    for key in needed_lists:
        path = list_path(student, key)
        if not path.is_file():
            problems.append(Problem(f"DATASET.{key}", f"list file not found: {path}", student.source))
    data_dir = Path(student.DATASET.DATA_DIR)
    if needed_lists and not data_dir.is_dir():
        problems.append(Problem("DATASET.DATA_DIR", f"directory not found: {data_dir}", student.source))
    if purpose == "train":
        pretrained = student.TRAIN.PRETRAINED_MODEL_DIR
        if pretrained and not Path(pretrained).exists():
            problems.append(Problem("TRAIN.PRETRAINED_MODEL_DIR",
                                    f"directory not found: {pretrained} (training would start "
                                    "from random weights)", student.source, fatal=False))
        if not student.TRAIN.MODEL_SAVE_DIR:
            problems.append(Problem("TRAIN.MODEL_SAVE_DIR", "not set", student.source))
        if student.BATCH_SIZE % max(1, student.NUM_TRAINERS) != 0:
            problems.append(Problem("BATCH_SIZE", f"{student.BATCH_SIZE} is not divisible by the "
                                    f"{student.NUM_TRAINERS} trainers", student.source))
    if teacher is not None and use_teacher and purpose == "train":
        teacher_dir = teacher.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR
        if not teacher_dir:
            problems.append(Problem("SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR",
                                    "not set: the teacher's weights are required", teacher.source))
        elif not Path(teacher_dir).is_dir():
            problems.append(Problem("SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR",
                                    f"directory not found: {teacher_dir} (legacy would have "
                                    "distilled from a random teacher)", teacher.source))
        problems += _check_teacher_input(student, teacher)
        if teacher.DATASET.NUM_CLASSES != student.DATASET.NUM_CLASSES:
            problems.append(Problem("DATASET.NUM_CLASSES",
                                    f"teacher has {teacher.DATASET.NUM_CLASSES} classes, student "
                                    f"{student.DATASET.NUM_CLASSES}", teacher.source))
    return problems


# Legacy keys that load (so legacy YAMLs stay valid) but that segdistill does not implement: a
# non-default value must not be silently ignored. (TRAIN.RESUME_MODEL_DIR is honoured by train.)
_UNSUPPORTED = {
    "SOLVER.CROSS_ENTROPY_WEIGHT": "class-weighted cross-entropy is not implemented",
    "SOLVER.LOSS": "dice/bce/lovasz losses are not implemented (only softmax_loss)",
    "MODEL.FP16": "mixed precision is not implemented",
    "MODEL.DEFAULT_NORM_TYPE": "only 'bn' is implemented",
}


def _check_unsupported(cfg: SegConfig) -> list[Problem]:
    problems = []
    for key, why in _UNSUPPORTED.items():
        if why and cfg.get_key(key) != _default(key):
            problems.append(Problem(key, f"{cfg.get_key(key)!r}: {why} (remove the key or set "
                                         f"it to {_default(key)!r})", cfg.source))
    return problems


def _check_teacher_input(student: SegConfig, teacher: SegConfig) -> list[Problem]:
    """The teacher is fed the student's normalised image: both must normalise alike."""
    problems = []
    for key in ("MEAN", "STD", "DATASET.IMAGE_TYPE"):
        if student.get_key(key) != teacher.get_key(key):
            problems.append(Problem(key, f"teacher {teacher.get_key(key)!r} differs from student "
                                         f"{student.get_key(key)!r}: the teacher sees the "
                                         "student's input, normalised the student's way",
                                    teacher.source))
    return problems


def _check_crops(cfg: SegConfig, purpose: str) -> list[Problem]:
    wanted = {"train": ["TRAIN_CROP_SIZE", "EVAL_CROP_SIZE"], "eval": ["EVAL_CROP_SIZE"],
              "any": ["TRAIN_CROP_SIZE", "EVAL_CROP_SIZE"]}[purpose]
    return [Problem(k, "not set: give (width, height), e.g. (769, 769)", cfg.source)
            for k in wanted if len(cfg[k]) != 2]


def fatal(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.fatal]
