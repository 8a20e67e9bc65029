"""Loading: defaults ← YAML file ← `KEY=VALUE` overrides, into a `SegConfig`; student and teacher
are independent objects (legacy overlaid the teacher YAML onto the student's global config, so CLI
overrides were lost and `SLIM.*` leaked; docs/design.md "Legacy facts").

Every value remembers where it came from (`SegConfig.origin`): `file.yaml:LINE`, `--set`,
`--teacher-set`, or the default. Loading reports every problem of both configs at once (one line
each), not only the first."""
from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from ..errors import ConfigError, combine
from .distill import DEFAULT_DISTILL, parse_distill
from .schema import _ALL_KEYS, _CHOICES, _DEFAULTS, _default
from .values import _bad, _where, coerce_value

class SegConfig(dict):
    """A nested dict with attribute access: `cfg.MODEL.DEEPLAB.BACKBONE` or `cfg["MODEL"][...]`.

    `source` is the YAML file it came from; `origin(key)` where one value came from (for
    messages); `distill_pairs` gives the DISTILL section with its default applied.
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
        clone._origins = dict(getattr(self, "_origins", {}))
        return clone

    @property
    def source(self) -> str | None:
        return getattr(self, "_source", None)

    def origin(self, key: str) -> str:
        """Where the value of `key` came from: `file.yaml:LINE`, `--set`, `--teacher-set`, or
        `default` (a key inside a section given as a whole reports the section's origin)."""
        origins = getattr(self, "_origins", {})
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            found = origins.get(".".join(parts[:end]))
            if found:
                return found
        return f"default, not in {self.source}" if self.source else "default"

    def origins(self) -> dict[str, str]:
        """Every key given in the file or an override, with where it came from."""
        return dict(getattr(self, "_origins", {}))

    def _set_origin(self, key: str, origin: str) -> None:
        if not hasattr(self, "_origins"):
            self._origins = {}
        self._origins[key] = origin

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


def _set_key(cfg: SegConfig, key: str, raw: Any, source: str) -> list[tuple[str, Any]]:
    """Set one key; for a section, return its (key, value) children to set one by one."""
    parts = key.split(".")
    node: Any = cfg
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"{_where(key, source)}: unknown config key {key!r}{_suggest(key)}")
        node = node[part]
    leaf = parts[-1]
    if not isinstance(node, dict) or leaf not in node:
        raise ConfigError(f"{_where(key, source)}: unknown config key {key!r}{_suggest(key)}")
    if isinstance(node[leaf], dict):
        if not isinstance(raw, Mapping):
            raise _bad(key, source, raw, "a section (mapping)")
        return [(f"{key}.{sub}", sub_raw) for sub, sub_raw in raw.items()]
    if key == "DISTILL":
        node[leaf] = parse_distill(raw, source)
    else:
        node[leaf] = coerce_value(key, raw, source)
    cfg._set_origin(key, source)
    return []


def _apply(cfg: SegConfig, key: str, raw: Any, origin: Callable[[str], str],
           problems: list[ConfigError]) -> None:
    """Set `key` (a section key by key); a bad value is collected, the default stays."""
    try:
        children = _set_key(cfg, key, raw, origin(key))
    except ConfigError as exc:
        exc.key = key
        problems.append(exc)
        return
    for child, child_raw in children:
        _apply(cfg, child, child_raw, origin, problems)


