"""Step time of distillation vs its parts, and vs a hand-written dygraph loop.

    python benchmarks/step_time.py [--pair tutorial|camvid|all] [--rounds 3] [--steps 3] [--no-dygraph]

Per pair (see _common.py), all in one process, interleaved A,B,C,D,A,B,C,D,... after 2 warm-up
steps each, one fixed random batch:
  distill  the step `segdistill train` runs (build_train_graph with the teacher merged + the
           trainer's CompiledProgram, fetching the logged loss terms)
  student  the same for the student alone (--no-teacher)
  teacher  the teacher program alone in inference mode
  dygraph  hand-written dygraph loop over the same architectures (teacher.eval(), no_grad)
Ratios (goals): distill / (student + teacher) <= 1.05; dygraph / distill >= 1.2.
"""
from __future__ import annotations

import argparse
import statistics

from _common import (PAIRS, DygraphDistillStep, fmt_ms, interleaved, machine, pair_configs,
                     teacher_inference_step, temp_dir, train_step, write_random_teacher)


def bench_pair(pair: str, rounds: int, steps: int, dygraph: bool) -> dict[str, float]:
    with temp_dir("segdistill-bench-") as tmp:
        teacher_dir = write_random_teacher(pair_configs(pair), tmp)
        configs = pair_configs(pair, str(teacher_dir))
        runners = {"distill": train_step(configs, True), "student": train_step(configs, False),
                   "teacher": teacher_inference_step(configs)}
        if dygraph:
            runners["dygraph"] = DygraphDistillStep(configs)
        samples = interleaved(runners, rounds, steps)
    _, _, (w, h), batch = PAIRS[pair]
    print(f"\n== {pair}: crop {w}x{h}, batch {batch}")
    for name, values in samples.items():
        print(f"  {name:8s} {fmt_ms(values)}")
    med = {name: statistics.median(v) for name, v in samples.items()}
    # Ratios per round (paired: the parts of one round ran back to back) give the spread.
    per_round = _per_round(samples, rounds, steps)
    overhead = [r["distill"] / (r["student"] + r["teacher"]) for r in per_round]
    print(f"  distill / (student + teacher) = {med['distill'] / (med['student'] + med['teacher']):.3f}"
          f"  (per round {', '.join(f'{x:.3f}' for x in overhead)}; goal <= 1.05)")
    result = {"overhead": med["distill"] / (med["student"] + med["teacher"])}
    if dygraph:
        speedup = [r["dygraph"] / r["distill"] for r in per_round]
        print(f"  dygraph / distill = {med['dygraph'] / med['distill']:.3f}"
              f"  (per round {', '.join(f'{x:.3f}' for x in speedup)}; goal >= 1.2)")
        result["speedup"] = med["dygraph"] / med["distill"]
    return result


def _per_round(samples: dict[str, list[float]], rounds: int, steps: int) -> list[dict[str, float]]:
    return [{name: statistics.median(v[r * steps:(r + 1) * steps]) for name, v in samples.items()}
            for r in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=[*PAIRS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--no-dygraph", action="store_true")
    args = parser.parse_args()
    print(machine())
    for pair in PAIRS if args.pair == "all" else [args.pair]:
        bench_pair(pair, args.rounds, args.steps, not args.no_dygraph)


if __name__ == "__main__":
    main()
