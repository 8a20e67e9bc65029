"""`segdistill compare`: runs of the earlier output format (the shared CamVid teacher) and of the
current one side by side, table, JSON and plots."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdistill_cli.cli import main
from segdistill_cli.compare import summarize, summarize_all, table_rows

from conftest import ROOT

TEACHER_RUN = ROOT.parent / "shared" / "models" / "camvid-teacher"
needs_teacher_run = pytest.mark.skipif(not TEACHER_RUN.is_dir(), reason=f"{TEACHER_RUN} not found")


def write_run(folder: Path, miou_per_epoch: list[float], cut_last_line: bool = False) -> Path:
    """A run folder in the current format: teacher check, weighted/raw/mask terms."""
    folder.mkdir(parents=True)
    run = {"command": ["segdistill", "train"], "seed": 4, "started": "2026-12-01T10:00:00+0000",
           "distill_pairs": ["kl_0: kl x 0.5 on a <- b"],
           "teacher_check": {"images": 16, "miou": 0.47, "acc": 0.88, "verdict": "ok"}}
    (folder / "run.json").write_text(json.dumps(run))
    lines, step = [], 0
    start = datetime(2026, 12, 1, 10, tzinfo=timezone.utc).timestamp()
    for epoch, miou in enumerate(miou_per_epoch, start=1):
        for _ in range(2):
            step += 5
            lines.append({"type": "train", "epoch": epoch, "step": step, "loss/ce": 1.0 / step,
                          "loss/kl_0": 0.25, "raw/kl_0": 0.5, "mask/kl_0": 0.8, "loss/total": 0.3,
                          "time": start + 10 * step})
        lines.append({"type": "eval", "epoch": epoch, "step": step, "miou": miou, "acc": 0.5 + miou,
                      "class_iou": [miou, 2 * miou], "class_names": ["a", "b"],
                      "time": start + 10 * step + 3})
    text = "\n".join(json.dumps(x) for x in lines) + "\n"
    if cut_last_line:
        text += '{"type": "train", "epo'  # killed while writing
    (folder / "train_log.jsonl").write_text(text)
    return folder


def test_summary_of_a_current_run(tmp_path):
    run = summarize(write_run(tmp_path / "kl", [0.2, 0.3, 0.25], cut_last_line=True))
    assert run.final.miou == 0.25 and run.best.miou == 0.3 and run.best.epoch == 2
    assert run.final.acc == 0.75 and run.final.class_iou == [0.25, 0.5]
    assert run.steps == 30 and run.epochs == 3
    assert run.wall_seconds == 303.0  # from run.json's start to the last record
    assert run.last_terms == {"loss/ce": 1 / 30, "loss/kl_0": 0.25, "raw/kl_0": 0.5,
                              "mask/kl_0": 0.8, "loss/total": 0.3}
    assert run.teacher_check["verdict"] == "ok"


@needs_teacher_run
def test_a_run_of_the_earlier_format_loads():
    run = summarize(TEACHER_RUN)
    # The numbers the teacher's README gives (its eval at epoch 40).
    assert round(run.final.miou, 4) == 0.4816 and round(run.final.acc, 4) == 0.8803
    assert run.steps == 3640 and run.epochs == 40 and run.teacher_check is None
    assert run.class_names[0] == "Sky" and round(run.final.class_iou[0], 3) == 0.909
    assert [e.epoch for e in run.evals] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert 7000 < run.wall_seconds < 7500  # about two hours, as its README says


@needs_teacher_run
def test_compare_cli_table_json_and_plots(tmp_path, capsys):
    current = write_run(tmp_path / "runs" / "kl", [0.2, 0.3, 0.25])
    plots = tmp_path / "plots"
    code = main(["compare", str(TEACHER_RUN), str(current), "--plots", str(plots),
                 "--json", str(tmp_path / "cmp.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "camvid-teacher" in out and "0.4816" in out and "0.3000 (2)" in out
    assert "IoU Sky" in out and "ok: mIoU 0.4700" in out
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["camvid-teacher", "kl"]
    assert data["runs"][1]["val_miou_per_epoch"] == [[1, 0.2], [2, 0.3], [3, 0.25]]
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["loss_ce.png", "loss_kl_0.png", "loss_total.png", "val_miou.png"]
    for name in names:
        with Image.open(plots / name) as im:
            assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 5  # drawn, not blank
    # --json -: stdout holds only the JSON.
    assert main(["compare", str(current), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["steps"] == 30


def test_bad_run_dirs_are_usage_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "no run.json or train_log.jsonl" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    broken = write_run(tmp_path / "broken", [0.1])
    lines = (broken / "train_log.jsonl").read_text().splitlines()
    (broken / "train_log.jsonl").write_text("\n".join(["{oops", *lines]) + "\n")
    assert main(["compare", str(broken)]) == 1
    assert "train_log.jsonl:1: not valid JSON" in capsys.readouterr().err


def test_same_folder_names_are_told_apart(tmp_path):
    a = write_run(tmp_path / "seed0" / "run", [0.1])
    b = write_run(tmp_path / "seed1" / "run", [0.2])
    runs = summarize_all([a, b])
    assert [r.name for r in runs] == ["seed0/run", "seed1/run"]
    rows = dict(table_rows(runs))
    assert rows["final val mIoU"] == ["0.1000", "0.2000"] and rows["IoU b"] == ["0.200", "0.400"]


def test_the_miou_plot_has_whole_epoch_ticks(tmp_path):
    """Matplotlib's default locator puts ticks at 1.5, 2.5, ... for a 3-epoch run."""
    from segdistill_cli.compare import miou_figure

    fig = miou_figure([summarize(write_run(tmp_path / "kl", [0.2, 0.3, 0.25]))])
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 3]
    assert ticks == [1.0, 2.0, 3.0]
