"""The legacy training/eval augmentation (pdseg/data_aug.py + reader.process_image), one function
per step, every random draw taken from an explicit `np.random.Generator`.

Order (as legacy), train: resize (AUG_METHOD) -> RICH_CROP (blur, rotation,
aspect crop, colour jitter) -> vertical FLIP -> horizontal MIRROR -> random crop with bottom/right
padding -> normalise. Eval: resize for eval -> bottom/right padding to EVAL_CROP_SIZE -> normalise.

Images are BGR uint8 [H, W, C] (as cv2 decodes them; never converted to RGB, the pretrained weights
expect BGR). Labels are [H, W] integer class ids; image interpolation is bilinear, labels nearest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class AugParams:
    """The config values the pipeline reads, as a small picklable object for worker processes."""

    method: str
    fix_resize_size: tuple[int, int]  # (W, H)
    min_scale: float
    max_scale: float
    scale_step: float
    min_resize: int
    max_resize: int
    inf_resize: int
    mirror: bool
    flip: bool
    flip_ratio: float
    rich_crop: bool
    max_rotation: float
    min_area_ratio: float
    aspect_ratio: float
    brightness_jitter: float
    saturation_jitter: float
    contrast_jitter: float
    blur: bool
    blur_ratio: float
    train_crop: tuple[int, int]  # (W, H)
    eval_crop: tuple[int, int]  # (W, H)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    padding_value: tuple[float, ...]
    ignore_index: int

    @classmethod
    def from_config(cls, cfg: Any) -> "AugParams":
        aug, rich = cfg.AUG, cfg.AUG.RICH_CROP
        return cls(
            method=aug.AUG_METHOD, fix_resize_size=tuple(aug.FIX_RESIZE_SIZE),
            min_scale=aug.MIN_SCALE_FACTOR, max_scale=aug.MAX_SCALE_FACTOR,
            scale_step=aug.SCALE_STEP_SIZE, min_resize=aug.MIN_RESIZE_VALUE,
            max_resize=aug.MAX_RESIZE_VALUE, inf_resize=aug.INF_RESIZE_VALUE,
            mirror=aug.MIRROR, flip=aug.FLIP, flip_ratio=aug.FLIP_RATIO,
            rich_crop=rich.ENABLE, max_rotation=rich.MAX_ROTATION,
            min_area_ratio=rich.MIN_AREA_RATIO, aspect_ratio=rich.ASPECT_RATIO,
            brightness_jitter=rich.BRIGHTNESS_JITTER_RATIO,
            saturation_jitter=rich.SATURATION_JITTER_RATIO,
            contrast_jitter=rich.CONTRAST_JITTER_RATIO, blur=rich.BLUR, blur_ratio=rich.BLUR_RATIO,
            train_crop=tuple(cfg.TRAIN_CROP_SIZE), eval_crop=tuple(cfg.EVAL_CROP_SIZE),
            mean=tuple(cfg.MEAN), std=tuple(cfg.STD),
            padding_value=tuple(cfg.DATASET.PADDING_VALUE),
            ignore_index=int(cfg.DATASET.IGNORE_INDEX),
        )


# ---- resize -------------------------------------------------------------------------------------


def random_scale(rng: np.random.Generator, lo: float, hi: float, step: float) -> float:
    """Legacy get_random_scale: uniform over linspace(lo, hi, int((hi-lo)/step + 1))."""
    if lo < 0 or lo > hi:
        raise ValueError(f"AUG.MIN_SCALE_FACTOR {lo} must be in [0, MAX_SCALE_FACTOR {hi}]")
    if lo == hi:
        return lo
    if step == 0:
        return float(rng.uniform(lo, hi))
    steps = int((hi - lo) / step + 1)
    return float(rng.choice(np.linspace(lo, hi, steps)))


def scale_pair(img: Array, label: Array | None, scale: float) -> tuple[Array, Array | None]:
    """Legacy randomly_scale_image_and_label: new size int(dim * scale + 0.5); 1.0 = unchanged."""
    if scale == 1.0:
        return img, label
    size = (int(img.shape[1] * scale + 0.5), int(img.shape[0] * scale + 0.5))
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return img, label


def _resize_to(img: Array, label: Array | None, size: tuple[int, int]) -> tuple[Array, Array | None]:
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return img, label


def _resize_long_side(img: Array, label: Array | None, long_side: int) -> tuple[Array, Array | None]:
    scale = float(long_side) / float(max(img.shape[0], img.shape[1]))
    img = cv2.resize(img, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    return img, label


def resize(img: Array, label: Array | None, p: AugParams, train: bool,
           rng: np.random.Generator | None = None) -> tuple[Array, Array | None]:
    """AUG_METHOD: unpadding = FIX_RESIZE_SIZE always; stepscaling = random step scale in train,
    nothing in eval; rangescaling = long side to a random int in [MIN, MAX]_RESIZE_VALUE in train,
    INF_RESIZE_VALUE in eval."""
    if p.method == "unpadding":
        return _resize_to(img, label, p.fix_resize_size)
    if p.method == "stepscaling":
        if not train:
            return img, label
        return scale_pair(img, label, random_scale(rng, p.min_scale, p.max_scale, p.scale_step))
    if p.method == "rangescaling":
        if not train:
            long_side = p.inf_resize
        elif p.min_resize == p.max_resize:
            long_side = p.min_resize
        else:
            long_side = int(rng.uniform(p.min_resize, p.max_resize) + 0.5)
        return _resize_long_side(img, label, long_side)
    raise ValueError(f"unexpected AUG.AUG_METHOD {p.method!r}")


# ---- RICH_CROP ----------------------------------------------------------------------------------


def _one_in(ratio: float) -> int:
    """Legacy probability encoding: ratio <= 0 -> never (0), >= 1 -> always (1), else int(1/ratio)."""
    if ratio <= 0:
        return 0
    if ratio >= 1:
        return 1
    return int(1.0 / ratio)


def random_blur(img: Array, ratio: float, rng: np.random.Generator) -> Array:
    n = _one_in(ratio)
    if n > 0 and rng.integers(0, n) == 0:
        radius = int(rng.integers(3, 10))
        radius = min(radius + 1 if radius % 2 != 1 else radius, 9)
        img = cv2.GaussianBlur(img, (radius, radius), 0, 0)
    return img


def random_rotation(img: Array, label: Array, max_rotation: float, pad_value: tuple[float, ...],
                    ignore_index: int, rng: np.random.Generator) -> tuple[Array, Array]:
    """Rotate by U(-max, max) degrees about the centre, enlarging the canvas to hold the whole
    rotated image; new pixels are PADDING_VALUE / IGNORE_INDEX."""
    if max_rotation <= 0:
        return img, label
    h, w = img.shape[:2]
    angle = rng.uniform(-max_rotation, max_rotation)
    centre = (w // 2, h // 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(h * sin + w * cos), int(h * cos + w * sin)
    matrix[0, 2] += new_w / 2 - centre[0]
    matrix[1, 2] += new_h / 2 - centre[1]
    img = cv2.warpAffine(img, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=pad_value)
    label = cv2.warpAffine(label, matrix, (new_w, new_h), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=ignore_index)
    return img, label


def random_aspect_crop(img: Array, label: Array, min_area: float, aspect: float,
                       rng: np.random.Generator) -> tuple[Array, Array]:
    """Legacy rand_scale_aspect: up to 10 tries for a crop of area >= min_area and aspect in
    [aspect, 1/aspect] (sides swapped half the time), resized back to the original size."""
    if min_area == 0 or aspect == 0:
        return img, label
    h, w = img.shape[:2]
    for _ in range(10):
        target_area = h * w * rng.uniform(min_area, 1.0)
        ratio = rng.uniform(aspect, 1.0 / aspect)
        dw, dh = int(np.sqrt(target_area * ratio)), int(np.sqrt(target_area / ratio))
        if rng.integers(10) < 5:
            dw, dh = dh, dw
        if dh < h and dw < w:
            y, x = int(rng.integers(0, h - dh)), int(rng.integers(0, w - dw))
            img = cv2.resize(img[y:y + dh, x:x + dw], (w, h), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label[y:y + dh, x:x + dw], (w, h), interpolation=cv2.INTER_NEAREST)
            break
    return img, label


def _blend(img: Array, other: Array | float, amount: float) -> Array:
    out = img.astype(np.float32) * (1 - amount) + amount * other
    # Legacy clipped only the top (np.where(x > 255, 255, x)); a negative jitter amount pushes dark
    # pixels below 0, which uint8 would wrap to bright values, so clip both ends.
    return np.clip(out, 0, 255).astype(np.uint8)


def _grey(img: Array) -> Array:
    return cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_BGR2GRAY).astype(np.float32)


def color_jitter(img: Array, brightness: float, saturation: float, contrast: float,
                 rng: np.random.Generator) -> Array:
    """Saturation / brightness / contrast, each by U(-r, r), applied in random order.

    Legacy shuffled the order list [1, 2, 3] while saturation had code 0, so saturation was never
    applied (and some versions dropped the result altogether); this applies all three, as its
    docstring intended."""
    if brightness <= 0 and saturation <= 0 and contrast <= 0:
        return img
    amounts = {"saturation": rng.uniform(-saturation, saturation),
               "brightness": rng.uniform(-brightness, brightness),
               "contrast": rng.uniform(-contrast, contrast)}
    for name in rng.permutation(list(amounts)):
        amount = amounts[name]
        if name == "brightness":
            img = _blend(img, 0.0, amount)
        elif name == "saturation":
            img = _blend(img, _grey(img)[:, :, None], amount)
        else:
            img = _blend(img, float(_grey(img).mean()), amount)
    return img


def rich_crop(img: Array, label: Array, p: AugParams, rng: np.random.Generator) -> tuple[Array, Array]:
    if p.blur:
        img = random_blur(img, p.blur_ratio, rng)
    img, label = random_rotation(img, label, p.max_rotation, p.padding_value, p.ignore_index, rng)
    img, label = random_aspect_crop(img, label, p.min_area_ratio, p.aspect_ratio, rng)
    img = color_jitter(img, p.brightness_jitter, p.saturation_jitter, p.contrast_jitter, rng)
    return img, label


# ---- flips, crop, padding, normalisation --------------------------------------------------------


def random_flip(img: Array, label: Array, ratio: float, rng: np.random.Generator) -> tuple[Array, Array]:
    """Vertical flip with probability 1/int(1/FLIP_RATIO) (legacy encoding)."""
    n = _one_in(ratio)
    if n > 0 and rng.integers(0, n) == 0:
        return img[::-1], label[::-1]
    return img, label


def random_mirror(img: Array, label: Array, rng: np.random.Generator) -> tuple[Array, Array]:
    """Horizontal flip with probability 1/2."""
    if rng.integers(0, 2) == 1:
        return img[:, ::-1], label[:, ::-1]
    return img, label


def pad_bottom_right(img: Array, label: Array | None, size: tuple[int, int], pad_value: tuple[float, ...],
                     ignore_index: int) -> tuple[Array, Array | None]:
    """Pad to at least size=(W, H) at the bottom/right: image PADDING_VALUE, label IGNORE_INDEX."""
    pad_h, pad_w = max(size[1] - img.shape[0], 0), max(size[0] - img.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return img, label
    # Flips leave negative-stride views, which cv2 refuses.
    img = np.ascontiguousarray(img)
    label = None if label is None else np.ascontiguousarray(label)
    img = cv2.copyMakeBorder(img, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=pad_value)
    if label is not None:
        label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=ignore_index)
    return img, label


def random_crop(img: Array, label: Array, p: AugParams, rng: np.random.Generator) -> tuple[Array, Array]:
    """Legacy rand_crop (train): pad bottom/right if smaller than TRAIN_CROP_SIZE, then crop at a
    uniformly random offset."""
    crop_w, crop_h = p.train_crop
    if img.shape[0] == crop_h and img.shape[1] == crop_w:
        return img, label
    img, label = pad_bottom_right(img, label, p.train_crop, p.padding_value, p.ignore_index)
    y = int(rng.integers(img.shape[0] - crop_h + 1))
    x = int(rng.integers(img.shape[1] - crop_w + 1))
    return img[y:y + crop_h, x:x + crop_w], label[y:y + crop_h, x:x + crop_w]


def normalize(img: Array, mean: tuple[float, ...], std: tuple[float, ...]) -> Array:
    """[H, W, C] uint8 -> [C, H, W] float32: (x / 255 - mean) / std (legacy normalize_image)."""
    out = img.transpose(2, 0, 1).astype(np.float32) / 255.0
    out -= np.asarray(mean, np.float32).reshape(-1, 1, 1)
    out /= np.asarray(std, np.float32).reshape(-1, 1, 1)
    return out


class EvalSizeError(ValueError):
    """An eval image larger than EVAL_CROP_SIZE (legacy raised too: eval never crops)."""


def train_transform(img: Array, label: Array, p: AugParams, rng: np.random.Generator) -> tuple[Array, Array]:
    """The legacy TRAIN pipeline up to (not including) normalisation."""
    img, label = resize(img, label, p, train=True, rng=rng)
    if p.rich_crop:
        img, label = rich_crop(img, label, p, rng)
    if p.flip:
        img, label = random_flip(img, label, p.flip_ratio, rng)
    if p.mirror:
        img, label = random_mirror(img, label, rng)
    return random_crop(img, label, p, rng)


def eval_transform(img: Array, label: Array | None, p: AugParams) -> tuple[Array, Array | None]:
    """The legacy EVAL pipeline up to normalisation: resize for eval, pad to EVAL_CROP_SIZE."""
    img, label = resize(img, label, p, train=False)
    crop_w, crop_h = p.eval_crop
    if img.shape[0] > crop_h or img.shape[1] > crop_w:
        raise EvalSizeError(f"image is {img.shape[1]}x{img.shape[0]} after resize, larger than "
                            f"EVAL_CROP_SIZE ({crop_w}, {crop_h}); raise EVAL_CROP_SIZE or use "
                            "AUG.AUG_METHOD unpadding/rangescaling")
    return pad_bottom_right(img, label, p.eval_crop, p.padding_value, p.ignore_index)
