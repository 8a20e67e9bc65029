"""Shared by test_eval.py and test_predict_export.py: a real CamVid student checkpoint and a small
val subset, both at a reduced size (120x90) so the suite stays fast on 2 CPU cores."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator
from unittest import mock

import cv2
import numpy as np

from conftest import CAMVID, ROOT, needs_camvid  # noqa: F401 (re-exported)

SIZE = (120, 90)  # (W, H): EVAL_CROP_SIZE and FIX_RESIZE_SIZE of the test config
NUM_VAL = 5  # odd, so a 2-way shard is uneven


def overrides(data_dir: Path, val_list: Path, *extra: str) -> list[str]:
    size = f"({SIZE[0]}, {SIZE[1]})"
    return [f"DATASET.DATA_DIR={data_dir}", f"DATASET.VAL_FILE_LIST={val_list}",
            f"DATASET.TRAIN_FILE_LIST={val_list}", f"DATASET.TEST_FILE_LIST={val_list}",
            f"EVAL_CROP_SIZE={size}", f"TRAIN_CROP_SIZE={size}", f"AUG.FIX_RESIZE_SIZE={size}",
            "BATCH_SIZE=2", "DATALOADER.NUM_WORKERS=0", *extra]


def load_cfg(data_dir: Path, val_list: Path, *extra: str):
    from segdistill_cli.config import load_config

    return load_config(ROOT / "configs" / "camvid.yaml", overrides(data_dir, val_list, *extra))


def write_val_subset(folder: Path, mirrored: bool = False) -> Path:
    """The first NUM_VAL CamVid val pairs, resized to SIZE (so the eval pipeline's resize is the
    identity) and optionally mirrored left-right; returns the list file."""
    lines = (CAMVID / "val.txt").read_text().split("\n")[:NUM_VAL]
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "lab").mkdir(parents=True, exist_ok=True)
    out = []
    for line in lines:
        image_rel, label_rel = line.split()
        img = cv2.resize(cv2.imread(str(CAMVID / image_rel)), SIZE, interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(cv2.imread(str(CAMVID / label_rel), cv2.IMREAD_UNCHANGED), SIZE,
                         interpolation=cv2.INTER_NEAREST)
        if mirrored:
            img, lab = img[:, ::-1], lab[:, ::-1]
        name = Path(image_rel).name
        cv2.imwrite(str(folder / "img" / name), np.ascontiguousarray(img))
        cv2.imwrite(str(folder / "lab" / name), np.ascontiguousarray(lab))
        out.append(f"img/{name} lab/{name}")
    list_file = folder / "val.txt"
    list_file.write_text("\n".join(out) + "\n")
    return list_file


@contextlib.contextmanager
def _batch_norm_momentum(momentum: float) -> Iterator[None]:
    """Every batch norm built meanwhile uses `momentum` (the model's BNs have two momenta, from
    cfg.MODEL.BN_MOMENTUM and MobileNetV2's fixed 0.9), on either IR's layer backend."""
    from segdistill_cli.models.layers import GraphOps
    from segdistill_cli.models.pir_ops import PirOps

    def forced(original):
        def batch_norm(self, x, prefix, suffixes, epsilon, _momentum, no_decay):
            return original(self, x, prefix, suffixes, epsilon, momentum, no_decay)
        return batch_norm

    with mock.patch.object(GraphOps, "batch_norm", forced(GraphOps.batch_norm)), \
            mock.patch.object(PirOps, "batch_norm", forced(PirOps.batch_norm)):
        yield


def make_checkpoint(cfg, save_dir: Path, seed: int = 3) -> Path:
    """A real student checkpoint (-> save_dir/best_model, written by the trainer's own
    `save_checkpoint`): the train program's seeded initialisation with BN statistics calibrated on
    the val images (one train-mode forward pass with momentum 0 stores each layer's batch
    statistics), so the eval-mode model predicts varied classes rather than a single one."""
    from segdistill_cli.data.dataset import SegDataset
    from segdistill_cli.engine import checkpoints
    from segdistill_cli.engine.graph import seeded_student
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    with _batch_norm_momentum(0.0):  # set while building: a PIR op has no float-attribute setter
        built = seeded_student(cfg, seed)
    scope, place = paddle.static.Scope(), paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    exe.run(built.startup, scope=scope)
    dataset = SegDataset(cfg, mode="eval")
    images = np.stack([dataset.sample(i)["image"] for i in range(len(dataset))])
    exe.run(built.main, feed={"image": images}, fetch_list=[built.logits], scope=scope)
    return checkpoints.save_checkpoint(built.main, scope, save_dir, "best_model",
                                       {"epoch": 1, "global_step": 0})
