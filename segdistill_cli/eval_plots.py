"""`segdistill eval --plots DIR`: the confusion matrix (rows normalised: where each true class went)
and the per-class IoU as PNGs. matplotlib with the Agg backend (no display needed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import atomic_open

CONFUSION_PNG = "confusion_matrix.png"
IOU_PNG = "class_iou.png"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # before pyplot; headless servers have no display
    import matplotlib.pyplot as plt

    return plt


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row (true class) divided by its pixel count; rows without pixels stay 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)


def save_png(fig: Any, path: Path) -> None:
    """Write via a temporary file and rename: never a half-written PNG."""
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=100, bbox_inches="tight")


CELL_INCHES = 0.6  # one confusion-matrix cell; room for "0.95" at CELL_FONT_PT
CELL_FONT_PT = 10  # at the saved 100 dpi: about 14 px high, readable without zooming
LABEL_FONT_PT = 10


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str) -> Any:
    """The row-normalised confusion matrix as a figure (the caller closes it)."""
    plt = pyplot()
    norm = row_normalised(matrix)
    n = len(names)
    size = max(6.0, CELL_INCHES * n + 3.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=names, rotation=60, ha="right", fontsize=LABEL_FONT_PT)
    ax.set_yticks(range(n), labels=names, fontsize=LABEL_FONT_PT)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for (row, col), value in np.ndenumerate(norm):
        if value >= 0.005:
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=CELL_FONT_PT,
                    color="white" if value > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return fig


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: Path, title: str) -> Path:
    plt = pyplot()
    fig = confusion_figure(matrix, names, title)
    try:
        save_png(fig, path)
    finally:
        plt.close(fig)
    return path


def plot_class_iou(iou: Sequence[float], names: Sequence[str], path: Path, title: str) -> Path:
    plt = pyplot()
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * n + 2.0), 4.5))
    try:
        bars = ax.bar(range(n), iou, color="tab:blue")
        ax.axhline(float(np.mean(iou)) if n else 0.0, color="tab:red", linestyle="--",
                   label=f"mIoU {float(np.mean(iou)) if n else 0.0:.4f}")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in iou], fontsize=9)
        ax.set_xticks(range(n), labels=names, rotation=60, ha="right", fontsize=LABEL_FONT_PT)
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel("IoU")
        ax.set_title(title)
        ax.legend(loc="upper right")
        save_png(fig, path)
    finally:
        plt.close(fig)
    return path


def write_plots(result: Any, folder: str | os.PathLike, title: str = "") -> list[Path]:
    """Both PNGs for an EvalResult into `folder` (created); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(result.class_names)
    matrix = result.matrix
    suffix = f" — {title}" if title else ""
    return [
        plot_confusion(matrix.matrix, names, folder / CONFUSION_PNG,
                       f"Confusion matrix (row-normalised){suffix}"),
        plot_class_iou([float(v) for v in matrix.class_iou()], names, folder / IOU_PNG,
                       f"Per-class IoU{suffix}"),
    ]
