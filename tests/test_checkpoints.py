"""Checkpoints on a tiny static program: contents, exact resume, crash safety, latest/auto."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from segdistill_cli.config import load_config
from segdistill_cli.engine import checkpoints as ck
from segdistill_cli.engine.solver import build_optimizer
from segdistill_cli.errors import SegDistillError
from segdistill_cli.paddle_env import import_paddle

paddle = import_paddle()
PLACE = paddle.CPUPlace()
CFG = load_config(None, ["SOLVER.LR=0.05", "SOLVER.NUM_EPOCHS=2", "BATCH_SIZE=2",
                         "SOLVER.WEIGHT_DECAY=0.01"])


def build(train: bool = True):
    """conv + BN (moving stats) + an adapter param + a frozen `teacher_` var, Momentum + poly LR.
    `train=False`: the student alone, as eval/export build it."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = 7
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [-1, 3, 8, 8], "float32")
        feat = paddle.static.nn.conv2d(image, 4, 3, padding=1,
                                       param_attr=paddle.ParamAttr(name="conv/weights"))
        feat = paddle.static.nn.batch_norm(
            feat, param_attr=paddle.ParamAttr(name="bn/gamma"),
            bias_attr=paddle.ParamAttr(name="bn/beta"),
            moving_mean_name="bn/moving_mean", moving_variance_name="bn/moving_variance")
        if not train:
            return main, startup, feat, None
        adapter = paddle.static.nn.conv2d(feat, 2, 1, bias_attr=False,
                                          param_attr=paddle.ParamAttr(name="distill_adapter_0.w_0"))
        teacher = paddle.static.create_global_var([1, 2, 8, 8], 0.5, "float32", persistable=True,
                                                  name="teacher_logits_const")
        teacher.stop_gradient = True
        loss = paddle.mean(paddle.square(feat)) + paddle.mean(paddle.square(adapter - teacher))
        optimizer, scheduler = build_optimizer(CFG, train_total_images=8)
        optimizer.minimize(loss)
    return main, startup, loss, scheduler


def feeds(n):
    rng = np.random.default_rng(3)
    return [rng.standard_normal((2, 3, 8, 8)).astype("float32") for _ in range(n)]


def run_steps(exe, main, scope, scheduler, batches):
    with paddle.static.scope_guard(scope):
        for batch in batches:
            exe.run(main, feed={"image": batch})
            scheduler.step()


def fresh(exe):
    main, startup, _, scheduler = build()
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
    return main, scope, scheduler


def state_of(main, scope):
    out = {}
    for var in main.list_vars():
        if var.persistable and scope.find_var(var.name) is not None:
            tensor = scope.find_var(var.name).get_tensor()
            if tensor._is_initialized():
                out[var.name] = np.array(tensor)
    return out


@pytest.fixture(scope="module")
def exe():
    return paddle.static.Executor(PLACE)


