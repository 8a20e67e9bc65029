"""Distillation on unlabelled images: the two masks, batch composition, sharding and seeding,
config and pre-flight errors, and a real (tiny) CamVid run that trains and logs both masks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segdistill_cli.config import load_config, load_configs, validate
from segdistill_cli.data import SegDataset
from segdistill_cli.data.mixed import MixedTrainSet, schedule_images, train_set
from segdistill_cli.errors import ConfigError, SegDistillError
from conftest import CAMVID, STUDENT_CFG, needs_camvid
from _train_fixtures import make_trainer

pytestmark = needs_camvid


@pytest.fixture(scope="module")
def unlabeled_list(tmp_path_factory) -> Path:
    """Six CamVid val images, paths only (relative to DATA_DIR)."""
    images = [line.split()[0] for line in (CAMVID / "val.txt").read_text().splitlines()[10:16]]
    path = tmp_path_factory.mktemp("unl") / "unlabeled.txt"
    path.write_text("\n".join(images) + "\n")
    return path


def camvid_cfg(*sets: str):
    return load_config(STUDENT_CFG, [f"DATASET.DATA_DIR={CAMVID}",
                                     f"DATASET.TRAIN_FILE_LIST={CAMVID / 'train.txt'}",
                                     f"DATASET.VAL_FILE_LIST={CAMVID / 'val.txt'}", *sets])


# ---- the two masks ---------------------------------------------------------------------------

def test_labelled_sample_masks_ignore_pixels_for_ce_but_not_for_distillation():
    # unpadding to 240x180 then a 256x192 crop: 16 columns / 12 rows of padding.
    cfg = camvid_cfg("TRAIN_CROP_SIZE=(256, 192)", "AUG.MIRROR=False")
    ds = SegDataset(cfg, "train", seed=0)
    index = next(i for i in range(20) if (ds.sample(i)["label"][0, :180, :240] == 11).any())
    s = ds.sample(index)
    inside = np.zeros((192, 256), bool)
    inside[:180, :240] = True
    assert np.array_equal(s["distill_mask"][0].astype(bool), inside)  # padding only excluded
    void = (s["label"][0] == 11) & inside
    assert void.any() and (s["mask"][0][void] == 0).all()  # CE skips void pixels ...
    assert (s["distill_mask"][0][void] == 1).all()  # ... the distillation sees them
    assert np.array_equal(s["mask"], (s["label"] != 11).astype(np.int32))


def test_unlabelled_sample_has_no_label_and_every_image_pixel_for_distillation(unlabeled_list):
    cfg = camvid_cfg("TRAIN_CROP_SIZE=(256, 192)")
    ds = SegDataset(cfg, "train", seed=0, list_file=str(unlabeled_list), labelled=False)
    s = ds.sample(0, epoch=1)
    assert (s["label"] == 11).all() and (s["mask"] == 0).all()
    assert s["distill_mask"].sum() == 240 * 180  # the image, not the padding
    labelled = SegDataset(cfg, "train", seed=0)
    assert set(s) == set(labelled.sample(0))


# ---- batch composition, epochs, sharding, seeding ----------------------------------------------

def _mixed(cfg, rank: int, nranks: int, batch: int) -> MixedTrainSet:
    dataset = train_set(cfg, (rank, nranks), seed=5, batch_per_rank=batch)
    assert isinstance(dataset, MixedTrainSet)
    return dataset


def test_each_batch_mixes_the_configured_share_and_an_epoch_is_one_labelled_pass(unlabeled_list):
    cfg = camvid_cfg("BATCH_SIZE=4", f"DATASET.UNLABELED_FILE_LIST={unlabeled_list}",
                     "DATASET.UNLABELED_PER_BATCH=0.25")
    ds = _mixed(cfg, 0, 1, 4)
    labelled_count = len(ds.entries)  # 367
    order = ds.epoch_indices(1).reshape(-1, 4)
    assert len(order) == labelled_count // 3 == ds.steps_per_epoch()
    assert (order[:, :3] < labelled_count).all() and (order[:, 3] >= labelled_count).all()
    assert len(set(order[:, :3].ravel())) == order[:, :3].size  # each labelled image once
    # The 6 unlabelled images come as one stream of shuffled passes (each shows every image once)
    # that epoch 1 continues where epoch 0 ended.
    stream = np.concatenate([ds.epoch_indices(e).reshape(-1, 4)[:, 3] for e in (0, 1)])
    images = (stream - labelled_count) % 6
    passes = images[:len(images) // 6 * 6].reshape(-1, 6)
    assert all(sorted(p) == list(range(6)) for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes
    # Deterministic, and an epoch does not depend on the epochs before it.
    assert np.array_equal(ds.epoch_indices(3), _mixed(cfg, 0, 1, 4).epoch_indices(3))
    assert not np.array_equal(ds.epoch_indices(3), ds.epoch_indices(2))
    # The LR schedule decays over the steps really run: ceil(367 / 3) steps of 4 images.
    assert schedule_images(ds) == -(-labelled_count // 3) * 4
    sample = ds.sample(int(order[0, 3]), 1)
    assert (sample["mask"] == 0).all() and sample["distill_mask"].all()


def test_two_trainers_read_disjoint_unlabelled_images_with_fresh_augmentation(unlabeled_list):
    cfg = camvid_cfg("BATCH_SIZE=4", f"DATASET.UNLABELED_FILE_LIST={unlabeled_list}",
                     "DATASET.UNLABELED_PER_BATCH=2")
    rank0, rank1 = _mixed(cfg, 0, 2, 2), _mixed(cfg, 1, 2, 2)
    a, b = rank0.epoch_indices(1).reshape(-1, 2), rank1.epoch_indices(1).reshape(-1, 2)
    assert len(a) == len(b)
    offset = len(rank0.entries)
    assert (a[:, 1] >= offset).all() and (b[:, 1] >= offset).all()
    assert not set(a[:, 0]) & set(b[:, 0])  # labelled shards are disjoint
    assert (a[:3, 1] != b[:3, 1]).all()  # at every step, the two trainers' unlabelled differ
    # The same image in later stream passes is augmented afresh (seeded by the pass).
    views = [rank0.sample(offset + 6 * stream_pass, 1)["image"] for stream_pass in range(3)]
    assert not all(np.array_equal(views[0], view) for view in views[1:])


# ---- config and pre-flight errors ---------------------------------------------------------------

def test_config_errors_name_the_key(unlabeled_list, tmp_path):
    with pytest.raises(ConfigError, match=r"DATASET.UNLABELED_PER_BATCH \(--set\): invalid "
                                          r"value -1"):
        camvid_cfg("DATASET.UNLABELED_PER_BATCH=-1")

    def problems(*sets, use_teacher=True):
        configs = load_configs(STUDENT_CFG, None, [f"DATASET.DATA_DIR={CAMVID}",
                                                   f"DATASET.TRAIN_FILE_LIST={CAMVID / 'train.txt'}",
                                                   f"DATASET.VAL_FILE_LIST={CAMVID / 'val.txt'}",
                                                   "TRAIN.MODEL_SAVE_DIR=x", *sets])
        return [str(p) for p in validate(configs, "train", use_teacher=use_teacher)]

    assert any("DATASET.UNLABELED_PER_BATCH" in p and "would have no effect" in p
               for p in problems("DATASET.UNLABELED_PER_BATCH=2"))
    unl = f"DATASET.UNLABELED_FILE_LIST={unlabeled_list}"
    assert any("--no-teacher" in p for p in problems(unl, use_teacher=False))
    assert not [p for p in problems(unl) if "UNLABELED" in p]
    assert any("need 1..3" in p for p in problems(unl, "BATCH_SIZE=4", "DATASET.UNLABELED_PER_BATCH=4"))
    assert any("list file not found" in p
               for p in problems(f"DATASET.UNLABELED_FILE_LIST={tmp_path}/none.txt"))


def test_preflight_names_the_bad_unlabelled_line(lists, teacher_dir, tmp_path):  # noqa: F811
    images = [line.split()[0] for line in (CAMVID / "val.txt").read_text().splitlines()[:4]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    bad = tmp_path / "unlabeled.txt"
    bad.write_text("\n".join([images[0], images[1], "val/missing.png", images[2], str(broken)]) + "\n")
    trainer = make_trainer(lists, teacher_dir, tmp_path / "run",
                           student_extra=[f"DATASET.UNLABELED_FILE_LIST={bad}"], preflight_only=True)
    with pytest.raises(SegDistillError, match=rf"2 bad line\(s\).*first: {bad}:3: image not "
                                              r"found: .*val/missing.png"):
        trainer.run()
    bad.write_text(f"{images[0]}\n{images[1]} valannot/x.png\n")
    with pytest.raises(SegDistillError, match=rf"{bad}:2: expected one image path per line"):
        make_trainer(lists, teacher_dir, tmp_path / "run", preflight_only=True,
                     student_extra=[f"DATASET.UNLABELED_FILE_LIST={bad}"]).run()
    bad.write_text(f"{images[0]}\n{broken}\n")
    with pytest.raises(SegDistillError, match=rf"{bad}:2: image does not decode"):
        make_trainer(lists, teacher_dir, tmp_path / "run", preflight_only=True,
                     student_extra=[f"DATASET.UNLABELED_FILE_LIST={bad}"]).run()


# ---- a real run ------------------------------------------------------------------------------

PAIRS = ("[{TEACHER: logits, STUDENT: logits, LOSS: kl, TEMPERATURE: 2, MASK: correct, "
         "THRESHOLD: 0.2}, {TEACHER: logits, STUDENT: logits, LOSS: dist, WEIGHT: 0.5}]")


def test_distillation_with_unlabelled_images_trains_and_logs_both_masks(lists, teacher_dir,  # noqa: F811
                                                                         unlabeled_list, tmp_path):
    trainer = make_trainer(lists, teacher_dir, tmp_path / "run", do_eval=False, log_steps=1,
                           student_extra=[f"DATASET.UNLABELED_FILE_LIST={unlabeled_list}",
                                          "BATCH_SIZE=4", "DATASET.UNLABELED_PER_BATCH=2",
                                          "SOLVER.NUM_EPOCHS=1", f"DISTILL={PAIRS}"])
    summary = trainer.run()
    assert summary.steps_run == 4  # 8 labelled images, 2 per batch
    records = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "train"]
    assert len(steps) == 4
    for r in steps:
        # Half of each batch is unlabelled: the CE sees at most half the pixels, the
        # distillation all of them (64x48 crops of 240x180 images: no padding).
        assert r["mask/ce"] <= 0.5 and r["mask/distill"] == 1.0
        assert 0.0 <= r["mask/kl_0"] <= 1.0
        assert r["loss/kl_0"] == pytest.approx(r["raw/kl_0"], rel=1e-5)
        assert r["loss/dist_1"] == pytest.approx(0.5 * r["raw/dist_1"], rel=1e-5)
        assert r["raw/dist_1"] == pytest.approx(r["raw/dist_1.inter"] + r["raw/dist_1.intra"],
                                                rel=1e-4)
        assert all(np.isfinite(v) for k, v in r.items() if k.startswith(("loss/", "raw/")))
    assert (tmp_path / "run" / "final" / "model.pdparams").is_file()


def test_dry_run_estimates_the_mixed_schedule(lists, teacher_dir, unlabeled_list, tmp_path):  # noqa: F811
    trainer = make_trainer(lists, teacher_dir, tmp_path / "run", dry_run=True,
                           student_extra=[f"DATASET.UNLABELED_FILE_LIST={unlabeled_list}",
                                          "BATCH_SIZE=4", "DATASET.UNLABELED_PER_BATCH=3"])
    lines: list[str] = []
    trainer.echo = lines.append
    summary = trainer.run()
    assert summary.steps_run == 3
    assert any("8 steps/epoch x 2 epochs = 16 steps" in line for line in lines), lines[-1]
    assert not (tmp_path / "run").exists()
