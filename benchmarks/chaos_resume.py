"""Chaos: a real CamVid distillation run killed N times, resumed with `--resume auto` each time,
compared bit for bit with the same run uninterrupted.

    python benchmarks/chaos_resume.py [--kills 24] [--seed 0] [--out /tmp/segdistill_chaos]

Each run is a `python -m segdistill_cli train ...` subprocess (student configs/camvid.yaml, the
trained teacher ../shared/models/camvid-teacher, crop 80x60, batch 2, 24 train images = 12 steps
per epoch, 12 epochs, eval on 16 val images every epoch, a step checkpoint every 5 steps, default
retention). First the uninterrupted reference, then the chaotic run: every attempt is started with
`--resume auto` and interrupted at a moment drawn at random (seeded) from

  step    SIGKILL after 1-6 more logged steps (lands anywhere inside a step or between steps)
  save    SIGKILL while a checkpoint is being written (a `.<name>.tmp-<pid>` folder exists)
  eval    SIGKILL during the epoch-end eval (the epoch's last step is logged, its eval is not)
  sigterm SIGTERM after 1-6 more logged steps: the run must save and exit 143

until N interruptions happened; then one last attempt runs to the end. Saves pause 0.2 s per file
(`SEGDISTILL_TEST_SAVE_PAUSE`) so that a kill can land inside one; the pause changes no number.
Prints `N interruptions survived, max |Δparam| vs uninterrupted = X, lost steps = Y`, where X is
over every student parameter and optimizer tensor of final/, and Y counts the steps that were
computed and then thrown away (logged steps of all attempts minus the run's steps).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "camvid"
TEACHER = ROOT.parent / "shared" / "models" / "camvid-teacher"
CROP = "(80, 60)"
TRAIN_IMAGES, VAL_IMAGES, BATCH, EPOCHS = 24, 16, 2, 12
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS
MOMENTS = ("step", "save", "eval", "sigterm")
SAVE_PAUSE_S = "0.2"


def write_lists(out: Path) -> tuple[Path, Path]:
    train = (DATA / "train.txt").read_text().splitlines()[:TRAIN_IMAGES]
    val = (DATA / "val.txt").read_text().splitlines()[:VAL_IMAGES]
    (out / "train.txt").write_text("\n".join(train) + "\n")
    (out / "val.txt").write_text("\n".join(val) + "\n")
    return out / "train.txt", out / "val.txt"


def train_args(save: Path, train_list: Path, val_list: Path, seed: int) -> list[str]:
    student = [f"DATASET.DATA_DIR={DATA}", f"DATASET.TRAIN_FILE_LIST={train_list}",
               f"DATASET.VAL_FILE_LIST={val_list}", f"TRAIN_CROP_SIZE={CROP}",
               f"EVAL_CROP_SIZE={CROP}", f"AUG.FIX_RESIZE_SIZE={CROP}", f"BATCH_SIZE={BATCH}",
               "DATALOADER.NUM_WORKERS=0", f"SOLVER.NUM_EPOCHS={EPOCHS}", "SOLVER.LR=0.05",
               "TRAIN.SNAPSHOT_EPOCH=1", "TRAIN.CHECKPOINT_STEPS=5",
               f"TRAIN.MODEL_SAVE_DIR={save}"]
    teacher = [f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={TEACHER}", f"TRAIN_CROP_SIZE={CROP}",
               f"EVAL_CROP_SIZE={CROP}"]
    args = ["train", "--cfg", str(ROOT / "configs" / "camvid.yaml"),
            "--teacher-cfg", str(ROOT / "configs" / "camvid_teacher.yaml"),
            "--seed", str(seed), "--log-steps", "1", "--check-data", "off"]
    for item in student:
        args += ["--set", item]
    for item in teacher:
        args += ["--teacher-set", item]
    return args


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{"SEGDISTILL_TEST_SAVE_PAUSE": SAVE_PAUSE_S})
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "segdistill_cli", *args], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def records(save: Path) -> list[dict]:
    path = save / "train_log.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line cut by SIGKILL
    return out


def logged_steps(save: Path) -> int:
    return sum(1 for r in records(save) if r.get("type") == "train")


def saving(save: Path) -> bool:
    return save.is_dir() and any(".tmp-" in p.name for p in save.iterdir())


def evaluating(save: Path) -> bool:
    """The last record is an epoch's last step (so its eval is running now)."""
    recs = records(save)
    return bool(recs) and recs[-1].get("type") == "train" \
        and recs[-1].get("step", 0) % STEPS_PER_EPOCH == 0


