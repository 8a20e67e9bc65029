"""Logits of the demo teacher and the tutorial teacher and student as Paddle 2.6.2 computes them
(the legacy programs train and eval use, inference mode), for fixed weights and a fixed image: the
fixtures in tests/legacy_logits/ that another stack (Paddle 3's PIR) is compared with. Generated,
never edited by hand: on Paddle 2.6.2 run

    PYTHONPATH=. python tests/_legacy_logits.py
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "tests" / "legacy_logits"
# name -> (student config, teacher config, which model, student --set overrides). Batch 1 at a
# small odd crop keeps each file under 100 kB.
PROGRAMS = {
    "demo_teacher": ("configs/demo.yaml", "configs/demo_teacher.yaml", "teacher", []),
    "cityscape_teacher": ("configs/cityscape.yaml", "configs/cityscape_teacher.yaml", "teacher",
                          ["TRAIN_CROP_SIZE=(33, 33)"]),
    "cityscape_student": ("configs/cityscape.yaml", "configs/cityscape_teacher.yaml", "student",
                          ["TRAIN_CROP_SIZE=(33, 33)"]),
}


def model_config(name: str) -> tuple[Any, list[int]]:
    """(the model's config, the image feed shape [-1, C, H, W] from the student's crop)."""
    from segdistill_cli.config import load_configs
    from segdistill_cli.programs import feed_shape

    student, teacher, which, sets = PROGRAMS[name]
    configs = load_configs(ROOT / student, ROOT / teacher, sets, [])
    return getattr(configs, which), feed_shape(configs.student, "TRAIN_CROP_SIZE")


def weights(cfg: Any) -> dict[str, np.ndarray]:
    """Every persistable of the model, drawn from a generator seeded by its name, so both stacks
    get the same values whatever order they create the variables in (`seeded_value`)."""
    from segdistill_cli.models import parameter_manifest

    return {name: seeded_value(name, shape) for name, shape in parameter_manifest(cfg).items()}


def seeded_value(name: str, shape: Sequence[int]) -> np.ndarray:
    """A value for the variable `name`, from a generator seeded by the name. Conv weights have
    variance 1 / fan-in (2 / fan-in let Xception65's logits reach 5e6), BN statistics and scales
    lie around their usual values."""
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:12], 16))
    if len(shape) == 4:
        value = rng.normal(0.0, (1.0 / np.prod(shape[1:])) ** 0.5, shape)
    elif name.endswith(("variance", "_bn_variance")):
        value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith(("gamma", "_bn_scale")):
        value = rng.uniform(0.8, 1.2, shape)
    else:  # beta, offset, moving mean, bias
        value = rng.normal(0.0, 0.1, shape)
    return value.astype(np.float32)


def image(shape: list[int]) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, *shape[1:])).astype(np.float32)


def run(paddle: Any, main: Any, startup: Any, logits: Any, cfg: Any, shape: list[int],
        changed: Optional[dict[str, np.ndarray]] = None) -> np.ndarray:
    """Initialise, set `weights(cfg)` (with `changed` values instead) by name, return the logits
    for `image(shape)`."""
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    exe.run(startup, scope=scope)
    for name, value in {**weights(cfg), **(changed or {})}.items():
        scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
    (out,) = exe.run(main, feed={"image": image(shape)}, fetch_list=[logits], scope=scope)
    return np.asarray(out)


def legacy_logits(name: str) -> np.ndarray:
    """The logits of the program train builds for a teacher (`programs.build_teacher`)."""
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.programs import build_teacher

    paddle = import_paddle()
    cfg, shape = model_config(name)
    built = build_teacher(cfg, shape)
    return run(paddle, built.main, built.startup, built.logits, cfg, shape)


def fixture_path(name: str) -> Path:
    return FOLDER / f"{name}.npy"


def _write_logits(name: str, paddle_version: str) -> Path:
    from segdistill_cli.atomic import atomic_open

    with atomic_open(fixture_path(name), "wb") as fh:
        np.save(fh, legacy_logits(name))
    return fixture_path(name)


def main() -> int:
    from _legacy_listings import generate

    return generate("logits", PROGRAMS, _write_logits)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
