"""`segdistill predict` (pictures at the original size, dataset palette) and `segdistill export`
(inference model round trip) on a real CamVid student checkpoint."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from _eval_fixtures import CAMVID, load_cfg, make_checkpoint, needs_camvid, write_val_subset
from conftest import IR

# The program file save_inference_model writes: Paddle 3 with PIR writes its JSON format.
MODEL_FILE = "model.json" if IR == "pir" else "model.pdmodel"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    val_list = write_val_subset(folder / "data")
    cfg = load_cfg(folder / "data", val_list)
    return cfg, make_checkpoint(cfg, folder / "snapshots"), folder / "data", val_list


def _choice(cfg, model_dir):
    from segdistill_cli.model_choice import ModelChoice

    return ModelChoice(cfg, Path(model_dir), "student")


# ---- geometry and palettes (no model) ---------------------------------------------------------


def test_fit_and_restore_round_trip_sizes():
    from segdistill_cli.config import load_config
    from segdistill_cli.data.transforms import AugParams
    from segdistill_cli.predict import fit_to_eval, restore

    cfg = load_config(None, ["EVAL_CROP_SIZE=(64, 48)", "AUG.AUG_METHOD=stepscaling"])
    params = AugParams.from_config(cfg)
    small = np.full((30, 50, 3), 200, np.uint8)  # fits: padded, never resized
    padded, geometry = fit_to_eval(small, params)
    assert padded.shape == (48, 64, 3) and not geometry.resized
    assert (padded[30:, :] == 127).all() or (padded[30:, :] == 128).all()  # PADDING_VALUE 127.5
    pred = np.arange(48 * 64).reshape(48, 64) % 7
    np.testing.assert_array_equal(restore(pred, geometry), pred[:30, :50])
    big = np.zeros((100, 256, 3), np.uint8)  # 4x too wide: shrunk keeping aspect to 64x25
    padded, geometry = fit_to_eval(big, params)
    assert padded.shape == (48, 64, 3) and geometry.fitted_hw == (25, 64) and geometry.resized
    back = restore(np.tile(np.arange(64) % 5, (48, 1)), geometry)
    assert back.shape == (100, 256)
    np.testing.assert_array_equal(back[0, ::4], np.arange(64) % 5)  # nearest, columns kept


def test_palettes_and_names():
    from segdistill_cli.config import load_config
    from segdistill_cli.palettes import (CAMVID_PALETTE, CITYSCAPES_PALETTE, class_names,
                                         colorize, palette)

    assert class_names(load_config(None, ["DATASET.NUM_CLASSES=19"]))[13] == "car"
    assert class_names(load_config(None, ["DATASET.NUM_CLASSES=11"]))[0] == "Sky"
    assert class_names(load_config(None, ["DATASET.NUM_CLASSES=3"])) == ["class_0", "class_1",
                                                                         "class_2"]
    assert class_names(load_config(None, ["DATASET.NUM_CLASSES=2",
                                          "DATASET.CLASS_NAMES=['bg', 'fg']"])) == ["bg", "fg"]
    assert palette(19).tolist() == [list(c) for c in CITYSCAPES_PALETTE]
    assert palette(11).tolist() == [list(c) for c in CAMVID_PALETTE]
    generated = palette(40)
    assert len({tuple(c) for c in generated}) == 40 and (generated.sum(axis=1) > 0).all()
    rgb = colorize(np.array([[0, 1], [11, 255]]), palette(11))
    assert rgb[0, 1].tolist() == list(CAMVID_PALETTE[1]) and rgb[1].tolist() == [[0, 0, 0]] * 2


# ---- predict ----------------------------------------------------------------------------------


@needs_camvid
def test_predict_writes_palette_pngs_at_original_size(setup, tmp_path):
    """Original 480x360 CamVid images through the camvid pipeline (resized to 120x90 for the
    model): the PNGs are at 480x360, hold the model's class ids, show the CamVid colours."""
    from segdistill_cli.data.dataset import read_label
    from segdistill_cli.data.transforms import AugParams, normalize, resize
    from segdistill_cli.engine.evaluator import Predictor
    from segdistill_cli.model_choice import load_model
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.palettes import CAMVID_PALETTE
    from segdistill_cli.predict import collect_inputs, run_predict

    cfg, checkpoint, _, _ = setup
    lines = (CAMVID / "val.txt").read_text().split("\n")[:2]
    list_file = tmp_path / "list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    cfg_orig = load_cfg(CAMVID, list_file)
    inputs = collect_inputs(cfg_orig, list_file=str(list_file))
    summary = run_predict(_choice(cfg_orig, checkpoint), inputs, tmp_path / "out", with_label=True)
    assert summary.images == 2 and summary.labels_used == 2 and len(summary.written) == 4

    # The "known prediction", computed independently: pipeline resize, predict, nearest back.
    paddle = import_paddle()
    predictor = Predictor(cfg_orig, paddle.static.Scope(), paddle.CPUPlace())
    load_model(predictor.main_program, _choice(cfg_orig, checkpoint), predictor.scope,
               predictor.place)
    params = AugParams.from_config(cfg_orig)
    colors = np.asarray(CAMVID_PALETTE, np.uint8)
    for line in lines:
        image_rel, label_rel = line.split()
        bgr = cv2.imread(str(CAMVID / image_rel))
        small, _ = resize(bgr, None, params, train=False)
        pred = predictor.predict(normalize(small, params.mean, params.std)[None])[0]
        expected = cv2.resize(pred.astype(np.uint16), (480, 360),
                              interpolation=cv2.INTER_NEAREST)
        name = Path(image_rel).with_suffix("").as_posix()
        with Image.open(tmp_path / "out" / "pred" / f"{name}.png") as im:
            assert im.mode == "P" and im.size == (480, 360)
            np.testing.assert_array_equal(np.asarray(im), expected)
            rgb = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(rgb, colors[expected])
        assert len(np.unique(expected)) >= 3
        label = read_label(str(CAMVID / label_rel))
        with Image.open(tmp_path / "out" / "overlay" / f"{name}.png") as im:
            assert im.mode == "RGB"
            picture = np.asarray(im)
        _check_overlay(picture, bgr[:, :, ::-1], expected, label, colors)


