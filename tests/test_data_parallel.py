"""Data-parallel training for real: worker processes on the CPU (Gloo), the fleet collective
program the GPU path also runs, on the real distillation graph (student + PaddleSlim-merged
teacher) and real CamVid images at a tiny crop.

What makes the parity comparison exact although the student has BatchNorm: both ranks get the
SAME image with DIFFERENT labels (rank 1's label is rank 0's with the classes renumbered; same
void pixels). Per-rank batch statistics then equal the statistics of the single process's batch
of both, BN's backward sums to the same parameter gradients, and the loss normalisation (valid
pixels) is the same on both ranks — so "2 workers x 1 image == 1 process x 2 images" must hold
to float noise exactly when the gradients are averaged over the workers. The labels differ, so
without the all-reduce the ranks train apart: the negative control (all-reduce ops removed)
must fail the same comparison. With different images per rank a BN student differs from the
single process by ~1e-3 (per-rank statistics, as on GPUs without SyncBN); that is not tested.

The float comparison is made after the first step. This tiny-crop BN student is chaotic: the
single process against itself with 2 threads instead of 1 differs by ~2e-5 after one step and by
~0.1 after three (measured), so later steps cannot be compared to float noise; the later steps
run the same ops, and the ranks are shown to stay bit-identical to the end.

One 2-worker run (module fixture, no --seed) serves most assertions; the two-node, killed-worker,
preemption and eval runs compare against it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdistill_cli import launcher as L
from segdistill_cli.collective import values_sha256
from segdistill_cli.config import load_configs
from segdistill_cli.engine.trainer import Trainer, TrainOptions
from segdistill_cli.program_vars import parameters
from segdistill_cli.weights import read_pdparams, read_tensor
from conftest import CAMVID, IR, ROOT, STUDENT_CFG, TEACHER_CFG, TESTS, TINY, needs_camvid
from _train_fixtures import teacher_overrides

pytestmark = needs_camvid

EPOCHS = 3  # one step per epoch: 3 steps, a checkpoint after each
STUDENT = TINY + ["AUG.MIRROR=False", f"SOLVER.NUM_EPOCHS={EPOCHS}", "BATCH_SIZE=2"]
# Same thread count in every run, so runs that should be bit-identical are.
THREADS = {"OMP_NUM_THREADS": "1", "FLAGS_paddle_num_threads": "1"}
# After one step: float noise ~2e-5 (another summation order / thread count); weights move ~0.6.
PARITY_ATOL = 1e-4

# What each stack inserts: fleet's fused c_allreduce_sum calls on the legacy IR (and rank 0's
# Gloo rendezvous writes http.log); under PIR segdistill's own fused pd_op.all_reduce_ calls, the
# parallel environment set up through a TCP store (no http.log).
ALL_REDUCE_OP = "pd_op.all_reduce_" if IR == "pir" else "c_allreduce_sum"
RENDEZVOUS_LOGS = set() if IR == "pir" else {"http.log"}

_RANK_STATE = re.compile(r"rank (\d+)/2 (start|end)\b.*?student sha256 (\w+) \((\d+) trained "
                         r"parameters\), teacher sha256 (\w+)")
_COLLECTIVES = re.compile(r"data-parallel rank (\d+)/2: (\d+) gradients all-reduced in (\d+) "
                          r"(\S+) calls, (\d+) startup values broadcast from rank 0, "
                          r"(\d+) teacher variables in collectives")


# ---- data, runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """Train list: one CamVid image twice, with its label and with a renumbered copy of it."""
    folder = tmp_path_factory.mktemp("dp_lists")
    image, label = (CAMVID / "train.txt").read_text().split("\n")[0].split()
    original = np.asarray(Image.open(CAMVID / label))
    renumbered = np.where(original < 11, (original + 1) % 11, original).astype(np.uint8)
    Image.fromarray(renumbered).save(folder / "renumbered.png")
    (folder / "train.txt").write_text(f"{image} {label}\n{image} {folder / 'renumbered.png'}\n")
    val = (CAMVID / "val.txt").read_text().splitlines()[:4]
    (folder / "val.txt").write_text("\n".join(val) + "\n")
    return {"DATASET.DATA_DIR": str(CAMVID), "DATASET.TRAIN_FILE_LIST": str(folder / "train.txt"),
            "DATASET.VAL_FILE_LIST": str(folder / "val.txt")}


def student_sets(data: dict[str, str], save_dir: Path) -> list[str]:
    return STUDENT + [f"{k}={v}" for k, v in data.items()] + [f"TRAIN.MODEL_SAVE_DIR={save_dir}"]


def teacher_sets(teacher: Path) -> list[str]:
    return teacher_overrides(teacher)


def train_argv(data, teacher, save_dir, *extra: str) -> list[str]:
    argv = ["train", "--cfg", str(STUDENT_CFG), "--teacher-cfg", str(TEACHER_CFG),
            "--log-steps", "1"]
    for item in student_sets(data, save_dir):
        argv += ["--set", item]
    for item in teacher_sets(teacher):
        argv += ["--teacher-set", item]
    return argv + list(extra)


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]), **THREADS)
    env.pop(L.WORKER_ENV, None)
    return {**env, **extra}


def run_cli(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segdistill_cli", *argv], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def worker_log(save_dir: Path, rank: int) -> str:
    return (save_dir / "launch_logs" / f"workerlog.{rank}").read_text()


def rank_states(save_dir: Path) -> dict[tuple[int, str], tuple[str, int, str]]:
    """(rank, "start"/"end") -> (student sha256, trained parameter count, teacher sha256): the
    first start and the last end in the logs (a resumed run logs its own start too)."""
    states: dict[tuple[int, str], tuple[str, int, str]] = {}
    for rank in (0, 1):
        for match in _RANK_STATE.finditer(worker_log(save_dir, rank)):
            key = (int(match[1]), match[2])
            if key not in states or match[2] == "end":
                states[key] = (match[3], int(match[4]), match[5])
    return states


def trained_names(data, teacher) -> list[str]:
    """The student parameters the optimizer updates (built here, not trained)."""
    from segdistill_cli.engine.graph import seeded_student

    configs = load_configs(STUDENT_CFG, TEACHER_CFG, student_sets(data, Path("unused")),
                           teacher_sets(teacher))
    main = seeded_student(configs.student, 0).main  # kept: a PIR value dies with its program
    return sorted(p.name for p in parameters(main) if p.trainable)


def final_student(save_dir: Path, names: list[str], checkpoint: str = "final"
                  ) -> dict[str, np.ndarray]:
    params = read_pdparams(save_dir / checkpoint / "model.pdparams")
    return {n: params[n] for n in names}


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in a)


@pytest.fixture(scope="module")
def two_workers(data, teacher_dir, tmp_path_factory) -> dict:
    """`train --cpu --nproc 2` without --seed (eval on, 3 epochs), from a clean working dir, and
    preempted: SIGTERM to rank 1 alone once epoch 1's checkpoint exists (exit 143), then
    `--resume auto` to the end. The preemption tests read the stopped launch ("stopped"), the
    others the end result, which the uninterrupted two-node run must equal bit for bit."""
    cwd = tmp_path_factory.mktemp("dp_cwd")
    save = tmp_path_factory.mktemp("dp_two") / "run"
    argv = train_argv(data, teacher_dir, save, "--cpu", "--nproc", "2")
    proc = _signal_rank_1_after_checkpoint_1(argv, save, cwd, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    stopped = {"code": proc.returncode, "out": out, "err": err,
               "logs": {rank: worker_log(save, rank) for rank in (0, 1)}}
    done = run_cli(argv + ["--resume", "auto"], cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = json.loads((save / "run.json").read_text())
    return {"save": save, "cwd": cwd, "run": run, "seed": run["seed"], "stopped": stopped}


@pytest.fixture(scope="module")
def names(data, teacher_dir) -> list[str]:
    return trained_names(data, teacher_dir)


# ---- parity ----------------------------------------------------------------------------------


def test_both_ranks_get_the_same_image_with_different_labels(data):
    """The premise of the exact parity comparison (module docstring)."""
    from segdistill_cli.data.dataset import SegDataset

    cfg = load_configs(STUDENT_CFG, None, student_sets(data, Path("unused"))).student
    rank0, rank1 = (SegDataset(cfg, "train", shard=(r, 2), seed=5) for r in (0, 1))
    a, b = (d.sample(int(d.epoch_indices(1)[0]), 1) for d in (rank0, rank1))
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    assert (a["label"] != b["label"]).mean() > 0.5


def test_two_workers_equal_one_process_with_the_whole_batch(two_workers, data, teacher_dir,
                                                             names, tmp_path):
    """After step 1: 2 workers x 1 image == 1 process x 2 images (same seed, so the same initial
    weights), to float noise; the same 2 workers with the all-reduce ops removed are far off."""
    seed = two_workers["seed"]
    configs = load_configs(STUDENT_CFG, TEACHER_CFG, student_sets(data, tmp_path / "one"),
                           teacher_sets(teacher_dir))
    Trainer(configs, TrainOptions(seed=seed, do_eval=False), L.RunContext(),
            log=lambda m: None).run()
    one = final_student(tmp_path / "one", names, "1")
    two = final_student(two_workers["save"], names, "1")
    control = final_student(_run_without_all_reduce(data, teacher_dir, tmp_path / "apart", seed),
                            names, "1")

    moved = max_difference(one, _initial_student(configs, seed, names))
    parity, apart = max_difference(two, one), max_difference(control, one)
    assert moved > 100 * PARITY_ATOL  # the comparison is not between untrained weights
    assert parity <= PARITY_ATOL, f"2 workers differ from 1 process by {parity:.2e}"
    assert apart > 100 * PARITY_ATOL, f"without all-reduce only {apart:.2e} apart"


def _run_without_all_reduce(data, teacher, save: Path, seed: int) -> Path:
    """The 2-worker run with every gradient all-reduce removed (tests/_dp_no_allreduce.py)."""
    argv = train_argv(data, teacher, save, "--cpu", "--nproc", "2", "--no-eval")
    plan = L.plan_launch(L.LaunchRequest(cpu=True, nproc=2, log_dir=str(save / "launch_logs")),
                         argv, env=cli_env())
    command = tuple("_dp_no_allreduce" if a == "segdistill_cli" else a for a in plan.command)
    code = L.run_launch(dataclasses.replace(plan, command=command), env=cli_env(),
                        extra_env={L.SEED_ENV: str(seed)})
    assert code == 0
    return save


def _initial_student(configs, seed: int, names: list[str]) -> dict[str, np.ndarray]:
    from segdistill_cli.engine.graph import seeded_student
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    student = seeded_student(configs.student, seed)
    scope = paddle.static.Scope()
    paddle.static.Executor(paddle.CPUPlace()).run(student.startup, scope=scope)
    return {n: np.array(scope.find_var(n).get_tensor()) for n in names}


def test_ranks_start_and_end_identical_and_the_teacher_never_changes(two_workers, teacher_dir,
                                                                    names):
    states = rank_states(two_workers["save"])
    assert set(states) == {(r, w) for r in (0, 1) for w in ("start", "end")}
    # No --seed, yet identical weights at the start (one drawn seed + rank 0's broadcast) ...
    assert states[(0, "start")][0] == states[(1, "start")][0]
    # ... and bit-identical trained parameters at the end, equal to what rank 0 saved.
    assert states[(0, "end")][0] == states[(1, "end")][0] != states[(0, "start")][0]
    assert states[(0, "end")][1] == len(names)
    assert states[(0, "end")][0] == values_sha256(final_student(two_workers["save"], names))
    # Every teacher variable on every rank, before and after training, is its file's value.
    teacher_files = {f"teacher_{p.relative_to(teacher_dir).as_posix()}": read_tensor(p)
                     for p in teacher_dir.rglob("*") if p.is_file()}
    expected = values_sha256(teacher_files)
    assert {state[2] for state in states.values()} == {expected}


def test_the_program_all_reduces_every_gradient_and_no_teacher_variable(two_workers, names):
    for rank in (0, 1):
        match = _COLLECTIVES.search(worker_log(two_workers["save"], rank))
        assert match, f"no data-parallel report in workerlog.{rank}"
        grads, calls, broadcast, teacher = (int(match[i]) for i in (2, 3, 5, 6))
        assert match[4] == ALL_REDUCE_OP
        assert grads == len(names) and 0 < calls < grads  # fused into few calls
        assert broadcast >= len(names) and teacher == 0


def test_rank_0_alone_writes_and_records_the_workers(two_workers):
    save, run = two_workers["save"], two_workers["run"]
    assert (run["num_trainers"], run["global_batch"], run["per_trainer_batch"]) == (2, 2, 1)
    assert {p.name for p in save.iterdir()} == {
        "1", "2", "3", "final", "best_model", "run.json", "train_log.jsonl", "launch_logs"}
    records = [json.loads(line) for line in (save / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3]  # once, not per rank
    assert sum(r["type"] == "eval" for r in records) == EPOCHS
    logs = {p.name for p in (save / "launch_logs").iterdir()}
    assert {"workerlog.0", "workerlog.1"} | RENDEZVOUS_LOGS <= logs  # rendezvous log here ...
    assert list(two_workers["cwd"].iterdir()) == []  # ... not in the working directory
    assert "[EVAL]" in worker_log(save, 0) and "[EVAL]" not in worker_log(save, 1)
    assert _SAVED.findall(worker_log(save, 0)) and not _SAVED.findall(worker_log(save, 1))


# ---- eval with 2 workers -------------------------------------------------------------------------


def test_eval_with_two_workers_gives_the_single_process_matrix(two_workers, data, tmp_path,
                                                              capsys):
    from segdistill_cli.cli import main

    argv = ["eval", "--cfg", str(STUDENT_CFG), "--model-dir", str(two_workers["save"] / "final"),
            "--json", "-"]
    for item in student_sets(data, tmp_path / "unused"):
        argv += ["--set", item]
    assert main(argv + ["--cpu"]) == 0  # the single process in this one (no start-up to pay)
    one_json = json.loads(capsys.readouterr().out)
    two = run_cli(argv + ["--cpu", "--nproc", "2"], tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    two_json = json.loads(two.stdout)
    assert two_json["shards"] == 2 and one_json["shards"] == 1
    assert two_json["num_images"] == one_json["num_images"] == 4
    assert two_json["confusion_matrix"] == one_json["confusion_matrix"]


# ---- two nodes on loopback -------------------------------------------------------------------


def test_two_nodes_on_loopback_train_like_two_workers_on_one_node(two_workers, data, teacher_dir,
                                                                  names, tmp_path):
    """Two launchers on this machine as nodes 0 and 1 (one worker each, rendezvous at
    127.0.0.1), uninterrupted: the same result, bit for bit, as 2 workers on one node that were
    stopped and resumed (so a difference means multi-node or resume is wrong). Node 1 gets its
    own MODEL_SAVE_DIR, which shows that rank 1 writes nothing but its launcher's logs."""
    port = _free_port()
    saves = [tmp_path / "node0", tmp_path / "node1"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "segdistill_cli",
         *train_argv(data, teacher_dir, saves[node], "--cpu", "--nproc", "1", "--nnodes", "2",
                     "--master", f"127.0.0.1:{port}", "--node-rank", str(node), "--no-eval",
                     "--seed", str(two_workers["seed"]))],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for node in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert final_student(saves[0], names).keys() == set(names)
    node0, one_node = final_student(saves[0], names), final_student(two_workers["save"], names)
    assert max_difference(node0, one_node) == 0.0
    assert json.loads((saves[0] / "run.json").read_text())["num_trainers"] == 2
    assert [p.name for p in saves[1].iterdir()] == ["launch_logs"]
    assert (saves[1] / "launch_logs" / "node1" / "workerlog.0").is_file()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- a worker dies -------------------------------------------------------------------------------


