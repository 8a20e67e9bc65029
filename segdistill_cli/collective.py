"""The data-parallel (fleet collective) program: what the CPU (Gloo) build needs, and the checks
that the program really averages gradients over the workers.

The same fleet collective program runs on GPUs (NCCL) and on CPU workers (Gloo). Paddle 2.6's
fleet assumes a GPU build, so on the CPU build three things differ (docs/design.md, "Data-parallel
training on CPU (Gloo)"), and each is applied only there:

1. Gloo is initialised with `paddle.distributed.init_parallel_env()` *after* static mode is on
   (the collective kernels read the context it creates);
2. fleet's GPU communicator set-up (`CollectiveHelper._init_communicator`) becomes a no-op;
3. the stream-sync ops fleet inserts (`c_sync_calc_stream`, `c_sync_comm_stream`) are removed:
   they have no CPU kernel and nothing to synchronise on a CPU.

`inspect_program` / `check_all_reduced` guard against the silent failure mode: a strategy that
inserts no all-reduce lets the workers train apart without any error.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from .errors import SegDistillError
from .paddle_env import import_paddle

# Ops fleet inserts to order GPU streams; no CPU kernel exists for them.
STREAM_SYNC_OPS = ("c_sync_calc_stream", "c_sync_comm_stream")
ALL_REDUCE_OP = "c_allreduce_sum"
BROADCAST_OP = "c_broadcast"
# The fleet internals replaced on the CPU build were read in this Paddle release line.
VERIFIED_PADDLE = "2.6."


def is_cpu_build() -> bool:
    """True for a Paddle without CUDA: the case that needs the Gloo changes."""
    return not import_paddle().device.is_compiled_with_cuda()


def check_cpu_collective_supported() -> None:
    """The Gloo path replaces a private fleet function: refuse a Paddle it was not checked on."""
    version = import_paddle().__version__
    if not version.startswith(VERIFIED_PADDLE):
        raise SegDistillError(f"CPU multi-worker training relies on Paddle {VERIFIED_PADDLE}x "
                              f"internals (verified on 2.6.2); this is Paddle {version}")


@contextlib.contextmanager
def working_directory(folder: Optional[Path]) -> Iterator[None]:
    """Run the block in `folder` (created), then return to the previous directory."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def init_gloo(log_dir: Optional[Path]) -> None:
    """Gloo for the collective ops of a CPU worker, and fleet told not to set up NCCL.

    Rank 0's rendezvous server writes `http.log` into the current directory; it is started
    inside `log_dir` so the user's working directory stays clean.
    """
    check_cpu_collective_supported()
    paddle = import_paddle()  # static mode first: init_parallel_env then builds the Gloo context
    from paddle.distributed.fleet.meta_optimizers import common

    with working_directory(log_dir):
        paddle.distributed.init_parallel_env()
    common.CollectiveHelper._init_communicator = _gloo_already_initialised


def _gloo_already_initialised(self: Any, *args: Any, **kwargs: Any) -> None:
    """Stands in for fleet's NCCL/XPU communicator set-up on the CPU build (Gloo is up)."""


def strip_stream_sync_ops(*programs: Any) -> int:
    """Remove the GPU stream-sync ops from every block of `programs`; returns how many."""
    removed = 0
    for program in programs:
        for block in program.blocks:
            for index in reversed(range(len(block.ops))):
                if block.ops[index].type in STREAM_SYNC_OPS:
                    block._remove_op(index, sync=False)
                    removed += 1
            block._sync_with_cpp()
    return removed


@dataclass
class CollectiveReport:
    """What the data-parallel rewrite put into the programs."""

    all_reduce_calls: int = 0
    all_reduced: set[str] = field(default_factory=set)   # variables summed over the workers
    broadcast: set[str] = field(default_factory=set)     # startup values sent from rank 0

    def describe(self, teacher_prefix: str) -> str:
        teacher = sum(1 for n in self.all_reduced | self.broadcast if n.startswith(teacher_prefix))
        grads = sum(1 for n in self.all_reduced if n.endswith("@GRAD"))
        return (f"{grads} gradients all-reduced in {self.all_reduce_calls} "
                f"{ALL_REDUCE_OP} calls, {len(self.broadcast)} startup values broadcast from "
                f"rank 0, {teacher} teacher variables in collectives")


