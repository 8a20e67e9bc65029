"""The DISTILL section (new in segdistill): a list of teacher/student pairs with a loss and a weight.
Absent section = the legacy tutorial's only pair (DEFAULT_DISTILL)."""
from __future__ import annotations

import difflib
from typing import Any, Mapping

from ..distill.registry import LOSSES, TEMPERATURE_KEYS, losses_reading
from ..errors import ConfigError
from .values import _bad, _is_number, _legacy_literal, _where

# The registered losses (distill/registry.py: what each reads) and a user's own function.
DISTILL_LOSSES = (*LOSSES, "custom")
# Pixel selection of the class-axis losses (MASK).
PIXEL_MASKS = ("none", "confident", "correct")
# The losses each loss-specific pair key belongs to (MASK -> kl, soft_label); a custom loss is
# given every temperature that is set (distill/custom.py).
_KEY_LOSSES = {key: tuple(losses_reading(key)) for key in dict.fromkeys(
    k for spec in LOSSES.values() for k in spec.options)}
_KEY_LOSSES.update({key: (*losses_reading(key), "custom") for key in TEMPERATURE_KEYS})
_PAIR_KEYS_ALLOWED = {
    "TEACHER": "teacher variable name or alias (a list of two for fsp)",
    "STUDENT": "student variable name or alias (a list of two for fsp)",
    "LOSS": "one of " + ", ".join(DISTILL_LOSSES),
    "WEIGHT": "a number >= 0",
    "NAME": "a label used in logs (default: LOSS_index)",
    "TEMPERATURE": "a number > 0 (kl, cwd, dist, custom; soft_label uses it for both sides)",
    "TEACHER_TEMPERATURE": "a number > 0 (soft_label, custom)",
    "STUDENT_TEMPERATURE": "a number > 0 (soft_label, custom)",
    "FUNCTION": '"package.module:function" (custom)',
    "ADAPTER": "none or conv1x1",
    "RESIZE": "none or bilinear",
    "OPTIONS": "a mapping passed to a custom loss",
    "MASK": "which pixels kl/soft_label distil: " + ", ".join(PIXEL_MASKS),
    "THRESHOLD": "teacher top-class probability in (0, 1] for MASK confident/correct",
    "INTER_WEIGHT": "a number >= 0: weight of DIST's inter-class term (dist)",
    "INTRA_WEIGHT": "a number >= 0: weight of DIST's intra-class term (dist)",
}
_NUMERIC_PAIR_KEYS = ("WEIGHT", "TEMPERATURE", "TEACHER_TEMPERATURE", "STUDENT_TEMPERATURE",
                      "INTER_WEIGHT", "INTRA_WEIGHT", "THRESHOLD")
_ZERO_ALLOWED = ("WEIGHT", "INTER_WEIGHT", "INTRA_WEIGHT")

# The legacy tutorial's only pair: full-resolution logits, mean squared error, weight 0.1.
DEFAULT_DISTILL: list[dict[str, Any]] = [
    {"TEACHER": "logits", "STUDENT": "logits", "LOSS": "l2", "WEIGHT": 0.1}
]


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
            zero_ok = key in _ZERO_ALLOWED
            if not _is_number(value) or value < 0 or (not zero_ok and value == 0) or (
                    key == "THRESHOLD" and value > 1):
                rule = _PAIR_KEYS_ALLOWED[key] if key == "THRESHOLD" else (
                    "a number >= 0" if zero_ok else "a number > 0")
                raise _bad(f"{where}.{key}", source, pair[key], rule)
            pair[key] = float(value)
    _check_loss_options(where, pair, source)
    n_vars = LOSSES[pair["LOSS"]].arity if pair["LOSS"] in LOSSES else 1
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


def _check_loss_options(where: str, pair: dict[str, Any], source: str | None) -> None:
    """A loss option on a loss that does not read it would be silently without effect: refuse."""
    for key, losses in _KEY_LOSSES.items():
        if key in pair and pair["LOSS"] not in losses:
            which = " or ".join(losses) if len(losses) <= 2 else "one of " + ", ".join(losses)
            raise ConfigError(f"{_where(where, source)}: {key} is only for LOSS {which} "
                              f"(this pair is {pair['LOSS']}, which does not read it)")
    if "MASK" in pair:
        value = "none" if pair["MASK"] in (None, False) else str(pair["MASK"]).lower()
        if value not in PIXEL_MASKS:
            raise _bad(f"{where}.MASK", source, pair["MASK"], "one of " + ", ".join(PIXEL_MASKS))
        pair["MASK"] = value
    if "THRESHOLD" in pair and pair.get("MASK", "none") == "none":
        raise ConfigError(f"{_where(where, source)}: THRESHOLD needs MASK: confident or correct")


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


