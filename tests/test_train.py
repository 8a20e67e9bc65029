"""`segdistill train` end to end on real CamVid at a tiny crop: distillation, teacher frozen bit for
bit, resume equality, SIGKILL during training and during a save, NaN stop, pre-flight errors."""
from __future__ import annotations

import json
import signal
import sys

import numpy as np
import pytest

from segdistill_cli.cli import main
from segdistill_cli.config import load_configs
from segdistill_cli.engine import checkpoints
from segdistill_cli.engine.trainer import Trainer, TrainOptions
from segdistill_cli.errors import SegDistillError
from segdistill_cli.launcher import RunContext
from segdistill_cli.weights import read_pdparams, read_tensor

from conftest import IR, ROOT, STUDENT_CFG, TEACHER_CFG, needs_camvid
from _program_checks import gradients_of
from _train_fixtures import cli_args, make_trainer, overrides, spawn, teacher_overrides, wait_for

pytestmark = needs_camvid


# ---- distillation ----------------------------------------------------------------------------


def test_distill_trains_student_keeps_teacher_bit_identical(lists, teacher_dir, tmp_path):
    from segdistill_cli.distill.teacher import teacher_persistables

    trainer = make_trainer(lists, teacher_dir, tmp_path / "run")
    summary = trainer.run()
    graph = trainer.graph
    # Every teacher tensor in the merged program equals, bit for bit, the file it came from.
    names = teacher_persistables(graph.main)
    assert len(names) > 100
    for name in names:
        now = np.array(graph.scope.find_var(name).get_tensor())
        original = read_tensor(teacher_dir / name[len("teacher_"):])
        assert np.array_equal(now, original), name
    # No gradient exists for any teacher variable (the student's head has one: the control).
    assert not gradients_of(graph.main, "teacher_")
    assert gradients_of(graph.main, "logit/")
    # The student changed: the final checkpoint differs from a fresh init with the same seed.
    final = read_pdparams(tmp_path / "run" / "final" / "model.pdparams")
    assert not any(k.startswith("teacher_") for k in final)
    initial = _fresh_student_init(trainer.cfg, seed=3)
    changed = [k for k in initial if not np.array_equal(initial[k], final[k])]
    assert len(changed) > 0.9 * len(initial)
    # Logs: every term on its own, eval each snapshot, best_model, run.json.
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    train_records = [r for r in records if r["type"] == "train"]
    assert {"loss/ce", "loss/l2_0", "loss/total"} <= set(train_records[0])
    first = train_records[0]
    assert first["loss/total"] == pytest.approx(first["loss/ce"] + first["loss/l2_0"], rel=1e-5)
    assert [r["epoch"] for r in records if r["type"] == "eval"] == [1, 2]
    assert (tmp_path / "run" / "best_model" / "model.pdparams").is_file()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["seed"] == 3 and run["global_batch"] == 2 and run["num_trainers"] == 1
    assert run["distill_pairs"][0].startswith("l2_0")
    # The count the LR schedule was built from (8 images, ceil(8 / 2) = 4 steps an epoch), not
    # legacy's default 2975; the val count is the val list's.
    assert run["student"]["DATASET"]["TRAIN_TOTAL_IMAGES"] == trainer.schedule_images == 8
    assert graph.lr_scheduler.schedule.steps_per_epoch == 4
    assert run["student"]["DATASET"]["VAL_TOTAL_IMAGES"] == 4
    assert summary.steps_run == 8 and summary.epochs_run == 2


def _fresh_student_init(cfg, seed: int) -> dict[str, np.ndarray]:
    from segdistill_cli.engine.graph import seeded_student
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.program_vars import parameters

    paddle = import_paddle()
    student = seeded_student(cfg, seed)
    scope = paddle.static.Scope()
    paddle.static.Executor(paddle.CPUPlace()).run(student.startup, scope=scope)
    return {p.name: np.array(scope.find_var(p.name).get_tensor())
            for p in parameters(student.main)}


def test_kl_pair_with_adapter_trains(lists, teacher_dir, tmp_path, capsys):
    pairs = ('[{TEACHER: logits, STUDENT: logits, LOSS: kl, TEMPERATURE: 2, WEIGHT: 1}, '
             '{TEACHER: decoder.out, STUDENT: backbone.out, LOSS: l2, ADAPTER: conv1x1, '
             'RESIZE: bilinear, NAME: feat}]')
    code = main(cli_args(lists, teacher_dir, tmp_path / "run", "--no-eval", "--set",
                         f"DISTILL={pairs}", "--set", "SOLVER.NUM_EPOCHS=1"))
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert {"loss/kl_0", "loss/feat"} <= set(records[0])
    saved = read_pdparams(tmp_path / "run" / "final" / "model.pdparams")
    assert not any(k.startswith("distill_adapter_") for k in saved)  # adapters are never exported