def inspect_program(main: Any, startup: Any) -> CollectiveReport:
    """Which variables the main program all-reduces (looking through fleet's gradient fusion:
    `coalesce_tensor` makes its `Output` gradients views of one `FusedOutput` buffer, which is
    then all-reduced) and which values the startup program broadcasts."""
    report = CollectiveReport()
    block = main.global_block()
    packed: dict[str, list[str]] = {}
    for op in block.ops:
        if op.type == "coalesce_tensor":
            for fused in op.output("FusedOutput"):
                packed[fused] = list(op.output("Output"))
    for op in block.ops:
        if op.type == ALL_REDUCE_OP:
            report.all_reduce_calls += 1
            for name in op.input("X"):
                report.all_reduced.update(packed.get(name, [name]))
    for op in startup.global_block().ops:
        if op.type == BROADCAST_OP:
            report.broadcast.update(op.input("X"))
    return report


def check_all_reduced(report: CollectiveReport, gradients: Iterable[str],
                      parameters: Iterable[str], teacher_prefix: str) -> None:
    """Every trained gradient summed over the workers, every parameter broadcast from rank 0 at
    start, no teacher variable in any collective — else a clear error before step 1."""
    missing = sorted(set(gradients) - report.all_reduced)
    if missing:
        raise SegDistillError(
            f"the data-parallel program does not all-reduce {len(missing)} gradient(s) (e.g. "
            f"{missing[0]}): the workers would train apart silently")
    unsent = sorted(set(parameters) - report.broadcast)
    if unsent:
        raise SegDistillError(f"the data-parallel startup does not broadcast {len(unsent)} "
                              f"parameter(s) from rank 0 (e.g. {unsent[0]}): the workers would "
                              "start from different weights")
    teacher = sorted(n for n in report.all_reduced | report.broadcast
                     if n.startswith(teacher_prefix))
    if teacher:
        raise SegDistillError(f"teacher variable {teacher[0]} is in a collective op; the teacher "
                              "must stay frozen and local")


def values_sha256(values: dict[str, np.ndarray]) -> str:
    """One digest of named arrays (name, dtype, shape and bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(values):
        value = np.ascontiguousarray(values[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def scope_sha256(scope: Any, names: Sequence[str]) -> str:
    """`values_sha256` of the variables `names` as they are in `scope` now."""
    return values_sha256({n: np.array(scope.find_var(n).get_tensor()) for n in names})


STOP_VOTE_OP = "c_allreduce_max"


def stop_vote(exe: Any) -> Callable[[bool], bool]:
    """The collective stop decision of a data-parallel run: `vote(local)` is True on every rank
    when any rank's `local` is True (a max all-reduce of one flag on ring 0, in a program of its
    own). Every rank must call it at the same points (Gloo and NCCL pair calls by order): the
    trainer calls it once after every step, so all ranks leave the loop after the same step."""
    paddle = import_paddle()
    program, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(program, startup), paddle.utils.unique_name.guard():
        flag = paddle.static.data("segdistill_stop_flag", [1], "float32")
        block = program.global_block()
        anyone = block.create_var(name="segdistill_stop_any", shape=[1], dtype="float32")
        block.append_op(type=STOP_VOTE_OP, inputs={"X": [flag]}, outputs={"Out": [anyone]},
                        attrs={"ring_id": 0, "use_calc_stream": True})
    scope = paddle.static.Scope()

    def vote(local: bool) -> bool:
        (result,) = exe.run(program, feed={flag.name: np.array([float(local)], np.float32)},
                            fetch_list=[anyone], scope=scope)
        return bool(np.asarray(result).reshape(-1)[0] > 0)

    return vote
