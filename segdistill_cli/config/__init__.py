"""The one config loader: the legacy PaddleSeg schema, the DISTILL section, overrides, validation.

Every command reads its configs through `load_configs` / `load_config`. Values are parsed as legacy
did (`ast.literal_eval` on strings, so `(769, 769)` becomes a pair and `u"dir"` a plain path) and then
checked against the schema's type for that key.

    schema.py    every legacy key and default        values.py    parse + check one value
    distill.py   the DISTILL section                 loader.py    SegConfig, files, overrides
    validate.py  filesystem and cross-key checks    view.py      what `config show` prints
"""
from .distill import DEFAULT_DISTILL, DISTILL_LOSSES, parse_distill
from .loader import (Configs, SegConfig, default_config, load_config, load_configs,
                     parse_override)
from .validate import PURPOSES, Problem, fatal, list_path, validate
from .values import coerce_value

__all__ = ["DEFAULT_DISTILL", "DISTILL_LOSSES", "PURPOSES", "Configs", "Problem", "SegConfig",
           "coerce_value", "default_config", "fatal", "list_path", "load_config", "load_configs",
           "parse_distill", "parse_override", "validate"]
