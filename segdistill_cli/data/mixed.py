"""Training batches that mix labelled images with unlabelled ones (DATASET.UNLABELED_FILE_LIST).

What an epoch is with two lists: one pass over the LABELLED list, as without unlabelled images
(the labelled order, sharding and drop-last are exactly `SegDataset`'s). Each batch holds
`B - K` labelled and `K` unlabelled images (`DATASET.UNLABELED_PER_BATCH`, per trainer
`(B - K) / N` and `K / N`), so an epoch has floor(labelled images per trainer / labelled per
batch) steps. The unlabelled images come from an endless stream of shuffled passes over the
unlabelled list (pass p is a permutation seeded by (seed, p)); epoch e reads the stream from
position (e * steps * K) on, trainer k its k-th share of each step, so any epoch (after a resume
too) sees the same images whatever came before, and no two trainers read the same one. A short
unlabelled list repeats within an epoch; a long one is covered over several epochs.

Augmentation is the labelled pipeline (AUG.*); each unlabelled sample draws from its own
generator seeded by (seed, pass, index), so a repeated image gets fresh augmentation.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from ..config.validate import unlabeled_per_batch
from ..errors import ConfigError
from .dataset import SegDataset

_UNLABELED_SHUFFLE_TAG = 3  # apart from dataset.py's tags 0-2


class MixedTrainSet:
    """The labelled `SegDataset` and an unlabelled one as one train dataset for `BatchLoader`:
    `epoch_indices` lays out each batch as labelled indices, then unlabelled ones (offset by the
    labelled count and encoding the stream pass), `sample` routes an index to its list."""

    mode = "train"

    def __init__(self, labelled: SegDataset, unlabeled: SegDataset, batch_per_rank: int,
                 unlabeled_per_rank: int):
        if not 0 < unlabeled_per_rank < batch_per_rank:
            raise ConfigError(f"DATASET.UNLABELED_PER_BATCH: {unlabeled_per_rank} unlabelled of "
                              f"{batch_per_rank} images per trainer batch; need 1..batch-1")
        self.labelled, self.unlabeled = labelled, unlabeled
        self.batch, self.k = int(batch_per_rank), int(unlabeled_per_rank)
        self.rank, self.nranks = labelled.rank, labelled.nranks
        self.entries = labelled.entries
        self.seed = labelled.seed

    @property
    def labelled_per_batch(self) -> int:
        return self.batch - self.k

    def __len__(self) -> int:
        return self.steps_per_epoch() * self.batch

    def steps_per_epoch(self) -> int:
        return len(self.labelled) // self.labelled_per_batch

    def schedule_images(self) -> int:
        """The image count whose legacy schedule (ceil(images / BATCH_SIZE) steps an epoch) has
        this set's steps per epoch: the LR policy must decay over the steps really run."""
        global_batch = self.batch * self.nranks
        global_labelled = self.labelled_per_batch * self.nranks
        return math.ceil(len(self.entries) / global_labelled) * global_batch

    def _permutation(self, stream_pass: int) -> np.ndarray:
        return _permutation(self.seed, stream_pass, len(self.unlabeled.entries))

    def epoch_indices(self, epoch: int) -> np.ndarray:
        labelled = self.labelled.epoch_indices(epoch)
        n_lab, size = self.labelled_per_batch, len(self.unlabeled.entries)
        steps, offset = len(labelled) // n_lab, len(self.entries)
        global_k = self.k * self.nranks
        order: list[int] = []
        for step in range(steps):
            order.extend(int(i) for i in labelled[step * n_lab:(step + 1) * n_lab])
            first = (epoch * steps + step) * global_k + self.rank * self.k
            for position in range(first, first + self.k):
                stream_pass, i = divmod(position, size)
                order.append(offset + stream_pass * size + int(self._permutation(stream_pass)[i]))
        return np.asarray(order, dtype=np.int64)

    def sample(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        offset = len(self.entries)
        if index < offset:
            return self.labelled.sample(index, epoch)
        stream_pass, i = divmod(index - offset, len(self.unlabeled.entries))
        return self.unlabeled.sample(i, stream_pass)

    def sample_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return self.labelled.sample_shapes()


@lru_cache(maxsize=4)
def _permutation(seed: int, stream_pass: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, stream_pass, _UNLABELED_SHUFFLE_TAG]).permutation(size)


def train_set(cfg: Any, shard: tuple[int, int], seed: int, batch_per_rank: int) -> Any:
    """The training dataset of a run: `SegDataset`, or `MixedTrainSet` with an unlabelled list."""
    labelled = SegDataset(cfg, mode="train", shard=shard, seed=seed)
    global_k = unlabeled_per_batch(cfg)
    if not global_k:
        return labelled
    check_unlabeled_split(cfg, shard[1])
    unlabeled = SegDataset(cfg, mode="train", shard=shard, seed=seed,
                           list_file=cfg.DATASET.UNLABELED_FILE_LIST, labelled=False)
    return MixedTrainSet(labelled, unlabeled, batch_per_rank, global_k // shard[1])


def check_unlabeled_split(cfg: Any, nranks: int) -> None:
    """The unlabelled share of the batch must split evenly over the trainers, like BATCH_SIZE."""
    global_k = unlabeled_per_batch(cfg)
    if global_k % nranks:
        raise ConfigError(f"DATASET.UNLABELED_PER_BATCH: {global_k} unlabelled images per batch do "
                          f"not split over {nranks} trainers")


def schedule_images(dataset: Any) -> int:
    """Images per epoch for the LR schedule (legacy: the labelled list's length)."""
    if isinstance(dataset, MixedTrainSet):
        return dataset.schedule_images()
    return len(dataset.entries)
