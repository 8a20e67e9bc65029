"""The legacy PaddleSeg confusion matrix and the numbers derived from it.

Rows are ground-truth labels, columns are predictions, counted over valid pixels only. The
definitions follow `pdseg/metrics.py` so published mIoUs compare like with like:

* mIoU is the mean over **all** `num_classes` (a class absent from both labels and predictions
  counts as IoU 0, which lowers the mean). `mean_iou_present()` is the extra, non-legacy mean
  over classes that occur in the labels.
* per-class "acc" is `cm[c, c] / column_sum[c]`: the fraction of pixels *predicted* as c that
  are c, i.e. precision, not recall. Legacy called it accuracy; we keep the name and meaning.
* kappa is Cohen's kappa from the same matrix.

Pure numpy (no Paddle): the evaluator feeds it numpy arrays fetched from the executor. Multi-GPU
evaluation sums per-rank matrices with `merge` or `+`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class ConfusionMatrix:
    """A streaming `num_classes x num_classes` int64 confusion matrix (rows = label, cols = pred)."""

    def __init__(self, num_classes: int, ignore_index: Optional[int] = None):
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    # ---- accumulation -------------------------------------------------------------------------

    def update(self, pred: np.ndarray, label: np.ndarray, mask: Optional[np.ndarray] = None
               ) -> "ConfusionMatrix":
        """Add one batch. `pred` and `label` hold class ids of the same number of pixels (any
        shape, e.g. [N,1,H,W] vs [N,H,W,1]); `mask` (same size, nonzero = valid) selects pixels,
        otherwise pixels whose label equals `ignore_index` are skipped.
        """
        pred = np.asarray(pred).reshape(-1).astype(np.int64, copy=False)
        label = np.asarray(label).reshape(-1).astype(np.int64, copy=False)
        if pred.size != label.size:
            raise ValueError(f"pred has {pred.size} pixels, label {label.size}")
        if mask is not None:
            valid = np.asarray(mask).reshape(-1) != 0
            if valid.size != label.size:
                raise ValueError(f"mask has {valid.size} pixels, label {label.size}")
        elif self.ignore_index is not None:
            valid = label != self.ignore_index
        else:
            valid = np.ones(label.shape, dtype=bool)
        pred, label = pred[valid], label[valid]
        n = self.num_classes
        bad = (label < 0) | (label >= n) | (pred < 0) | (pred >= n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"class id out of range [0, {n}): label {label[i]}, pred {pred[i]} "
                             "(is IGNORE_INDEX set right?)")
        # One bincount over the flattened (label, pred) index: fast and exact in int64.
        counts = np.bincount(label * n + pred, minlength=n * n)
        self.matrix += counts.reshape(n, n)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix in place (e.g. one computed on another GPU)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class and {self.num_classes}-class "
                             "matrices")
        self.matrix += other.matrix
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        total = ConfusionMatrix(self.num_classes, self.ignore_index)
        total.matrix = self.matrix.copy()
        return total.merge(other)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, ignore_index: Optional[int] = None) -> "ConfusionMatrix":
        matrix = np.asarray(matrix, dtype=np.int64)
        cm = cls(matrix.shape[0], ignore_index)
        cm.matrix = matrix.copy()
        return cm

    def reset(self) -> None:
        self.matrix[:] = 0

    # ---- derived numbers ----------------------------------------------------------------------

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def class_iou(self) -> np.ndarray:
        """IoU_c = cm[c,c] / (rowsum_c + colsum_c - cm[c,c]); 0 where the denominator is 0."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=1) + self.matrix.sum(axis=0) - tp
        return np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)

    def mean_iou(self) -> float:
        """Legacy mIoU: the mean over all num_classes, absent classes counting as 0."""
        return float(self.class_iou().mean())

    def mean_iou_present(self) -> float:
        """Not legacy: the mean IoU over classes that occur in the labels (row sum > 0)."""
        present = self.matrix.sum(axis=1) > 0
        return float(self.class_iou()[present].mean()) if present.any() else 0.0

    def accuracy(self) -> float:
        """Overall pixel accuracy: trace / total (0 for an empty matrix)."""
        total = self.total
        return float(np.trace(self.matrix) / total) if total else 0.0

    def class_accuracy(self) -> np.ndarray:
        """Legacy per-class "acc": cm[c,c] / colsum_c (precision); 0 where nothing was predicted c."""
        tp = np.diag(self.matrix).astype(np.float64)
        predicted = self.matrix.sum(axis=0).astype(np.float64)
        return np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)

    def kappa(self) -> float:
        """Cohen's kappa: (po - pe) / (1 - pe), pe = sum_c rowsum_c * colsum_c / total^2."""
        total = float(self.total)
        if total == 0:
            return 0.0
        # float64 products: legacy divided by 1e4 first to dodge int overflow; not needed here.
        rows = self.matrix.sum(axis=1).astype(np.float64)
        cols = self.matrix.sum(axis=0).astype(np.float64)
        po = np.trace(self.matrix) / total
        pe = float((rows * cols).sum()) / (total * total)
        return float((po - pe) / (1.0 - pe)) if pe != 1.0 else 0.0

    def summary(self) -> dict:
        """Everything the evaluator prints or records, as plain Python numbers."""
        return {
            "mean_iou": self.mean_iou(),
            "mean_iou_present": self.mean_iou_present(),
            "accuracy": self.accuracy(),
            "kappa": self.kappa(),
            "class_iou": self.class_iou().tolist(),
            "class_accuracy": self.class_accuracy().tolist(),
            "pixels": self.total,
        }
