"""`segdistill eval`: a real CamVid student checkpoint on a small val subset.

Covers JSON output (file and pure stdout), flip TTA, a legacy one-file-per-variable folder, sharded
eval summed through files (in process), the launch decision, plots, and the errors for a bad folder
or a missing parameter.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _eval_fixtures import (ROOT, load_cfg, make_checkpoint, needs_camvid, overrides,
                            write_val_subset)

pytestmark = needs_camvid


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(cfg, checkpoint dir, data folder, val list) shared by the module."""
    folder = tmp_path_factory.mktemp("eval")
    val_list = write_val_subset(folder / "orig")
    cfg = load_cfg(folder / "orig", val_list)
    checkpoint = make_checkpoint(cfg, folder / "snapshots")
    return cfg, checkpoint, folder / "orig", val_list


def _choice(cfg, model_dir):
    from segdistill_cli.model_choice import ModelChoice

    return ModelChoice(cfg, Path(model_dir), "student")


def _evaluate(cfg, model_dir, **options):
    from segdistill_cli.eval_run import EvalOptions, RunContext, evaluate_model

    ctx = options.pop("ctx", RunContext())
    return evaluate_model(_choice(cfg, model_dir), EvalOptions(**options), ctx)


@pytest.fixture(scope="module")
def plain(setup):
    cfg, checkpoint, _, _ = setup
    return _evaluate(cfg, checkpoint)


def _cli_args(data_dir, val_list, *extra):
    args = ["eval", "--cfg", str(ROOT / "configs" / "camvid.yaml")]
    for item in overrides(data_dir, val_list):
        args += ["--set", item]
    return args + list(extra)


def test_eval_cli_writes_json_matching_the_matrix(setup, plain, tmp_path):
    from segdistill_cli.cli import main

    cfg, checkpoint, data_dir, val_list = setup
    out = tmp_path / "metrics.json"
    plots = tmp_path / "plots"
    code = main(_cli_args(data_dir, val_list, "--model-dir", str(checkpoint), "--json", str(out),
                          "--plots", str(plots)))
    assert code == 0
    data = json.loads(out.read_text())
    m = plain.matrix
    assert data["num_images"] == 5 and data["model_dir"] == str(checkpoint)
    assert data["flip"] is False and data["scales"] == [1.0]
    assert data["miou"] == pytest.approx(m.mean_iou())
    assert data["acc"] == pytest.approx(m.accuracy())
    assert data["kappa"] == pytest.approx(m.kappa())
    assert data["class_iou"] == pytest.approx(list(m.class_iou()))
    assert data["class_acc"] == pytest.approx(list(m.class_accuracy()))
    assert data["class_names"][0] == "Sky" and len(data["class_names"]) == 11
    # Legacy definitions recomputed from the matrix the eval reports.
    cm = np.asarray(data["confusion_matrix"])
    assert cm.sum() == m.total > 0
    tp = np.diag(cm)
    assert data["class_acc"][3] == pytest.approx(tp[3] / cm[:, 3].sum())
    assert data["miou"] == pytest.approx(np.mean(tp / (cm.sum(0) + cm.sum(1) - tp)))
    # Several classes are predicted: a real model, not a constant.
    assert (cm.sum(axis=0) > 0).sum() >= 5
    for name in ("confusion_matrix.png", "class_iou.png"):
        with Image.open(plots / name) as image:
            image.verify()
        with Image.open(plots / name) as image:
            assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200


