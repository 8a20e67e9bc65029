"""Structural check: does a weights folder/file hold every parameter a model needs, with the right
shapes? Headers only, no Paddle."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..errors import SegDistillError
from .sources import open_weights

MAX_LISTED = 5  # how many names an error message lists before "... and N more"


def short_listing(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


@dataclass
class StructureReport:
    location: str
    expected: int
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # "name: file [..], model needs [..]"

    @property
    def ok(self) -> bool:
        return not self.missing and not self.wrong

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} of {self.expected} parameters missing "
                         f"({short_listing(self.missing)})")
        if self.wrong:
            parts.append(f"{len(self.wrong)} wrong ({short_listing(self.wrong)})")
        return f"{self.location}: " + ("; ".join(parts) if parts else
                                        f"all {self.expected} parameters present")


def check_structure(path: str | os.PathLike,
                    manifest: Mapping[str, Sequence[int]]) -> StructureReport:
    """Compare a weights folder/file against `{parameter name: shape}` using headers only.
    Extra files (optimizer velocity, `__model__`) are fine."""
    source = open_weights(path)
    report = StructureReport(str(path), len(manifest))
    for name, shape in manifest.items():
        try:
            info = source.info(name)
        except SegDistillError as exc:
            report.wrong.append(f"{name}: {exc}")
            continue
        if info is None:
            report.missing.append(name)
        elif tuple(info.shape) != tuple(shape):
            report.wrong.append(f"{name}: file {list(info.shape)}, model needs {list(shape)}")
    return report
