"""`SegDataset`: list entries -> decoded, augmented, normalised samples, reproducible by seed.

Randomness: every sample draws from its own `np.random.Generator` seeded by (seed, epoch, index),
so a sample's augmentation does not depend on worker count, worker order or sharding. The epoch's
order is a permutation seeded by (seed, epoch), identical on every trainer; trainer k of N takes
the contiguous slice [n*k, n*(k+1)) with n = len // N (the remainder is dropped, as legacy did).
Legacy used cumulative `RandomState(epoch).shuffle` calls instead; the slicing is the same.
Eval is never shuffled; a sharded eval splits the list into N contiguous parts covering all.

Two masks per sample: `mask` (the pixel has a label: what the cross-entropy sees) and
`distill_mask` (the pixel is part of the image, not padding: what the distillation terms see).
They differ on IGNORE_INDEX pixels inside an image and on every pixel of an unlabelled image
(`labelled=False`: a list of images only, DATASET.UNLABELED_FILE_LIST). To tell padding from such
pixels through the same geometric pipeline, they carry a private value (`_VOID`) until the
transform is done; padding gets IGNORE_INDEX as before, so the random draws are unchanged.
"""
from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..errors import ConfigError, SegDistillError
from .lists import ListEntry, read_image_list, read_list
from .transforms import AugParams, EvalSizeError, eval_transform, normalize, train_transform

MODES = ("train", "eval")
_LIST_KEY = {"train": "TRAIN_FILE_LIST", "eval": "VAL_FILE_LIST", "test": "TEST_FILE_LIST"}
# Tags that keep the shuffle stream and the per-sample streams (labelled, unlabelled) apart.
_SHUFFLE_TAG, _SAMPLE_TAG, _UNLABELED_SAMPLE_TAG = 0, 1, 2


def read_entries(cfg: Any, list_file: str) -> list[ListEntry]:
    """A list's samples as every dataset reads them. Their number is the image count the commands
    use (the LR schedule's TRAIN_TOTAL_IMAGES, the eval's image count, what `config show` prints)."""
    return read_list(list_file, cfg.DATASET.DATA_DIR, cfg.DATASET.SEPARATOR)


def read_image(path: str, image_type: str = "rgb") -> np.ndarray | None:
    """Legacy cv2_imread: BGR uint8 [H, W, 3] (gray images become 3 equal channels, as legacy's
    IMREAD_COLOR did), or BGRA [H, W, 4] for IMAGE_TYPE rgba. None if it does not decode."""
    flag = cv2.IMREAD_UNCHANGED if image_type == "rgba" else cv2.IMREAD_COLOR
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, flag) if data.size else None
    if img is not None and img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


def read_label(path: str) -> np.ndarray:
    """Legacy pil_imread: the stored values (palette indices for 'P' images), one channel.

    uint8 stays uint8; wider labels become uint16 (cv2 resizes/rotates/pads 8- and 16-bit maps)."""
    with Image.open(path) as im:
        label = np.asarray(im)
    if label.ndim != 2:
        raise ValueError(f"label {path} has {label.shape[2]} channels (mode {im.mode}); "
                         "expected a single-channel class-id image")
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 65535):
            raise ValueError(f"label {path} has values outside 0..65535")
        label = label.astype(np.uint16)
    return label


