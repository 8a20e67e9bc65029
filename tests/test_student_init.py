"""The student's initial weights depend on the seed only: with or without a teacher they are the
same, on either stack. (On the legacy IR the teacher's own start-up program, run before the
student's to load it strictly, used to draw from the global generator first, so a distilled run
and its same-seed baseline started from different weights: the pairing by seed in
docs/results.md shared the data order and dropout but not the initialisation.)"""
from __future__ import annotations

import numpy as np

from conftest import STUDENT_CFG, TEACHER_CFG, TINY, TINY_TEACHER


def _initial_student(teacher_dir, use_teacher: bool, seed: int) -> dict[str, np.ndarray]:
    from segdistill_cli.config import load_configs
    from segdistill_cli.engine.graph import build_train_graph
    from segdistill_cli.launcher import RunContext
    from segdistill_cli.models import parameter_manifest
    from segdistill_cli.program_vars import parameters

    configs = load_configs(STUDENT_CFG, TEACHER_CFG, TINY,
                           [*TINY_TEACHER, f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={teacher_dir}"])
    graph = build_train_graph(configs, RunContext(), 8, seed, use_teacher, lambda message: None)
    student = set(parameter_manifest(configs.student))
    found = {p.name: np.array(graph.scope.find_var(p.name).get_tensor())
             for p in parameters(graph.main) if p.name in student}
    assert len(found) == len(student)
    return found


def test_the_teacher_does_not_change_the_students_initial_weights(teacher_dir):
    baseline = _initial_student(teacher_dir, use_teacher=False, seed=5)
    distilled = _initial_student(teacher_dir, use_teacher=True, seed=5)
    differ = sorted(name for name in baseline if not np.array_equal(baseline[name], distilled[name]))
    assert differ == [], f"{len(differ)} of {len(baseline)} parameters differ, e.g. {differ[:3]}"
    # The control: another seed changes every randomly initialised parameter (the convolution
    # weights; BN parameters and biases start constant).
    other = _initial_student(teacher_dir, use_teacher=False, seed=6)
    random = {name for name, value in baseline.items() if np.ptp(value) > 0}
    assert len(random) > 40 and all(name.endswith("weights") for name in random)
    assert {name for name in baseline if not np.array_equal(baseline[name], other[name])} == random
