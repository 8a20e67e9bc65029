"""Evaluation as legacy `pdseg/eval.py`: the val list padded to EVAL_CROP_SIZE, argmax at full
resolution, a streaming confusion matrix over valid pixels. Optional test-time augmentation
(horizontal flip, several scales: softmax probabilities averaged), reported as such.

TTA works on the padded eval-size input as a whole: the mirror view has its padding on the left,
and each scale resizes the padded image (then the probabilities back to the eval size).

`Predictor` runs the eval program(s) on normalised eval-size batches (used by `eval`, `predict`
and `export`); `Evaluator` adds the val list and the confusion matrix.

The eval programs share the caller's scope: parameters have the legacy names in every program, so
during training the evaluator reads the student's current weights with no copy, and one weight load
serves every scale.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..data.dataset import SegDataset
from ..data.loader import loader_from_config
from ..errors import ConfigError
from ..paddle_env import import_paddle
from ..palettes import class_names as _class_names
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
    shards: int = 1  # how many workers' matrices were summed

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else 0.0

    @property
    def tta(self) -> bool:
        return self.flip or tuple(self.scales) != (1.0,)

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
            "seconds": round(self.seconds, 3), "shards": self.shards,
            "confusion_matrix": m.matrix.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EvalResult":
        """The inverse of `to_json` (the derived numbers come again from the matrix)."""
        matrix = ConfusionMatrix.from_matrix(np.asarray(data["confusion_matrix"], dtype=np.int64))
        return cls(matrix, int(data["num_images"]), float(data["seconds"]), bool(data["flip"]),
                   tuple(data["scales"]), list(data["class_names"]), int(data["shards"]))


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
    output: Any  # argmax [N,H,W] (plain) or softmax [N,C,H,W] resized to the eval size (TTA)


class Predictor:
    """Class maps / probabilities for normalised eval-size batches [N,C,H,W] with the weights in
    `scope`. `flip` adds the horizontally mirrored batch; `scales` runs the model on the batch
    resized by each factor; with either, softmax probabilities are averaged (then argmax).

    Each program computes only what is fetched (the executor runs every op of a program): the
    argmax without TTA, the probabilities with it.
    """

    def __init__(self, cfg: Any, scope: Any, place: Any, exe: Any = None, flip: bool = False,
                 scales: Sequence[float] = (1.0,)):
        self.paddle = import_paddle()
        self.cfg, self.scope, self.place = cfg, scope, place
        self.exe = exe or self.paddle.static.Executor(place)
        self.flip, self.scales = bool(flip), tuple(float(s) for s in scales)
        if not self.scales:
            raise ConfigError("--scales: give at least one scale")
        self.tta = self.flip or self.scales != (1.0,)
        _, _, self.height, self.width = feed_shape(cfg, "EVAL_CROP_SIZE")
        self.programs = [self._build(s) for s in self.scales]

    @property
    def main_program(self) -> Any:
        """The first scale's eval program (every scale has the same parameters)."""
        return self.programs[0].built.main

    def _build(self, scale: float) -> _ScaleProgram:
        functional = self.paddle.nn.functional
        cfg = self.cfg if scale == 1.0 else _with_crop(self.cfg, round(self.width * scale),
                                                        round(self.height * scale))
        built = build_eval(cfg)
        with built.guard():
            if not self.tta:
                return _ScaleProgram(scale, built, self.paddle.argmax(built.logits, axis=1))
            probs = functional.softmax(built.logits, axis=1)
            if scale != 1.0:  # back to the eval size, like legacy's resizes (corners aligned)
                probs = functional.interpolate(probs, size=[self.height, self.width],
                                               mode="bilinear", align_corners=True)
        return _ScaleProgram(scale, built, probs)

    def _run(self, program: _ScaleProgram, images: np.ndarray, output: Any) -> np.ndarray:
        (value,) = self.exe.run(program.built.main, feed={"image": images}, fetch_list=[output],
                                scope=self.scope)
        return np.asarray(value)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class map [N,H,W] (int64)."""
        if not self.tta:
            program = self.programs[0]
            return self._run(program, np.ascontiguousarray(images, np.float32), program.output)
        return np.argmax(self.probabilities(images), axis=1)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities [N,C,H,W], averaged over scales and (with flip) mirror views."""
        if not self.tta:  # the plain program fetches the argmax; softmax the logits here
            program = self.programs[0]
            logits = self._run(program, np.ascontiguousarray(images, np.float32),
                               program.built.logits)
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        total, views = None, 0
        for program in self.programs:
            for mirror in ([False, True] if self.flip else [False]):
                view = images[:, :, :, ::-1] if mirror else images
                if program.scale != 1.0:
                    view = _resize_batch(view, program.built.image.shape[2:])
                probs = self._run(program, np.ascontiguousarray(view, np.float32),
                                  program.output)
                if mirror:
                    probs = probs[:, :, :, ::-1]
                total = probs if total is None else total + probs
                views += 1
        return total / views


class Evaluator:
    """Evaluate `cfg`'s model on its VAL list (or `list_file`) with the weights present in `scope`.

    `shard=(k, n)` evaluates the k-th of n contiguous parts of the list (a multi-worker eval sums
    the n matrices, which equals the single-process matrix).
    """

    def __init__(self, cfg: Any, scope: Any, place: Any, exe: Any = None, flip: bool = False,
                 scales: Sequence[float] = (1.0,), batch_size: Optional[int] = None,
                 shard: tuple[int, int] = (0, 1), list_file: Optional[str] = None,
                 num_workers: Optional[int] = None):
        self.cfg = cfg
        self.dataset = SegDataset(cfg, mode="eval", shard=shard, list_file=list_file)
        self.batch_size = int(batch_size or cfg.BATCH_SIZE)
        self.num_workers = int(cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers)
        self.predictor = Predictor(cfg, scope, place, exe, flip, scales)
        self.flip, self.scales = self.predictor.flip, self.predictor.scales
        self.scope, self.place, self.exe = scope, place, self.predictor.exe

    @property
    def main_program(self) -> Any:
        """An eval program to load weights into (all scales share its parameters)."""
        return self.predictor.main_program

    def evaluate(self, progress: Optional[Callable[[int, int], None]] = None) -> EvalResult:
        """Run over the list; `progress(done_images, total_images)` after each batch."""
        num_classes = int(self.cfg.DATASET.NUM_CLASSES)
        matrix = ConfusionMatrix(num_classes, ignore_index=int(self.cfg.DATASET.IGNORE_INDEX))
        total, done, start = len(self.dataset), 0, time.perf_counter()
        if total:
            # Fewer workers than batches only costs start-up time.
            batches = -(-total // self.batch_size)
            workers = min(self.num_workers, max(0, batches - 1))
            with loader_from_config(self.cfg, self.dataset, self.batch_size, workers) as loader:
                for batch in loader.epoch(0):
                    pred = self.predictor.predict(batch["image"])
                    matrix.update(pred, batch["label"][:, 0], batch["mask"][:, 0])
                    done += len(pred)
                    if progress is not None:
                        progress(done, total)
        return EvalResult(matrix, done, time.perf_counter() - start, self.flip, self.scales,
                          _class_names(self.cfg))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class map [N,H,W] (int64) for a batch of normalised eval-size images [N,C,H,W]."""
        return self.predictor.predict(images)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities [N,C,H,W] (averaged over the TTA views, if any)."""
        return self.predictor.probabilities(images)


def _with_crop(cfg: Any, width: int, height: int) -> Any:
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