class SegDataset:
    """Samples of one list file, for one trainer (`shard=(rank, nranks)`).

    `mode='train'` reads TRAIN_FILE_LIST with the random train pipeline; `mode='eval'` reads
    VAL_FILE_LIST (or `list_file`, e.g. the TEST list) with the deterministic eval pipeline.
    `sample(index, epoch)` returns {'image': float32 [C,H,W], 'label': int32 [1,H,W],
    'mask': int32 [1,H,W] (label != IGNORE_INDEX), 'distill_mask': int32 [1,H,W] (not padding)}.
    `labelled=False` reads `list_file` as a list of images without labels (label all
    IGNORE_INDEX, mask all 0). Picklable (worker processes get a copy).
    """

    def __init__(self, cfg: Any, mode: str = "train", shard: tuple[int, int] = (0, 1), seed: int = 0,
                 list_file: str | None = None, labelled: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        rank, nranks = shard
        if not (nranks >= 1 and 0 <= rank < nranks):
            raise ValueError(f"shard {shard}: need 0 <= rank < nranks")
        self.mode, self.rank, self.nranks, self.seed = mode, rank, nranks, int(seed)
        self.params = AugParams.from_config(cfg)
        self.image_type = cfg.DATASET.IMAGE_TYPE
        self.channels = int(cfg.DATASET.DATA_DIM)
        self.num_classes = int(cfg.DATASET.NUM_CLASSES)
        self.labelled = labelled
        self.list_file = list_file or cfg.DATASET[_LIST_KEY[mode]]
        self.entries: list[ListEntry] = (
            read_entries(cfg, self.list_file) if labelled else
            read_image_list(self.list_file, cfg.DATASET.DATA_DIR, cfg.DATASET.SEPARATOR))
        if mode == "train" and len(self.entries) < nranks:
            raise ConfigError(f"{self.list_file} has {len(self.entries)} samples, fewer than "
                                  f"the {nranks} trainers")
        crop = self.params.train_crop if mode == "train" else self.params.eval_crop
        if len(crop) != 2:
            key = "TRAIN_CROP_SIZE" if mode == "train" else "EVAL_CROP_SIZE"
            raise ConfigError(f"{key} is not set: give (width, height)")

    # ---- which samples, in which order ----------------------------------------------------------

    def __len__(self) -> int:
        """Samples this shard sees per epoch."""
        n = len(self.entries)
        if self.mode == "train":
            return n // self.nranks
        return len(np.array_split(np.arange(n), self.nranks)[self.rank])

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Entry indices this shard visits in `epoch`, in order."""
        n = len(self.entries)
        if self.mode == "eval":
            return np.array_split(np.arange(n), self.nranks)[self.rank]
        order = np.random.default_rng([self.seed, epoch, _SHUFFLE_TAG]).permutation(n)
        per_rank = n // self.nranks
        return order[per_rank * self.rank: per_rank * (self.rank + 1)]

    # ---- one sample -----------------------------------------------------------------------------

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode entry `index`: BGR uint8 image and label (all `_VOID` for an unlabelled image);
        errors name the list line."""
        entry = self.entries[index]
        if not self.labelled:
            img = self._load_image(entry)
            return img, np.full(img.shape[:2], _void(self.params.ignore_index), np.uint16)
        for kind, path in (("image", entry.image_path), ("label", entry.label_path)):
            if not os.path.isfile(path):
                raise SegDistillError(f"{entry.where}: {kind} not found: {path}")
        img = self._load_image(entry)
        try:
            label = read_label(entry.label_path)
        except (OSError, ValueError) as exc:
            raise SegDistillError(f"{entry.where}: bad label: {exc}") from None
        if img.shape[:2] != label.shape:
            raise SegDistillError(f"{entry.where}: image {img.shape[1]}x{img.shape[0]} and label "
                                  f"{label.shape[1]}x{label.shape[0]} differ in size")
        invalid = (label >= self.num_classes) & (label != self.params.ignore_index)
        if invalid.any():
            value = int(label[invalid][0])
            raise SegDistillError(f"{entry.where}: label value {value} in {entry.label_path} is "
                                  f"outside [0, {self.num_classes}) and not IGNORE_INDEX "
                                  f"{self.params.ignore_index}")
        label = label.astype(np.uint16)  # room for the ignore value (padding) and _VOID
        label[label == self.params.ignore_index] = _void(self.params.ignore_index)
        return img, label

    def _load_image(self, entry: ListEntry) -> np.ndarray:
        if not os.path.isfile(entry.image_path):
            raise SegDistillError(f"{entry.where}: image not found: {entry.image_path}")
        try:
            img = read_image(entry.image_path, self.image_type)
        except OSError as exc:
            raise SegDistillError(f"{entry.where}: cannot read image {entry.image_path}: {exc}") from None
        if img is None:
            raise SegDistillError(f"{entry.where}: image missing or not decodable: {entry.image_path}")
        if img.shape[2] != self.channels or img.shape[2] != len(self.params.mean):
            raise SegDistillError(f"{entry.where}: image has {img.shape[2]} channels; "
                                  f"DATASET.DATA_DIM is {self.channels} and MEAN has "
                                  f"{len(self.params.mean)} values")
        return img

    def sample_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Shape and dtype of each array `sample` returns (fixed: the crop size)."""
        crop_w, crop_h = self.params.train_crop if self.mode == "train" else self.params.eval_crop
        return {"image": ((self.channels, crop_h, crop_w), "float32"),
                "label": ((1, crop_h, crop_w), "int32"), "mask": ((1, crop_h, crop_w), "int32"),
                "distill_mask": ((1, crop_h, crop_w), "int32")}

    def rng(self, index: int, epoch: int) -> np.random.Generator:
        tag = _SAMPLE_TAG if self.labelled else _UNLABELED_SAMPLE_TAG
        return np.random.default_rng([self.seed, epoch, tag, int(index)])

    def sample(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        img, label = self.load(index)
        if self.mode == "train":
            img, label = train_transform(img, label, self.params, self.rng(index, epoch))
        else:
            try:
                img, label = eval_transform(img, label, self.params)
            except EvalSizeError as exc:
                raise SegDistillError(f"{self.entries[index].where}: {exc}") from None
        ignore = self.params.ignore_index
        label = label.astype(np.int32)[None]
        in_image = label != ignore  # padding is the only IGNORE_INDEX left
        label[label == _void(ignore)] = ignore
        return {"image": normalize(img, self.params.mean, self.params.std),
                "label": label,
                "mask": (label != ignore).astype(np.int32),
                "distill_mask": in_image.astype(np.int32)}


def _void(ignore_index: int) -> int:
    """The private uint16 value of real-but-unlabelled pixels (never a class id: labels are
    checked to be < NUM_CLASSES or IGNORE_INDEX)."""
    return 65534 if ignore_index == 65535 else 65535
