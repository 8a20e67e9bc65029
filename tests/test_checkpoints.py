"""Checkpoints on a tiny static program: contents, exact resume, crash safety, latest/auto."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from segdistill_cli import atomic
from segdistill_cli.config import load_config
from segdistill_cli.engine import checkpoints as ck
from segdistill_cli.engine.solver import build_optimizer
from segdistill_cli.errors import SegDistillError
from segdistill_cli.models.pir_ops import PirOps
from segdistill_cli.paddle_env import import_paddle
from segdistill_cli.program_vars import persistable_tensors

from conftest import CAMVID_TEACHER

paddle = import_paddle()
PLACE = paddle.CPUPlace()
CFG = load_config(None, ["SOLVER.LR=0.05", "SOLVER.NUM_EPOCHS=2", "BATCH_SIZE=2",
                         "SOLVER.WEIGHT_DECAY=0.01"])


def build(train: bool = True):
    """conv + BN (moving stats) + an adapter param + a frozen `teacher_` var, Momentum + poly LR.
    `train=False`: the student alone, as eval/export build it. Built with the library's PIR-capable
    primitives (named `create_parameter` + `paddle.nn.functional`), which build on either IR."""
    ops = PirOps(is_test=not train)
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = 7
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [-1, 3, 8, 8], "float32")
        feat = ops.conv2d(image, 4, 3, 1, 1, 1, 1, "conv/weights", "conv/biases")
        feat = ops.batch_norm(feat, "bn/", ("gamma", "beta", "moving_mean", "moving_variance"),
                              1e-5, 0.9, no_decay=False)
        if not train:
            return main, startup, feat, None
        adapter = ops.conv2d(feat, 2, 1, 1, 0, 1, 1, "distill_adapter_0.w_0", None)
        # A frozen teacher tensor as the one-program distillation holds it (create_global_var
        # does not build under PIR).
        teacher = paddle.static.create_parameter(
            [1, 2, 8, 8], "float32", attr=paddle.ParamAttr(
                name="teacher_logits_const", initializer=paddle.nn.initializer.Constant(0.5),
                trainable=False))
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
    for var in persistable_tensors(main):
        if scope.find_var(var.name) is not None:
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
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]  # as a checkpoint written before checksums: the content check speaks
    (folder / "meta.json").write_text(json.dumps(meta))
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


def test_link_as_shares_files_and_survives_deleting_its_source(tmp_path, exe):
    main, scope, scheduler = fresh(exe)
    ck.save_checkpoint(main, scope, tmp_path, 1, {"epoch": 1, "best_miou": 0.1})
    ck.link_as(tmp_path, 1, "best_model")
    ck.save_checkpoint(main, scope, tmp_path, 2, {"epoch": 2, "best_miou": 0.2})
    ck.link_as(tmp_path, 2, "best_model")  # replaces the old best_model
    meta = ck.read_meta(tmp_path / "best_model")
    assert meta["best_miou"] == 0.2 and meta["linked_from"] == "2" and meta["name"] == "best_model"
    for name in ("model.pdparams", "model.pdopt"):  # one copy on disk: the same inode
        assert (tmp_path / "best_model" / name).stat().st_ino == (tmp_path / "2" / name).stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "best_model"]
    shutil.rmtree(tmp_path / "2")  # e.g. retention, or a user cleaning up
    assert ck.verify(tmp_path / "best_model") is True
    main2, scope2, scheduler2 = fresh(exe)
    ck.load_checkpoint(main2, scope2, tmp_path / "best_model", PLACE)


def test_link_as_copies_where_hard_links_are_refused(tmp_path, exe, monkeypatch):
    main, scope, _ = fresh(exe)
    ck.save_checkpoint(main, scope, tmp_path, 1, {"epoch": 1})

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(ck.os, "link", no_links)
    ck.link_as(tmp_path, 1, "final")
    assert (tmp_path / "final" / "model.pdparams").stat().st_ino != \
        (tmp_path / "1" / "model.pdparams").stat().st_ino
    assert ck.verify(tmp_path / "final") is True


# ---- integrity ---------------------------------------------------------------------------------


def _saved(tmp_path, exe, names=(1,)):
    main, scope, scheduler = fresh(exe)
    for number, name in enumerate(names, start=1):
        run_steps(exe, main, scope, scheduler, feeds(1))
        ck.save_checkpoint(main, scope, tmp_path, name, {"epoch": number, "global_step": number},
                           lr_scheduler=scheduler)
    return main, scope


def test_meta_records_size_and_sha256_of_the_bytes_written(tmp_path, exe):
    _saved(tmp_path, exe)
    meta = json.loads((tmp_path / "1" / "meta.json").read_text())
    assert sorted(meta["files"]) == ["model.pdopt", "model.pdparams"]
    for name, record in meta["files"].items():
        data = (tmp_path / "1" / name).read_bytes()
        assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert ck.verify(tmp_path / "1") is True


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete"])
@pytest.mark.parametrize("file_name", ["model.pdparams", "model.pdopt"])
def test_damaged_file_is_named_by_verify_and_load(tmp_path, exe, damage, file_name):
    _saved(tmp_path, exe)
    target = tmp_path / "1" / file_name
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":  # same size: only the hash can tell
        target.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    else:
        target.unlink()
    with pytest.raises(ck.DamagedCheckpoint, match=re.escape(str(target))) as info:
        ck.verify(tmp_path / "1")
    assert info.value.exit_code == 1  # a corrupt file (README "Exit codes")
    main2, scope2, scheduler2 = fresh(exe)
    with pytest.raises(SegDistillError, match=re.escape(str(target))):
        ck.load_checkpoint(main2, scope2, tmp_path / "1", PLACE, lr_scheduler=scheduler2)


def test_checkpoint_without_checksums_still_loads_unverified(tmp_path, exe):
    _saved(tmp_path, exe)
    meta = json.loads((tmp_path / "1" / "meta.json").read_text())
    del meta["files"]
    (tmp_path / "1" / "meta.json").write_text(json.dumps(meta))
    assert ck.verify(tmp_path / "1") is False
    assert ck.verify_weights_path(tmp_path / "1" / "model.pdparams") is False
    main2, scope2, scheduler2 = fresh(exe)
    ck.load_checkpoint(main2, scope2, tmp_path / "1", PLACE, lr_scheduler=scheduler2)


def test_shared_teacher_checkpoint_from_an_earlier_version_is_unverified_not_rejected():
    folder = CAMVID_TEACHER
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    assert "files" not in json.loads((folder / "meta.json").read_text())
    assert ck.verify(folder) is False


def test_latest_skips_a_damaged_newest_checkpoint_and_says_so(tmp_path, exe):
    _saved(tmp_path, exe, names=(1, 2))
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "2"
    target = tmp_path / "2" / "model.pdparams"
    target.write_bytes(target.read_bytes()[:-10])
    lines = []
    assert ck.latest_checkpoint(tmp_path, log=lines.append) == tmp_path / "1"
    assert len(lines) == 1 and "skipping" in lines[0] and str(target) in lines[0]


# ---- retention ---------------------------------------------------------------------------------


def test_prune_keeps_last_n_epochs_and_only_current_step_checkpoints(tmp_path):
    for epoch in (1, 2, 3, 4):
        _fake_checkpoint(tmp_path, str(epoch), epoch)  # global_step = 10 * epoch
    for step in (15, 25, 42, 44, 46):
        folder = _fake_checkpoint(tmp_path, f"step-{step}", step // 10, complete=False)
        (folder / "meta.json").write_text(json.dumps({"epoch": step // 10, "global_step": step}))
    _fake_checkpoint(tmp_path, "best_model", 1)
    _fake_checkpoint(tmp_path, "final", 4)
    assert ck.prune(tmp_path, 0) == []  # 0 keeps everything
    removed = ck.prune(tmp_path, 2)
    # Epochs: the 2 newest stay. Steps: the ones before epoch 4 (step 40) are superseded; of the
    # newer ones the 2 newest stay.
    assert sorted(removed) == ["1", "2", "step-15", "step-25", "step-42"]
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["3", "4", "best_model", "final", "step-44", "step-46"]


def test_step_checkpoints_order_between_epochs(tmp_path):
    _fake_checkpoint(tmp_path, "1", 1)  # global step 10
    folder = _fake_checkpoint(tmp_path, "step-15", 2, complete=False)
    (folder / "meta.json").write_text(json.dumps({"epoch": 2, "step_in_epoch": 5,
                                                  "global_step": 15}))
    assert ck.latest_checkpoint(tmp_path) == folder
    _fake_checkpoint(tmp_path, "2", 2)  # global step 20
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "2"


# ---- failed writes (full disk) -----------------------------------------------------------------

_WRITES = ["mkdir", "model.pdparams", "model.pdopt", "meta.json", "fsync", "install"]


def _inject(monkeypatch, where: str) -> None:
    """Make the save fail with ENOSPC at one of its writes (files: after writing half)."""
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "mkdir":
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if ".tmp-" in self.name:
                raise full
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    elif where in ("model.pdparams", "model.pdopt", "meta.json"):
        real_write = ck._write_file

        def write(path, data):
            if path.name == where:
                path.write_bytes(data[: len(data) // 2])
                raise full
            return real_write(path, data)

        monkeypatch.setattr(ck, "_write_file", write)
    elif where == "fsync":
        def fsync(path):
            raise full

        monkeypatch.setattr(ck, "_fsync_dir", fsync)
    else:
        def replace(*args, **kwargs):
            raise full

        monkeypatch.setattr(atomic, "replace_dir", replace)  # the swap inside atomic.staged_dir


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", _WRITES)
@pytest.mark.parametrize("replacing", [False, True], ids=["new", "replace"])
def test_failed_write_leaves_earlier_checkpoints_and_no_partial_folder(tmp_path, exe, monkeypatch,
                                                                      where, replacing):
    main, scope = _saved(tmp_path, exe, names=(1, "final"))
    before = _snapshot(tmp_path)
    _inject(monkeypatch, where)
    with pytest.raises(OSError) as info:
        ck.save_checkpoint(main, scope, tmp_path, "final" if replacing else 2,
                           {"epoch": 2, "global_step": 2})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before  # nothing changed, nothing left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "final"]
    assert ck.verify(tmp_path / "1") and ck.verify(tmp_path / "final")


def test_failed_link_leaves_no_partial_folder(tmp_path, exe, monkeypatch):
    _saved(tmp_path, exe, names=(1,))
    before = _snapshot(tmp_path)

    def link(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.os, "link", link)
    with pytest.raises(OSError):
        ck.link_as(tmp_path, 1, "best_model")
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["1"]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 1 MiB filesystem (needs root / CAP_SYS_ADMIN; skipped otherwise)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_real_full_disk_keeps_every_earlier_checkpoint(tiny_tmpfs, exe):
    """A 1 MiB tmpfs, checkpoints of a ~250 kB program until the disk is full."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        paddle.static.create_parameter([64, 1000], "float32", name="w")  # 256 kB
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
    saved = []
    with pytest.raises(OSError) as info:
        for epoch in range(1, 20):
            ck.save_checkpoint(main, scope, tiny_tmpfs, epoch, {"epoch": epoch,
                                                                "global_step": epoch})
            saved.append(str(epoch))
    assert info.value.errno == errno.ENOSPC
    assert saved and sorted(p.name for p in tiny_tmpfs.iterdir()) == sorted(saved)
    for name in saved:
        assert ck.verify(tiny_tmpfs / name) is True
    assert ck.latest_checkpoint(tiny_tmpfs) == tiny_tmpfs / saved[-1]


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
