"""Smoke tests of benchmarks/camvid_gain.py's logic (no training): commands, log reading, resume
decision and the table built from fake results."""
from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import pytest

from segdistill_cli.config import load_config, parse_override

from conftest import ROOT



@pytest.fixture(scope="module")
def gain():
    spec = importlib.util.spec_from_file_location("camvid_gain", ROOT / "benchmarks" / "camvid_gain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _value_after(cmd: list[str], flag: str, key: str) -> str:
    values = [cmd[i + 1] for i, c in enumerate(cmd[:-1]) if c == flag and cmd[i + 1].startswith(key + "=")]
    assert len(values) == 1, (flag, key, values)
    return values[0].split("=", 1)[1]


def test_commands_baseline_and_distilled_share_the_recipe(gain, tmp_path):
    args = gain.parse_args(["--data", str(tmp_path), "--epochs", "3", "--crop", "64,48"])
    base = gain.student_command(args, "baseline", 1, tmp_path / "b", tmp_path / "t")
    dist = gain.student_command(args, "kl_T2_w1", 1, tmp_path / "d", tmp_path / "t")
    assert "--no-teacher" in base and "--teacher-cfg" not in base
    assert "--no-teacher" not in dist and "--teacher-cfg" in dist
    for key in ("SOLVER.LR", "SOLVER.NUM_EPOCHS", "TRAIN_CROP_SIZE", "AUG.FIX_RESIZE_SIZE"):
        assert _value_after(base, "--set", key) == _value_after(dist, "--set", key)
    assert _value_after(base, "--set", "SOLVER.NUM_EPOCHS") == "3"
    assert base[base.index("--seed") + 1] == dist[dist.index("--seed") + 1] == "1"
    assert _value_after(dist, "--teacher-set", "SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR") == \
        str(tmp_path / "t")
    # Nothing given to the teacher side is without effect there (config/one_side.py).
    from segdistill_cli.config import load_configs
    from segdistill_cli.config.one_side import check_one_side

    sets = [dist[i + 1] for i, c in enumerate(dist[:-1]) if c == "--set"]
    teacher_sets = [dist[i + 1] for i, c in enumerate(dist[:-1]) if c == "--teacher-set"]
    configs = load_configs(ROOT / "configs" / "camvid.yaml", ROOT / "configs" / "camvid_teacher.yaml",
                           sets, teacher_sets)
    assert check_one_side(configs, distilling=True, training=True) == []
    # The DISTILL override is what the real config loader reads back.
    overrides = [dist[i + 1] for i, c in enumerate(dist[:-1]) if c == "--set"]
    assert parse_override(gain.distill_override(gain.ARMS["kl_T2_w1"][0]))[1] == gain.ARMS["kl_T2_w1"][0]
    cfg = load_config(ROOT / "configs" / "camvid.yaml", overrides)
    (pair,) = cfg.distill_pairs  # the loader normalises pairs (adds defaults); compare what we set
    assert {k: pair[k] for k in gain.ARMS["kl_T2_w1"][0][0]} == gain.ARMS["kl_T2_w1"][0][0]
    assert cfg.TRAIN_CROP_SIZE == (64, 48)


def test_read_run_takes_last_eval_and_loss_means(gain, tmp_path):
    records = [
        {"type": "train", "epoch": 1, "step": 10, "loss/ce": 2.0, "loss/kl_0": 0.2, "step_per_sec": 1},
        {"type": "train", "epoch": 1, "step": 20, "loss/ce": 1.0, "loss/kl_0": 0.4, "step_per_sec": 3},
        {"type": "eval", "epoch": 1, "miou": 0.1, "acc": 0.5, "class_iou": [0.1, 0.1],
         "class_names": ["a", "b"]},
        {"type": "train", "epoch": 2, "step": 30, "loss/ce": 0.5, "loss/kl_0": 0.1, "step_per_sec": 2},
        {"type": "eval", "epoch": 2, "miou": 0.3, "acc": 0.7, "class_iou": [0.2, 0.4],
         "class_names": ["a", "b"]},
    ]
    (tmp_path / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    run = gain.read_run(tmp_path)
    assert run["final"]["miou"] == 0.3 and run["final"]["epoch"] == 2
    assert run["losses_first_epoch"] == pytest.approx({"ce": 1.5, "kl_0": 0.3})
    assert run["losses_last_epoch"] == pytest.approx({"ce": 0.5, "kl_0": 0.1})
    assert run["eval_curve"] == [(1, 0.1), (2, 0.3)]


def test_is_done_requires_same_command(gain):
    results = {"runs": {"x": {"command": ["a", "b"], "final": {"miou": 0.2}}}}
    assert gain.is_done(results, "x", ["a", "b"])
    assert not gain.is_done(results, "x", ["a", "c"])  # recipe changed: run again
    assert not gain.is_done(results, "y", ["a", "b"])


def _run(group: str, seed: int, miou: float, class_iou: list[float], ce: float = 1.0,
         distill: float = 0.0) -> dict:
    losses = {"ce": ce, "total": ce + distill, **({"kl_0": distill} if distill else {})}
    return {"command": [group, str(seed)], "group": group, "seed": seed,
            "final": {"miou": miou, "class_iou": class_iou, "class_names": ["road", "car"]},
            "losses_first_epoch": losses, "losses_last_epoch": losses}


def test_summary_and_table_from_fake_results(gain):
    runs = {
        "teacher": _run("teacher", 0, 0.6, [0.9, 0.3]),
        "baseline_s0": _run("baseline", 0, 0.40, [0.8, 0.0]),
        "baseline_s1": _run("baseline", 1, 0.44, [0.8, 0.08]),
        "baseline_s2": _run("baseline", 2, 0.42, [0.8, 0.04]),
        "kl_T2_w1_s0": _run("kl_T2_w1", 0, 0.45, [0.8, 0.1], distill=0.25),
        "kl_T2_w1_s1": _run("kl_T2_w1", 1, 0.47, [0.8, 0.14], distill=0.25),
        "l2_w3_s0": _run("l2_w3", 0, 0.38, [0.7, 0.06]),
    }
    results = {"meta": {"tuned_arms": ["l2_w3"], "arms": {"kl_T2_w1": gain.ARMS["kl_T2_w1"][0]}},
               "runs": runs}
    s = gain.summarize(results)
    assert s["teacher"]["miou"] == 0.6
    base, kl = s["groups"]["baseline"], s["groups"]["kl_T2_w1"]
    assert base["mean"] == pytest.approx(0.42) and base["std"] == pytest.approx(0.02)
    assert kl["delta"] == pytest.approx(0.46 - 0.42)
    # paired by seed: (0.45-0.40, 0.47-0.44)
    assert kl["paired_delta"][0] == pytest.approx(0.04)
    assert kl["paired_delta"][1] == pytest.approx(statistics.stdev([0.05, 0.03]))
    assert kl["class_delta"] == pytest.approx([0.0, 0.12 - 0.04])
    assert s["groups"]["l2_w3"]["tuned"] and not kl["tuned"]

    table = gain.markdown_table(results)
    assert "| 0.6000 |" in table
    assert "0.4200 ± 0.0200" in table and "+0.0400" in table
    assert "tuned after seeing results" in table
    assert "kl(logits↔logits, T=2) × 1" in table
    assert "0.2500 / 1.0000 = 0.250" in table  # distill term vs CE
    # Per-class Δ is paired: l2_w3 ran seed 0 only, so it is set against baseline seed 0's car
    # (0.06 - 0.00), not the 3-seed baseline mean shown in the baseline column (0.04).
    assert "| car | 0.300 | 0.040 | +0.080 | +0.060 |" in table
    assert "| 2 | 0.4200 | — | — |" in table  # per-seed table: seed 2 has a baseline only
    # tuned rows come after the pre-registered ones
    assert table.index("kl(logits") < table.index("tuned after seeing results")


def test_claim_is_exclusive_and_recovers_stale_locks(gain, tmp_path):
    lock = tmp_path / "run.lock"
    assert gain.claim(lock) == lock
    assert gain.claim(lock) is None  # held by a live process (this one)
    lock.write_text("999999999")  # a pid that cannot exist: its holder died
    assert gain.claim(lock) == lock
    assert lock.read_text() == str(__import__("os").getpid())


def _train_list(tmp_path: Path, lines: int) -> Path:
    (tmp_path / "train.txt").write_text("".join(f"img/{i}.png lab/{i}.png\n" for i in range(lines)),
                                        encoding="utf-8")
    return tmp_path


def test_few_label_regime_splits_the_list_and_pairs_the_labelled_stream(gain, tmp_path):
    (tmp_path / "data").mkdir()
    _train_list(tmp_path / "data", 20)
    args = gain.parse_args(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                            "--regime", "few", "--label-every", "4", "--batch", "4",
                            "--unlabeled-per-batch", "2"])
    base = gain.student_command(args, "baseline", 0, tmp_path / "b", tmp_path / "t")
    dist = gain.student_command(args, "kl_T2_w1", 0, tmp_path / "d", tmp_path / "t")
    labelled = Path(_value_after(base, "--set", "DATASET.TRAIN_FILE_LIST"))
    assert _value_after(dist, "--set", "DATASET.TRAIN_FILE_LIST") == str(labelled)
    unlabeled = Path(_value_after(dist, "--set", "DATASET.UNLABELED_FILE_LIST"))
    kept = labelled.read_text().split("\n")[:-1]
    rest = unlabeled.read_text().split("\n")[:-1]
    assert kept == [f"img/{i}.png lab/{i}.png" for i in (0, 4, 8, 12, 16)]
    assert rest == [f"img/{i}.png" for i in range(20) if i % 4]  # images only, no labels
    # Same labelled images per step: the distilled batch adds the unlabelled ones on top.
    assert _value_after(base, "--set", "BATCH_SIZE") == "4"
    assert _value_after(dist, "--set", "BATCH_SIZE") == "6"
    assert _value_after(dist, "--set", "DATASET.UNLABELED_PER_BATCH") == "2"
    assert "DATASET.UNLABELED_FILE_LIST" not in " ".join(base)
    # The real loader accepts the lists and reads the few-label schedule from them.
    from segdistill_cli.config.validate import unlabeled_per_batch

    sets = [dist[i + 1] for i, c in enumerate(dist[:-1]) if c == "--set"]
    cfg = load_config(ROOT / "configs" / "camvid.yaml", sets)
    assert unlabeled_per_batch(cfg) == 2


def _fake_results(deltas: dict[str, list[float]]) -> dict:
    runs = {}
    base = [0.30, 0.25, 0.28]
    for seed, miou in enumerate(base):
        runs[f"baseline_s{seed}"] = {"group": "baseline", "seed": seed,
                                     "final": {"miou": miou, "class_iou": [miou]},
                                     "losses_last_epoch": {}, "losses_first_epoch": {}}
    for arm, ds in deltas.items():
        for seed, d in enumerate(ds):
            runs[f"{arm}_s{seed}"] = {"group": arm, "seed": seed,
                                      "final": {"miou": base[seed] + d, "class_iou": [0.0]},
                                      "losses_last_epoch": {}, "losses_first_epoch": {}}
    return {"meta": {}, "runs": runs}


def test_best_arm_is_the_highest_mean_paired_gain_over_every_seed(gain):
    results = _fake_results({"kl_T2_w1": [0.02, 0.01, 0.015], "l2_w0.1": [0.0, 0.01, -0.01],
                             "dist": [0.05]})  # dist: one seed only, so it cannot be chosen
    assert gain.best_arm(results) == "kl_T2_w1"
    results = _fake_results({"kl_T2_w1": [0.02, 0.01, 0.015], "l2_w0.1": [0.03, 0.01, 0.02]})
    assert gain.best_arm(results) == "l2_w0.1"
    with pytest.raises(SystemExit, match="no arm"):
        gain.best_arm(_fake_results({"dist": [0.05]}))


def test_a_silent_but_living_trainer_is_waited_for_and_a_dead_one_is_not(gain, tmp_path,
                                                                         monkeypatch):
    """A stopped trainer (SIGSTOP, or starved on a loaded machine) writes no log for minutes:
    the runner must wait for it, not wipe its folder and train again (the bug: log age alone)."""
    import subprocess

    save_dir = tmp_path / "kl_s0"
    save_dir.mkdir()
    log = save_dir / "train_log.jsonl"
    log.write_text("{}\n")
    old = time.time() - 10 * gain.ACTIVE_SECONDS
    os.utime(log, (old, old))  # silent for 20 minutes
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    polls = []
    try:
        gain.trainer_pid_file(save_dir).write_text(str(sleeper.pid))
        monkeypatch.setattr(gain.time, "sleep", lambda s: (polls.append(s), sleeper.kill(),
                                                           sleeper.wait()))
        gain.wait_while_active(save_dir)  # waits while the trainer lives, returns once it died
    finally:
        sleeper.kill()
    assert len(polls) == 1
    # Negative control: without a pid on record, the old rule (log age) says "not active".
    gain.trainer_pid_file(save_dir).unlink()
    gain.wait_while_active(save_dir)
    assert len(polls) == 1