def test_a_killed_worker_ends_the_job_leaving_complete_checkpoints(two_workers, data,
                                                                   teacher_dir, tmp_path):
    """(Resuming with 2 workers: the preemption test below, from the checkpoint it leaves.)
    The error names the rank Paddle's launcher saw fail first: usually the killed rank 1 (exit
    -9), but rank 0 can fail first on the all-reduce its peer no longer answers (exit 1): seen
    once on Python 3.13 under PIR, where the peer's loss is noticed through the TCP store."""
    save = tmp_path / "run"
    argv = train_argv(data, teacher_dir, save, "--cpu", "--nproc", "2", "--no-eval",
                      "--seed", str(two_workers["seed"]))
    proc = _signal_rank_1_after_checkpoint_1(argv, save, tmp_path, signal.SIGKILL)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and time.monotonic() - killed < 60
    logs = save / "launch_logs"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors in ([f"error: worker rank 1 failed (exit code -9); its log: {logs / 'workerlog.1'}"],
                      [f"error: worker rank 0 failed (exit code 1); its log: {logs / 'workerlog.0'}"]), err
    # Whatever rank 0 was doing when it was stopped, every checkpoint folder is complete.
    folders = [p for p in save.iterdir() if p.is_dir() and p.name.isdigit()]
    assert folders and all((p / "meta.json").is_file() for p in folders)
    assert not (save / "final").exists()