# ---- resume ------------------------------------------------------------------------------------


def test_resume_continues_exactly(lists, teacher_dir, tmp_path):
    straight = make_trainer(lists, teacher_dir, tmp_path / "straight", do_eval=False)
    straight.run()
    # A second run resumes from the first run's epoch-1 checkpoint (copied: as if it had stopped).
    (tmp_path / "resumed").mkdir()
    import shutil
    shutil.copytree(tmp_path / "straight" / "1", tmp_path / "resumed" / "1")
    resumed = make_trainer(lists, teacher_dir, tmp_path / "resumed", do_eval=False, resume="auto",
                           seed=None)  # the seed comes from the checkpoint
    resumed.run()
    assert resumed.seed == 3
    a = read_pdparams(tmp_path / "straight" / "final" / "model.pdparams")
    b = read_pdparams(tmp_path / "resumed" / "final" / "model.pdparams")
    assert a.keys() == b.keys()
    for key in a:  # bit for bit (data order, LR, optimizer and generator are all restored)
        assert np.array_equal(a[key], b[key]), key
    meta_a = checkpoints.read_meta(tmp_path / "straight" / "final")
    meta_b = checkpoints.read_meta(tmp_path / "resumed" / "final")
    assert meta_a["lr_step"] == meta_b["lr_step"] == 8
    assert meta_a["global_step"] == meta_b["global_step"] == 8
    assert meta_a["lr"] == pytest.approx(meta_b["lr"])


