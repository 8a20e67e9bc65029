"""The first training steps of the distillation graph (`engine/graph.build_train_graph`, what
`segdistill train` runs) as Paddle 2.6.2 computes them with the legacy graph (PaddleSlim merge),
for fixed weights, a fixed batch and a fixed seed: the fixtures in tests/legacy_train_step/ that
the PIR graph of Paddle 3 is compared with (tests/test_pir_graph.py). Generated, never edited by
hand: on Paddle 2.6.2 run

    PYTHONPATH=. python tests/_legacy_train_step.py

Each fixture holds, per step, every logged term (CE, each weighted distill term, total, the raw
terms and masks); the size of each trainable parameter's change in step 1 (|after - before|,
L2), which the optimizer, the LR schedule and the weight decay decide, and its size before
(|before|: float32 rounds the change to about 1e-7 of it); and the names and shapes
a checkpoint of that graph stores (model.pdparams, model.pdopt).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "tests" / "legacy_train_step"
STEPS = 2
SEED = 0
TRAIN_IMAGES = 16  # what the LR schedule is built from (poly over 8 epochs of 2 steps)
BATCH = 2
# Every built-in loss, the tutorial's raw names, both adapters (conv1x1 with and without the
# resize), both pixel selections and DIST's parts.
EVERY_LOSS = (
    "[{TEACHER: teacher_bilinear_interp_v2_2.tmp_0, STUDENT: bilinear_interp_v2_0.tmp_0, "
    "LOSS: l2, WEIGHT: 0.1, NAME: tutorial}, "
    "{TEACHER: logits, STUDENT: logits, LOSS: soft_label, TEMPERATURE: 2, MASK: confident, "
    "THRESHOLD: 0.235}, "
    "{TEACHER: logits, STUDENT: logits, LOSS: kl, MASK: correct, THRESHOLD: 0.2}, "
    "{TEACHER: logits, STUDENT: logits, LOSS: dist, WEIGHT: 0.5}, "
    "{TEACHER: logits_lowres, STUDENT: logits_lowres, LOSS: cwd, TEMPERATURE: 4, "
    "RESIZE: bilinear}, "
    "{TEACHER: decoder.out, STUDENT: backbone.out, LOSS: l2, ADAPTER: conv1x1, "
    "RESIZE: bilinear, NAME: feat}, "
    "{TEACHER: [backbone.stride4, decoder.out], STUDENT: [backbone.stride4, backbone.stride4], "
    "LOSS: fsp, ADAPTER: conv1x1, NAME: fsp}]")
# name -> student --set overrides of the demo pair (configs/demo*.yaml).
CASES = {"demo": [], "demo_every_loss": [f"DISTILL={EVERY_LOSS}"]}


def case_configs(name: str, teacher_dir: Path, save_dir: Path, sets: Sequence[str] = ()) -> Any:
    """The configs of case `name`, with more student `sets` (KEY=VALUE) if given."""
    from segdistill_cli.config import load_configs

    return load_configs(ROOT / "configs" / "demo.yaml", ROOT / "configs" / "demo_teacher.yaml",
                        [f"TRAIN.MODEL_SAVE_DIR={save_dir}", *CASES[name], *sets],
                        [f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={teacher_dir}"])


def write_teacher(folder: Path) -> Path:
    """The demo teacher's seeded weights as a legacy one-file-per-variable folder."""
    from _legacy_logits import weights
    from segdistill_cli.config import load_configs
    from segdistill_cli.weights.tensor_format import write_legacy_dir

    teacher = load_configs(ROOT / "configs" / "demo.yaml", ROOT / "configs" / "demo_teacher.yaml",
                           [], []).teacher
    return write_legacy_dir(folder, weights(teacher))


