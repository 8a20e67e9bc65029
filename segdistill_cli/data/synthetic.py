"""Generated segmentation scenes for the demo and tests: real PNG files plus legacy list files.

Each scene has a textured background (class 0) and a few objects, one kind per class:
discs, boxes, stripe patches and rings (kinds cycle for more than 5 classes), plus a few small
ignore regions. Learnable but not trivial: object colours are jittered per instance and overlap
between classes (a ring is coloured like a disc and differs only by its hole; a stripe patch
alternates its colour with background-like stripes), objects occlude each other, and the image
carries Gaussian noise and lighting gradients.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import SegDistillError

KINDS = ("disc", "box", "stripes", "ring")
# BGR base colours per class (class 0 = background); more classes reuse the palette rotated.
_PALETTE = np.array([[90, 110, 100], [40, 60, 200], [200, 120, 40], [60, 190, 190],
                     [70, 90, 215], [180, 60, 170], [40, 160, 60], [150, 150, 230]], np.float32)


def class_kind(class_id: int) -> str:
    return KINDS[(class_id - 1) % len(KINDS)]


def class_color(class_id: int) -> np.ndarray:
    base = _PALETTE[class_id % len(_PALETTE)]
    return np.roll(base, class_id // len(_PALETTE)) if class_id >= len(_PALETTE) else base


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Low-frequency colour field around the background colour, plus a lighting gradient."""
    coarse = rng.normal(0, 25, size=(max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = (gx / w * rng.uniform(-30, 30) + gy / h * rng.uniform(-30, 30))[..., None]
    return class_color(0) + field + light


def _shape_mask(kind: str, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    size = min(w, h)
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    if kind in ("disc", "ring"):
        radius = int(rng.uniform(0.08, 0.22) * size) + 3
        cv2.circle(mask, (cx, cy), radius, 1, thickness=-1)
        if kind == "ring":
            cv2.circle(mask, (cx, cy), max(1, int(radius * rng.uniform(0.45, 0.7))), 0, thickness=-1)
    else:
        half_w = int(rng.uniform(0.08, 0.25) * size) + 3
        half_h = int(rng.uniform(0.08, 0.25) * size) + 3
        angle = rng.uniform(0, 180)
        box = cv2.boxPoints(((cx, cy), (2 * half_w, 2 * half_h), angle)).astype(np.int32)
        cv2.fillPoly(mask, [box], 1)
    return mask.astype(bool)


def _paint(img: np.ndarray, mask: np.ndarray, kind: str, class_id: int, rng: np.random.Generator) -> None:
    color = class_color(class_id) + rng.normal(0, 18, 3)
    if kind == "ring":  # coloured like the disc class: only the hole tells them apart
        color = class_color(1) + rng.normal(0, 18, 3) + 12
    if kind == "stripes":
        h, w = mask.shape
        gy, gx = np.mgrid[0:h, 0:w]
        theta, period = rng.uniform(0, np.pi), rng.uniform(5, 10)
        on = (np.sin((gx * np.cos(theta) + gy * np.sin(theta)) * 2 * np.pi / period) > 0)
        other = class_color(0) + rng.normal(0, 18, 3)
        img[mask & on] = color
        img[mask & ~on] = other
        return
    img[mask] = color


def make_scene(rng: np.random.Generator, size: tuple[int, int], num_classes: int,
               ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """One (BGR uint8 image [H,W,3], uint8 label [H,W]) pair."""
    w, h = size
    img = _background(rng, w, h)
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(3, 7))):
        class_id = int(rng.integers(1, num_classes))
        kind = class_kind(class_id)
        mask = _shape_mask(kind, rng, w, h)
        _paint(img, mask, kind, class_id, rng)
        label[mask] = class_id
    for _ in range(int(rng.integers(0, 3))):  # small ignore regions (e.g. unlabelled clutter)
        mask = np.zeros((h, w), np.uint8)
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(2, max(3, w // 12))), int(rng.integers(2, max(3, h // 12))))
        cv2.ellipse(mask, center, axes, rng.uniform(0, 180), 0, 360, 1, thickness=-1)
        mask = mask.astype(bool)
        img[mask] = rng.uniform(0, 255, size=(int(mask.sum()), 3))
        label[mask] = ignore_index
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def write_synthetic_dataset(root: str | os.PathLike, n_train: int, n_val: int,
                            size: tuple[int, int] = (128, 96), num_classes: int = 5,
                            ignore_index: int = 255, seed: int = 0) -> dict[str, Path]:
    """Write images/{split}/NNNN.png, labels/{split}/NNNN.png and {split}.list under `root`
    (list paths relative to root, "image label" lines). Returns {split: list path}."""
    if num_classes < 2 or num_classes > 255:
        raise SegDistillError(f"num_classes must be in 2..255, not {num_classes}")
    if 0 <= ignore_index < num_classes or ignore_index > 255:
        raise SegDistillError(f"ignore_index {ignore_index} must be >= num_classes and <= 255")
    root = Path(root)
    rng = np.random.default_rng(seed)
    lists = {}
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(count):
            img, label = make_scene(rng, size, num_classes, ignore_index)
            rel_img, rel_lab = f"images/{split}/{i:04d}.png", f"labels/{split}/{i:04d}.png"
            cv2.imwrite(str(root / rel_img), img)
            Image.fromarray(label, mode="L").save(root / rel_lab)
            lines.append(f"{rel_img} {rel_lab}\n")
        path = root / f"{split}.list"
        path.write_text("".join(lines), encoding="utf-8")
        lists[split] = path
    return lists