def wait_until(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 600) -> bool:
    """True when `condition` held while the process ran; False when it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            return True
        time.sleep(0.01)
    raise RuntimeError("an attempt hung")


def interrupt(proc: subprocess.Popen, save: Path, moment: str, rng: random.Random) -> Optional[str]:
    """Interrupt the attempt at `moment`; None if it finished first, else what happened."""
    if moment in ("step", "sigterm"):
        target = logged_steps(save) + rng.randint(1, 6)
        hit = wait_until(proc, lambda: logged_steps(save) >= target)
        time.sleep(rng.uniform(0, 0.3))  # somewhere in the next step
    elif moment == "save":
        hit = wait_until(proc, lambda: saving(save))
        time.sleep(rng.uniform(0, 0.4))  # somewhere inside the save's writes
    else:
        hit = wait_until(proc, lambda: evaluating(save))
        time.sleep(rng.uniform(0, 0.3))
    if not hit or proc.poll() is not None:
        proc.wait()
        return None
    if moment == "sigterm":
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=300)
        if code != 143:
            raise RuntimeError(f"SIGTERM: expected exit 143, got {code}")
        return f"sigterm after {logged_steps(save)} logged steps (all attempts) -> exit 143"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return f"sigkill during {moment} after {logged_steps(save)} logged steps (all attempts)"


def state(folder: Path) -> dict[str, np.ndarray]:
    values = {}
    for name in ("model.pdparams", "model.pdopt"):
        data = pickle.loads((folder / name).read_bytes())
        values.update({f"{name}:{k}": np.asarray(v) for k, v in data.items()
                       if isinstance(v, np.ndarray)})
    return values


def max_abs_diff(a: Path, b: Path) -> float:
    sa, sb = state(a), state(b)
    if sa.keys() != sb.keys():
        raise RuntimeError("the two final checkpoints hold different tensors")
    return max(float(np.max(np.abs(sa[k].astype(np.float64) - sb[k].astype(np.float64))))
               if sa[k].size else 0.0 for k in sa)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="seed of the chaos (and of training)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/segdistill_chaos"))
    opts = parser.parse_args()
    for needed in (DATA, TEACHER):
        if not needed.is_dir():
            print(f"error: {needed} not found", file=sys.stderr)
            return 2
    shutil.rmtree(opts.out, ignore_errors=True)
    opts.out.mkdir(parents=True)
    train_list, val_list = write_lists(opts.out)
    started, load_start = time.time(), os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {load_start[0]:.2f}", flush=True)

    reference = opts.out / "uninterrupted"
    proc = spawn(train_args(reference, train_list, val_list, opts.seed), opts.out / "reference.log")
    if proc.wait() != 0:
        print(f"error: the uninterrupted run failed, see {opts.out / 'reference.log'}")
        return 1
    print(f"uninterrupted run: {time.time() - started:.0f} s", flush=True)

    chaos = opts.out / "chaos"
    args = train_args(chaos, train_list, val_list, opts.seed) + ["--resume", "auto"]
    rng = random.Random(opts.seed)
    survived, attempts = 0, 0
    while True:
        attempts += 1
        proc = spawn(args, opts.out / "chaos.log")
        if survived >= opts.kills:
            code = proc.wait()
            if code != 0:
                print(f"error: the last attempt failed (exit {code}), see {opts.out / 'chaos.log'}")
                return 1
            break
        what = interrupt(proc, chaos, rng.choice(MOMENTS), rng)
        if what is None:
            if proc.returncode == 0:  # finished before the moment came: the run is too short
                break
            print(f"error: attempt {attempts} failed (exit {proc.returncode}), see "
                  f"{opts.out / 'chaos.log'}")
            return 1
        survived += 1
        print(f"  {survived:2d}. {what}", flush=True)

    steps = json.loads((chaos / "final" / "meta.json").read_text())["global_step"]
    if steps != TOTAL_STEPS:
        print(f"error: final/ is at step {steps}, expected {TOTAL_STEPS}")
        return 1
    diff = max_abs_diff(reference / "final", chaos / "final")
    lost = logged_steps(chaos) - logged_steps(reference)
    load_end = os.getloadavg()
    print(f"{attempts} attempts, {time.time() - started:.0f} s wall in all, load average "
          f"{load_start[0]:.2f} -> {load_end[0]:.2f}")
    print(f"{survived} interruptions survived, max |Δparam| vs uninterrupted = {diff:.3g}, "
          f"lost steps = {lost}")
    return 0 if survived >= opts.kills else 1


if __name__ == "__main__":
    sys.exit(main())
