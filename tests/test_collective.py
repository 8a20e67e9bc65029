"""The data-parallel program checks (collective.py) that need no launch: what refuses a program
that would let the workers train apart."""
from __future__ import annotations

import pytest

from conftest import pir_only
from segdistill_cli.collective import CollectiveReport, check_all_reduced
from segdistill_cli.errors import SegDistillError


def test_a_program_that_does_not_all_reduce_is_refused_before_step_1():
    """What stops a strategy that inserts no all-reduce (the workers would train apart)."""
    report = CollectiveReport(all_reduce_calls=1, all_reduced={"w@GRAD"},
                              broadcast={"w", "v"})
    check_all_reduced(report, ["w@GRAD"], ["w", "v"], "teacher_")
    with pytest.raises(SegDistillError, match="does not all-reduce 1 gradient"):
        check_all_reduced(report, ["w@GRAD", "v@GRAD"], ["w", "v"], "teacher_")
    with pytest.raises(SegDistillError, match="does not broadcast 1 parameter"):
        check_all_reduced(report, ["w@GRAD"], ["w", "v", "u"], "teacher_")
    report.all_reduced.add("teacher_x@GRAD")
    with pytest.raises(SegDistillError, match="teacher variable teacher_x@GRAD"):
        check_all_reduced(report, ["w@GRAD"], ["w", "v"], "teacher_")


# ---- the PIR data-parallel program (built, not run: no workers needed) ------------------------

PIR_PROGRAM = pir_only("the PIR data-parallel program; on the legacy IR fleet builds it "
                       "(tests/test_data_parallel.py runs it on both)")


def _pir_program(optimizer: str):
    """A two-layer PIR program with a frozen teacher-named parameter, the loss, and the PIR
    `DataParallelOptimizer` around `optimizer` (nothing minimized yet)."""
    from segdistill_cli import collective
    from segdistill_cli.launcher import DataParallelOptimizer

    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [-1, 4], "float32")
        w = paddle.static.create_parameter([4, 8], "float32", name="w")
        b = paddle.static.create_parameter([8], "float32", name="b", is_bias=True)
        frozen = paddle.static.create_parameter([8, 3], "float32", name="teacher_v")
        frozen.trainable, frozen.stop_gradient = False, True
        v = paddle.static.create_parameter([8, 3], "float32", name="v")
        hidden = paddle.tanh(paddle.matmul(x, w) + b)
        loss = paddle.mean(paddle.matmul(hidden, v) + paddle.matmul(hidden, frozen))
        decay = paddle.regularizer.L2Decay(1e-3)
        inner = (paddle.optimizer.Momentum(0.1, momentum=0.9, weight_decay=decay)
                 if optimizer == "momentum" else paddle.optimizer.Adam(0.1, weight_decay=decay))
        wrapped = DataParallelOptimizer(inner, True, "teacher_", pir=True, nranks=2)
    return wrapped, loss, main, startup, collective


@PIR_PROGRAM
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_pir_every_update_reads_an_all_reduced_gradient(optimizer):
    """The gradients go in one fused all-reduce (they fit one bucket); the teacher-named frozen
    parameter has no gradient and is not broadcast."""
    wrapped, loss, main, startup, collective = _pir_program(optimizer)
    with _guard(main, startup):
        wrapped.minimize(loss)
    report = wrapped.report
    assert report.all_reduced == {"w@GRAD", "b@GRAD", "v@GRAD"}
    assert report.all_reduce_calls == 1 and report.broadcast == {"w", "b", "v"}
    assert report.describe("teacher_") == ("3 gradients all-reduced in 1 pd_op.all_reduce_ "
                                           "calls, 3 startup values broadcast from rank 0, "
                                           "0 teacher variables in collectives")


@PIR_PROGRAM
def test_pir_a_program_whose_update_skips_the_all_reduce_is_refused(monkeypatch):
    """The negative controls: no all-reduce at all; and all-reduce ops present (one per gradient
    here) but one update reading the local gradient, the others the summed ones."""
    from segdistill_cli.errors import SegDistillError

    wrapped, loss, main, startup, collective = _pir_program("momentum")
    with _guard(main, startup):  # the plain optimizer: what fleet's rewrite would have wrapped
        wrapped.inner.apply_gradients(wrapped.inner.backward(loss, startup))
    report = collective.inspect_program(main, startup)
    assert report.all_reduce_calls == 0 and report.all_reduced == set()
    with pytest.raises(SegDistillError, match="does not all-reduce 3 gradient"):
        collective.check_all_reduced(report, ["w@GRAD", "b@GRAD", "v@GRAD"], [], "teacher_")

    monkeypatch.setattr(collective, "FUSE_BYTES", 1)  # a bucket per gradient
    wrapped, loss, main, startup, collective = _pir_program("momentum")
    with _guard(main, startup):
        wrapped.minimize(loss)
    assert wrapped.report.all_reduce_calls == 3
    for op in list(main.global_block().ops):
        if op.name() == collective.PIR_ALL_REDUCE_OP and op.operand_source(0).shape == [32]:
            op.result(0).replace_all_uses_with(op.operand_source(0))  # w (4x8): local grad
    report = collective.inspect_program(main, startup)
    assert report.all_reduce_calls == 3 and report.all_reduced == {"b@GRAD", "v@GRAD"}


def _guard(main, startup):
    from segdistill_cli.paddle_env import import_paddle

    return import_paddle().static.program_guard(main, startup)