def _check_overlay(picture, rgb, pred, label, colors):
    """Titled panels, a legend of every class colour, prediction and ground truth drawn alike."""
    from segdistill_cli.overlay import BACKGROUND, IGNORE_NAME, draw_overlay
    from segdistill_cli.palettes import CAMVID_CLASSES, colorize

    overlay = draw_overlay(rgb, pred, colors, CAMVID_CLASSES, label)
    np.testing.assert_array_equal(picture, overlay.image)  # the file is this drawing
    assert [p.title for p in overlay.panels] == ["input", "prediction", "ground truth"]
    assert overlay.legend == [(n, tuple(int(v) for v in c)) for n, c in
                              zip(CAMVID_CLASSES, colors)] + [(IGNORE_NAME, (0, 0, 0))]
    crops = [picture[y:y + h, x:x + w] for x, y, w, h in (p.box for p in overlay.panels)]
    assert all(c.shape == rgb.shape for c in crops)  # 480x360: full size, not enlarged
    np.testing.assert_array_equal(crops[0], rgb)
    np.testing.assert_array_equal(crops[1], colorize(pred, colors))  # solid, not blended
    np.testing.assert_array_equal(crops[2], colorize(label, colors))
    same = pred == label  # where the model is right, both panels show the very same colour
    assert same.sum() > 1000  # (an untrained test model: a few percent of the pixels)
    np.testing.assert_array_equal(crops[1][same], crops[2][same])
    assert (crops[2][label == 11] == 0).all()  # ignored pixels black
    # Each title is drawn above its panel; each legend colour appears below the panels.
    for x, y, w, _ in (p.box for p in overlay.panels):
        assert (picture[:y, x:x + w] != BACKGROUND).any()
    below = picture[max(y + h for _, y, _, h in (p.box for p in overlay.panels)):]
    for _, color in overlay.legend:
        assert (below == color).all(axis=-1).any(), color


@needs_camvid
def test_predict_cli_image_and_dir(setup, tmp_path):
    from segdistill_cli.cli import main

    cfg, checkpoint, data_dir, _ = setup
    from _eval_fixtures import ROOT, overrides

    base = ["predict", "--cfg", str(ROOT / "configs" / "camvid.yaml"), "--model-dir",
            str(checkpoint)]
    for item in overrides(data_dir, data_dir / "val.txt"):
        base += ["--set", item]
    one = sorted((data_dir / "img").iterdir())[0]
    assert main(base + ["--image", str(one), "--out", str(tmp_path / "a")]) == 0
    with Image.open(tmp_path / "a" / "pred" / f"{one.stem}.png") as im:
        assert im.size == (120, 90)
    with Image.open(tmp_path / "a" / "overlay" / f"{one.stem}.png") as im:
        # No label: two panels, each 120x90 enlarged x3 to be seen (>= 240 px high).
        from segdistill_cli.overlay import GAP, MIN_PANEL_HEIGHT

        assert MIN_PANEL_HEIGHT == 240
        assert im.size[0] == GAP + 2 * (3 * 120 + GAP) and im.size[1] > 3 * 90
    assert main(base + ["--dir", str(data_dir / "img"), "--out", str(tmp_path / "b")]) == 0
    assert len(list((tmp_path / "b" / "pred").glob("*.png"))) == 5
    assert not list((tmp_path / "b").rglob(".*tmp*"))  # atomic writes left nothing behind
    assert main(base + ["--out", str(tmp_path / "c")]) == 2  # no input given


