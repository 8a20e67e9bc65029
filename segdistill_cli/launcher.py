"""Where and how a command runs: CPU or which GPU, one process or several workers.

Shared by `train` and `eval`. The decision is a pure function of the options, the Paddle build
(`cuda_compiled`, `gpu_count`, injectable for tests) and the environment:

* no `--gpus`: one process on GPU 0 if this Paddle has CUDA and sees a GPU, else the CPU;
  `--cpu` forces the CPU.
* `--gpus 3`: one process on GPU 3 (no launcher).
* `--gpus 0,1` (or any multi-node option): re-run the same command under
  `python -m paddle.distributed.launch --devices 0,1 ... <python> -u -m segdistill_cli <args>`
  (an argument list, never a shell). `paddle.distributed.launch` takes a script path, not `-m`;
  when the "script" does not end in `.py` it runs it as a program with the remaining arguments,
  so the Python interpreter is passed as the script (checked on Paddle 2.6.2).
* `--cpu --nproc N` (N > 1, or any multi-node option): the same, with `--nproc_per_node N`
  (`--devices` fails on the CPU build) and each worker limited to its share of the cores.
* inside a worker (`PADDLE_TRAINER_ID` set by the launcher, and our `SEGDISTILL_WORKER=1`):
  never relaunch; rank/world/GPU come from `PADDLE_TRAINER_ID`, `PADDLE_TRAINERS_NUM`,
  `FLAGS_selected_gpus` (an index among the visible GPUs, like legacy's `CUDAPlace(gpu_id)`).

GPU and CPU workers run the same data-parallel program: fleet's collective program on the legacy
IR, the one `collective.py` builds under Paddle 3's PIR; what the CPU (Gloo) build needs on top
is in `collective.py` too (docs/design.md, "Data-parallel training on CPU (Gloo)", "Paddle 3.x").
Importing this module does not import Paddle.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from .distill.teacher import TEACHER_PREFIX
from .errors import ConfigError, SegDistillError

WORKER_ENV = "SEGDISTILL_WORKER"
# The seed the launching process drew for its workers when --seed was not given: every rank
# must use the same one (the epoch order is one permutation that the ranks slice).
SEED_ENV = "SEGDISTILL_RUN_SEED"
# Options consumed by the launcher (they must not reach the workers); all take a value.
LAUNCH_VALUE_OPTIONS = ("--gpus", "--nproc", "--ips", "--nnodes", "--master", "--node-rank",
                        "--rank")
SYNC_BN_NEEDS_GPU = ("TRAIN.SYNC_BATCH_NORM needs the GPU build of Paddle (sync_batch_norm is not "
                     "in this one; CPU workers normalise with per-worker batch statistics)")
SYNC_BN_NOT_ON_PIR = ("TRAIN.SYNC_BATCH_NORM is not available on Paddle 3 with PIR (the batch_norm "
                      "-> sync_batch_norm conversion is a legacy-IR build pass); set it to False "
                      "or train on Paddle 2.6")
# Thread-count variables a CPU worker gets (its share of the cores) unless the user set them.
CPU_THREAD_ENV = ("OMP_NUM_THREADS", "FLAGS_paddle_num_threads")


# ---------------------------------------------------------------------------------------------
# What the user asked for, and what we decided
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchRequest:
    """The launch-related command-line options of `train` / `eval`."""

    gpus: Optional[str] = None       # "0,1" as typed
    cpu: bool = False
    nproc: Optional[int] = None      # CPU worker processes per node (with --cpu)
    ips: Optional[str] = None        # multi-node: "10.0.0.1,10.0.0.2"
    nnodes: Optional[int] = None
    master: Optional[str] = None     # "ip:port"
    node_rank: Optional[int] = None  # paddle.distributed.launch --rank
    log_dir: Optional[str] = None    # per-worker logs (launch default: ./log)

    @property
    def multi_node(self) -> bool:
        return bool(self.ips or self.master or (self.nnodes and self.nnodes > 1)
                    or self.node_rank is not None)

    @property
    def cpu_workers(self) -> bool:
        """CPU worker processes under the launcher (`--cpu --nproc N`)."""
        return self.cpu and self.nproc is not None and (self.nproc > 1 or self.multi_node)


class LaunchKind(str, Enum):
    """What this process does with a command (a str: compares equal to its value)."""

    SINGLE = "single"  # run it here, on `device`
    LAUNCH = "launch"  # re-run it under paddle.distributed.launch (`command`)
    WORKER = "worker"  # run it here as one worker of a launch


@dataclass(frozen=True)
class LaunchPlan:
    """`kind`: LaunchKind.SINGLE (run here on `device`), LAUNCH (run `command`), or WORKER."""

    kind: LaunchKind
    device: str = "cpu"                      # "cpu" or "gpu:N" for single / worker
    command: Tuple[str, ...] = field(default=())
    worker_env: Tuple[Tuple[str, str], ...] = ()  # added to the launcher's environment
    log_dir: str = "log"                     # where the launcher writes workerlog.<N>


@dataclass(frozen=True)
class RunContext:
    """Who this process is. Rank 0 alone logs, saves and evaluates."""

    rank: int = 0
    nranks: int = 1
    device: str = "cpu"
    endpoints: Tuple[str, ...] = ()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.nranks > 1

    @property
    def gpu_id(self) -> Optional[int]:
        return int(self.device.split(":", 1)[1]) if self.device.startswith("gpu:") else None

    @property
    def shard(self) -> Tuple[int, int]:
        """(rank, nranks) for the data reader's legacy contiguous split."""
        return self.rank, self.nranks

    def place(self) -> Any:
        from .paddle_env import import_paddle

        paddle = import_paddle()
        gpu = self.gpu_id
        return paddle.CUDAPlace(gpu) if gpu is not None else paddle.CPUPlace()