def test_save_then_load_restores_everything_but_teacher(tmp_path, exe):
    main, scope, scheduler = fresh(exe)
    run_steps(exe, main, scope, scheduler, feeds(2))
    folder = ck.save_checkpoint(main, scope, tmp_path, 1, {"epoch": 1, "global_step": 2},
                                lr_scheduler=scheduler)
    assert folder == tmp_path / "1"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.pdopt", "model.pdparams"]
    with open(folder / "model.pdparams", "rb") as fh:
        params = pickle.load(fh)
    with open(folder / "model.pdopt", "rb") as fh:
        opt = pickle.load(fh)
    assert {"conv/weights", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"} <= set(params)
    assert not any(k.startswith(("teacher_", "distill_adapter_")) for k in params)
    assert "distill_adapter_0.w_0" in opt and "conv/weights_velocity_0" in opt
    assert not any(k.startswith("teacher_") for k in opt)
    assert opt["LR_Scheduler"]["last_epoch"] == 2
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["epoch"] == 1 and meta["lr_step"] == 2 and meta["segdistill_version"]

    before = state_of(main, scope)
    main2, scope2, scheduler2 = fresh(exe)
    loaded = ck.load_checkpoint(main2, scope2, folder, PLACE, lr_scheduler=scheduler2)
    assert loaded["global_step"] == 2 and scheduler2.last_epoch == 2
    after = state_of(main2, scope2)
    for name, value in before.items():
        if name.startswith("teacher_"):
            continue
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_pdparams_is_readable_by_paddle_static_load(tmp_path, exe):
    """Legacy-style tools: paddle.static.load(eval_program, '<dir>/model') reads our files."""
    main, scope, scheduler = fresh(exe)
    run_steps(exe, main, scope, scheduler, feeds(1))
    folder = ck.save_checkpoint(main, scope, tmp_path, "final", {"epoch": 2},
                                lr_scheduler=scheduler)
    main2, startup2, _, _ = build(train=False)
    scope2 = paddle.static.Scope()
    with paddle.static.scope_guard(scope2):
        exe.run(startup2)
        paddle.static.load(main2, str(folder / "model"), exe)
    for name in ("conv/weights", "bn/moving_mean", "bn/moving_variance"):
        np.testing.assert_array_equal(np.array(scope2.find_var(name).get_tensor()),
                                      np.array(scope.find_var(name).get_tensor()))


def test_resume_continues_exactly(tmp_path, exe):
    batches = feeds(4)
    main, scope, scheduler = fresh(exe)
    run_steps(exe, main, scope, scheduler, batches)
    straight = state_of(main, scope)

    main_a, scope_a, sched_a = fresh(exe)
    run_steps(exe, main_a, scope_a, sched_a, batches[:2])
    ck.save_checkpoint(main_a, scope_a, tmp_path, 1, {"epoch": 1, "global_step": 2},
                       lr_scheduler=sched_a)
    main_b, scope_b, sched_b = fresh(exe)
    ck.load_checkpoint(main_b, scope_b, tmp_path / "1", PLACE, lr_scheduler=sched_b)
    run_steps(exe, main_b, scope_b, sched_b, batches[2:])
    resumed = state_of(main_b, scope_b)

    assert sched_b.last_epoch == scheduler.last_epoch == 4
    assert sched_b() == pytest.approx(scheduler())
    compared = 0
    for name, value in straight.items():
        if name.startswith("teacher_"):
            continue
        np.testing.assert_allclose(resumed[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
        compared += 1
    assert compared >= 10  # params, BN stats, velocities, LR var


def test_load_reports_missing_and_mismatched_variables(tmp_path, exe):
    main, scope, scheduler = fresh(exe)
    folder = ck.save_checkpoint(main, scope, tmp_path, 1, {"epoch": 1})  # no scheduler state
    with open(folder / "model.pdparams", "rb") as fh:
        params = pickle.load(fh)
    del params["bn/gamma"]
    params["conv/weights"] = np.zeros((4, 3, 5, 5), "float32")
    (folder / "model.pdparams").write_bytes(pickle.dumps(params))
    main2, scope2, _ = fresh(exe)
    with pytest.raises(SegDistillError, match=r"missing, e\.g\. bn/gamma.*conv/weights"):
        ck.load_checkpoint(main2, scope2, folder, PLACE)
    with pytest.raises(SegDistillError, match="not a complete checkpoint"):
        ck.load_checkpoint(main2, scope2, tmp_path / "nope", PLACE)


def _fake_checkpoint(save_dir: Path, name: str, epoch: int, complete: bool = True) -> Path:
    folder = save_dir / name
    folder.mkdir(parents=True)
    (folder / "model.pdparams").write_bytes(pickle.dumps({}))
    if complete:
        (folder / "meta.json").write_text(json.dumps({"epoch": epoch, "global_step": epoch * 10}))
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_latest_ignores_temp_incomplete_and_best_model(tmp_path):
    assert ck.latest_checkpoint(tmp_path / "missing") is None
    _fake_checkpoint(tmp_path, "2", 2)
    _fake_checkpoint(tmp_path, "10", 10)
    _fake_checkpoint(tmp_path, "11", 11, complete=False)  # crashed before meta.json
    _fake_checkpoint(tmp_path, "best_model", 99)
    _fake_checkpoint(tmp_path, f".12.tmp-{_dead_pid()}", 12)
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "10"  # numeric, not lexical, order
    _fake_checkpoint(tmp_path, "final", 10)
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "final"


def test_clean_stale_removes_dead_temps_and_restores_orphaned_old(tmp_path):
    dead = _dead_pid()
    _fake_checkpoint(tmp_path, f".3.tmp-{dead}", 3)
    _fake_checkpoint(tmp_path, f".final.old-{dead}", 5)  # died between the two renames
    live = _fake_checkpoint(tmp_path, f".4.tmp-{os.getpid()}", 4)  # a writer still running
    actions = ck.clean_stale(tmp_path)
    assert len(actions) == 2
    assert not (tmp_path / f".3.tmp-{dead}").exists()
    assert ck.read_meta(tmp_path / "final")["epoch"] == 5
    assert live.exists()


def test_copy_as_and_overwrite_are_atomic_installs(tmp_path, exe):
    main, scope, scheduler = fresh(exe)
    ck.save_checkpoint(main, scope, tmp_path, 1, {"epoch": 1, "best_miou": 0.1})
    ck.copy_as(tmp_path, 1, "best_model")
    ck.save_checkpoint(main, scope, tmp_path, 2, {"epoch": 2, "best_miou": 0.2})
    ck.copy_as(tmp_path, 2, "best_model")  # replaces the old best_model
    meta = ck.read_meta(tmp_path / "best_model")
    assert meta["best_miou"] == 0.2 and meta["copied_from"] == "2"
    assert (tmp_path / "best_model" / "model.pdparams").read_bytes() == \
        (tmp_path / "2" / "model.pdparams").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "best_model"]


_KILLED_WRITER = textwrap.dedent("""
    import sys
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.engine.checkpoints import save_checkpoint
    paddle = import_paddle()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        paddle.static.create_parameter([2, 2], "float32", name="w")
    scope = paddle.static.Scope()
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(scope):
        exe.run(startup)
    print("saving", flush=True)
    save_checkpoint(main, scope, sys.argv[1], "final", {"epoch": 9, "global_step": 999})
""")


def test_sigkill_during_save_leaves_previous_checkpoint(tmp_path):
    _fake_checkpoint(tmp_path, "3", 3)
    _fake_checkpoint(tmp_path, "final", 4)  # the writer below replaces this one
    old_bytes = (tmp_path / "final" / "model.pdparams").read_bytes()
    env = dict(os.environ, **{ck.PAUSE_ENV: "30"})
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        temp = tmp_path / f".final.tmp-{proc.pid}"
        deadline = time.time() + 60
        while not (temp / "model.pdparams").exists():  # first file written, now sleeping
            assert proc.poll() is None, "writer exited early"
            assert time.time() < deadline, "writer never started saving"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert temp.exists() and not (temp / "meta.json").exists()
    assert ck.read_meta(tmp_path / "final")["epoch"] == 4
    assert (tmp_path / "final" / "model.pdparams").read_bytes() == old_bytes
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "final"
    assert ck.clean_stale(tmp_path) == [f"removed {temp.name}"]
    assert not temp.exists()


def test_config_digest_is_stable_and_sensitive():
    a = ck.config_digest(load_config(None, ["SOLVER.LR=0.01"]))
    assert a == ck.config_digest(load_config(None, ["SOLVER.LR=0.01"]))
    assert a != ck.config_digest(load_config(None, ["SOLVER.LR=0.02"]))
