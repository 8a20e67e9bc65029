"""The data-parallel program checks (collective.py) that need no launch: what refuses a program
that would let the workers train apart."""
from __future__ import annotations

import pytest

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
