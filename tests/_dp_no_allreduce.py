"""Negative control of tests/test_data_parallel.py: the real `segdistill` CLI in a worker, except
that every gradient all-reduce is removed from the program after it is built (and checked).

This is what a misconfigured strategy does silently (the workers train apart); the parity test
must tell such a run from a real data-parallel one. Run as `python -m _dp_no_allreduce train ...`
with tests/ on PYTHONPATH, under paddle.distributed.launch.
"""
import sys

from segdistill_cli import collective, launcher
from segdistill_cli.cli import main

_minimize = launcher.DataParallelOptimizer.minimize


def _minimize_without_all_reduce(self, loss, *args, **kwargs):
    result = _minimize(self, loss, *args, **kwargs)
    block = loss.block.program.global_block()
    if self.pir:  # the update then reads the local gradient
        for op in list(block.ops):
            if op.name() == collective.PIR_ALL_REDUCE_OP:
                op.result(0).replace_all_uses_with(op.operand_source(0))
                block.remove_op(op)
        return result
    for index in reversed(range(len(block.ops))):
        if block.ops[index].type == collective.ALL_REDUCE_OP:
            block._remove_op(index)
    return result


launcher.DataParallelOptimizer.minimize = _minimize_without_all_reduce

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