def batch() -> dict[str, np.ndarray]:
    """A labelled batch with IGNORE_INDEX pixels (label mask) and padding (distill mask)."""
    rng = np.random.default_rng(1)
    shape = (BATCH, 1, 64, 64)
    label = rng.integers(0, 5, shape).astype("int32")
    label[:, :, :8, :] = 255
    distill_mask = np.ones(shape, "int32")
    distill_mask[:, :, :, 56:] = 0
    return {"image": rng.normal(size=(BATCH, 3, 64, 64)).astype("float32"), "label": label,
            "mask": (label != 255).astype("int32"), "distill_mask": distill_mask}


def build(name: str, folder: Path, sets: Sequence[str] = (), **graph_options: Any) -> Any:
    """The training graph of case `name` (teacher weights written under `folder`), every
    student and adapter parameter set from `_legacy_logits.seeded_value`."""
    from _legacy_logits import seeded_value
    from segdistill_cli.engine.graph import build_train_graph
    from segdistill_cli.launcher import RunContext
    from segdistill_cli.program_vars import parameters

    configs = case_configs(name, write_teacher(folder / "teacher"), folder / "run", sets)
    graph = build_train_graph(configs, RunContext(), TRAIN_IMAGES, SEED, True, lambda m: None,
                              **graph_options)
    for param in parameters(graph.main):
        if not param.name.startswith("teacher_"):
            value = seeded_value(param.name, tuple(param.shape))
            graph.scope.find_var(param.name).get_tensor().set(value, graph.place)
    return graph


def values(graph: Any, names: list[str]) -> dict[str, np.ndarray]:
    return {n: np.array(graph.scope.find_var(n).get_tensor()) for n in names}


def run_steps(graph: Any, steps: int, after_first: Callable[[], None] = lambda: None,
              ) -> list[dict[str, float]]:
    """`steps` optimiser steps on `batch()` as the trainer runs them; every term of each."""
    from segdistill_cli.engine.graph import run_step, runnable_program
    from segdistill_cli.paddle_env import import_paddle

    program, terms = runnable_program(graph, False), graph.fetch_terms()
    feed, logged = batch(), []
    for step in range(steps):
        import_paddle().seed(SEED + step)  # the trainer reseeds before every step
        fetched = run_step(graph, program, feed, list(terms.values()))
        graph.lr_scheduler.step()
        logged.append({k: float(np.asarray(v).reshape(-1)[0]) for k, v in zip(terms, fetched)})
        if step == 0:
            after_first()
    return logged


def first_steps(name: str, sets: Sequence[str] = ()) -> dict[str, Any]:
    """What the fixture of case `name` holds (module docstring), computed on this stack (with
    more student `sets`: a control)."""
    from segdistill_cli.engine.checkpoints import split_state

    with tempfile.TemporaryDirectory() as tmp:
        graph = build(name, Path(tmp), sets)
        trainable = graph.student_trainable()
        before, changes = values(graph, trainable), {}
        norms = {n: float(np.linalg.norm(v)) for n, v in before.items()}

        def record_changes() -> None:
            after = values(graph, trainable)
            changes.update({n: float(np.linalg.norm(after[n] - before[n])) for n in trainable})

        steps = run_steps(graph, STEPS, record_changes)
        model, other = split_state(graph.main)
        return {"steps": steps, "step1_changes": changes, "norms": norms,
                "params": {v.name: list(v.shape) for v in model},
                "state": {v.name: list(v.shape) for v in other}}


def fixture_path(name: str) -> Path:
    return FOLDER / f"{name}.json"


def load_fixture(name: str) -> dict[str, Any]:
    return json.loads(fixture_path(name).read_text(encoding="utf-8"))


def _write(name: str, paddle_version: str) -> Path:
    from segdistill_cli.atomic import write_text_atomic

    text = json.dumps({"paddle": paddle_version, **first_steps(name)}, indent=1, sort_keys=True)
    write_text_atomic(fixture_path(name), text + "\n")
    return fixture_path(name)


def main() -> int:
    from _legacy_listings import generate

    FOLDER.mkdir(exist_ok=True)
    return generate("first training steps", CASES, _write)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    sys.exit(main())
