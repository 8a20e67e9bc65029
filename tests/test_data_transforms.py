"""The legacy augmentation keeps image and label aligned, pads correctly and normalises exactly."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from segdistill_cli.config import load_config
from segdistill_cli.data.transforms import (AugParams, EvalSizeError, eval_transform, normalize,
                                            random_scale, train_transform)

IGNORE = 250
# Colour of each class: the label is a function of the pixel colour (BGR).
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


def _params(**aug) -> AugParams:
    sets = ["TRAIN_CROP_SIZE=(90, 70)", "EVAL_CROP_SIZE=(100, 80)", f"DATASET.IGNORE_INDEX={IGNORE}",
            "AUG.MIRROR=True", "AUG.FLIP=True", "AUG.FLIP_RATIO=0.5"]
    sets += [f"{k}={v}" for k, v in aug.items()]
    return AugParams.from_config(load_config(None, sets))


def _blocks(rng: np.random.Generator, w: int = 96, h: int = 72, cell: int = 12):
    """Label made of big constant blocks (so interpolation only blurs block edges)."""
    coarse = rng.integers(0, len(PALETTE), size=(h // cell, w // cell))
    label = np.kron(coarse, np.ones((cell, cell), np.int64)).astype(np.uint8)
    return PALETTE[label].copy(), label


def _agreement(img: np.ndarray, label: np.ndarray) -> float:
    """Fraction of labelled pixels whose colour is nearest to their own class colour."""
    valid = label != IGNORE
    dist = np.abs(img[valid][:, None, :].astype(int) - PALETTE[None].astype(int)).sum(axis=2)
    return float((dist.argmin(axis=1) == label[valid]).mean())


def _assert_padding(img: np.ndarray, label: np.ndarray, p: AugParams) -> None:
    pad = label == IGNORE
    assert np.allclose(img[pad], np.array(p.padding_value).round().astype(np.uint8)), "pad colour"


@pytest.mark.parametrize("seed", range(12))
def test_flip_mirror_crop_pad_are_exact(seed):
    # scale fixed at 1.0: every step is pure indexing, so colours and classes must match exactly.
    p = _params(**{"AUG.AUG_METHOD": "stepscaling", "AUG.MIN_SCALE_FACTOR": 1.0,
                   "AUG.MAX_SCALE_FACTOR": 1.0})
    rng = np.random.default_rng(seed)
    img, label = _blocks(rng)
    out_img, out_label = train_transform(img, label, p, np.random.default_rng(seed + 100))
    assert out_img.shape == (70, 90, 3) and out_label.shape == (70, 90)
    assert _agreement(out_img, out_label) == 1.0


def test_crop_larger_than_image_pads_bottom_right_with_ignore():
    p = dataclasses.replace(_params(**{"AUG.AUG_METHOD": "stepscaling", "AUG.MIN_SCALE_FACTOR": 1.0,
                                       "AUG.MAX_SCALE_FACTOR": 1.0, "AUG.MIRROR": False,
                                       "AUG.FLIP": False}), train_crop=(120, 100))
    img, label = _blocks(np.random.default_rng(0))
    out_img, out_label = train_transform(img, label, p, np.random.default_rng(0))
    # 96x72 padded to 120x100 and the crop equals the padded canvas: the original sits top-left.
    assert np.array_equal(out_label[:72, :96], label) and np.array_equal(out_img[:72, :96], img)
    assert (out_label[72:] == IGNORE).all() and (out_label[:, 96:] == IGNORE).all()
    _assert_padding(out_img, out_label, p)


def test_flips_happen_and_follow_the_label():
    p = _params(**{"AUG.AUG_METHOD": "stepscaling", "AUG.MIN_SCALE_FACTOR": 1.0,
                   "AUG.MAX_SCALE_FACTOR": 1.0, "AUG.FLIP_RATIO": 1.0})
    p = dataclasses.replace(p, train_crop=(96, 72))  # no crop: the output is the flipped input
    img, label = _blocks(np.random.default_rng(3))
    seen = set()
    for seed in range(16):
        _, out = train_transform(img, label, p, np.random.default_rng(seed))
        seen.add("mirror" if np.array_equal(out, label[::-1, ::-1]) else
                 "flip" if np.array_equal(out, label[::-1]) else "?")
    assert seen == {"mirror", "flip"}  # FLIP_RATIO 1 -> always vertical; mirror half the time


@pytest.mark.parametrize("seed", range(8))
def test_stepscaling_keeps_alignment(seed):
    p = _params(**{"AUG.AUG_METHOD": "stepscaling"})
    img, label = _blocks(np.random.default_rng(seed))
    out_img, out_label = train_transform(img, label, p, np.random.default_rng(seed))
    assert _agreement(out_img, out_label) > 0.97  # a flipped/shifted label scores < 0.6


@pytest.mark.parametrize("seed", range(6))
def test_rangescaling_and_rich_crop_rotation_keep_alignment(seed):
    p = _params(**{"AUG.AUG_METHOD": "rangescaling", "AUG.MIN_RESIZE_VALUE": 80,
                   "AUG.MAX_RESIZE_VALUE": 140, "AUG.RICH_CROP.ENABLE": True,
                   "AUG.RICH_CROP.MAX_ROTATION": 30,
                   "AUG.RICH_CROP.BRIGHTNESS_JITTER_RATIO": 0,
                   "AUG.RICH_CROP.SATURATION_JITTER_RATIO": 0,
                   "AUG.RICH_CROP.CONTRAST_JITTER_RATIO": 0})
    img, label = _blocks(np.random.default_rng(seed))
    out_img, out_label = train_transform(img, label, p, np.random.default_rng(seed))
    assert _agreement(out_img, out_label) > 0.8  # interpolation blurs edges; misaligned < 0.6


def test_rotation_grows_canvas_with_ignore_corners():
    from segdistill_cli.data.transforms import random_rotation

    img, label = _blocks(np.random.default_rng(1))
    p = _params()
    out_img, out_label = random_rotation(img, label, 30, p.padding_value, IGNORE,
                                         np.random.default_rng(5))
    assert out_label.shape[0] > label.shape[0] or out_label.shape[1] > label.shape[1]
    assert out_label[0, 0] == IGNORE and out_label[-1, -1] == IGNORE
    assert (out_img[0, 0] == 128).all() and (out_img[-1, -1] == 128).all()  # PADDING_VALUE 127.5
    assert _agreement(out_img, out_label) > 0.9


def test_random_scale_draws_only_legacy_steps():
    rng = np.random.default_rng(0)
    draws = {random_scale(rng, 0.5, 2.0, 0.25) for _ in range(400)}
    assert draws == {0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}


def test_eval_pads_and_rejects_too_large_images():
    p = _params(**{"AUG.AUG_METHOD": "stepscaling"})
    img, label = _blocks(np.random.default_rng(0))
    out_img, out_label = eval_transform(img, label, p)
    assert out_label.shape == (80, 100)
    assert np.array_equal(out_label[:72, :96], label) and (out_label[72:] == IGNORE).all()
    with pytest.raises(EvalSizeError, match="EVAL_CROP_SIZE"):
        eval_transform(np.zeros((90, 50, 3), np.uint8), np.zeros((90, 50), np.uint8), p)
    # rangescaling eval resizes the long side to INF_RESIZE_VALUE, unpadding to FIX_RESIZE_SIZE.
    p = _params(**{"AUG.AUG_METHOD": "rangescaling", "AUG.INF_RESIZE_VALUE": 48})
    assert eval_transform(img, label, p)[1][:36, :48].max() < len(PALETTE)
    p = _params(**{"AUG.AUG_METHOD": "unpadding", "AUG.FIX_RESIZE_SIZE": "(100, 80)"})
    assert (eval_transform(img, label, p)[1] != IGNORE).all()


def test_normalize_is_legacy_formula():
    img = np.array([[[0, 127, 255]]], np.uint8)
    out = normalize(img, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    assert np.allclose(out.ravel(), [-1.0, 127 / 255 / 0.5 - 1, 1.0])