# ---- preemption: a collective stop (the fixture's first launch) --------------------------------


def test_sigterm_to_one_worker_stops_every_rank_after_the_same_step(two_workers):
    """SIGTERM to rank 1 alone. The ranks vote after every step (a max all-reduce of their stop
    flags), so both leave after the same step: rank 0 writes that step's checkpoint, rank 1
    nothing, and the job exits 143 with rank 0's stop line. Without the vote rank 1 would leave
    alone and rank 0 wait for it in the next all-reduce: no exit 143, no common step."""
    stopped, save = two_workers["stopped"], two_workers["save"]
    assert stopped["code"] == 143, stopped["out"][-3000:] + stopped["err"][-3000:]
    stops = {rank: _STOP.search(stopped["logs"][rank]) for rank in (0, 1)}
    assert stops[0] and stops[1], stopped["logs"]
    assert (stops[0]["cause"], stops[1]["cause"]) == ("a signal to another worker", "SIGTERM")
    step = int(stops[0]["step"])
    assert int(stops[1]["step"]) == step and step >= 2  # the same step on both ranks
    assert stops[0][0] in stopped["out"].splitlines()  # the job's own line is rank 0's
    assert _SAVED.findall(stopped["logs"][0])[-1] == str(save / str(step))
    assert not _SAVED.findall(stopped["logs"][1])
    assert json.loads((save / str(step) / "meta.json").read_text())["global_step"] == step


