"""`segdistill predict`: colour-coded predictions and side-by-side overlays for images.

For every input image, at the image's ORIGINAL size:
* `<out>/pred/<name>.png` — the class map as a palette PNG: pixel values are class ids, the
  palette shows the dataset's colours (Cityscapes / CamVid built in, else a fixed generated one).
* `<out>/overlay/<name>.png` — input | prediction | ground truth (when `--with-label` and the
  list gives labels), titled panels and a colour legend (see overlay.py).
`<name>` is the image's path relative to DATA_DIR (list) or to --dir, without its extension, so
inputs from different folders never collide.

Geometry: the eval pipeline runs first (AUG_METHOD resize, e.g. unpadding's FIX_RESIZE_SIZE).
An image still larger than EVAL_CROP_SIZE is then resized down, keeping its aspect ratio, to fit
(eval would refuse it; here a picture is more useful than an error). The result is padded
bottom/right to EVAL_CROP_SIZE, predicted, the padding cropped off and, if anything was resized,
the class map resized back to the original size with nearest-neighbour interpolation.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from .atomic import atomic_open
from .data.dataset import read_image, read_label
from .data.lists import IMAGE_SUFFIXES, read_list
from .data.transforms import AugParams, normalize, pad_bottom_right, resize
from .errors import ConfigError, SegDistillError
from .overlay import draw_overlay
from .palettes import class_names, colorize, palette, pil_palette

PRED_DIR, OVERLAY_DIR = "pred", "overlay"


@dataclass(frozen=True)
class PredictInput:
    image: Path
    name: str  # output name without extension, may contain '/'
    label: Optional[Path] = None


@dataclass
class PredictSummary:
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0
    labels_used: int = 0


@dataclass(frozen=True)
class Geometry:
    """How an image was fitted into the eval input, to undo it on the prediction."""

    original_hw: tuple[int, int]
    fitted_hw: tuple[int, int]  # size after resize/fit, before padding

    @property
    def resized(self) -> bool:
        return self.original_hw != self.fitted_hw


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _output_name(path: str, fallback: Path) -> str:
    rel = Path(path)
    if rel.is_absolute() or ".." in rel.parts:
        rel = Path(fallback.name)
    return rel.with_suffix("").as_posix()


def collect_inputs(cfg: Any, image: Optional[str] = None, list_file: Optional[str] = None,
                   directory: Optional[str] = None) -> list[PredictInput]:
    """Exactly one of `image`, `list_file` (legacy list; labels optional) or `directory`
    (images found recursively)."""
    given = [x for x in (image, list_file, directory) if x]
    if len(given) != 1:
        raise ConfigError("give exactly one of --image, --list or --dir")
    if image:
        path = Path(image)
        if not path.is_file():
            raise ConfigError(f"--image: file not found: {path}")
        return [PredictInput(path, path.stem)]
    if list_file:
        entries = read_list(list_file, cfg.DATASET.DATA_DIR, cfg.DATASET.SEPARATOR,
                            require_label=False)
        return [PredictInput(Path(e.image_path), _output_name(e.image, Path(e.image_path)),
                             Path(e.label_path) if e.label_path else None) for e in entries]
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"--dir: folder not found: {root}")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise ConfigError(f"--dir: no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return [PredictInput(p, p.relative_to(root).with_suffix("").as_posix()) for p in found]


def _dedupe(inputs: Sequence[PredictInput]) -> list[PredictInput]:
    seen: dict[str, int] = {}
    out = []
    for item in inputs:
        count = seen.get(item.name, 0)
        seen[item.name] = count + 1
        out.append(item if not count else PredictInput(item.image, f"{item.name}_{count}",
                                                       item.label))
    return out


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def fit_to_eval(img: np.ndarray, params: AugParams) -> tuple[np.ndarray, Geometry]:
    """Eval resize, then shrink (keeping aspect) if still larger than EVAL_CROP_SIZE, then pad.
    Returns the padded eval-size image (uint8, HWC) and how to undo it."""
    original = img.shape[:2]
    img, _ = resize(img, None, params, train=False)
    crop_w, crop_h = params.eval_crop
    height, width = img.shape[:2]
    if height > crop_h or width > crop_w:
        scale = min(crop_w / width, crop_h / height)
        size = (min(crop_w, max(1, int(width * scale + 0.5))),
                min(crop_h, max(1, int(height * scale + 0.5))))
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    fitted = img.shape[:2]
    img, _ = pad_bottom_right(img, None, params.eval_crop, params.padding_value,
                              params.ignore_index)
    return img, Geometry((int(original[0]), int(original[1])), (int(fitted[0]), int(fitted[1])))


def restore(pred: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Eval-size class map -> original size: crop the padding, nearest-resize back if needed."""
    height, width = geometry.fitted_hw
    pred = np.ascontiguousarray(pred[:height, :width]).astype(np.uint16)
    if geometry.resized:
        oh, ow = geometry.original_hw
        pred = cv2.resize(pred, (ow, oh), interpolation=cv2.INTER_NEAREST)
    return pred.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------