@pytest.mark.slow
def test_sigkill_during_training_and_during_save_then_resume(lists, teacher_dir, tmp_path):
    save = tmp_path / "run"
    args = cli_args(lists, teacher_dir, save, "--no-eval", "--set", "SOLVER.NUM_EPOCHS=3")
    # 1) killed while training epoch 2 (checkpoint 1 complete).
    proc = spawn(args)
    wait_for(lambda: (save / "1" / "meta.json").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoints.latest_checkpoint(save) == save / "1"
    # 2) resumed, then killed in the middle of writing checkpoint 2 (the writer pauses per file).
    proc = spawn(args + ["--resume", "auto"], {checkpoints.PAUSE_ENV: "2"})
    wait_for(lambda: any(p.name.startswith(".2.tmp-") and any(p.iterdir())
                          for p in save.iterdir() if p.is_dir()), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoints.latest_checkpoint(save) == save / "1"
    assert not (save / "2").exists()
    # 3) resumed again: completes from epoch 2 on.
    proc = spawn(args + ["--resume", "auto"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resumed from" in out and "epoch 1" in out
    assert checkpoints.read_meta(save / "final")["global_step"] == 12
    assert not [p for p in save.iterdir() if p.name.startswith(".")]


# ---- failures -------------------------------------------------------------------------------


def test_nan_stops_training_naming_term_and_step(lists, teacher_dir, tmp_path, capsys):
    code = main(cli_args(lists, teacher_dir, tmp_path / "run", "--no-eval",
                         "--set", "SOLVER.LR=1e30", "--set", "SOLVER.NUM_EPOCHS=1"))
    err = capsys.readouterr().err
    assert code == 1
    assert "loss" in err and "step" in err and ("nan" in err or "inf" in err)
    assert not (tmp_path / "run" / "final").exists()


def test_preflight_reports_all_problems_before_any_step(lists, teacher_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("only_one_field\n")
    code = main(cli_args(lists, teacher_dir, blocker / "save",
                         "--set", f"DATASET.TRAIN_FILE_LIST={bad_list}"))
    err = capsys.readouterr().err
    assert code == 2  # one of them is a config problem
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, err  # one line per problem
    assert "bad.txt" in errors[0] and "MODEL_SAVE_DIR" in errors[1]


def test_missing_teacher_dir_is_an_error_never_a_random_teacher(lists, tmp_path, capsys):
    code = main(cli_args(lists, tmp_path / "nowhere", tmp_path / "run"))
    err = capsys.readouterr().err
    assert code == 2
    assert "KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR" in err and "random teacher" in err
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


def test_teacher_missing_one_parameter_fails_naming_it(lists, teacher_dir, tmp_path):
    import shutil

    broken = tmp_path / "teacher"
    shutil.copytree(teacher_dir, broken)
    (broken / "logit" / "weights").unlink()
    trainer = make_trainer(lists, broken, tmp_path / "run")
    with pytest.raises(SegDistillError, match="logit/weights"):
        trainer.run()
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


@pytest.mark.parametrize("pair,fragment", [
    ("{TEACHER: logitz, STUDENT: logits}", "closest"),
    ("{TEACHER: decoder.out, STUDENT: backbone.out}", "ADAPTER"),
])
def test_bad_pairs_fail_before_step_one(lists, teacher_dir, tmp_path, pair, fragment):
    trainer = make_trainer(lists, teacher_dir, tmp_path / "run", student_extra=[f"DISTILL=[{pair}]"])
    with pytest.raises(SegDistillError, match=fragment):
        trainer.run()
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


def test_batch_not_divisible_by_trainers(lists, teacher_dir, tmp_path):
    configs = load_configs(STUDENT_CFG, TEACHER_CFG,
                           overrides(lists, tmp_path / "run", "BATCH_SIZE=3"),
                           teacher_overrides(teacher_dir))
    trainer = Trainer(configs, TrainOptions(), RunContext(rank=0, nranks=2), log=lambda m: None)
    with pytest.raises(SegDistillError, match="BATCH_SIZE 3 is not divisible by the 2"):
        trainer.preflight()


def test_dry_run_prints_estimate_and_writes_nothing(lists, teacher_dir, tmp_path, capsys):
    code = main(cli_args(lists, teacher_dir, tmp_path / "run", "--dry-run"))
    out = capsys.readouterr().out
    assert code == 0
    assert "s/step" in out and "ETA" in out and "peak host memory" in out
    assert not (tmp_path / "run").exists()


def test_gpus_on_a_cpu_build_is_a_clear_error(lists, teacher_dir, tmp_path, capsys):
    code = main(cli_args(lists, teacher_dir, tmp_path / "run", "--gpus", "0,1"))
    err = capsys.readouterr().err
    assert code != 0 and "--gpus" in err
    assert len(err.strip().splitlines()) == 1


def test_tutorial_configs_pass_preflight_against_a_legacy_teacher_dir(lists, tmp_path, capsys):
    """The unchanged tutorial YAMLs + a legacy-format xception65_bn_cityscapes folder (732 real
    headers, sparse data) pass every pre-flight check, and the tutorial pair resolves to the seed's
    names."""
    from _legacy_fixtures import sparse_legacy_dir
    from segdistill_cli.models import parameter_manifest

    tutorial_teacher = ROOT / "configs" / "cityscape_teacher.yaml"
    teacher = sparse_legacy_dir(tmp_path / "xception65_bn_cityscapes",
                                parameter_manifest(load_configs(tutorial_teacher).student))
    args = ["train", "--cfg", str(ROOT / "configs" / "cityscape.yaml"), "--teacher_cfg",
            str(tutorial_teacher), "--preflight", "--use_gpu", "--do_eval", "--log_steps", "10",
            "--teacher-set", f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={teacher}",
            "--set", f"TRAIN.MODEL_SAVE_DIR={tmp_path / 'snapshots'}",
            "--set", "TRAIN.TEACHER_CHECK_IMAGES=0"]  # the sparse teacher's values are not trained
    for key, value in lists.items():
        args += ["--set", f"{key}={value}"]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert ("l2_0: l2 x 0.1 on bilinear_interp_v2_0.tmp_0[-1, 19, 769, 769] <- "
            "teacher_bilinear_interp_v2_2.tmp_0[-1, 19, 769, 769]") in out
    assert "pre-flight ok" in out
    assert not (tmp_path / "snapshots").exists()
    # One missing teacher file is caught by the same pre-flight, naming it.
    (teacher / "encoder" / "aspp1" / "depthwise" / "weights").unlink()
    assert main(args) == 2  # weights that do not fit the config: an input problem
    assert "encoder/aspp1/depthwise/weights" in capsys.readouterr().err


def _pretend_gpus(monkeypatch, count: int) -> list:
    """A CUDA build with `count` GPUs, and a launcher that records its plan instead of running."""
    import segdistill_cli.engine.train_entry as entry
    import segdistill_cli.launcher as launcher

    monkeypatch.setattr(launcher, "_cuda_facts", lambda compiled, n: (True, count))
    launched = []
    monkeypatch.setattr(entry, "run_launch", lambda plan, **env: launched.append(plan) or 0)
    return launched


def test_two_gpus_relaunch_the_same_command_under_paddle_launch(lists, teacher_dir, tmp_path,
                                                                 monkeypatch):
    launched = _pretend_gpus(monkeypatch, 2)
    args = cli_args(lists, teacher_dir, tmp_path / "run", "--gpus", "0,1", "--log-steps", "5")
    assert main(args) == 0
    command = list(launched[0].command)
    assert command[:5] == [sys.executable, "-m", "paddle.distributed.launch", "--devices", "0,1"]
    assert command[command.index("--log_dir") + 1] == str(tmp_path / "run" / "launch_logs")
    worker = command[command.index("segdistill_cli") - 3:]
    assert worker[:3] == [sys.executable, "-u", "-m"]
    assert worker[4:] == [a for a in args if a not in ("--gpus", "0,1")]  # minus --gpus only
    assert not (tmp_path / "run").exists()  # the parent only launches


def test_multi_node_options_pass_through(lists, teacher_dir, tmp_path, monkeypatch):
    launched = _pretend_gpus(monkeypatch, 2)
    args = cli_args(lists, teacher_dir, tmp_path / "run", "--gpus", "0,1", "--ips",
                    "10.0.0.1,10.0.0.2", "--nnodes", "2", "--master", "10.0.0.1:8090",
                    "--node-rank", "1", "--set", "BATCH_SIZE=4")  # 2 nodes x 2 GPUs = 4 workers
    assert main(args) == 0
    command = list(launched[0].command)
    launcher_part = command[:command.index("-u")]
    for flag, value in (("--ips", "10.0.0.1,10.0.0.2"), ("--nnodes", "2"),
                        ("--master", "10.0.0.1:8090"), ("--rank", "1")):
        assert launcher_part[launcher_part.index(flag) + 1] == value
    assert "--ips" not in command[command.index("-u"):]


def test_global_batch_must_split_over_gpus_before_launch(lists, teacher_dir, tmp_path, monkeypatch,
                                                         capsys):
    launched = _pretend_gpus(monkeypatch, 2)
    code = main(cli_args(lists, teacher_dir, tmp_path / "run", "--gpus", "0,1",
                         "--set", "BATCH_SIZE=3"))
    assert code == 2 and not launched
    assert "BATCH_SIZE 3 is not divisible by the 2" in capsys.readouterr().err


def test_one_gpu_runs_in_process_on_that_device(monkeypatch):
    import segdistill_cli.launcher as launcher

    monkeypatch.setattr(launcher, "_cuda_facts", lambda compiled, n: (True, 2))
    plan = launcher.plan_launch(launcher.LaunchRequest(gpus="1"), ["train"], env={})
    assert plan.kind == "single" and plan.device == "gpu:1"
    assert launcher.run_context(plan).place is not None
    plan = launcher.plan_launch(launcher.LaunchRequest(), ["train"], env={})
    assert plan.device == "gpu:0"  # CUDA build with a GPU: GPU 0 by default
    plan = launcher.plan_launch(launcher.LaunchRequest(cpu=True), ["train"], env={})
    assert plan.device == "cpu"


def test_run_json_records_versions(lists, teacher_dir, tmp_path):
    from importlib.metadata import version

    from segdistill_cli.stack import SUPPORTED_STACKS

    main(cli_args(lists, teacher_dir, tmp_path / "run", "--no-eval", "--set", "SOLVER.NUM_EPOCHS=1"))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["versions"]["paddleslim"] == version("paddleslim") == "2.6.0"
    # The installed Paddle (2.6.2 or 3.3.1 here), one of the stacks segdistill supports.
    paddle_version = version("paddlepaddle")
    assert run["versions"]["paddle"] == paddle_version
    assert any(paddle_version.startswith(prefix) and ir == IR
               for prefix, ir in SUPPORTED_STACKS.items())
    assert run["command"][:2] == ["segdistill", "train"]


@pytest.mark.parametrize("command", ["train", "eval"])
def test_unknown_check_data_mode_is_a_usage_error(lists, teacher_dir, tmp_path, capsys, command):
    args = cli_args(lists, teacher_dir, tmp_path / "run", "--check-data", "most")
    if command == "eval":
        args = ["eval", "--cfg", str(STUDENT_CFG), "--model-dir", str(teacher_dir),
                "--check-data", "most"] + [a for item in lists.items()
                                          for a in ("--set", "=".join(item))]
    assert main(args) == 2
    assert "--check-data: 'most' is not one of sample, full, off" in capsys.readouterr().err
