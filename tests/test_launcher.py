"""Launcher decisions (device matrix, command lines, worker environment) and one real CPU launch."""
from __future__ import annotations

import json
import sys
import textwrap
import time

import pytest

from segdistill_cli import launcher as L
from segdistill_cli.errors import ConfigError, SegDistillError

from conftest import IR

PY = "/opt/py/bin/python"
ARGV = ["train", "--cfg", "s.yaml", "--gpus", "0,1", "--teacher-cfg", "t.yaml", "--set",
        "SOLVER.LR=0.01"]


def plan(argv=ARGV, cuda=True, count=2, env=None, **request):
    return L.plan_launch(L.LaunchRequest(**request), argv, cuda_compiled=cuda, gpu_count=count,
                         env=env or {}, python=PY)


# ---- device choice matrix ---------------------------------------------------------------------

@pytest.mark.parametrize("cuda,count,gpus,cpu,expected", [
    (False, 0, None, False, "cpu"),      # CPU build
    (True, 0, None, False, "cpu"),       # GPU build, no GPU visible
    (True, 2, None, False, "gpu:0"),     # default: first GPU
    (True, 2, None, True, "cpu"),        # --cpu forces CPU
    (True, 4, "3", False, "gpu:3"),      # --gpus 3: that GPU, no launcher
])
def test_single_process_device_choice(cuda, count, gpus, cpu, expected):
    p = plan(cuda=cuda, count=count, gpus=gpus, cpu=cpu)
    assert p.kind == "single" and p.device == expected and p.command == ()
    ctx = L.run_context(p)
    assert (ctx.rank, ctx.nranks, ctx.is_main, ctx.distributed) == (0, 1, True, False)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(cuda=False, count=0, gpus="0,1"), SegDistillError, "CPU-only build"),
    (dict(cuda=False, count=0, gpus="0"), SegDistillError, "paddlepaddle-gpu"),
    (dict(cuda=True, count=0, gpus="0"), SegDistillError, "sees no GPU"),
    (dict(cuda=True, count=2, gpus="0,2"), SegDistillError, "GPU 2 does not exist"),
    (dict(gpus="0,0"), ConfigError, "listed twice"),
    (dict(gpus="0;1"), ConfigError, "comma-separated"),
    (dict(gpus="0", cpu=True), ConfigError, "exclude each other"),
    (dict(master="10.0.0.1:8090", nnodes=2), ConfigError, "need --gpus, or --cpu --nproc"),
])
def test_bad_requests_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        plan(**kwargs)


# ---- launcher command lines -------------------------------------------------------------------

def test_two_gpus_relaunch_under_paddle_distributed_launch():
    p = plan(gpus="0,1", log_dir="out/log")
    assert p.kind == "launch"
    assert list(p.command) == [
        PY, "-m", "paddle.distributed.launch", "--devices", "0,1", "--log_dir", "out/log",
        PY, "-u", "-m", "segdistill_cli",
        "train", "--cfg", "s.yaml", "--teacher-cfg", "t.yaml", "--set", "SOLVER.LR=0.01"]


def test_multi_node_options_pass_through_and_are_stripped_from_the_worker():
    argv = ["train", "--cfg", "s.yaml", "--gpus=0,1", "--ips", "10.0.0.1,10.0.0.2",
            "--nnodes", "2", "--master=10.0.0.1:8090", "--node-rank", "1"]
    p = plan(argv, count=8, gpus="0,1", ips="10.0.0.1,10.0.0.2", nnodes=2,
             master="10.0.0.1:8090", node_rank=1)
    cmd = list(p.command)
    launch_part = cmd[:cmd.index(PY, 1)]
    assert launch_part == [PY, "-m", "paddle.distributed.launch", "--devices", "0,1",
                           "--ips", "10.0.0.1,10.0.0.2", "--nnodes", "2",
                           "--master", "10.0.0.1:8090", "--rank", "1"]
    assert cmd[len(launch_part):] == [PY, "-u", "-m", "segdistill_cli", "train", "--cfg", "s.yaml"]


def test_one_gpu_per_node_on_several_nodes_still_launches():
    p = plan(gpus="0", count=1, master="10.0.0.1:8090", nnodes=2)
    assert p.kind == "launch" and "--devices" in p.command


def test_strip_keeps_everything_else():
    assert L.strip_launch_options(["eval", "--gpus", "1", "--cpu", "--set", "A=1", "--", "--x"]) \
        == ["eval", "--cpu", "--set", "A=1", "--", "--x"]