def _save_png(image: Image.Image, path: Path) -> Path:
    """Atomic: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        image.save(fh, format="PNG")
    return path


def prediction_image(pred: np.ndarray, colors: np.ndarray) -> Image.Image:
    """Palette PNG (values = class ids) when the ids fit in 8 bits, else an RGB picture."""
    if len(colors) <= 256:
        image = Image.fromarray(pred.astype(np.uint8), mode="P")
        image.putpalette(pil_palette(colors))
        return image
    return Image.fromarray(colorize(pred, colors), mode="RGB")


def to_rgb(bgr: np.ndarray) -> np.ndarray:
    """A decoded input (BGR, BGRA or one channel) as RGB uint8 for the picture."""
    if bgr.shape[2] >= 3:
        return np.ascontiguousarray(bgr[:, :, 2::-1])
    return np.repeat(bgr[:, :, :1], 3, axis=2)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _load_input(item: PredictInput, cfg: Any, params: AugParams, with_label: bool):
    img = read_image(str(item.image), cfg.DATASET.IMAGE_TYPE)
    if img is None:
        raise SegDistillError(f"image missing or not decodable: {item.image}")
    if img.shape[2] != int(cfg.DATASET.DATA_DIM):
        raise SegDistillError(f"{item.image}: {img.shape[2]} channels, DATASET.DATA_DIM is "
                              f"{cfg.DATASET.DATA_DIM}")
    label = None
    if with_label and item.label is not None:
        try:
            label = read_label(str(item.label))
        except (OSError, ValueError) as exc:
            raise SegDistillError(f"bad label {item.label}: {exc}") from None
        if label.shape != img.shape[:2]:
            raise SegDistillError(f"{item.image} and its label {item.label} differ in size")
    padded, geometry = fit_to_eval(img, params)
    return img, label, normalize(padded, params.mean, params.std), geometry


def run_predict(choice: Any, inputs: Sequence[PredictInput], out_dir: str | os.PathLike, *,
                with_label: bool = False, batch_size: int = 1, flip: bool = False,
                scales: Sequence[float] = (1.0,), place: Any = None,
                progress: Optional[Callable[[int, int], None]] = None) -> PredictSummary:
    """Predict every input with the chosen model and write the two pictures per image."""
    from .engine.evaluator import Predictor
    from .model_choice import load_model
    from .paddle_env import import_paddle

    paddle = import_paddle()
    cfg = choice.cfg
    params = AugParams.from_config(cfg)
    colors, names = palette(int(cfg.DATASET.NUM_CLASSES)), class_names(cfg)
    scope, place = paddle.static.Scope(), place or paddle.CPUPlace()
    predictor = Predictor(cfg, scope, place, flip=flip, scales=scales)
    load_model(predictor.main_program, choice, scope, place)
    out = Path(out_dir)
    summary = PredictSummary(out)
    items = _dedupe(inputs)
    start = time.perf_counter()
    for first in range(0, len(items), max(1, batch_size)):
        chunk = items[first:first + max(1, batch_size)]
        loaded = [_load_input(item, cfg, params, with_label) for item in chunk]
        preds = predictor.predict(np.stack([x[2] for x in loaded]))
        for item, (img, label, _, geometry), pred in zip(chunk, loaded, preds):
            pred = restore(pred, geometry)
            summary.written.append(_save_png(prediction_image(pred, colors),
                                             out / PRED_DIR / f"{item.name}.png"))
            overlay = draw_overlay(to_rgb(img), pred, colors, names, label)
            summary.written.append(_save_png(Image.fromarray(overlay.image, mode="RGB"),
                                             out / OVERLAY_DIR / f"{item.name}.png"))
            summary.labels_used += label is not None
        summary.images += len(chunk)
        if progress is not None:
            progress(summary.images, len(items))
    summary.seconds = time.perf_counter() - start
    return summary
