"""The overlay picture `predict` (and the demo) write: input | prediction | ground truth.

What a reader needs to match colours to classes: every panel has a title, a legend below names
the colour of every class (and black = ignored/no class), and the prediction and the ground truth
are drawn the same way (solid class colours from one palette), so one class has one colour in both.

Small images (the demo's 64-pixel scenes) are enlarged by a whole factor, nearest neighbour (a
pixel stays one class), until a panel is at least MIN_PANEL_HEIGHT pixels high; larger images keep
their size, so the panels stay pixel-aligned with `pred/<name>.png`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .palettes import IGNORE_COLOR, colorize

MIN_PANEL_HEIGHT = 240
GAP = 8  # pixels between panels and around the picture
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
IGNORE_NAME = "ignored / no class"


@dataclass(frozen=True)
class Panel:
    title: str
    box: tuple[int, int, int, int]  # x, y, width, height of the image area in the picture


@dataclass
class Overlay:
    image: np.ndarray  # RGB uint8
    panels: list[Panel]
    legend: list[tuple[str, tuple[int, int, int]]]  # (name, colour), in class order
    scale: int  # how much each panel was enlarged


def draw_overlay(rgb: np.ndarray, pred: np.ndarray, colors: np.ndarray, names: Sequence[str],
                 label: Optional[np.ndarray] = None) -> Overlay:
    """The picture for one image: RGB input [H, W, 3], class maps [H, W]."""
    height, width = pred.shape
    scale = max(1, math.ceil(MIN_PANEL_HEIGHT / height))
    panels = [("input", rgb), ("prediction", colorize(pred, colors))]
    if label is not None:
        panels.append(("ground truth", colorize(label, colors)))
    font_px = max(14, round(height * scale / 18))
    font = ImageFont.load_default(size=font_px)
    title_h = font_px + GAP
    panel_w, panel_h = width * scale, height * scale
    total_w = GAP + len(panels) * (panel_w + GAP)
    legend = [(str(n), tuple(int(c) for c in colors[i])) for i, n in enumerate(names)]
    legend.append((IGNORE_NAME, IGNORE_COLOR))
    legend_rows = _legend_rows(legend, font, font_px, total_w)
    legend_h = len(legend_rows) * (font_px + GAP)
    picture = Image.new("RGB", (total_w, GAP + title_h + panel_h + GAP + legend_h + GAP),
                        BACKGROUND)
    draw = ImageDraw.Draw(picture)
    placed = []
    for index, (title, pixels) in enumerate(panels):
        x, y = GAP + index * (panel_w + GAP), GAP + title_h
        image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
        if scale > 1:
            image = image.resize((panel_w, panel_h), Image.NEAREST)
        picture.paste(image, (x, y))
        draw.text((x + panel_w // 2, GAP + title_h // 2 - GAP // 2), title, fill=TEXT_COLOR,
                  font=font, anchor="mm")
        placed.append(Panel(title, (x, y, panel_w, panel_h)))
    _draw_legend(draw, legend_rows, font, font_px, GAP + title_h + panel_h + GAP)
    return Overlay(np.asarray(picture), placed, legend, scale)


def _legend_rows(legend, font, font_px: int, width: int) -> list[list[tuple[str, tuple]]]:
    """Entries (swatch + name) flowed left to right into rows that fit `width`."""
    rows: list[list] = [[]]
    x = GAP
    for name, color in legend:
        entry_w = font_px + GAP // 2 + int(font.getlength(name)) + 2 * GAP
        if rows[-1] and x + entry_w > width:
            rows.append([])
            x = GAP
        rows[-1].append((name, color))
        x += entry_w
    return rows


def _draw_legend(draw, rows, font, font_px: int, top: int) -> None:
    for number, row in enumerate(rows):
        x, y = GAP, top + number * (font_px + GAP)
        for name, color in row:
            draw.rectangle((x, y, x + font_px - 1, y + font_px - 1), fill=color,
                           outline=TEXT_COLOR)
            x += font_px + GAP // 2
            draw.text((x, y + font_px // 2), name, fill=TEXT_COLOR, font=font, anchor="lm")
            x += int(font.getlength(name)) + 2 * GAP