def test_cpu_workers_launch_with_nproc_and_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(L, "available_cores", lambda: 8)
    argv = ["train", "--cfg", "s.yaml", "--cpu", "--nproc", "4"]
    p = plan(argv, cuda=False, count=0, cpu=True, nproc=4, log_dir="out/log")
    assert p.kind == "launch" and p.log_dir == "out/log"
    assert list(p.command) == [PY, "-m", "paddle.distributed.launch", "--nproc_per_node", "4",
                               "--log_dir", "out/log",
                               PY, "-u", "-m", "segdistill_cli", "train", "--cfg", "s.yaml", "--cpu"]
    assert dict(p.worker_env) == {"OMP_NUM_THREADS": "2", "FLAGS_paddle_num_threads": "2"}
    # a thread count the user set is kept
    mine = plan(argv, cuda=False, count=0, cpu=True, nproc=4, env={"OMP_NUM_THREADS": "3"})
    assert dict(mine.worker_env) == {"FLAGS_paddle_num_threads": "2"}
    # one worker on one node needs no launcher
    assert plan(cuda=False, count=0, cpu=True, nproc=1).kind == "single"
    node = plan(cuda=False, count=0, cpu=True, nproc=1, nnodes=2, master="127.0.0.1:6170",
                node_rank=1)
    assert node.kind == "launch" and node.command[3:11] == (
        "--nproc_per_node", "1", "--nnodes", "2", "--master", "127.0.0.1:6170", "--rank", "1")


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(nproc=2), ConfigError, "--nproc needs --cpu"),
    (dict(cpu=True, nproc=0), ConfigError, "at least 1 worker"),
    (dict(cuda=True, cpu=True, nproc=2), SegDistillError, "CPU build of Paddle only"),
])
def test_bad_cpu_worker_requests(kwargs, error, match):
    with pytest.raises(error, match=match):
        plan(**kwargs)


def test_launch_logs_per_node_and_the_seed_workers_share(tmp_path):
    assert L.launch_log_dir(tmp_path) == tmp_path / "launch_logs"
    assert L.launch_log_dir(tmp_path, 0) == tmp_path / "launch_logs"
    assert L.launch_log_dir(tmp_path, 2) == tmp_path / "launch_logs" / "node2"
    assert L.shared_random_seed({**WORKER_ENV, L.SEED_ENV: "1234"}) == 1234
    assert L.shared_random_seed({L.SEED_ENV: "1234"}) != 1234 or \
        L.shared_random_seed({L.SEED_ENV: "1234"}) != 1234  # outside a worker: drawn afresh


def test_launch_decision_for_eval():
    argv = ["eval", "--cfg", "s.yaml", "--gpus", "0,1", "--json", "-"]
    plan = L.plan_launch(L.LaunchRequest(gpus="0,1"), argv, cuda_compiled=True, gpu_count=2,
                         env={})
    assert plan.kind == "launch"
    cmd = list(plan.command)
    assert cmd[cmd.index("--devices") + 1] == "0,1"
    assert cmd[-7:] == ["-m", "segdistill_cli", "eval", "--cfg", "s.yaml", "--json", "-"]
    assert "--gpus" not in cmd
    single = L.plan_launch(L.LaunchRequest(), argv, cuda_compiled=False, gpu_count=0, env={})
    assert single.kind == "single" and L.run_context(single).shard == (0, 1)
    env = {"PADDLE_TRAINER_ID": "1", "PADDLE_TRAINERS_NUM": "2"}
    worker = L.plan_launch(L.LaunchRequest(gpus="0,1"), argv, cuda_compiled=False, gpu_count=0,
                           env=env)
    assert worker.kind == "worker" and L.run_context(worker, env).shard == (1, 2)


# ---- inside a worker --------------------------------------------------------------------------

WORKER_ENV = {"PADDLE_TRAINER_ID": "1", "PADDLE_TRAINERS_NUM": "2", "FLAGS_selected_gpus": "1",
              "PADDLE_TRAINER_ENDPOINTS": "127.0.0.1:6170,127.0.0.1:6171",
              L.WORKER_ENV: "1"}


def test_worker_never_relaunches_and_reads_the_environment():
    p = plan(gpus="0,1", env=WORKER_ENV)  # the user's --gpus is irrelevant in a worker
    assert p.kind == "worker" and p.device == "gpu:1"
    ctx = L.run_context(p, WORKER_ENV)
    assert (ctx.rank, ctx.nranks, ctx.is_main, ctx.distributed, ctx.gpu_id) == (1, 2, False, True, 1)
    assert ctx.shard == (1, 2) and len(ctx.endpoints) == 2
    cpu_worker = plan(cuda=False, count=0, env=WORKER_ENV)
    assert cpu_worker.device == "cpu"
    with pytest.raises(SegDistillError, match="rank 2 of 2"):
        L.worker_context({"PADDLE_TRAINER_ID": "2", "PADDLE_TRAINERS_NUM": "2"})


