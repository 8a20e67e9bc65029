"""Preemption and exact resume on real CamVid at a tiny crop: SIGTERM mid-epoch (a second one
while saving), bit-identical resume, dropout RNG, damaged newest checkpoint, step checkpoints and
retention, a full disk during a save."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segdistill_cli.cli import main
from segdistill_cli.config import load_configs
from segdistill_cli.engine import checkpoints
from segdistill_cli.engine.preemption import EXIT_CODE
from segdistill_cli.engine.trainer import Trainer, TrainOptions
from segdistill_cli.launcher import RunContext
from segdistill_cli.weights import read_pdparams
from conftest import CAMVID, ROOT, STUDENT_CFG, TEACHER_CFG, TINY, TINY_TEACHER, needs_camvid
from _train_fixtures import teacher_overrides

pytestmark = needs_camvid

STEPS_PER_EPOCH = 6  # 12 images, batch 2


@pytest.fixture(scope="module")
def lists(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("lists")
    train = (CAMVID / "train.txt").read_text().splitlines()[:2 * STEPS_PER_EPOCH]
    val = (CAMVID / "val.txt").read_text().splitlines()[:2]
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "val.txt").write_text("\n".join(val) + "\n")
    return {"DATASET.DATA_DIR": str(CAMVID), "DATASET.TRAIN_FILE_LIST": str(folder / "train.txt"),
            "DATASET.VAL_FILE_LIST": str(folder / "val.txt")}


def student_sets(lists, save_dir: Path, *extra: str) -> list[str]:
    return TINY + [f"{k}={v}" for k, v in lists.items()] + [f"TRAIN.MODEL_SAVE_DIR={save_dir}",
                                                             *extra]


def trainer(lists, teacher_dir, save_dir, *extra, **options) -> Trainer:
    configs = load_configs(STUDENT_CFG, TEACHER_CFG, student_sets(lists, save_dir, *extra),
                           teacher_overrides(teacher_dir))
    options.setdefault("seed", 3)
    options.setdefault("do_eval", False)
    return Trainer(configs, TrainOptions(**options), RunContext(), log=lambda m: None)


def cli(lists, teacher_dir, save_dir, *extra: str) -> list[str]:
    args = ["train", "--cfg", str(STUDENT_CFG), "--teacher-cfg", str(TEACHER_CFG), "--seed", "3",
            "--no-eval", "--log-steps", "1"]
    for item in student_sets(lists, save_dir):
        args += ["--set", item]
    for item in teacher_overrides(teacher_dir):
        args += ["--teacher-set", item]
    return args + list(extra)


def assert_same_state(a: Path, b: Path) -> None:
    """Student parameters and optimizer state of two checkpoints, bit for bit."""
    pa, pb = read_pdparams(a / "model.pdparams"), read_pdparams(b / "model.pdparams")
    assert pa.keys() == pb.keys() and len(pa) > 50
    for key in pa:
        assert np.array_equal(pa[key], pb[key]), key
    import pickle

    oa = pickle.loads((a / "model.pdopt").read_bytes())
    ob = pickle.loads((b / "model.pdopt").read_bytes())
    assert oa.keys() == ob.keys()
    for key in oa:
        if key != "LR_Scheduler":
            assert np.array_equal(oa[key], ob[key]), key
    assert oa["LR_Scheduler"] == ob["LR_Scheduler"]


@pytest.fixture(scope="module")
def straight(lists, teacher_dir, tmp_path_factory) -> Path:
    """The uninterrupted 2-epoch run every interrupted one is compared with."""
    save = tmp_path_factory.mktemp("straight")
    trainer(lists, teacher_dir, save).run()
    return save


def _logged_steps(save: Path) -> int:
    log = save / "train_log.jsonl"
    if not log.is_file():
        return 0
    return sum(1 for line in log.read_text().splitlines() if '"type": "train"' in line)


def _wait(predicate, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {what}:\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---- SIGTERM -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_auto_is_bit_identical(lists, teacher_dir, straight,
                                                             tmp_path):
    save = tmp_path / "run"
    args = cli(lists, teacher_dir, save)
    # Saves pause 1 s per file, so the second SIGTERM surely lands during the save.
    env = dict(os.environ, **{checkpoints.PAUSE_ENV: "1"})
    proc = subprocess.Popen([sys.executable, "-m", "segdistill_cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait(lambda: _logged_steps(save) >= 2, proc, "step 2")
    proc.send_signal(signal.SIGTERM)
    _wait(lambda: any(p.name.startswith(".step-") for p in save.iterdir()), proc, "the save")
    proc.send_signal(signal.SIGTERM)  # a second one while saving: recorded, changes nothing
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_CODE, out
    stop_lines = [line for line in out.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stop_lines) == 1, out
    assert "resume with: segdistill train " in stop_lines[0]
    assert stop_lines[0].endswith("--resume auto")
    steps = [p for p in save.iterdir() if p.name.startswith("step-")]
    assert len(steps) == 1 and not [p for p in save.iterdir() if p.name.startswith(".")]
    meta = checkpoints.read_meta(steps[0])
    assert 2 <= meta["global_step"] < STEPS_PER_EPOCH and meta["epoch"] == 1
    assert meta["step_in_epoch"] == meta["global_step"]  # mid-epoch, the exact position
    assert checkpoints.verify(steps[0]) is True
    assert str(steps[0]) in stop_lines[0]

    resumed = trainer(lists, teacher_dir, save, resume="auto", seed=None)
    summary = resumed.run()
    assert summary.steps_run == 2 * STEPS_PER_EPOCH
    assert_same_state(straight / "final", save / "final")


def test_sigusr1_in_process_stops_at_the_step_boundary(lists, teacher_dir, tmp_path):
    save = tmp_path / "run"
    run = trainer(lists, teacher_dir, save)
    lines: list[str] = []

    def log(message: str) -> None:
        lines.append(message)
        if "step=4 " in message:
            os.kill(os.getpid(), signal.SIGUSR1)

    run.echo = log
    run.options.log_steps = 1
    from segdistill_cli.engine.preemption import Preempted

    with pytest.raises(Preempted, match=r"stopped by SIGUSR1 after step 4 \(epoch 1, batch 4/6\)"):
        run.run()
    assert checkpoints.latest_checkpoint(save) == save / "step-4"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # handlers restored


# ---- exact resume: the dropout generator ------------------------------------------------------


def _teacher_alone(lists, save_dir, **options) -> Trainer:
    """The teacher config trained alone: it has the ASPP dropout (the student has none)."""
    configs = load_configs(TEACHER_CFG, None, TINY_TEACHER + [
        f"{k}={v}" for k, v in lists.items()] + [
        f"TRAIN.MODEL_SAVE_DIR={save_dir}", "BATCH_SIZE=2", "DATALOADER.NUM_WORKERS=0",
        "SOLVER.NUM_EPOCHS=2", "TRAIN.SNAPSHOT_EPOCH=1", "AUG.FIX_RESIZE_SIZE=(64, 48)"])
    options.setdefault("seed", 5)
    return Trainer(configs, TrainOptions(use_teacher=False, do_eval=False, **options),
                   RunContext(), log=lambda m: None)


@pytest.mark.slow
def test_dropout_is_reseeded_per_step_so_resume_is_exact(lists, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    _teacher_alone(lists, straight).run()

    def resumed_final(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        shutil.copytree(straight / "1", folder / "1")
        _teacher_alone(lists, folder, resume="auto").run()
        return folder / "final"

    assert_same_state(straight / "final", resumed_final("resumed"))
    # Negative control: without the per-step reseed, the resumed run's dropout masks come from
    # wherever the global generator happens to be, and the result differs.
    monkeypatch.setattr(Trainer, "_seed_generator", lambda self, step: None)
    with pytest.raises(AssertionError):
        assert_same_state(straight / "final", resumed_final("unseeded"))


# ---- damaged newest checkpoint ----------------------------------------------------------------


@pytest.mark.slow
def test_truncated_newest_checkpoint_resume_falls_back_and_eval_names_it(lists, teacher_dir,
                                                                        straight, tmp_path, capsys):
    save = tmp_path / "run"
    shutil.copytree(straight, save)  # (the copy does not keep final/ <-> 2/ hard links)
    target = save / "final" / "model.pdparams"
    # Truncated in place. In a run folder final/ shares its files with 2/ (hard links), so the
    # same damage shows in both: truncate 2/'s copy as well.
    for folder in ("final", "2"):
        file = save / folder / "model.pdparams"
        file.write_bytes(file.read_bytes()[:1000])

    code = main(["eval", "--cfg", str(STUDENT_CFG), *sum((["--set", s] for s in student_sets(
        lists, save)), []), "--model-dir", str(save / "final")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1  # a corrupt file (README "Exit codes")
    assert str(target) in err[0] and "damaged" in err[0]

    lines: list[str] = []
    resumed = trainer(lists, teacher_dir, save, resume="auto", seed=None)
    resumed.echo = lines.append
    resumed.run()
    skipped = [line for line in lines if "skipping" in line]
    assert [s.split(":")[1].strip() for s in skipped] == ["skipping " + str(save / "final"),
                                                           "skipping " + str(save / "2")]
    assert any(line.startswith(f"resumed from {save / '1'} ") for line in lines)
    assert_same_state(straight / "final", save / "final")  # epoch 2 redone, bit for bit


def _damaged_copy(straight: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "damaged"
    shutil.copytree(straight / "1", folder)
    file = folder / "model.pdparams"
    data = file.read_bytes()
    file.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])  # same size, altered
    return file


def test_export_and_predict_refuse_a_damaged_checkpoint_naming_the_file(lists, straight,
                                                                        tmp_path, capsys):
    file = _damaged_copy(straight, tmp_path)
    sets = sum((["--set", s] for s in student_sets(lists, tmp_path)), [])
    image = CAMVID / (CAMVID / "val.txt").read_text().split()[0]
    for command in (["export", "--out", str(tmp_path / "export")],
                    ["predict", "--image", str(image), "--out", str(tmp_path / "pred")]):
        code = main([command[0], "--cfg", str(STUDENT_CFG), *sets, "--model-dir",
                     str(file.parent), *command[1:]])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1, (command, err)
        assert str(file) in err[0] and "sha256" in err[0]
    assert not (tmp_path / "export").exists() and not (tmp_path / "pred").exists()


def test_explicit_resume_from_a_damaged_checkpoint_is_refused(lists, teacher_dir, straight,
                                                             tmp_path):
    file = _damaged_copy(straight, tmp_path)
    run = trainer(lists, teacher_dir, tmp_path / "run", resume=str(file.parent))
    with pytest.raises(checkpoints.DamagedCheckpoint, match=re.escape(str(file))):
        run.run()
    assert not (tmp_path / "run").exists()  # refused in pre-flight: nothing written


def test_eval_on_a_checkpoint_without_checksums_warns_not_verified(lists, straight, tmp_path,
                                                                  capsys):
    folder = tmp_path / "old"
    shutil.copytree(straight / "1", folder)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]
    (folder / "meta.json").write_text(json.dumps(meta))
    from segdistill_cli.config import load_config
    from segdistill_cli.model_choice import ModelChoice, check_model_dir

    cfg = load_config(STUDENT_CFG, student_sets(lists, tmp_path))
    warnings: list[str] = []
    check_model_dir(ModelChoice(cfg, folder, "student"), warn=warnings.append)
    assert len(warnings) == 1 and "not verified" in warnings[0]
    check_model_dir(ModelChoice(cfg, straight / "1", "student"), warn=warnings.append)
    assert len(warnings) == 1  # a checkpoint with checksums: verified, silent


# ---- step checkpoints and retention ------------------------------------------------------------


def test_step_checkpoints_retention_and_resume_from_a_step_checkpoint(lists, teacher_dir,
                                                                      straight, tmp_path):
    save, kept = tmp_path / "run", tmp_path / "kept"
    lines: list[str] = []

    def log(message: str) -> None:
        lines.append(message)
        if message == f"checkpoint: {save / 'step-8'}":  # keep a copy before retention drops it
            shutil.copytree(save / "step-8", kept / "step-8")

    run = trainer(lists, teacher_dir, save, "TRAIN.CHECKPOINT_STEPS=4", "TRAIN.KEEP_CHECKPOINTS=1")
    run.echo = log
    run.run()
    written = [line.split("/")[-1] for line in lines if line.startswith("checkpoint: ")]
    # steps 4 (epoch 1, 4/6), 6 = epoch 1, 8 (epoch 2, 2/6), 12 = epoch 2 (4 | 12: no extra).
    assert written == ["step-4", "1", "step-8", "2"]
    assert sorted(p.name for p in save.iterdir() if p.is_dir()) == ["2", "final"]
    assert (save / "final" / "model.pdparams").stat().st_ino == \
        (save / "2" / "model.pdparams").stat().st_ino  # final/ is not a second copy
    assert checkpoints.read_meta(save / "final")["linked_from"] == "2"
    assert_same_state(straight / "final", save / "final")  # saving never changes the training

    meta = checkpoints.read_meta(kept / "step-8")
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (2, 2, 8)
    summary = trainer(lists, teacher_dir, kept, resume="auto", seed=None).run()
    assert summary.epochs_run == 1 and summary.steps_run == 12
    assert_same_state(straight / "final", kept / "final")


# ---- a full disk during a save ---------------------------------------------------------------


def test_full_disk_during_a_save_stops_with_one_line(lists, teacher_dir, tmp_path, monkeypatch,
                                                     capsys):
    save = tmp_path / "run"
    real_write = checkpoints._write_file

    def write(path: Path, data: bytes):
        if path.parent.name.startswith(".2.tmp-") and path.name == "model.pdopt":
            path.write_bytes(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(checkpoints, "_write_file", write)
    code = main(cli(lists, teacher_dir, save))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "cannot write checkpoint 2" in err[0] and "No space left on device" in err[0]
    assert f"newest: {save / '1'}" in err[0]
    assert sorted(p.name for p in save.iterdir() if p.is_dir()) == ["1"]  # no partial folder
    assert checkpoints.verify(save / "1") is True


def test_the_stop_decision_is_the_vote_not_the_local_flag():
    """Under a launcher `agree` is the collective vote (tests/test_data_parallel.py runs it for
    real): a signal to another rank stops this one, and this rank's own signal decides nothing
    until the vote says so. The handlers are installed while training and restored after."""
    import os

    from segdistill_cli.engine.preemption import StopRequest

    votes: list[bool] = []
    with StopRequest(agree=lambda local: votes.append(local) or True) as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        assert stop.requested and votes == [False]  # another rank was signalled
    with StopRequest(agree=lambda local: False) as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.signal_name == "SIGUSR1" and not stop.requested
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
