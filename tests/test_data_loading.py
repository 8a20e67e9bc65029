"""SegDataset and BatchLoader: real CamVid, determinism, sharding, multi-process == in-process."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segdistill_cli.config import load_config
from segdistill_cli.data import BatchLoader, SegDataset, batches, write_synthetic_dataset
from segdistill_cli.errors import SegDistillError

from conftest import CAMVID, ROOT, needs_camvid



def camvid_cfg(*sets: str):
    return load_config(ROOT / "configs" / "camvid.yaml",
                       [f"DATASET.DATA_DIR={CAMVID}", f"DATASET.TRAIN_FILE_LIST={CAMVID / 'train.txt'}",
                        f"DATASET.VAL_FILE_LIST={CAMVID / 'val.txt'}",
                        f"DATASET.TEST_FILE_LIST={CAMVID / 'val.txt'}", *sets])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    write_synthetic_dataset(root, n_train=13, n_val=5, size=(64, 48), seed=3)
    return load_config(None, [f"DATASET.DATA_DIR={root}", f"DATASET.TRAIN_FILE_LIST={root / 'train.list'}",
                              f"DATASET.VAL_FILE_LIST={root / 'val.list'}", "DATASET.NUM_CLASSES=5",
                              "TRAIN_CROP_SIZE=(40, 32)", "EVAL_CROP_SIZE=(64, 48)",
                              "AUG.AUG_METHOD=stepscaling", "AUG.FLIP=True"])


@needs_camvid
@pytest.mark.camvid
def test_camvid_sample_shapes_dtypes_and_ignore_padding():
    # unpadding to 240x180 then a 256x192 crop: 16 columns / 12 rows of padding, label 11.
    cfg = camvid_cfg("TRAIN_CROP_SIZE=(256, 192)", "AUG.MIRROR=False")
    ds = SegDataset(cfg, "train", seed=0)
    s = ds.sample(0)
    assert s["image"].shape == (3, 192, 256) and s["image"].dtype == np.float32
    assert s["label"].shape == s["mask"].shape == (1, 192, 256)
    assert s["label"].dtype == s["mask"].dtype == np.int32
    assert (s["label"][0, 180:] == 11).all() and (s["label"][0, :, 240:] == 11).all()
    assert (s["mask"][0, 180:] == 0).all() and np.allclose(s["image"][:, 180:], 1 / 255, atol=1e-6)  # 127.5 -> uint8 128, as legacy
    assert np.array_equal(s["mask"], (s["label"] != 11).astype(np.int32))
    assert set(np.unique(s["label"])) <= set(range(12))
    # BGR, never converted: channel 0 of the first pixel is the file's blue value.
    import cv2
    raw = cv2.imread(str(CAMVID / ds.entries[0].image))
    small = cv2.resize(raw, (240, 180), interpolation=cv2.INTER_LINEAR)
    assert np.allclose(s["image"][:, 0, 0], (small[0, 0] / 255.0 - 0.5) / 0.5, atol=1e-6)


@needs_camvid
@pytest.mark.camvid
def test_camvid_eval_loader_keeps_last_partial_batch():
    cfg = camvid_cfg()
    ds = SegDataset(cfg, "eval")
    assert len(ds) == 101
    loader = BatchLoader(ds, batch_size=50)
    sizes = [len(b["image"]) for b in loader.epoch(0)]
    assert sizes == [50, 50, 1]


def test_same_seed_same_samples_other_epoch_differs(synthetic):
    a, b = SegDataset(synthetic, seed=7), SegDataset(synthetic, seed=7)
    assert all(np.array_equal(a.sample(i, 2)["image"], b.sample(i, 2)["image"]) for i in range(4))
    assert np.array_equal(a.epoch_indices(2), b.epoch_indices(2))
    assert not np.array_equal(a.epoch_indices(0), a.epoch_indices(1))
    differs = [not np.array_equal(a.sample(i, 0)["image"], a.sample(i, 1)["image"]) for i in range(6)]
    assert any(differs)
    other = SegDataset(synthetic, seed=8)
    assert not np.array_equal(a.epoch_indices(0), other.epoch_indices(0))


@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_shards_cover_each_sample_once_minus_remainder(synthetic, nranks):
    shards = [SegDataset(synthetic, shard=(r, nranks), seed=1) for r in range(nranks)]
    for epoch in range(2):
        parts = [s.epoch_indices(epoch) for s in shards]
        merged = np.concatenate(parts)
        assert all(len(p) == 13 // nranks for p in parts)
        assert len(set(merged.tolist())) == len(merged) == (13 // nranks) * nranks
        # The same permutation on every rank: the union is its first n*N entries.
        full = SegDataset(synthetic, seed=1).epoch_indices(epoch)
        assert np.array_equal(merged, full[: len(merged)])
    evals = [SegDataset(synthetic, "eval", shard=(r, nranks)).epoch_indices(0) for r in range(nranks)]
    assert sorted(np.concatenate(evals).tolist()) == list(range(5))


def test_workers_yield_the_same_batches_as_in_process(synthetic):
    ds = SegDataset(synthetic, seed=5)
    expected = list(batches(ds, 3, epoch=1, num_workers=0))
    assert len(expected) == 13 // 3  # drop_last in training
    with BatchLoader(ds, 3, num_workers=2, prefetch=2) as loader:
        got = list(loader.epoch(1))
        # Abandon an epoch half-way, then run a full one: no stale batches leak in.
        next(iter(loader.epoch(0)))
        again = list(loader.epoch(1))
        procs = list(loader._processes)
        assert len(procs) == 2 and all(p.is_alive() for p in procs)
    assert all(not p.is_alive() for p in procs)  # clean shutdown
    for run in (got, again):
        assert len(run) == len(expected)
        for a, b in zip(run, expected):
            assert a.keys() == b.keys()
            assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_worker_errors_name_the_line(synthetic, tmp_path):
    lines = Path(synthetic.DATASET.TRAIN_FILE_LIST).read_text().splitlines()
    lines[4] = "images/train/missing.png " + lines[4].split()[1]
    bad_list = tmp_path / "bad.list"
    bad_list.write_text("\n".join(lines) + "\n")
    ds = SegDataset(synthetic, list_file=str(bad_list))
    with pytest.raises(SegDistillError, match=r"bad\.list:5: image not found: .*missing\.png"):
        list(batches(ds, 13, num_workers=1))
    with pytest.raises(SegDistillError, match=r"bad\.list:5"):
        ds.sample(4)


def test_eval_image_larger_than_crop_names_the_file(synthetic):
    cfg = load_config(None, [f"{k}={v}" for k, v in [
        ("DATASET.DATA_DIR", synthetic.DATASET.DATA_DIR),
        ("DATASET.VAL_FILE_LIST", synthetic.DATASET.VAL_FILE_LIST),
        ("TRAIN_CROP_SIZE", "(40, 32)"), ("EVAL_CROP_SIZE", "(60, 48)"),
        ("AUG.AUG_METHOD", "stepscaling")]])
    with pytest.raises(SegDistillError, match=r"val\.list:1: image is 64x48 .*EVAL_CROP_SIZE"):
        SegDataset(cfg, "eval").sample(0)