def test_per_rank_batch_and_shards():
    assert L.per_rank_batch(16, 2) == 8
    with pytest.raises(ConfigError, match="BATCH_SIZE 15 is not divisible by the 2 workers"):
        L.per_rank_batch(15, 2)
    items = list(range(11))
    shards = [L.shard_items(items, r, 3) for r in range(3)]
    assert shards == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # legacy: remainder dropped


def test_single_process_optimizer_is_unwrapped():
    sentinel = object()
    assert L.distributed_optimizer(sentinel, L.RunContext()) is sentinel


def test_sync_bn_wrapper_minimizes_then_converts(monkeypatch):
    calls = []

    class Inner:
        lr = 0.1

        def minimize(self, loss, startup, parameters, no_grad_set):
            calls.append("minimize")
            return "ops"

    class Loss:
        class block:
            program = "main-program"

    monkeypatch.setattr(L, "convert_sync_batch_norm",
                        lambda program, startup: calls.append(("convert", program, startup)))
    opt = L.SyncBatchNormOptimizer(Inner())
    assert opt.minimize(Loss(), "startup") == "ops" and opt.lr == 0.1
    assert calls == ["minimize", ("convert", "main-program", "startup")]


def test_sync_bn_on_the_cpu_build_is_a_clear_error():
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    if IR == "legacy" and paddle.device.is_compiled_with_cuda():
        pytest.skip("GPU build: sync_batch_norm exists here")
    from segdistill_cli.models.pir_ops import PirOps

    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [2, 3, 4, 4], "float32")
        PirOps().batch_norm(x, "bn", ("_scale", "_offset", "_mean", "_variance"), 1e-5, 0.9, False)
    # The legacy IR's conversion pass needs the GPU build's op; under PIR there is no such pass.
    expected = "SYNC_BATCH_NORM is not available on Paddle 3 with PIR" if IR == "pir" else \
        "SYNC_BATCH_NORM needs the GPU build"
    with pytest.raises(ConfigError, match=expected):
        L.convert_sync_batch_norm(main, startup)


# ---- a real two-process CPU launch ------------------------------------------------------------

_WORKER = textwrap.dedent("""
    import json, os, sys, time
    from segdistill_cli import launcher as L
    plan = L.plan_launch(L.LaunchRequest(gpus="0,1"), sys.argv[1:], cuda_compiled=False,
                         gpu_count=0)
    ctx = L.run_context(plan)
    out = {"kind": plan.kind, "rank": ctx.rank, "nranks": ctx.nranks, "device": ctx.device,
           "is_main": ctx.is_main, "argv": sys.argv[1:],
           "marked": os.environ.get(L.WORKER_ENV), "threads": os.environ.get("OMP_NUM_THREADS")}
    with open(f"rank{ctx.rank}.json", "w") as fh:
        json.dump(out, fh)
    if ctx.rank == 1:
        time.sleep(1)
        sys.exit(3)
""")


def test_real_cpu_launch_of_two_workers(tmp_path, monkeypatch):
    (tmp_path / "fake_worker.py").write_text(_WORKER)
    monkeypatch.chdir(tmp_path)
    p = plan(["train", "--cpu", "--nproc", "2", "--cfg", "s.yaml"], cuda=False, count=0,
             cpu=True, nproc=2, log_dir=str(tmp_path / "log"))
    cmd = list(p.command)
    cmd[cmd.index("segdistill_cli")] = "fake_worker"  # our module in place of the CLI
    cmd = [sys.executable if a == PY else a for a in cmd]
    start = time.time()
    with pytest.raises(SegDistillError) as failed:
        L.run_launch(L.LaunchPlan("launch", command=tuple(cmd), worker_env=p.worker_env))
    elapsed = time.time() - start
    # rank 1's failure comes back as one line: its rank, exit code and log file
    assert str(failed.value) == (f"worker rank 1 failed (exit code 3); its log: "
                                 f"{tmp_path / 'log' / 'workerlog.1'}")
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, info in enumerate(seen):
        assert info == {"kind": "worker", "rank": rank, "nranks": 2, "device": "cpu",
                        "is_main": rank == 0, "argv": ["train", "--cpu", "--cfg", "s.yaml"],
                        "marked": "1", "threads": p.worker_env[0][1]}
    assert (tmp_path / "log" / "workerlog.0").exists()
    assert elapsed < 30