# ---- export -----------------------------------------------------------------------------------


@needs_camvid
def test_export_round_trip(setup, tmp_path):
    from segdistill_cli.data.dataset import SegDataset
    from segdistill_cli.engine.evaluator import Predictor
    from segdistill_cli.errors import SegDistillError
    from segdistill_cli.model_choice import load_model
    from segdistill_cli.export import export_model, run_exported, verify_same
    from segdistill_cli.paddle_env import import_paddle

    cfg, checkpoint, _, _ = setup
    out = tmp_path / "export"
    summary = export_model(_choice(cfg, checkpoint), out)
    names = {p.name for p in summary.files}
    assert names == {MODEL_FILE, "model.pdiparams", "deploy.yaml"}
    assert "validation image" in summary.verified_on
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder renamed
    deploy = yaml.safe_load((out / "deploy.yaml").read_text())
    assert (deploy["model"]["file"], deploy["model"]["params"]) == (MODEL_FILE, "model.pdiparams")
    assert deploy["input"]["shape"] == [-1, 3, 90, 120]
    assert deploy["input"]["channel_order"] == "BGR"
    assert deploy["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert deploy["num_classes"] == 11 and deploy["ignore_index"] == 11
    assert deploy["class_names"][-1] == "Bicyclist"

    # Independently: the exported model agrees with the checkpoint on all 5 val images.
    images = np.stack([SegDataset(cfg, mode="eval").sample(i)["image"] for i in range(5)])
    labels, probs = run_exported(out, images)
    paddle = import_paddle()
    predictor = Predictor(cfg, paddle.static.Scope(), paddle.CPUPlace())
    load_model(predictor.main_program, _choice(cfg, checkpoint), predictor.scope,
               predictor.place)
    np.testing.assert_array_equal(labels, predictor.predict(images))
    np.testing.assert_allclose(probs, predictor.probabilities(images), rtol=1e-5, atol=1e-6)
    assert probs.shape == (5, 11, 90, 120)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # The verification step does catch a difference.
    changed = labels.copy()
    changed[0, 0, 0] = (changed[0, 0, 0] + 1) % 11
    with pytest.raises(SegDistillError, match="label maps differ"):
        verify_same([labels, probs], [changed, probs])
    with pytest.raises(SegDistillError, match="probabilities differ"):
        verify_same([labels, probs], [labels, probs + 1e-3])

    # Re-export replaces a previous export; an unrelated folder is refused.
    export_model(_choice(cfg, checkpoint), out, verify_images=1)
    other = tmp_path / "not_an_export"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(SegDistillError, match="not a segdistill export"):
        export_model(_choice(cfg, checkpoint), other)
    assert (other / "keep.txt").read_text() == "x"


@needs_camvid
def test_labels_only_export_has_one_output_with_the_same_label_maps(setup, tmp_path):
    from segdistill_cli.errors import SegDistillError
    from segdistill_cli.export import export_model, run_exported, verify_same, verification_inputs

    cfg, checkpoint, _, _ = setup
    full, lean = tmp_path / "full", tmp_path / "lean"
    export_model(_choice(cfg, checkpoint), full, verify_images=1)
    summary = export_model(_choice(cfg, checkpoint), lean, verify_images=1, probabilities=False)
    assert summary.max_prob_diff == 0.0
    deploy = yaml.safe_load((lean / "deploy.yaml").read_text())
    assert [o["dtype"] for o in deploy["outputs"]] == ["int64"]
    images, _ = verification_inputs(cfg, 3)
    (labels,) = run_exported(lean, images)
    full_labels, probs = run_exported(full, images)
    np.testing.assert_array_equal(labels, full_labels)
    assert (lean / MODEL_FILE).stat().st_size < (full / MODEL_FILE).stat().st_size
    # The check compares output lists: a model with a missing output is caught, not zipped away.
    with pytest.raises(SegDistillError, match="1 output"):
        verify_same([full_labels, probs], [labels])


@needs_camvid
def test_export_cli_labels_only(setup, tmp_path, capsys):
    from segdistill_cli.cli import main

    _, checkpoint, data, val_list = setup
    from _eval_fixtures import ROOT, overrides

    args = ["export", "--cfg", str(ROOT / "configs" / "camvid.yaml"), "--model-dir",
            str(checkpoint), "--out", str(tmp_path / "lean"), "--labels-only"]
    for o in overrides(data, val_list):
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "label maps identical" in out and "probabilities" not in out
