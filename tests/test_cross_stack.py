"""A checkpoint written on one stack loads on the other (issue #17: Paddle 2.6 legacy IR and
Paddle 3.x PIR). One process imports one Paddle, so each side runs tests/_cross_stack.py under its
own interpreter: this test's (`sys.executable`) and the one SEGDISTILL_OTHER_STACK_PYTHON names
(CI sets it to the other venv's python). Each side resumes the checkpoint into a fresh training
program (optimizer state and LR step included) and loads it into its eval program; the same
weights must give the same logits on both stacks. Controls: a perturbed tensor changes the
logits, a damaged file is refused by the other stack, naming it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TESTS

OTHER = os.environ.get("SEGDISTILL_OTHER_STACK_PYTHON", "")
WORKER = TESTS / "_cross_stack.py"
SAME = 1e-4  # max |difference| relative to the largest logit: the same weights
DIFFERENT = 1e-2  # ... a perturbed tensor's logits must be at least this far off

pytestmark = pytest.mark.skipif(
    not OTHER, reason="SEGDISTILL_OTHER_STACK_PYTHON is not set (no other stack's interpreter "
                      "to load the checkpoint with); CI sets it to the other venv's python")


def _run(python: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(WORKER), *map(str, args)], cwd=ROOT, text=True,
                          capture_output=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _worker(python: str, *args: object) -> dict:
    done = _run(python, *args)
    assert done.returncode == 0, f"{python} {args}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _logits(python: str, checkpoint: Path, out: Path) -> tuple[dict, np.ndarray]:
    info = _worker(python, "load", checkpoint, out)
    assert (info["global_step"], info["lr_step"]) == (2, 2)  # the resume restored the schedule
    assert info["eval_params_loaded"] > 0
    return info, np.load(out)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.fixture(scope="module")
def stacks() -> dict[str, str]:
    """{"here": this interpreter, "other": the other stack's}, checked to be different stacks
    (the same stack twice would prove nothing)."""
    pythons = {"here": sys.executable, "other": OTHER}
    code = "from segdistill_cli.paddle_env import import_paddle; print(import_paddle().__version__)"
    versions = {k: subprocess.run([p, "-c", code], cwd=ROOT, text=True, capture_output=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
                for k, p in pythons.items()}
    assert versions["here"] and versions["other"], versions
    assert versions["here"] != versions["other"], f"both interpreters run Paddle {versions}"
    return pythons


@pytest.mark.parametrize("writer,reader", [("here", "other"), ("other", "here")])
def test_a_checkpoint_gives_the_same_logits_on_both_stacks(stacks, tmp_path, writer, reader):
    checkpoint = tmp_path / "ckpt"
    written = _worker(stacks[writer], "save", checkpoint)
    mine, own = _logits(stacks[writer], checkpoint, tmp_path / "own.npy")
    theirs, other = _logits(stacks[reader], checkpoint, tmp_path / "other.npy")
    assert written["paddle"] == mine["paddle"] != theirs["paddle"]
    assert np.abs(own).max() > 0
    assert _relative(own, other) < SAME, (written, theirs)


def test_controls_a_perturbed_tensor_changes_the_logits_and_a_damaged_file_is_refused(
        stacks, tmp_path):
    plain, perturbed = tmp_path / "plain", tmp_path / "perturbed"
    _worker(stacks["here"], "save", plain)
    _worker(stacks["here"], "save", perturbed, "--perturb", "logit/weights")
    _, want = _logits(stacks["other"], plain, tmp_path / "plain.npy")
    _, changed = _logits(stacks["other"], perturbed, tmp_path / "perturbed.npy")
    assert _relative(want, changed) > DIFFERENT

    params = plain / "model.pdparams"
    data = bytearray(params.read_bytes())
    data[len(data) // 2] ^= 0xFF
    params.write_bytes(bytes(data))
    done = _run(stacks["other"], "load", plain, tmp_path / "damaged.npy")
    assert done.returncode != 0
    assert "model.pdparams" in done.stderr and "damaged" in done.stderr.lower(), done.stderr[-2000:]
