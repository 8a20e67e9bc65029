"""Parsing and checking one config value: legacy's `ast.literal_eval` on strings, then the schema's
type and allowed values for the key. Errors name the key, the file, the value and what is allowed."""
from __future__ import annotations

import ast
from typing import Any, Mapping

from ..errors import ConfigError
from .schema import (_ANY_KEYS, _CHOICES, _NON_NEGATIVE_INT, _OPTIONAL_LIST,
                     _OPTIONAL_POSITIVE_NUMBER, _OPTIONAL_STR, _PAIR_KEYS, _POSITIVE_INT, _default)


def _legacy_literal(value: Any) -> Any:
    """Legacy `SegConfig.__setitem__`: `ast.literal_eval` on strings, errors ignored."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    return value


def with_origin(key: str, source: str | None) -> str:
    """`KEY (where its value came from)`: `file.yaml:LINE`, `--set`, `--teacher-set`, default.
    Every message about a config value names it so."""
    return f"{key} ({source})" if source else key


_where = with_origin  # the config package's short name for it


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
    if key in _OPTIONAL_POSITIVE_NUMBER:
        if value is None or (_is_number(value) and value > 0):
            return None if value is None else (int(value) if _is_int(value) else float(value))
        raise _bad(key, source, raw, "a positive number (a count, or a fraction in (0, 1)) or null")
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
            if key in _NON_NEGATIVE_INT and value < 0:
                raise _bad(key, source, raw, "an integer >= 0")
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
            elif raw is None or isinstance(raw, (Mapping, list, tuple)):
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
