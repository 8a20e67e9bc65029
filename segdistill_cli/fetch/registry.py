"""The pretrained models `segdistill fetch` knows: name, role, URL and the config keys that
decide their parameter names and shapes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    name: str  # also the folder it becomes: <dest>/<name>, what the tutorial configs point at
    role: str  # "teacher" or "student"
    url: str
    config: str  # the tutorial config this model belongs to (documentation, drift test)
    # The keys of `config` that decide the parameter names and shapes. Applied to the defaults
    # so the structural check works from an installed package without the repo's configs/.
    config_keys: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_DEEPLAB = ("MODEL.MODEL_NAME=deeplabv3p", "MODEL.DEFAULT_NORM_TYPE=bn", "DATASET.NUM_CLASSES=19",
            "DATASET.IMAGE_TYPE=rgb", "MODEL.DEEPLAB.ASPP_WITH_SEP_CONV=True",
            "MODEL.DEEPLAB.DECODER_USE_SEP_CONV=True")

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec for spec in (
        ModelSpec("xception65_bn_cityscapes", "teacher",
                  "https://paddleseg.bj.bcebos.com/models/xception65_bn_cityscapes.tgz",
                  "configs/cityscape_teacher.yaml",
                  _DEEPLAB + ("MODEL.DEEPLAB.BACKBONE=xception_65",
                              "MODEL.DEEPLAB.ENCODER_WITH_ASPP=True",
                              "MODEL.DEEPLAB.ENABLE_DECODER=True")),
        ModelSpec("mobilenet_cityscapes", "student",
                  "https://paddleseg.bj.bcebos.com/models/mobilenet_cityscapes.tgz",
                  "configs/cityscape.yaml",
                  _DEEPLAB + ("MODEL.DEEPLAB.BACKBONE=mobilenet",
                              "MODEL.DEEPLAB.ENCODER_WITH_ASPP=False",
                              "MODEL.DEEPLAB.ENABLE_DECODER=False")),
    )
}
ROLES = {spec.role: spec.name for spec in REGISTRY.values()}


def model_name(name: str, where: str = "model") -> str:
    """A registry name from a model name or `teacher`/`student`."""
    if name in REGISTRY:
        return name
    if name in ROLES:
        return ROLES[name]
    known = ", ".join(["all", *ROLES, *REGISTRY])
    raise ConfigError(f"unknown {where} {name!r} (known: {known})")


def select_models(which: Sequence[str] = ()) -> list[ModelSpec]:
    """`teacher`, `student`, model names or `all` (also the default) -> specs, in registry order."""
    if not which or "all" in which:
        return list(REGISTRY.values())
    chosen = {model_name(w) for w in which}
    return [spec for spec in REGISTRY.values() if spec.name in chosen]


def model_manifest(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter name -> shape that the model's config needs."""
    from ..config import load_config
    from ..models import parameter_manifest

    return parameter_manifest(load_config(None, spec.config_keys))
