"""The built-in distillation losses, each registered once with everything the rest needs.

A registration (`LossSpec`) carries the loss's `LOSS:` name, how many variables each side gives
(`arity`), whether student and teacher must have equal shapes, the least rank of the variables,
whether it averages over the pixel mask (`reads_mask`), the pair keys it reads with their
defaults (`options`), which of the temperature keys TEMPERATURE / TEACHER_TEMPERATURE /
STUDENT_TEMPERATURE it reads (`temperatures`; a key a loss does not read is refused, never silently
ignored) and `build`, which calls its math in losses.py. Adding a loss = its math
in losses.py and one `register_loss` here: the DISTILL config check (config/distill.py), the pair
checks (pairs.py) and the build (build.py) all read `LOSSES`. `LOSS: custom` is the one loss not
registered here (distill/custom.py: a user's function).

Paddle-free: `build` imports losses.py (and with it Paddle) only when it is called.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

# (student vars, teacher vars, the pair's options with defaults, float pixel mask or None) ->
# unweighted scalar Variable, or a dict of named unweighted parts whose "loss" entry is the scalar
# (the other parts are logged).
LossBuilder = Callable[[Sequence[Any], Sequence[Any], dict, Optional[Any]], Any]


@dataclass(frozen=True)
class LossSpec:
    name: str
    build: LossBuilder
    arity: int = 1  # variables per side (fsp: two)
    same_shape: bool = True  # student and teacher shapes equal (the batch dimension excepted)
    min_rank: int = 1
    reads_mask: bool = False  # averages over the pixel mask (padding, IGNORE_INDEX excluded)
    options: Mapping[str, Any] = field(default_factory=dict)  # PAIR KEY -> default
    temperatures: tuple[str, ...] = ()  # the temperature pair keys `build` reads


LOSSES: dict[str, LossSpec] = {}
TEMPERATURE_KEYS = ("TEMPERATURE", "TEACHER_TEMPERATURE", "STUDENT_TEMPERATURE")
ONE_TEMPERATURE = ("TEMPERATURE",)


def register_loss(spec: LossSpec) -> LossSpec:
    LOSSES[spec.name] = spec
    return spec


def _math() -> Any:
    from . import losses

    return losses


# MASK: confident keeps pixels whose teacher top probability reaches this (segdistill's choice,
# not a published value; docs/design.md "Masked KL" gives the coverage it measured on CamVid).
DEFAULT_CONFIDENCE_THRESHOLD = 0.7
PIXEL_SELECTION = {"MASK": "none", "THRESHOLD": DEFAULT_CONFIDENCE_THRESHOLD}
# DIST: the defaults of the authors' semantic-segmentation code (github.com/hunto/DIST_KD,
# segmentation/losses/dist_kd.py and train_kd.py): beta (inter) = gamma (intra) = 1, softmax
# without temperature (tau = 1), loss weight 1. See docs/design.md "DIST".
DIST_DEFAULTS = {"INTER_WEIGHT": 1.0, "INTRA_WEIGHT": 1.0}


def _dist(s: Sequence[Any], t: Sequence[Any], o: dict, m: Optional[Any]) -> dict[str, Any]:
    inter, intra = _math().dist_terms(s[0], t[0], o["temperature"], m)
    return {"loss": inter * o["inter_weight"] + intra * o["intra_weight"],
            "inter": inter, "intra": intra}


register_loss(LossSpec("l2", lambda s, t, o, m: _math().l2_loss(s[0], t[0])))
register_loss(LossSpec(  # TEMPERATURE sets both sides; TEACHER_/STUDENT_TEMPERATURE one each
    "soft_label", lambda s, t, o, m: _math().soft_label_loss(
        s[0], t[0], o["teacher_temperature"], o["student_temperature"], m),
    min_rank=2, reads_mask=True, options=PIXEL_SELECTION, temperatures=TEMPERATURE_KEYS))
register_loss(LossSpec(
    "kl", lambda s, t, o, m: _math().kl_loss(s[0], t[0], o["temperature"], m),
    min_rank=2, reads_mask=True, options=PIXEL_SELECTION, temperatures=ONE_TEMPERATURE))
register_loss(LossSpec("dist", _dist, min_rank=4, reads_mask=True, options=DIST_DEFAULTS,
                       temperatures=ONE_TEMPERATURE))
register_loss(LossSpec(
    "fsp", lambda s, t, o, m: _math().fsp_loss(s[0], s[1], t[0], t[1]),
    arity=2, same_shape=False, min_rank=4))
register_loss(LossSpec(
    "cwd", lambda s, t, o, m: _math().cwd_loss(s[0], t[0], o["temperature"]), min_rank=3,
    temperatures=ONE_TEMPERATURE))


def losses_reading(key: str) -> list[str]:
    """The registered losses that read pair key `key` (sorted), e.g. MASK -> kl, soft_label."""
    return sorted(name for name, spec in LOSSES.items()
                  if key in spec.options or key in spec.temperatures)


def loss_options(loss: str, pair: Mapping[str, Any]) -> dict[str, Any]:
    """The loss's own options from `pair`, defaulted, under lower-case names (`threshold`)."""
    return {key.lower(): type(default)(pair.get(key, default))
            for key, default in LOSSES[loss].options.items()}
