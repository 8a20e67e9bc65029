"""`segdistill demo` end to end at the hidden tiny size (32x32 scenes, one epoch per model)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

from segdistill_cli.cli import main
from segdistill_cli.demo import MARKER, SIZES, prepare_out_dir, write_configs
from segdistill_cli.errors import SegDistillError

from conftest import ROOT


def test_demo_end_to_end_tiny(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo must not need the repository's configs/ folder
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--size", "tiny"])
    printed = capsys.readouterr().out
    assert code == 0, printed

    summary = json.loads((out / "summary.json").read_text())
    names = [row["name"] for row in summary["rows"]]
    assert names == ["teacher", "student (distilled)", "student (no teacher)"]
    for row in summary["rows"]:
        assert 0.0 <= row["miou"] <= 1.0 and math.isfinite(row["miou"])
        assert 0.0 < row["acc"] <= 1.0  # something was predicted right
        assert (Path(row["model_dir"]) / "model.pdparams").is_file()
        assert Path(row["model_dir"]).parent.joinpath("final", "meta.json").is_file()
        assert not (Path(row["model_dir"]).parent / "1").exists()  # epoch snapshots pruned
        assert row["name"] in printed
    # The distilled run really used the teacher and both configured pairs.
    run = json.loads((out / "student" / "run.json").read_text())
    assert run["teacher"] is not None and len(run["distill_pairs"]) == 2
    assert any("kl" in p for p in run["distill_pairs"]) and any("l2" in p for p in run["distill_pairs"])
    baseline_run = json.loads((out / "baseline" / "run.json").read_text())
    assert baseline_run["teacher"] is None
    # Suggestions came from inspect: the tutorial's logits pair ranks first.
    assert summary["suggestions"][0].startswith("logits <-> logits")
    # Pictures of the distilled student, with ground truth panels.
    overlays = sorted((out / "predictions" / "overlay").rglob("*.png"))
    assert summary["prediction_images"] == len(overlays) == 4
    # ... at a size a person can see (the scenes are 32 px: enlarged, titled, with a legend).
    from PIL import Image

    from segdistill_cli.overlay import MIN_PANEL_HEIGHT

    with Image.open(overlays[0]) as im:
        assert im.height > MIN_PANEL_HEIGHT + 40 and im.width > 3 * MIN_PANEL_HEIGHT
    # Without --keep the generated data is gone, everything else stays.
    assert not (out / "data").exists()
    assert (out / "configs" / "student.yaml").is_file() and (out / MARKER).is_file()
    assert "--keep" in printed
    # A second run into the same folder replaces the earlier demo instead of refusing.
    prepare_out_dir(out)
    assert list(out.iterdir()) == [out / MARKER]


def test_out_dir_refuses_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    with pytest.raises(SegDistillError, match="not written by `segdistill demo`"):
        prepare_out_dir(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_written_configs_load_and_point_into_out(tmp_path):
    from segdistill_cli.config import load_configs

    paths = write_configs(tmp_path, SIZES["default"])
    configs = load_configs(paths["student"], paths["teacher"])
    student, teacher = configs.student, configs.teacher
    assert student.MODEL.DEEPLAB.DEPTH_MULTIPLIER == 0.5 and not student.MODEL.DEEPLAB.ENCODER_WITH_ASPP
    assert teacher.MODEL.DEEPLAB.ENCODER_WITH_ASPP and teacher.MODEL.DEEPLAB.ENABLE_DECODER
    assert [p["LOSS"] for p in student.distill_pairs] == ["l2", "kl"]
    assert teacher.SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR == f"{tmp_path.as_posix()}/teacher/best_model"
    assert student.TRAIN.MODEL_SAVE_DIR.startswith(tmp_path.as_posix())
    baseline = yaml.safe_load(paths["baseline"].read_text())
    assert baseline["TRAIN"]["MODEL_SAVE_DIR"] == f"{tmp_path.as_posix()}/baseline/"
    assert os.path.isabs(student.DATASET.TRAIN_FILE_LIST)


def test_repository_demo_configs_are_what_the_demo_writes(tmp_path, monkeypatch):
    from pathlib import Path as _Path

    from segdistill_cli.demo import SIZES, write_configs

    monkeypatch.chdir(tmp_path)
    written = write_configs(_Path("segdistill_demo"), SIZES["default"])
    root = ROOT / "configs"

    def body(path):
        return "".join(line for line in path.read_text().splitlines(True) if not line.startswith("#"))

    assert body(root / "demo.yaml") == body(written["student"])
    assert body(root / "demo_teacher.yaml") == body(written["teacher"])
