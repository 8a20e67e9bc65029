"""The data pipeline: legacy list files, the legacy augmentation, a reproducible dataset, a fast
multi-process batch loader, pre-flight validation, Cityscapes/list preparation, generated scenes.

    ds = SegDataset(cfg, mode="train", shard=(rank, nranks), seed=0)
    with loader_from_config(cfg, ds, per_rank_batch) as loader:   # as the trainer does
        for batch in loader.epoch(epoch): exe.run(prog, feed=batch)

Nothing here imports Paddle.
"""
from .check import DataReport, Issue, check_data, require_valid_data
from .dataset import SegDataset, read_image, read_label
from .lists import ListEntry, build_lists, parse_list, read_list
from .loader import FEED_NAMES, BatchLoader, batches, loader_from_config
from .synthetic import write_synthetic_dataset

__all__ = ["BatchLoader", "DataReport", "FEED_NAMES", "Issue", "ListEntry", "SegDataset", "batches",
           "build_lists", "check_data", "loader_from_config", "parse_list", "read_image",
           "read_label", "read_list", "require_valid_data", "write_synthetic_dataset"]