# ---- SIGTERM to the launching process: passed on, the workers' stop line, exit 143 --------------

_STOPPABLE_WORKER = textwrap.dedent("""
    import os, signal, sys, time
    rank = int(os.environ["PADDLE_TRAINER_ID"])
    def stop(signum, frame):  # what a training worker does after the collective stop
        if rank == 0:
            print("stopped by SIGTERM after step 7 (epoch 2, batch 3/5); checkpoint: run/step-7; "
                  "resume with: segdistill train --resume auto", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    open(f"ready{rank}", "w").close()
    time.sleep(120)
""")


def _launch_fake(tmp_path, monkeypatch, worker: str) -> L.LaunchPlan:
    (tmp_path / "fake_worker.py").write_text(worker)
    monkeypatch.chdir(tmp_path)
    p = plan(["train", "--cpu", "--nproc", "2"], cuda=False, count=0, cpu=True, nproc=2,
             log_dir=str(tmp_path / "log"))
    cmd = [sys.executable if a == PY else a for a in p.command]
    cmd[cmd.index("segdistill_cli")] = "fake_worker"
    return L.LaunchPlan("launch", command=tuple(cmd), log_dir=str(tmp_path / "log"))


def test_sigterm_to_the_launching_process_reaches_the_workers(tmp_path, monkeypatch, capsys):
    """The scheduler's SIGTERM goes to `segdistill train` (this process here): it must reach the
    workers through paddle's launcher, and the job ends with their stop line and exit 143 (not
    killed, not orphaned workers). A stop line an earlier launch left in the log is not taken."""
    import os
    import signal
    import threading

    launch = _launch_fake(tmp_path, monkeypatch, _STOPPABLE_WORKER)
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "workerlog.0").write_text("stopped by SIGUSR1 after step 1 (old run)\n")

    def press_stop() -> None:
        deadline = time.time() + 60
        while not all((tmp_path / f"ready{r}").exists() for r in (0, 1)):
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=press_stop, daemon=True).start()
    before = signal.getsignal(signal.SIGTERM)
    start = time.time()
    assert L.run_launch(launch) == 143
    assert time.time() - start < 60
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("stopped by SIGTERM after step 7 (epoch 2, batch 3/5)")
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the launch


def test_a_failed_job_is_not_taken_for_a_stop_by_an_old_stop_line(tmp_path, monkeypatch):
    launch = _launch_fake(tmp_path, monkeypatch, "import sys; sys.exit(3)\n")
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "workerlog.0").write_text("stopped by SIGTERM after step 1 (old run)\n")
    with pytest.raises(SegDistillError, match=r"worker rank \d failed \(exit code 3\)"):
        L.run_launch(launch)


def test_ctrl_c_waits_for_the_launcher_and_is_a_keyboard_interrupt(tmp_path, monkeypatch):
    """Ctrl-C at a terminal reaches `segdistill train` and paddle's launcher (one process group;
    the workers have their own sessions): the launcher passes it on as SIGTERM and exits 2 (the
    signal number). That code must not become ours: once the launcher is done, Ctrl-C goes on
    as KeyboardInterrupt (train prints its `interrupted: ...` line, exit 130)."""
    import os
    import signal
    import subprocess
    import threading

    launch = _launch_fake(tmp_path, monkeypatch, _STOPPABLE_WORKER)
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(L.subprocess, "Popen", popen)

    def press_ctrl_c() -> None:
        deadline = time.time() + 60
        while not all((tmp_path / f"ready{r}").exists() for r in (0, 1)):
            assert time.time() < deadline
            time.sleep(0.05)
        started[0].send_signal(signal.SIGINT)  # the terminal signals the whole group
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        L.run_launch(launch)
    assert started[0].returncode == 2  # the launcher's own exit code, not returned
    assert "stopped by SIGTERM after step 7" in (tmp_path / "log" / "workerlog.0").read_text()


def test_the_plan_kind_is_an_enum_that_reads_as_its_string():
    p = plan(cuda=False, count=0)
    assert p.kind is L.LaunchKind.SINGLE and p.kind == "single"
    assert json.loads(json.dumps({"kind": p.kind})) == {"kind": "single"}  # workers report it
    assert plan(gpus="0,1").kind is L.LaunchKind.LAUNCH