def test_json_dash_prints_only_json_on_stdout(setup, plain):
    _, checkpoint, data_dir, val_list = setup
    proc = subprocess.run([sys.executable, "-m", "segdistill_cli",
                           *_cli_args(data_dir, val_list, "--model-dir", str(checkpoint),
                                      "--json", "-")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # fails on any non-JSON text
    assert data["miou"] == pytest.approx(plain.matrix.mean_iou())
    assert "mIoU" in proc.stderr and "Sky" in proc.stderr  # the table went to stderr


def test_flip_tta_is_the_mirror_average(setup, plain, tmp_path):
    """Flip TTA = mean of softmax(x) and mirror(softmax(mirror(x))), and evaluating mirrored data
    with flip gives exactly the matrix of the originals."""
    from segdistill_cli.engine.evaluator import Predictor
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.data.dataset import SegDataset
    from segdistill_cli.model_choice import load_model

    cfg, checkpoint, _, _ = setup
    paddle = import_paddle()
    scope, place = paddle.static.Scope(), paddle.CPUPlace()
    flipped = Predictor(cfg, scope, place, flip=True)
    single = Predictor(cfg, scope, place)
    load_model(single.main_program, _choice(cfg, checkpoint), scope, place)
    images = np.stack([SegDataset(cfg, mode="eval").sample(i)["image"] for i in range(2)])
    expected = (single.probabilities(images)
                + single.probabilities(images[:, :, :, ::-1])[:, :, :, ::-1]) / 2
    np.testing.assert_allclose(flipped.probabilities(images), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(single.probabilities(images), expected, atol=1e-3)  # flip matters

    mirror_list = write_val_subset(tmp_path / "mirror", mirrored=True)
    mirror_cfg = load_cfg(tmp_path / "mirror", mirror_list)
    on_original = _evaluate(cfg, checkpoint, flip=True)
    on_mirrored = _evaluate(mirror_cfg, checkpoint, flip=True)
    assert on_original.flip and on_original.to_json()["flip"] is True
    np.testing.assert_array_equal(on_mirrored.matrix.matrix, on_original.matrix.matrix)
    assert not np.array_equal(on_original.matrix.matrix, plain.matrix.matrix)


def test_legacy_directory_gives_the_same_metrics(setup, plain, tmp_path):
    from segdistill_cli.weights import read_pdparams, write_legacy_dir

    cfg, checkpoint, _, _ = setup
    legacy = write_legacy_dir(tmp_path / "legacy", read_pdparams(checkpoint / "model.pdparams"))
    assert not (legacy / "model.pdparams").exists()
    result = _evaluate(cfg, legacy)
    np.testing.assert_array_equal(result.matrix.matrix, plain.matrix.matrix)


def test_sharded_eval_sums_to_the_full_eval(setup, plain, tmp_path):
    from segdistill_cli.eval_run import gather_shards, write_shard
    from segdistill_cli.launcher import RunContext

    cfg, checkpoint, _, _ = setup
    parts = [_evaluate(cfg, checkpoint, ctx=RunContext(rank=r, nranks=2)) for r in (0, 1)]
    assert [p.num_images for p in parts] == [3, 2]  # contiguous halves of 5
    assert not np.array_equal(parts[0].matrix.matrix, plain.matrix.matrix)
    write_shard(tmp_path, 1, parts[1])
    with pytest.raises(Exception, match=r"worker\(s\) \[0\]"):
        gather_shards(tmp_path, 2, parts[0], timeout=0.3, poll=0.05)
    write_shard(tmp_path, 0, parts[0])
    total = gather_shards(tmp_path, 2, parts[0], timeout=5)
    np.testing.assert_array_equal(total.matrix.matrix, plain.matrix.matrix)
    assert total.num_images == 5 and total.shards == 2
    assert total.matrix.mean_iou() == pytest.approx(plain.matrix.mean_iou())


def test_bad_model_dir_is_one_clear_error(setup, tmp_path, capsys):
    from segdistill_cli.cli import main

    _, _, data_dir, val_list = setup
    code = main(_cli_args(data_dir, val_list, "--model-dir", str(tmp_path / "nope")))
    assert code == 2
    err = capsys.readouterr().err
    assert "model dir not found" in err and str(tmp_path / "nope") in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_missing_parameter_is_named(setup, tmp_path, capsys):
    from segdistill_cli.cli import main
    from segdistill_cli.errors import SegDistillError
    from segdistill_cli.model_choice import check_model_dir
    from segdistill_cli.weights import read_pdparams, write_legacy_dir

    cfg, checkpoint, data_dir, val_list = setup
    arrays = read_pdparams(checkpoint / "model.pdparams")
    del arrays["conv1_1_bn_mean"]
    arrays["logit/biases"] = np.zeros(7, np.float32)  # wrong shape
    broken = write_legacy_dir(tmp_path / "broken", arrays)
    code = main(_cli_args(data_dir, val_list, "--model-dir", str(broken)))
    err = capsys.readouterr().err
    assert code == 2
    assert "conv1_1_bn_mean" in err and "logit/biases" in err and str(broken) in err
    # The strict load itself (not only the header pre-check) names it too.
    from segdistill_cli.engine.evaluator import Predictor
    from segdistill_cli.model_choice import load_model
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    predictor = Predictor(cfg, paddle.static.Scope(), paddle.CPUPlace())
    with pytest.raises(SegDistillError, match="conv1_1_bn_mean"):
        load_model(predictor.main_program, _choice(cfg, broken), predictor.scope,
                   predictor.place)
    with pytest.raises(SegDistillError, match="1 of 262 parameters missing"):
        check_model_dir(_choice(cfg, broken))
