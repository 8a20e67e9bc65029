"""Cityscapes trainIds + lists, the generic list builder and the synthetic scene generator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdistill_cli.cli import main
from segdistill_cli.data.cityscapes import LABEL_TO_TRAIN_ID, prepare_cityscapes, to_train_ids
from segdistill_cli.data.lists import read_list
from segdistill_cli.data.synthetic import write_synthetic_dataset
from segdistill_cli.errors import SegDistillError

FRAMES = {"train": [("aachen", "000000_000019"), ("aachen", "000001_000019"), ("bonn", "000000_000019")],
          "val": [("lindau", "000000_000019")]}


def _cityscapes(root: Path) -> dict[Path, np.ndarray]:
    """A tiny official-layout tree; returns {labelIds path: ids written}."""
    rng = np.random.default_rng(0)
    written = {}
    for split, frames in FRAMES.items():
        for city, frame in frames:
            stem = f"{city}_{frame}"
            img_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 16, 3), dtype=np.uint8)).save(
                img_dir / f"{stem}_leftImg8bit.png")
            ids = rng.integers(0, 34, (8, 16)).astype(np.uint8)
            ids[0, :4] = [7, 26, 33, 0]  # road, car, bicycle, unlabeled
            path = gt_dir / f"{stem}_gtFine_labelIds.png"
            Image.fromarray(ids).save(path)
            written[path] = ids
    return written


def test_train_id_mapping():
    ids = np.array([7, 8, 26, 33, 0, 1, 6, 34, -1, 300])
    assert to_train_ids(ids).tolist() == [0, 1, 13, 18, 255, 255, 255, 255, 255, 255]
    assert sorted(LABEL_TO_TRAIN_ID.values()) == list(range(19))


def test_cityscapes_conversion_lists_idempotency_and_force(tmp_path):
    sources = _cityscapes(tmp_path)
    report = prepare_cityscapes(tmp_path, workers=2)
    assert report.list_counts == {"train": 3, "val": 1}
    for src, ids in sources.items():
        out = Path(str(src).replace("_gtFine_labelIds", "_gtFine_labelTrainIds"))
        train_ids = np.asarray(Image.open(out))
        expected = np.full(ids.shape, 255)
        for label_id, train_id in LABEL_TO_TRAIN_ID.items():
            expected[ids == label_id] = train_id
        assert np.array_equal(train_ids, expected)
        assert train_ids[0, :4].tolist() == [0, 13, 18, 255]
    lines = (tmp_path / "train.list").read_text().splitlines()
    assert lines == sorted(lines) and lines[0] == (
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png "
        "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png")
    assert len(read_list(tmp_path / "train.list", tmp_path)) == 3
    # Idempotent: nothing rewritten the second time.
    again = prepare_cityscapes(tmp_path)
    assert again.written == [] and len(again.unchanged) == 4 + 2
    # A differing output is never overwritten silently.
    victim = tmp_path / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png"
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(victim)
    with pytest.raises(SegDistillError, match="lindau_000000_000019_gtFine_labelTrainIds.png exists"):
        prepare_cityscapes(tmp_path)
    assert main(["data", "cityscapes", str(tmp_path)]) == 2  # would overwrite: refused
    assert main(["data", "cityscapes", str(tmp_path), "--force"]) == 0
    assert np.asarray(Image.open(victim))[0, :4].tolist() != [0, 0, 0, 0]
    assert not list(tmp_path.rglob(".*tmp*"))  # no temp files left behind


def test_lists_builder_pairs_by_stem_and_splits(tmp_path, capsys):
    for folder in ("img", "ann"):
        (tmp_path / folder / "sub").mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / "sub" / f"f{i}.jpg")
        Image.new("L", (4, 4)).save(tmp_path / "ann" / "sub" / f"f{i}.png")
    code = main(["data", "lists", str(tmp_path), "--images", "img", "--labels", "ann",
                 "--split-ratio", "0.6,0.2,0.2", "--seed", "1"])
    assert code == 0, capsys.readouterr()
    splits = {s: (tmp_path / f"{s}.list").read_text().splitlines() for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [6, 2, 2]
    every = sorted(sum(splits.values(), []))
    assert every == sorted(f"img/sub/f{i}.jpg ann/sub/f{i}.png" for i in range(10))
    # An unpaired file is named.
    Image.new("L", (4, 4)).save(tmp_path / "ann" / "sub" / "orphan.png")
    assert main(["data", "lists", str(tmp_path), "--images", "img", "--labels", "ann"]) == 2
    err = capsys.readouterr().err
    assert "1 label(s) without image" in err and "orphan.png" in err


def test_synthetic_scenes_are_structured(tmp_path):
    lists = write_synthetic_dataset(tmp_path, n_train=6, n_val=2, size=(64, 48), seed=0)
    entries = read_list(lists["train"], tmp_path)
    assert len(entries) == 6 and len(read_list(lists["val"], tmp_path)) == 2
    labels = np.stack([np.asarray(Image.open(e.label_path)) for e in entries])
    assert labels.shape == (6, 48, 64) and set(np.unique(labels)) <= {0, 1, 2, 3, 4, 255}
    assert len(set(np.unique(labels)) - {255}) >= 4  # several classes present
    # Classes are learnable from colour and shape: mean colours of classes differ.
    img = np.asarray(Image.open(entries[0].image_path))
    assert img.shape == (48, 64, 3) and img.std() > 10
    again = write_synthetic_dataset(tmp_path / "again", 6, 2, size=(64, 48), seed=0)
    assert (tmp_path / "again" / "labels/train/0003.png").read_bytes() == \
        (tmp_path / "labels/train/0003.png").read_bytes()
    assert again["train"].read_text() == lists["train"].read_text()
