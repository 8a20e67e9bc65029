"""What data-parallel CPU workers cost: step time of the CamVid pair with 1 process vs 2 workers
(`--cpu --nproc 2`, same global batch), and the part of it spent in the gradient all-reduce.

Each variant is a real `segdistill train` run (distillation from the trained CamVid teacher in
../shared/models/camvid-teacher, real CamVid images at 160x120, global batch 4, --no-eval), one
after another, `--rounds` times:

  one          1 process, batch 4, all cores
  two          2 workers x batch 2, cores split between them (1 each on 2 cores)
  two-no-ar    the same 2 workers with every c_allreduce_sum removed from the program
               (tests/_dp_no_allreduce.py, the tests' negative control)

Step time = the median interval between consecutive logged steps of rank 0 (`--log-steps 1`,
`train_log.jsonl`), after the first `--skip` steps. All-reduce time = two − two-no-ar. This is
informational: 2 workers on 2 cores cannot be faster than one process using both cores; the
point of CPU workers is correctness checks and CPU clusters.

    python benchmarks/dp_cost.py --steps 20 --rounds 2      # ~6 min on 2 cores
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, machine

CAMVID = ROOT.parent / "shared" / "data" / "camvid"
TEACHER = ROOT.parent / "shared" / "models" / "camvid-teacher"
SIZE = "(160,120)"
GLOBAL_BATCH = 4
VARIANTS = {"one": ["--cpu"], "two": ["--cpu", "--nproc", "2"],
            "two-no-ar": ["--cpu", "--nproc", "2"]}
_COLLECTIVES = re.compile(r"data-parallel rank 0/2: (.*)")


def train_argv(save: Path, train_list: Path) -> list[str]:
    student = [f"DATASET.DATA_DIR={CAMVID}", f"DATASET.TRAIN_FILE_LIST={train_list}",
               f"TRAIN_CROP_SIZE={SIZE}", f"EVAL_CROP_SIZE={SIZE}", f"AUG.FIX_RESIZE_SIZE={SIZE}",
               f"BATCH_SIZE={GLOBAL_BATCH}", "SOLVER.NUM_EPOCHS=1", "DATALOADER.NUM_WORKERS=0",
               f"TRAIN.MODEL_SAVE_DIR={save}"]
    teacher = [f"SLIM.KNOWLEDGE_DISTILL_TEACHER_MODEL_DIR={TEACHER}"]
    argv = ["train", "--cfg", str(ROOT / "configs" / "camvid.yaml"), "--teacher-cfg",
            str(ROOT / "configs" / "camvid_teacher.yaml"), "--no-eval", "--log-steps", "1",
            "--seed", "0"]
    for item in student:
        argv += ["--set", item]
    for item in teacher:
        argv += ["--teacher-set", item]
    return argv


def run_variant(name: str, folder: Path, train_list: Path) -> tuple[list[float], str]:
    """Seconds between logged steps of one run, and rank 0's collective summary line."""
    save = folder / name
    argv = train_argv(save, train_list) + VARIANTS[name]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    if name == "two-no-ar":
        code = _launch_without_all_reduce(argv, env)
    else:
        code = subprocess.run([sys.executable, "-m", "segdistill_cli", *argv], env=env,
                              capture_output=True, text=True).returncode
    if code:
        raise SystemExit(f"{name}: train failed (exit {code}); see {save}/launch_logs")
    records = [json.loads(line) for line in (save / "train_log.jsonl").read_text().splitlines()]
    times = [r["time"] for r in records if r["type"] == "train"]
    log = save / "launch_logs" / "workerlog.0"
    match = _COLLECTIVES.search(log.read_text()) if log.is_file() else None
    return [b - a for a, b in zip(times, times[1:])], match[1] if match else ""


def _launch_without_all_reduce(argv: list[str], env: dict) -> int:
    import dataclasses

    from segdistill_cli import launcher as L

    save = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("TRAIN.MODEL_SAVE_DIR=")))
    plan = L.plan_launch(L.LaunchRequest(cpu=True, nproc=2, log_dir=str(save / "launch_logs")),
                         argv, env=env)
    command = tuple("_dp_no_allreduce" if a == "segdistill_cli" else a for a in plan.command)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return L.run_launch(dataclasses.replace(plan, command=command), env=env,
                            extra_env={L.SEED_ENV: "0"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", type=int, default=3, help="first logged steps not counted")
    args = parser.parse_args()
    print(machine())
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    summary = ""
    with tempfile.TemporaryDirectory(prefix="segdistill-dp-") as tmp:
        folder = Path(tmp)
        lines = (CAMVID / "train.txt").read_text().splitlines()[:args.steps * GLOBAL_BATCH]
        train_list = folder / "train.txt"
        train_list.write_text("\n".join(lines) + "\n")
        for round_ in range(args.rounds):
            for name in VARIANTS:
                run = folder / f"r{round_}"
                steps, line = run_variant(name, run, train_list)
                samples[name] += steps[args.skip:]
                summary = summary or line
                print(f"round {round_} {name:10s} median {1000 * statistics.median(steps[args.skip:]):.0f}"
                      f" ms/step over {len(steps[args.skip:])} steps; load "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
    med = {name: statistics.median(values) for name, values in samples.items()}
    print(machine())
    print(f"program: {summary}")
    for name in VARIANTS:
        q = statistics.quantiles(samples[name], n=4)
        print(f"{name:10s} {1000 * med[name]:7.0f} ms/step (IQR {1000 * q[0]:.0f}-{1000 * q[2]:.0f}, "
              f"n={len(samples[name])})")
    print(f"all-reduce: {1000 * (med['two'] - med['two-no-ar']):.0f} ms/step "
          f"({100 * (med['two'] - med['two-no-ar']) / med['two']:.0f}% of the 2-worker step); "
          f"two / one = {med['two'] / med['one']:.2f}")


if __name__ == "__main__":
    main()