def _read_yaml(path: Path) -> tuple[Mapping[str, Any], dict[str, int]]:
    """The file's mapping and the line of every (dotted) key in it."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data_bytes[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data_bytes[exc.start]:02x})") \
            from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # already rejects control characters
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc, text)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. a bad timestamp
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}:1: expected a mapping of config keys at the top level, "
                          f"found {type(data).__name__}")
    return data, _key_lines(node)


def _key_lines(node: Any, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines


def _yaml_error(path: Path, exc: yaml.YAMLError, text: str) -> str:
    """`file:LINE: not valid YAML: problem`. An unclosed quote or bracket is reported where it
    opens (PyYAML marks the place it noticed, often the next line or the end of the file)."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text[:exc.position].count("\n") + 1
        return f"{path}:{line}: not valid YAML: character 0x{exc.character:02x} is not allowed"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    context, context_mark = getattr(exc, "context", None) or "", getattr(exc, "context_mark", None)
    if context_mark is not None and ("quoted" in context or "flow" in context):
        what = context.replace("while scanning ", "").replace("while parsing ", "")
        return (f"{path}:{context_mark.line + 1}: not valid YAML: {what} opened here is not "
                f"closed ({problem})")
    if mark is None:
        return f"{path}: not valid YAML: {problem}"
    last_line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    return f"{path}:{min(mark.line + 1, last_line)}: not valid YAML: {problem}"


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


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = (),
                override_label: str = "--set",
                problems: list[ConfigError] | None = None) -> SegConfig:
    """Defaults ← YAML file ← `KEY=VALUE` overrides. Every problem names the key and where its
    value came from; they are appended to `problems`, or raised together when it is None."""
    collect: list[ConfigError] = [] if problems is None else problems
    cfg = default_config()
    cfg._origins = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            data, lines = _read_yaml(Path(path))
        except ConfigError as exc:
            exc.unreadable = True  # nothing else is checked against a file that did not load
            collect.append(exc)
            data, lines = {}, {}
        for key, raw in data.items():
            _apply(cfg, str(key), raw,
                   lambda k: f"{source}:{lines[k]}" if k in lines else source, collect)
    for text in overrides:
        try:
            key, raw = parse_override(text)
        except ConfigError as exc:
            collect.append(exc)
            continue
        if _is_plain_string_key(key):
            raw = text.partition("=")[2]  # "|" or "#" are values here, not YAML syntax
        _apply(cfg, key, raw, lambda k: override_label, collect)
    cfg._source = source
    try:
        _infer(cfg)
    except ConfigError as exc:
        collect.append(exc)
    if problems is None and collect:
        raise combine(collect)
    return cfg


def _is_plain_string_key(key: str) -> bool:
    try:
        default = _default(key)
    except (KeyError, TypeError):
        return False
    return isinstance(default, str) and key not in _CHOICES


def _infer(cfg: SegConfig) -> None:
    """Legacy `check_and_infer` parts that need no filesystem. DATA_DIM and PADDING_VALUE are
    derived (legacy overwrote them too): a given value that differs is refused, not ignored."""
    derived = {"DATASET.DATA_DIM": (4 if cfg.DATASET.IMAGE_TYPE == "rgba" else 3, "IMAGE_TYPE"),
               "DATASET.PADDING_VALUE": ([x * 255.0 for x in cfg.MEAN], "MEAN x 255")}
    for key, (value, rule) in derived.items():
        origin = cfg.origin(key)
        if not origin.startswith("default") and cfg.get_key(key) != value:
            raise ConfigError(f"{_where(key, origin)}: {cfg.get_key(key)!r} differs from {value!r}, "
                              f"which is derived from {rule}: this key is not a setting (remove "
                              "it)")
    cfg.DATASET.DATA_DIM = derived["DATASET.DATA_DIM"][0]
    cfg.DATASET.PADDING_VALUE = derived["DATASET.PADDING_VALUE"][0]
    if cfg.DATASET.SEPARATOR == "":
        raise ConfigError(f"{_where('DATASET.SEPARATOR', cfg.origin('DATASET.SEPARATOR'))}: must "
                          "not be empty")
    if len(cfg.MEAN) != len(cfg.STD):
        raise ConfigError(f"{_where('MEAN', cfg.origin('MEAN'))}: MEAN and STD must have the same "
                          f"length ({len(cfg.MEAN)} vs {len(cfg.STD)}; STD from "
                          f"{cfg.origin('STD')})")


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
    """Load the student and teacher configs as independent objects. Every problem of both is
    raised at once (`Problems`, one line each); its `partial` holds the configs with the bad
    values left at their defaults, so callers can add the filesystem problems."""
    problems: list[ConfigError] = []
    student = load_config(cfg, student_overrides, "--set", problems)
    teacher = None
    if teacher_cfg is not None:
        teacher = load_config(teacher_cfg, teacher_overrides, "--teacher-set", problems)
    elif teacher_overrides:
        problems.append(ConfigError("--teacher-set needs --teacher-cfg"))
    configs = Configs(student, teacher)
    if problems:
        error = combine(problems)
        if not any(getattr(p, "unreadable", False) for p in problems):
            error.partial = configs
        raise error
    return configs