def test_the_stopped_run_resumes_from_that_checkpoint_on_both_ranks(two_workers):
    """(That the resumed run ends with the uninterrupted run's weights, bit for bit, is the
    two-node test's comparison.)"""
    step = int(_STOP.search(two_workers["stopped"]["logs"][0])["step"])
    resumed = f"resumed from {two_workers['save'] / str(step)} "
    assert all(resumed in worker_log(two_workers["save"], rank) for rank in (0, 1))


_STOP = re.compile(r"^stopped by (?P<cause>.+?) after step (?P<step>\d+) .*$", re.M)
_SAVED = re.compile(r"^checkpoint: (\S+)$", re.M)


def _signal_rank_1_after_checkpoint_1(argv: list[str], save: Path, cwd: Path,
                                      signum: int) -> subprocess.Popen:
    """Start `segdistill <argv>`; once epoch 1's checkpoint exists, send `signum` to rank 1."""
    proc = subprocess.Popen([sys.executable, "-m", "segdistill_cli", *argv], cwd=cwd,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(lambda: (save / "1" / "meta.json").is_file() or proc.poll() is not None, 240)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    os.kill(_worker_pid(proc.pid, rank=1), signum)
    return proc


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _worker_pid(root: int, rank: int) -> int:
    """The pid of the launched worker with PADDLE_TRAINER_ID=rank among root's descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PADDLE_TRAINER_ID={rank}".encode() in environ:
            return pid
        todo += children.get(pid, [])
    raise AssertionError(f"no worker of rank {rank} under pid {root}")
