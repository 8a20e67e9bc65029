"""Peak host memory of a distillation run vs the student trained alone + the teacher's inference.

    python benchmarks/memory.py [--pair tutorial|camvid|all] [--steps 5] [--repeats 2]

Each variant runs in its own fresh Python process (build the graph exactly as `segdistill train`
does, then `--steps` steps on one random batch) and reports its own peak resident set size
(VmHWM of that process, from /proc/self/status). Variants:
  distill  student + merged teacher + distill losses (the real trainer graph)
  student  the student alone (--no-teacher)
  teacher  the teacher program alone, inference mode, weights loaded as train loads them
  idle     Python + Paddle + segdistill imported, nothing built (the fixed cost every process pays)
Ratio (goal <= 1.1): distill / (student + teacher). Because student + teacher counts the fixed cost
twice, the ratio of the parts above that cost is printed as well:
(distill - idle) / ((student - idle) + (teacher - idle)).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys

from _common import (PAIRS, import_paddle, machine, pair_configs, run_child, teacher_inference_step, temp_dir,
                     train_step, write_random_teacher)

VARIANTS = ("distill", "student", "teacher", "idle")


def child(pair: str, variant: str, teacher_dir: str, steps: int) -> None:
    """Runs in the measured process: build, step, print {"peak_mb": ...} as the last line."""
    import_paddle()  # the fixed cost: what "idle" measures
    configs = pair_configs(pair, teacher_dir)
    built_mb = _peak_mb()
    if variant != "idle":
        step = teacher_inference_step(configs) if variant == "teacher" else \
            train_step(configs, variant == "distill")
        built_mb = _peak_mb()
        for _ in range(steps):
            step()
    print(json.dumps({"peak_mb": _peak_mb(), "built_mb": built_mb}))


def _peak_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve, so a
    child of a big parent would report the parent's peak (seen: every variant at the parent's
    1897 MB); VmHWM belongs to the new address space."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def bench_pair(pair: str, steps: int, repeats: int) -> None:
    with temp_dir("segdistill-mem-") as tmp:
        teacher_dir = str(write_random_teacher(pair_configs(pair), tmp))
        peaks: dict[str, list[float]] = {v: [] for v in VARIANTS}
        built: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(repeats):  # interleaved, one fresh process per measurement
            for variant in VARIANTS:
                out = run_child([__file__, "--child", variant, "--pair", pair,
                                 "--teacher-dir", teacher_dir, "--steps", str(steps)])
                record = json.loads(out.strip().splitlines()[-1])
                peaks[variant].append(record["peak_mb"])
                built[variant].append(record["built_mb"])
    _, _, (w, h), batch = PAIRS[pair]
    print(f"\n== {pair}: crop {w}x{h}, batch {batch}, {steps} steps per process, {repeats} processes each")
    for variant, values in peaks.items():
        print(f"  {variant:8s} peak RSS {statistics.median(values):7.0f} MB "
              f"(min {min(values):.0f}, max {max(values):.0f}); "
              f"peak after building, before step 1: {statistics.median(built[variant]):7.0f} MB")
    m = {v: statistics.median(values) for v, values in peaks.items()}
    ratio = m["distill"] / (m["student"] + m["teacher"])
    net = (m["distill"] - m["idle"]) / ((m["student"] - m["idle"]) + (m["teacher"] - m["idle"]))
    print(f"  distill / (student + teacher) = {ratio:.3f} (goal <= 1.1)")
    print(f"  above the idle process: (distill - idle) / (student - idle + teacher - idle) = {net:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=[*PAIRS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--teacher-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.pair, args.child, args.teacher_dir, args.steps)
        return
    print(machine())
    for pair in PAIRS if args.pair == "all" else [args.pair]:
        bench_pair(pair, args.steps, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
