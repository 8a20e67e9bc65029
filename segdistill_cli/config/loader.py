"""Loading: defaults ← YAML file ← `KEY=VALUE` overrides, into a `SegConfig`; student and teacher
are independent objects (legacy overlaid the teacher YAML onto the student's global config, so CLI
overrides were lost and `SLIM.*` leaked; reference/legacy-paddleseg.md §2.4)."""
from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..errors import ConfigError
from .distill import DEFAULT_DISTILL, parse_distill
from .schema import _ALL_KEYS, _CHOICES, _DEFAULTS, _default
from .values import _bad, _where, coerce_value

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
        """The pairs `train` distils: the section, or the tutorial's pair when it is absent
        (normalised the same way, so `config show` prints exactly what is used)."""
        pairs = self.get("DISTILL")
        return parse_distill(DEFAULT_DISTILL) if pairs is None else copy.deepcopy(pairs)

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


