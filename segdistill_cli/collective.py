"""The data-parallel program: how it is built on each IR, what the CPU (Gloo) build needs, and the
checks that the program really averages gradients over the workers.

The same fleet collective program runs on GPUs (NCCL) and on CPU workers (Gloo). Paddle 2.6's
fleet assumes a GPU build, so on the CPU build three things differ (docs/design.md, "Data-parallel
training on CPU (Gloo)"), and each is applied only there:

1. Gloo is initialised with `paddle.distributed.init_parallel_env()` *after* static mode is on
   (the collective kernels read the context it creates);
2. fleet's GPU communicator set-up (`CollectiveHelper._init_communicator`) becomes a no-op;
3. the stream-sync ops fleet inserts (`c_sync_calc_stream`, `c_sync_comm_stream`) are removed:
   they have no CPU kernel and nothing to synchronise on a CPU.

Under Paddle 3's PIR fleet's static collective rewrite does not run (docs/design.md, "Paddle
3.x"), so the program is made data-parallel here with Paddle's public collective API, on GPUs and
CPU workers alike: the parallel environment is initialised in dynamic mode (`init_pir_workers`),
every gradient gets a `paddle.distributed.all_reduce` and a 1/N scale before the optimizer update
(`all_reduce_gradients`), and the startup program broadcasts every parameter from rank 0
(`broadcast_parameters`).

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
from .program_vars import is_pir_program

# Ops fleet inserts to order GPU streams; no CPU kernel exists for them.
STREAM_SYNC_OPS = ("c_sync_calc_stream", "c_sync_comm_stream")
ALL_REDUCE_OP = "c_allreduce_sum"
BROADCAST_OP = "c_broadcast"
# PIR's ops for the same collectives (paddle.distributed.all_reduce / broadcast, in place).
PIR_ALL_REDUCE_OP = "pd_op.all_reduce_"
PIR_BROADCAST_OP = "pd_op.broadcast_"
# The fleet internals replaced on the CPU build were read in this Paddle release line.
VERIFIED_PADDLE = "2.6."
# PIR: gradients are all-reduced in buckets of up to this size, one call each (fleet fuses them
# too on the legacy IR): a call per gradient costs one Gloo round trip each.
FUSE_BYTES = 32 << 20
# The PIR data-parallel program (and how its collectives find their communicator) was checked on
# this release line.
VERIFIED_PIR_PADDLE = "3.3."


def is_cpu_build() -> bool:
    """True for a Paddle without CUDA: the case that needs the Gloo changes."""
    return not import_paddle().device.is_compiled_with_cuda()


def check_cpu_collective_supported() -> None:
    """The Gloo path replaces a private fleet function: refuse a Paddle it was not checked on."""
    version = import_paddle().__version__
    if not version.startswith(VERIFIED_PADDLE):
        raise SegDistillError(f"CPU multi-worker training relies on Paddle {VERIFIED_PADDLE}x "
                              f"internals (verified on 2.6.2); this is Paddle {version}")


def check_pir_collective_supported() -> None:
    """The PIR data-parallel program was checked on one Paddle 3 release line only."""
    version = import_paddle().__version__
    if not version.startswith(VERIFIED_PIR_PADDLE):
        raise SegDistillError(f"multi-worker training under PIR was verified on Paddle "
                              f"{VERIFIED_PIR_PADDLE}x (3.3.1); this is Paddle {version}")


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


def init_pir_workers(log_dir: Optional[Path]) -> None:
    """The parallel environment for PIR's collective ops (Gloo on the CPU build, NCCL on GPUs).

    It must be initialised in dynamic mode: only there does `init_parallel_env` create the
    process group and the communicators that PIR's `all_reduce_`/`broadcast_` kernels look up by
    ring id. Initialised in static mode (2.6's recipe) it builds only the old parallel context,
    and the first all-reduce fails with "NCCLCommContext is nullptr" (on the CPU build too).
    """
    check_pir_collective_supported()
    paddle = import_paddle()
    paddle.disable_static()
    try:
        with working_directory(log_dir):
            paddle.distributed.init_parallel_env()
    finally:
        paddle.enable_static()


def all_reduce_gradients(params_grads: Sequence[tuple[Any, Any]], nranks: int,
                         bucket_bytes: Optional[int] = None) -> list[tuple[Any, Any]]:
    """PIR: every gradient summed over the workers and divided by their number, in the current
    program (after the backward, before the optimizer's update): the gradients are packed into
    buckets of up to `bucket_bytes` (default FUSE_BYTES; one flat concat each), each bucket is
    all-reduced in one call, and the averaged pieces are cut back out for the update."""
    averaged: list[tuple[Any, Any]] = []
    for bucket in _buckets(params_grads, FUSE_BYTES if bucket_bytes is None else bucket_bytes):
        averaged += _all_reduce_bucket(bucket, nranks)
    return averaged


def _buckets(params_grads: Sequence[tuple[Any, Any]], limit: int
             ) -> Iterator[list[tuple[Any, Any]]]:
    """Consecutive (param, grad) pairs of one dtype and at most `limit` bytes (or one pair)."""
    bucket: list[tuple[Any, Any]] = []
    size = 0
    for param, grad in params_grads:
        if any(int(d) < 0 for d in grad.shape):
            raise SegDistillError(f"the gradient of {param.name} has no static shape "
                                  f"({list(grad.shape)}); it cannot be packed for the all-reduce")
        nbytes = int(np.prod(grad.shape)) * _itemsize(grad)
        if bucket and (size + nbytes > limit or grad.dtype != bucket[0][1].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append((param, grad))
        size += nbytes
    if bucket:
        yield bucket


def _itemsize(value: Any) -> int:
    return int(import_paddle().core.size_of_dtype(value.dtype))


def _all_reduce_bucket(bucket: list[tuple[Any, Any]], nranks: int) -> list[tuple[Any, Any]]:
    """One bucket: concat the flattened gradients, sum them over the workers, scale by 1/N,
    split and reshape. Everything after the all-reduce reads the value it writes, so the
    program itself orders them (not only the shared in-place buffer)."""
    paddle = import_paddle()
    block = paddle.static.default_main_program().global_block()
    flat = paddle.concat([paddle.reshape(grad, [-1]) for _, grad in bucket])
    paddle.distributed.all_reduce(flat)  # in place; returns nothing under PIR
    summed = block.ops[-1]
    if summed.name() != PIR_ALL_REDUCE_OP:
        raise SegDistillError(f"paddle.distributed.all_reduce appended {summed.name()}, not "
                              f"{PIR_ALL_REDUCE_OP}")
    mean = summed.result(0) * (1.0 / nranks)
    pieces = paddle.split(mean, [int(np.prod(grad.shape)) for _, grad in bucket])
    return [(param, paddle.reshape(piece, list(grad.shape)))
            for (param, grad), piece in zip(bucket, pieces)]


def broadcast_parameters(startup: Any, names: Iterable[str]) -> None:
    """PIR: the startup program ends by sending the parameters `names` from rank 0, so every rank
    starts from rank 0's weights whatever it initialised (what fleet's startup does on 2.6)."""
    paddle = import_paddle()
    from paddle._pir_ops import parameter  # the op that reads a named parameter

    with paddle.static.program_guard(startup):
        for name in names:
            paddle.distributed.broadcast(parameter(name), src=0)


def gradient_names(program: Any, params_grads: Iterable[tuple[Any, Any]]) -> list[str]:
    """How the report names the gradients: their variable names on the legacy IR; under PIR (a
    gradient value has no name) each parameter's name + "@GRAD", as the legacy IR names it."""
    if is_pir_program(program):
        return [f"{param.name}@GRAD" for param, _ in params_grads]
    return [grad.name for _, grad in params_grads]


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
    all_reduce_op: str = ALL_REDUCE_OP

    def describe(self, teacher_prefix: str) -> str:
        teacher = sum(1 for n in self.all_reduced | self.broadcast if n.startswith(teacher_prefix))
        grads = sum(1 for n in self.all_reduced if n.endswith("@GRAD"))
        return (f"{grads} gradients all-reduced in {self.all_reduce_calls} "
                f"{self.all_reduce_op} calls, {len(self.broadcast)} startup values broadcast from "
                f"rank 0, {teacher} teacher variables in collectives")


def inspect_program(main: Any, startup: Any) -> CollectiveReport:
    """Which variables the main program all-reduces (looking through fleet's gradient fusion:
    `coalesce_tensor` makes its `Output` gradients views of one `FusedOutput` buffer, which is
    then all-reduced) and which values the startup program broadcasts."""
    if is_pir_program(main):
        return _inspect_pir_program(main, startup)
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


def _inspect_pir_program(main: Any, startup: Any) -> CollectiveReport:
    """PIR: a gradient counts as all-reduced when the optimizer update of its parameter (an op
    with `param` and `grad` inputs: momentum_, adam_, sgd_, ...) reads a value computed from a
    sum all-reduce's output; broadcast values are the parameters the startup's broadcasts read."""
    report = CollectiveReport(all_reduce_op=PIR_ALL_REDUCE_OP)
    summed = import_paddle().distributed.ReduceOp.SUM
    reduced: set[str] = set()
    for op in main.global_block().ops:
        if op.name() == PIR_ALL_REDUCE_OP and op.attrs().get("reduce_type") == summed:
            report.all_reduce_calls += 1
            reduced.add(op.result(0).id)
    for op in main.global_block().ops:
        inputs = _input_names(op)
        if "param" in inputs and "grad" in inputs:
            grad = op.operand_source(inputs.index("grad"))
            if _computed_from(grad, reduced):
                report.all_reduced.add(f"{op.operand_source(inputs.index('param')).name}@GRAD")
    for op in startup.global_block().ops:
        if op.name() == PIR_BROADCAST_OP:
            report.broadcast.add(op.operand_source(0).name)
    return report


def _input_names(op: Any) -> list[str]:
    """A PIR op's input names; [] for ops that have none (builtin ops such as combine)."""
    try:
        return list(op.get_input_names())
    except ValueError:  # "can only get input names of Operation that has OpYamlInfoInterface"
        return []


def _computed_from(value: Any, sources: set[str], limit: int = 32) -> bool:
    """Whether `value` is one of `sources` (value ids) or computed from one, looking back through
    the ops between (the 1/N scale, weight decay, gradient clipping) but not into the backward
    (`*_grad` ops) or past persistable values (parameters, LR)."""
    todo, looked = [value], 0
    while todo and looked < limit:
        current = todo.pop()
        looked += 1
        if current.id in sources:
            return True
        op = current.get_defining_op()
        if op is None or current.persistable or op.name().endswith("_grad"):
            continue
        todo += [op.operand_source(i) for i in range(op.num_operands())]
    return False


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
        if is_pir_program(program):  # PIR: the public API's in-place max all-reduce
            paddle.distributed.all_reduce(flag, op=paddle.distributed.ReduceOp.MAX)
            anyone = program.global_block().ops[-1].result(0)
        else:
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