# ---------------------------------------------------------------------------------------------
# Decisions (pure)
# ---------------------------------------------------------------------------------------------


def parse_gpus(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """"0,1" -> (0, 1); None/"" -> None. Errors name --gpus."""
    if text is None or str(text).strip() == "":
        return None
    ids = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(f"--gpus {text!r}: expected comma-separated GPU ids such as 0,1")
        ids.append(int(part))
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus {text!r}: a GPU id is listed twice")
    return tuple(ids)


def in_worker(env: Mapping[str, str]) -> bool:
    """True inside a process started by paddle.distributed.launch."""
    return env.get(WORKER_ENV) == "1" or "PADDLE_TRAINER_ID" in env


def _cuda_facts(cuda_compiled: Optional[bool], gpu_count: Optional[int]) -> Tuple[bool, int]:
    if cuda_compiled is None or gpu_count is None:
        from .paddle_env import import_paddle

        paddle = import_paddle()
        if cuda_compiled is None:
            cuda_compiled = bool(paddle.device.is_compiled_with_cuda())
        if gpu_count is None:
            gpu_count = int(paddle.device.cuda.device_count()) if cuda_compiled else 0
    return cuda_compiled, gpu_count


def _check_gpus(gpus: Tuple[int, ...], cuda_compiled: bool, gpu_count: int) -> None:
    if not cuda_compiled:
        raise ConfigError(
            f"--gpus {','.join(map(str, gpus))}: this Paddle is the CPU-only build; install "
            "paddlepaddle-gpu==2.6.2 (CUDA 11.8) or drop --gpus")
    if gpu_count == 0:
        raise ConfigError("--gpus: Paddle has CUDA but sees no GPU (check the driver and "
                              "CUDA_VISIBLE_DEVICES)")
    for gpu in gpus:
        if gpu >= gpu_count:
            raise ConfigError(f"--gpus: GPU {gpu} does not exist; {gpu_count} visible "
                                  f"(ids 0..{gpu_count - 1}, counted after CUDA_VISIBLE_DEVICES)")


def plan_launch(request: LaunchRequest, argv: Sequence[str], *,
                cuda_compiled: Optional[bool] = None, gpu_count: Optional[int] = None,
                env: Optional[Mapping[str, str]] = None, python: str = sys.executable
                ) -> LaunchPlan:
    """Decide how to run `segdistill <argv>` (argv = the command line without the program name)."""
    env = os.environ if env is None else env
    if in_worker(env):
        cuda_compiled, _ = _cuda_facts(cuda_compiled, gpu_count if gpu_count is not None else 0)
        return LaunchPlan(LaunchKind.WORKER, device=worker_device(env, cuda_compiled))
    gpus = parse_gpus(request.gpus)
    if request.cpu and gpus is not None:
        raise ConfigError("--cpu and --gpus exclude each other")
    if request.nproc is not None and not request.cpu:
        raise ConfigError("--nproc needs --cpu (with GPUs, --gpus 0,1 starts one worker per GPU)")
    if request.nproc is not None and request.nproc < 1:
        raise ConfigError(f"--nproc {request.nproc}: need at least 1 worker")
    if request.multi_node and gpus is None and request.nproc is None:
        raise ConfigError("multi-node options (--ips/--nnodes/--master) need --gpus, or --cpu "
                          "--nproc N")
    if request.cpu_workers:
        return _cpu_launch_plan(request, argv, cuda_compiled, env, python)
    if request.cpu:
        return LaunchPlan(LaunchKind.SINGLE, device="cpu")
    cuda_compiled, gpu_count = _cuda_facts(cuda_compiled, gpu_count)
    if gpus is None:
        return LaunchPlan(LaunchKind.SINGLE,
                          device="gpu:0" if cuda_compiled and gpu_count > 0 else "cpu")
    _check_gpus(gpus, cuda_compiled, gpu_count)
    if len(gpus) == 1 and not request.multi_node:
        return LaunchPlan(LaunchKind.SINGLE, device=f"gpu:{gpus[0]}")
    return LaunchPlan(LaunchKind.LAUNCH,
                      command=tuple(launch_command(request, gpus, argv, python=python)),
                      log_dir=request.log_dir or "log")


def _cpu_launch_plan(request: LaunchRequest, argv: Sequence[str], cuda_compiled: Optional[bool],
                     env: Mapping[str, str], python: str) -> LaunchPlan:
    """`--cpu --nproc N`: N Gloo workers on this node, each with its share of the cores."""
    cuda_compiled, _ = _cuda_facts(cuda_compiled, 0)
    if cuda_compiled:
        raise SegDistillError("--cpu --nproc: CPU workers are supported on the CPU build of "
                              "Paddle only (this one has CUDA: use --gpus 0,1)")
    threads = str(max(1, available_cores() // int(request.nproc)))
    worker_env = tuple((name, threads) for name in CPU_THREAD_ENV if name not in env)
    return LaunchPlan(LaunchKind.LAUNCH,
                      command=tuple(launch_command(request, None, argv, python=python)),
                      worker_env=worker_env, log_dir=request.log_dir or "log")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def strip_launch_options(argv: Sequence[str],
                         options: Sequence[str] = LAUNCH_VALUE_OPTIONS) -> List[str]:
    """`argv` without the launcher's own options (`--gpus 0,1` and `--gpus=0,1` forms)."""
    out: List[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        if arg == "--":
            out.append(arg)
            continue
        name = arg.split("=", 1)[0]
        if name in options:
            skip_next = "=" not in arg
            continue
        out.append(arg)
    return out


def launch_command(request: LaunchRequest, gpus: Optional[Sequence[int]], argv: Sequence[str], *,
                   python: str = sys.executable) -> List[str]:
    """`python -m paddle.distributed.launch ... <python> -u -m segdistill_cli <argv minus launch
    options>` as an argument list; `gpus` None = `request.nproc` CPU workers."""
    cmd = [python, "-m", "paddle.distributed.launch"]
    if gpus is None:
        cmd += ["--nproc_per_node", str(request.nproc)]
    else:
        cmd += ["--devices", ",".join(map(str, gpus))]
    if request.ips:
        cmd += ["--ips", request.ips]
    if request.nnodes is not None:
        cmd += ["--nnodes", str(request.nnodes)]
    if request.master:
        cmd += ["--master", request.master]
    if request.node_rank is not None:
        cmd += ["--rank", str(request.node_rank)]
    if request.log_dir:
        cmd += ["--log_dir", str(request.log_dir)]
    # The "training script" is the interpreter itself: launch runs non-.py scripts as programs.
    cmd += [python, "-u", "-m", "segdistill_cli", *strip_launch_options(argv)]
    return cmd


def worker_device(env: Mapping[str, str], cuda_compiled: bool) -> str:
    """The device of a launched worker: its FLAGS_selected_gpus entry on a GPU build, else CPU."""
    if not cuda_compiled:
        return "cpu"
    selected = env.get("FLAGS_selected_gpus", "0").split(",")[0].strip() or "0"
    if not selected.isdigit():
        raise ConfigError(f"FLAGS_selected_gpus={selected!r} is not a GPU index")
    return f"gpu:{int(selected)}"


def worker_context(env: Optional[Mapping[str, str]] = None, device: str = "cpu") -> RunContext:
    """Rank and world size from the variables paddle.distributed.launch sets (legacy names)."""
    env = os.environ if env is None else env
    try:
        rank = int(env.get("PADDLE_TRAINER_ID", "0"))
        nranks = int(env.get("PADDLE_TRAINERS_NUM", "1"))
    except ValueError:
        raise ConfigError("PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM are not integers: "
                              f"{env.get('PADDLE_TRAINER_ID')!r} / "
                              f"{env.get('PADDLE_TRAINERS_NUM')!r}") from None
    if nranks < 1 or not 0 <= rank < nranks:
        raise ConfigError(f"bad launcher environment: rank {rank} of {nranks}")
    endpoints = tuple(e for e in env.get("PADDLE_TRAINER_ENDPOINTS", "").split(",") if e)
    return RunContext(rank=rank, nranks=nranks, device=device, endpoints=endpoints)


def run_context(plan: LaunchPlan, env: Optional[Mapping[str, str]] = None) -> RunContext:
    """The RunContext of this process for a SINGLE or WORKER plan."""
    if plan.kind == LaunchKind.LAUNCH:
        raise ValueError("a 'launch' plan runs workers; it has no run context of its own")
    if plan.kind == LaunchKind.WORKER:
        return worker_context(env, plan.device)
    return RunContext(rank=0, nranks=1, device=plan.device)


def launch_log_dir(save_dir: Path, node_rank: Optional[int] = None) -> Path:
    """Where a training launch keeps its logs (workerlog.<N>, rank 0's rendezvous http.log):
    `<MODEL_SAVE_DIR>/launch_logs`, and `launch_logs/node<K>` for node K > 0 of a multi-node run
    (so nodes sharing the folder do not overwrite each other's workerlog.0)."""
    folder = Path(save_dir) / "launch_logs"
    return folder / f"node{node_rank}" if node_rank else folder


def shared_random_seed(env: Optional[Mapping[str, str]] = None) -> int:
    """The seed of a run started without --seed: the one the launching process drew for its
    workers (`SEED_ENV`), or a fresh random one in a single process."""
    env = os.environ if env is None else env
    if in_worker(env) and env.get(SEED_ENV, "").isdigit():
        return int(env[SEED_ENV])
    return draw_seed()


def draw_seed() -> int:
    return random.SystemRandom().randrange(2**31)


def per_rank_batch(global_batch: int, nranks: int) -> int:
    """Legacy: BATCH_SIZE is the global batch, split evenly over the workers."""
    if global_batch % nranks:
        raise ConfigError(f"BATCH_SIZE {global_batch} is not divisible by the {nranks} workers "
                          f"(use a multiple of {nranks})")
    return global_batch // nranks


def shard_items(items: Sequence[Any], rank: int, nranks: int) -> List[Any]:
    """Legacy multi-trainer split: trainer k takes the contiguous slice [n*k, n*(k+1)),
    n = len // nranks (the remainder is dropped so every rank runs the same number of steps)."""
    n = len(items) // nranks
    return list(items[n * rank:n * (rank + 1)])


# The launcher's report of a failed worker ("Container rank 1 status failed cmd [...] code -9 log
# <dir>/workerlog.1"), and its dump of the worker environment that follows (not echoed).
_FAILED_WORKER = re.compile(r"Container rank (\d+) status failed .* code (-?\d+) log (\S+)")
_ENV_DUMP = "env {"


def run_launch(plan: LaunchPlan, env: Optional[Mapping[str, str]] = None,
               extra_env: Optional[Mapping[str, str]] = None) -> int:
    """Run the launcher command of a "launch" plan, echoing its output; return 0 or 143
    (stopped on request). Ctrl-C: KeyboardInterrupt, once the launcher has stopped the workers.

    SIGTERM/SIGUSR1 to this process go on to the launcher as SIGTERM, which sends it to every
    worker: a training run then stops collectively after one step, rank 0 writes the checkpoint
    and its stop line (read from its log) is printed here. A failed worker ends the whole job
    (the launcher stops the others): raises one error naming the first failed rank, its exit
    code and its log file (exit code 2 if that worker's was 2).
    """
    child_env = dict(os.environ if env is None else env)
    child_env.update(plan.worker_env)
    child_env.update(extra_env or {})
    child_env[WORKER_ENV] = "1"
    first_log = Path(plan.log_dir) / "workerlog.0"
    log_start = first_log.stat().st_size if first_log.is_file() else 0  # the launcher appends
    proc = subprocess.Popen(list(plan.command), env=child_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    failed: Optional[re.Match] = None
    with _forwarding_stop_signals(proc) as forwarded:
        try:
            for line in proc.stdout:
                failed = failed or _FAILED_WORKER.search(line)
                if not line.startswith(_ENV_DUMP):
                    sys.stdout.write(line)
                    sys.stdout.flush()
            code = proc.wait()
        except KeyboardInterrupt:
            # The launcher got the same SIGINT (same process group) and stops its workers (with
            # SIGTERM: a training run stops after its step and checkpoints it); its own exit
            # code (2, the signal number) must not become ours: Ctrl-C is 130.
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
            raise
    if code == 0 or code == 130:
        return code
    stopped = _stop_line(first_log, log_start)
    if stopped or forwarded:
        from .engine.preemption import EXIT_CODE

        print(stopped or f"stopped by {forwarded[0]} (passed on to the workers); none wrote "
              f"a stop line, so no checkpoint of this launch; worker logs in {plan.log_dir}",
              flush=True)
        return EXIT_CODE
    if failed is None:
        raise SegDistillError(f"paddle.distributed.launch failed (exit code {code}); worker logs "
                              f"in {plan.log_dir}")
    rank, worker_code, log = int(failed.group(1)), int(failed.group(2)), failed.group(3)
    error = ConfigError if worker_code == ConfigError.exit_code else SegDistillError
    raise error(f"worker rank {rank} failed (exit code {worker_code}); its log: {log}")


@contextlib.contextmanager
def _forwarding_stop_signals(proc: subprocess.Popen) -> Iterator[List[str]]:
    """While the launcher runs, SIGTERM/SIGUSR1 here become a SIGTERM to it (the only stop
    signal it passes on to the workers); yields the names of the signals forwarded."""
    from .engine.preemption import SIGNALS

    forwarded: List[str] = []

    def forward(signum: int, _frame: Any) -> None:
        forwarded.append(signal.Signals(signum).name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in SIGNALS} if main else {}
    try:
        yield forwarded
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_line(log: Path, start: int) -> Optional[str]:
    """The stop line (`preemption.LINE_START`) a worker wrote to `log` after offset `start`:
    it is printed after the checkpoint is complete on every rank."""
    from .engine.preemption import LINE_START

    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            fh.seek(start)
            lines = [line.strip() for line in fh if line.startswith(LINE_START)]
    except OSError:
        return None
    return lines[-1] if lines else None


# ---------------------------------------------------------------------------------------------
# Fleet collective training (workers of a "launch" plan)
# ---------------------------------------------------------------------------------------------


def convert_sync_batch_norm(program: Any, startup_program: Any) -> None:
    """Turn every batch_norm (and its grad) in `program` into sync_batch_norm, in place.

    Paddle 2.6's static fleet cannot do it for us: `DistributedStrategy.sync_batch_norm` is not
    read in static mode, and `strategy.build_strategy` round-trips through a proto that has no
    sync_batch_norm field (set it, read it back: False). So the pass legacy got from
    `BuildStrategy.sync_batch_norm` is applied directly. Its op exists only in GPU builds.
    Under PIR that pass does not apply (a PIR program is no ProgramDesc): refused, not crashed.
    """
    from .paddle_env import import_paddle
    from .program_vars import is_pir_program

    if is_pir_program(program):
        raise ConfigError(SYNC_BN_NOT_ON_PIR)
    paddle = import_paddle()
    from paddle.framework.ir import apply_build_strategy

    build = paddle.static.BuildStrategy()
    build.sync_batch_norm = True
    try:
        apply_build_strategy(program, startup_program, build, {"use_cuda": True})
    except RuntimeError as exc:
        if "sync_batch_norm" in str(exc) and "not registered" in str(exc):
            raise ConfigError(SYNC_BN_NEEDS_GPU) from None
        raise


class SyncBatchNormOptimizer:
    """Wraps a (fleet) optimizer: `minimize` as usual, then batch_norm -> sync_batch_norm."""

    def __init__(self, inner: Any):
        self.inner = inner

    def minimize(self, loss: Any, startup_program: Any = None, parameters: Any = None,
                 no_grad_set: Any = None) -> Any:
        result = self.inner.minimize(loss, startup_program, parameters, no_grad_set)
        if startup_program is None:
            from .paddle_env import import_paddle

            startup_program = import_paddle().static.default_startup_program()
        convert_sync_batch_norm(loss.block.program, startup_program)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class DataParallelOptimizer:
    """The data-parallel optimizer and the check that every gradient is averaged over the
    workers (`report` says what was inserted). Legacy IR: `inner` is fleet's collective
    optimizer, and the CPU build's program changes follow its `minimize`. PIR (fleet's static
    rewrite does not run there): `inner` is the plain optimizer, and the all-reduce of every
    gradient and the broadcast of every student parameter are inserted here (collective.py)."""

    def __init__(self, inner: Any, cpu_build: bool, teacher_prefix: str, pir: bool = False,
                 nranks: int = 1):
        self.inner, self.cpu_build, self.teacher_prefix = inner, cpu_build, teacher_prefix
        self.pir, self.nranks = pir, nranks
        self.report: Any = None

    def minimize(self, loss: Any, startup_program: Any = None, parameters: Any = None,
                 no_grad_set: Any = None) -> Any:
        from . import collective
        from .paddle_env import import_paddle
        from .program_vars import parameters as program_parameters

        startup = startup_program or import_paddle().static.default_startup_program()
        main = loss.block.program
        student = [p.name for p in program_parameters(main)
                   if not p.name.startswith(self.teacher_prefix)]
        if self.pir:
            result = self._minimize_pir(loss, startup, parameters, no_grad_set, student)
        else:
            result = self.inner.minimize(loss, startup, parameters, no_grad_set)
            if self.cpu_build:
                collective.strip_stream_sync_ops(main, startup)
        _, params_grads = result
        self.report = collective.inspect_program(main, startup)
        collective.check_all_reduced(self.report, collective.gradient_names(main, params_grads),
                                     student, self.teacher_prefix)
        return result

    def _minimize_pir(self, loss: Any, startup: Any, parameters: Any, no_grad_set: Any,
                      student: list[str]) -> Any:
        """What `Optimizer.minimize` does under PIR (backward, then the update ops), with the
        gradients averaged over the workers in between."""
        from . import collective

        params_grads = self.inner.backward(loss, startup, parameters, no_grad_set)
        averaged = collective.all_reduce_gradients(params_grads, self.nranks)
        optimize_ops = self.inner.apply_gradients(averaged)
        collective.broadcast_parameters(startup, student)
        return optimize_ops, params_grads

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def distributed_optimizer(optimizer: Any, ctx: RunContext, sync_batch_norm: bool = False,
                          teacher_prefix: str = TEACHER_PREFIX,
                          log_dir: Optional[Path] = None) -> Any:
    """The optimizer to call `.minimize(loss)` on: `optimizer` itself for one process, else the
    data-parallel wrapper (gradients all-reduced and averaged, parameters broadcast from rank 0
    at start), plus SyncBN per TRAIN.SYNC_BATCH_NORM — which legacy also applied only with more
    than one device. Legacy IR: fleet's collective optimizer, on the CPU build with Gloo set up
    first (`collective.init_gloo`). PIR: the program is made data-parallel by
    `DataParallelOptimizer` itself, after `collective.init_pir_workers`."""
    if not ctx.distributed:
        return optimizer
    from . import collective
    from .paddle_env import import_paddle
    from .stack import PIR, ir_in_use

    cpu_build = collective.is_cpu_build()
    if cpu_build and sync_batch_norm:
        raise ConfigError(SYNC_BN_NEEDS_GPU)
    if ir_in_use(import_paddle()) == PIR:
        if sync_batch_norm:
            raise ConfigError(SYNC_BN_NOT_ON_PIR)
        collective.init_pir_workers(log_dir)
        return DataParallelOptimizer(optimizer, cpu_build, teacher_prefix, pir=True,
                                     nranks=ctx.nranks)
    from paddle.distributed import fleet

    if cpu_build:
        collective.init_gloo(log_dir)
    fleet.init(is_collective=True)
    wrapped = DataParallelOptimizer(fleet.distributed_optimizer(optimizer,
                                                                fleet.DistributedStrategy()),
                                    cpu_build, teacher_prefix)
    return SyncBatchNormOptimizer(wrapped) if sync_batch_norm else wrapped
