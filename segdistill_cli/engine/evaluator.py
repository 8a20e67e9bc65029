"""Evaluation as legacy `pdseg/eval.py`: the val list padded to EVAL_CROP_SIZE, argmax at full
resolution, a streaming confusion matrix over valid pixels. Optional test-time augmentation
(horizontal flip, several scales: softmax probabilities averaged), reported as such.

The eval program shares the caller's scope: parameters have the legacy names in every program, so
during training the evaluator reads the student's current weights with no copy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..data.dataset import SegDataset
from ..data.loader import BatchLoader
from ..errors import ConfigError
from ..paddle_env import import_paddle
from ..programs import BuiltProgram, build_eval, feed_shape
from .metrics import ConfusionMatrix


@dataclass
class EvalResult:
    matrix: ConfusionMatrix
    num_images: int
    seconds: float
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    class_names: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else 0.0

    def to_json(self, model_dir: Optional[str] = None) -> dict[str, Any]:
        m = self.matrix
        return {
            "miou": float(m.mean_iou()), "acc": float(m.accuracy()), "kappa": float(m.kappa()),
            "class_iou": [float(v) for v in m.class_iou()],
            "class_acc": [float(v) for v in m.class_accuracy()],
            "miou_present": float(m.mean_iou_present()),
            "class_names": self.class_names, "num_images": self.num_images,
            "model_dir": model_dir, "flip": self.flip, "scales": list(self.scales),
            "images_per_second": round(self.images_per_second, 3),
        }


def parse_scales(text: Optional[str]) -> tuple[float, ...]:
    """"0.75,1.0,1.25" -> (0.75, 1.0, 1.25); errors name --scales."""
    if not text:
        return (1.0,)
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--scales: {text!r} is not a comma-separated list of numbers") from None
    if not scales or any(not 0.1 <= s <= 4.0 for s in scales):
        raise ConfigError(f"--scales: {text!r}: each scale must lie in 0.1..4.0")
    return scales


@dataclass
class _ScaleProgram:
    scale: float
    built: BuiltProgram
    output: Any  # argmax [N,H,W] (plain eval) or probabilities [N,C,H,W] at eval size (TTA)


class Evaluator:
    """Evaluate `cfg`'s model on its VAL list with the weights present in `scope`."""

    def __init__(self, cfg: Any, scope: Any, place: Any, exe: Any = None, flip: bool = False,
                 scales: Sequence[float] = (1.0,), batch_size: Optional[int] = None,
                 shard: tuple[int, int] = (0, 1), list_file: Optional[str] = None,
                 num_workers: Optional[int] = None):
        self.paddle = import_paddle()
        self.cfg, self.scope, self.place = cfg, scope, place
        self.exe = exe or self.paddle.static.Executor(place)
        self.flip, self.scales = bool(flip), tuple(scales)
        self.tta = self.flip or self.scales != (1.0,)
        self.dataset = SegDataset(cfg, mode="eval", shard=shard, list_file=list_file)
        self.batch_size = batch_size or int(cfg.BATCH_SIZE)
        self.num_workers = cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers
        self.programs = [self._build(s) for s in self.scales]

    @property
    def main_program(self) -> Any:
        """The scale-1.0 eval program (for loading weights into it)."""
        return self.programs[0].built.main

    def _build(self, scale: float) -> _ScaleProgram:
        paddle, cfg = self.paddle, self.cfg
        _, channels, height, width = feed_shape(cfg, "EVAL_CROP_SIZE")
        if scale != 1.0:
            cfg = _with_crop(cfg, round(width * scale), round(height * scale))
        built = build_eval(cfg)
        with built.guard():
            if self.tta:
                probs = paddle.nn.functional.softmax(built.logits, axis=1)
                if scale != 1.0:  # back to the eval size, like legacy's resizes (corners aligned)
                    probs = paddle.nn.functional.interpolate(probs, size=[height, width],
                                                             mode="bilinear", align_corners=True)
                output = probs
            else:
                output = paddle.argmax(built.logits, axis=1)
        return _ScaleProgram(scale, built, output)

    def evaluate(self, progress: Optional[Callable[[int, int], None]] = None) -> EvalResult:
        """Run over the list; `progress(done_images, total_images)` after each batch."""
        num_classes = int(self.cfg.DATASET.NUM_CLASSES)
        matrix = ConfusionMatrix(num_classes, ignore_index=int(self.cfg.DATASET.IGNORE_INDEX))
        total, done, start = len(self.dataset), 0, time.perf_counter()
        with BatchLoader(self.dataset, self.batch_size, self.num_workers, drop_last=False) as loader:
            for batch in loader.epoch(0):
                pred = self.predict(batch["image"])
                matrix.update(pred, batch["label"][:, 0], batch["mask"][:, 0])
                done += len(pred)
                if progress is not None:
                    progress(done, total)
        names = list(self.cfg.DATASET.CLASS_NAMES or [])
        return EvalResult(matrix, done, time.perf_counter() - start, self.flip, self.scales, names)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class map [N,H,W] (int64) for a batch of normalised eval-size images [N,C,H,W]."""
        if not self.tta:
            program = self.programs[0]
            (pred,) = self.exe.run(program.built.main, feed={"image": images},
                                   fetch_list=[program.output], scope=self.scope)
            return np.asarray(pred)
        return np.argmax(self.probabilities(images), axis=1)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities [N,C,H,W] averaged over scales (and flips, if enabled)."""
        if not self.tta:
            raise RuntimeError("probabilities() needs flip or scales (the plain program fetches argmax)")
        acc = None
        for program in self.programs:
            views = [images] + ([images[:, :, :, ::-1]] if self.flip else [])
            for view_index, view in enumerate(views):
                batch = _resize_batch(view, program.built.image.shape[2:]) if program.scale != 1.0 \
                    else np.ascontiguousarray(view)
                (probs,) = self.exe.run(program.built.main, feed={"image": batch},
                                        fetch_list=[program.output], scope=self.scope)
                probs = np.asarray(probs)
                if view_index == 1:
                    probs = probs[:, :, :, ::-1]
                acc = probs if acc is None else acc + probs
        return acc / (len(self.programs) * (2 if self.flip else 1))


def _with_crop(cfg: Any, width: int, height: int) -> Any:
    import copy

    scaled = copy.deepcopy(cfg)
    scaled["EVAL_CROP_SIZE"] = (int(width), int(height))
    return scaled


def _resize_batch(images: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """Bilinear resize of normalised [N,C,H,W] images to (h, w) (OpenCV, as the data pipeline)."""
    import cv2

    height, width = int(hw[0]), int(hw[1])
    out = [cv2.resize(np.ascontiguousarray(img.transpose(1, 2, 0)), (width, height),
                      interpolation=cv2.INTER_LINEAR) for img in images]
    out = [o[:, :, None] if o.ndim == 2 else o for o in out]
    return np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2)).astype(np.float32)
