"""Step time and peak memory of the same steps on two Paddle stacks, side by side.

    python benchmarks/stack_speed.py --legacy-python PY26 --pir-python PY33
        [--pair tutorial|camvid|all] [--variants distill,teacher] [--rounds 8] [--steps 3]
        [--warmup 2] [--threads 1] [--pir-plain] [--out results/stack_speed]

PY26 / PY33: interpreters with Paddle 2.6.2 (legacy IR, PaddleSlim's merge) and Paddle 3.3.1
(PIR, the one-program graph); both import this checkout (PYTHONPATH is set to it). Per pair
(_common.py) and variant, one long-lived worker process per stack builds the step exactly as
step_time.py does (`distill`: the step `segdistill train` runs; `student`: --no-teacher;
`teacher`: the teacher alone in inference mode), runs `--warmup` steps, then waits. The driver
interleaves rounds across the stacks (legacy, PIR in even rounds, PIR, legacy in odd ones), each
worker running `--steps` steps on one fixed random batch while the others sleep on a pipe, so load
changes on a shared machine hit both stacks alike. Every worker runs with `--threads` threads
(OMP_NUM_THREADS, MKL_NUM_THREADS, FLAGS_paddle_num_threads). Reported per variant and stack:
median ms/step (IQR), CPU seconds per wall second of the timed steps (> 1: more than one
core in use), the PIR / legacy ratio of the medians (goal <= 1.05 for distill) and of
each round's medians (the spread), the teacher ops on oneDNN kernels, and the worker's peak RSS
(VmHWM: build + warm-up + all steps of that one variant; the random teacher checkpoint both
stacks load is written once beforehand, by a process of its own). `--pir-plain` adds a third
stack, PIR with SEGDISTILL_ONEDNN=0 (the teacher on Paddle's plain kernels). Writes <out>.json
and <out>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PAIRS, ROOT, cpu_model, median_spread  # noqa: E402

VARIANTS = ("distill", "student", "teacher")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FLAGS_paddle_num_threads")


# ---- worker: runs inside one stack's interpreter ------------------------------------------------

def write_teacher(pair: str, folder: str) -> None:
    """Write the pair's random teacher checkpoint (its own process: building the teacher's
    training graph to save it must not count in a worker's peak memory); print its path."""
    import _common as C

    _answer({"teacher_dir": str(C.write_random_teacher(C.pair_configs(pair), Path(folder)))})


def worker(pair: str, variant: str, teacher_dir: str, warmup: int) -> None:
    """Build one step, warm it up, then answer `run K` (K step times) and `quit` (peak RSS) on
    stdin/stdout, one JSON line per answer."""
    import _common as C

    configs = C.pair_configs(pair, teacher_dir)
    step = C.teacher_inference_step(configs) if variant == "teacher" else \
        C.train_step(configs, variant == "distill")
    built_mb = _peak_mb()
    C.time_once(step, warmup)
    paddle = C.import_paddle()
    _answer({"ready": True, "machine": C.machine(), "paddle": paddle.__version__,
             "onednn_ops": onednn_ops(step.program), "built_mb": built_mb})
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["run"]:
            _answer(_timed(step, int(command[1])))
        elif command[:1] == ["quit"]:
            break
    _answer({"peak_mb": _peak_mb()})


def _timed(step: Any, steps: int) -> dict[str, list[float]]:
    """Wall seconds per step, and CPU seconds of this process per step (all its threads: more
    than the wall time means the step used more than one core)."""
    wall, cpu = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"times": wall, "cpu": cpu}


def onednn_ops(program: Any) -> int:
    """How many ops of the step's program run on oneDNN: marked `use_mkldnn` (legacy IR) or in
    the `onednn_op` dialect (PIR)."""
    from segdistill_cli.program_vars import is_pir_program

    if is_pir_program(program):
        return sum(op.name().startswith("onednn_op.") for op in program.global_block().ops)
    program = getattr(program, "_program", program)  # a CompiledProgram's Program
    return sum(1 for op in program.global_block().ops
               if op.has_attr("use_mkldnn") and op.attr("use_mkldnn"))


def _peak_mb() -> float:
    for line in open("/proc/self/status", encoding="ascii"):  # VmHWM: see memory.py
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _answer(record: dict) -> None:
    print(json.dumps(record), flush=True)


# ---- driver ------------------------------------------------------------------------------------

class Worker:
    """One stack's worker process for one pair and variant."""

    def __init__(self, stack: str, python: str, env: dict[str, str], pair: str, variant: str,
                 teacher_dir: str, warmup: int) -> None:
        self.stack, self.variant = stack, variant
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", variant, "--pair", pair, "--teacher-dir", teacher_dir,
             "--warmup", str(warmup)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.info: dict[str, Any] = {}
        self.times: list[float] = []
        self.cpu: list[float] = []  # CPU seconds per step
        self.rounds: list[float] = []  # each round's median

    def read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.stack} {self.variant} worker exited "
                                   f"(code {self.proc.wait()}); its stderr is above")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, steps: int) -> None:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        answer = self.read()
        self.times += answer["times"]
        self.cpu += answer["cpu"]
        self.rounds.append(statistics.median(answer["times"]))

    def finish(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.info.update(self.read())
        self.proc.wait()


def stack_env(threads: int, onednn: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update({key: str(threads) for key in THREAD_ENV})
    env["SEGDISTILL_ONEDNN"] = "1" if onednn else "0"
    return env


def bench_pair(pair: str, stacks: dict[str, tuple[str, dict]], variants: list[str],
               rounds: int, steps: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="segdistill-stack-") as tmp:
        python, env = stacks["legacy"]  # one teacher for all: the weight format is the same
        out = subprocess.run([python, __file__, "--write-teacher", tmp, "--pair", pair], env=env,
                             cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
        teacher_dir = json.loads(out.strip().splitlines()[-1])["teacher_dir"]
        return _interleaved(pair, stacks, variants, rounds, steps, warmup, teacher_dir)


def _interleaved(pair: str, stacks: dict[str, tuple[str, dict]], variants: list[str],
                 rounds: int, steps: int, warmup: int, teacher_dir: str) -> dict[str, Any]:
    workers = {(stack, v): Worker(stack, python, env, pair, v, teacher_dir, warmup)
               for v in variants for stack, (python, env) in stacks.items()}
    try:
        for w in workers.values():  # built in parallel; building is not timed
            w.info.update(w.read())
        load_before, start = os.getloadavg(), time.time()
        names = list(stacks)
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for v in variants:
                for stack in order:
                    workers[(stack, v)].run(steps)
        load_after, seconds = os.getloadavg(), time.time() - start
        for w in workers.values():
            w.finish()
    finally:
        for w in workers.values():
            if w.proc.poll() is None:
                w.proc.kill()
    return {"pair": pair, "load_before": load_before, "load_after": load_after,
            "timed_seconds": seconds,
            "variants": {v: {stack: _summary(workers[(stack, v)]) for stack in stacks}
                         for v in variants}}


def _summary(w: Worker) -> dict[str, Any]:
    median, q1, q3 = median_spread(w.times)
    return {"median_ms": 1000 * median, "iqr_ms": [1000 * q1, 1000 * q3], "n": len(w.times),
            "cpu_per_wall": sum(w.cpu) / sum(w.times),
            "round_medians_ms": [1000 * t for t in w.rounds], "peak_mb": w.info.get("peak_mb"),
            "built_mb": w.info.get("built_mb"), "onednn_ops": w.info.get("onednn_ops"),
            "paddle": w.info.get("paddle"), "machine": w.info.get("machine")}


def ratios(result: dict, variant: str, stack: str, base: str = "legacy") -> dict[str, Any]:
    a, b = result["variants"][variant][stack], result["variants"][variant][base]
    per_round = [x / y for x, y in zip(a["round_medians_ms"], b["round_medians_ms"])]
    return {"ratio": a["median_ms"] / b["median_ms"], "per_round": per_round,
            "memory_ratio": a["peak_mb"] / b["peak_mb"]}


def markdown(results: list[dict], stacks: list[str], args: argparse.Namespace) -> str:
    others = [s for s in stacks if s != "legacy"]
    head = ["pair", "step"] + [f"{s} ms/step" for s in stacks] + \
        [f"{s} / legacy (rounds min–max)" for s in others] + \
        [f"peak RSS {s}" for s in stacks] + [f"CPU/wall {s}" for s in stacks] + \
        [f"oneDNN ops {s}" for s in stacks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        _, _, (w, h), batch = PAIRS[result["pair"]]
        for variant, per_stack in result["variants"].items():
            cells = [f"{result['pair']} ({w}×{h}, batch {batch})", variant]
            for s in stacks:
                m = per_stack[s]
                cells.append(f"{m['median_ms']:.0f} ({m['iqr_ms'][0]:.0f}–{m['iqr_ms'][1]:.0f})")
            for s in others:
                r = ratios(result, variant, s)
                cells.append(f"**{r['ratio']:.3f}** ({min(r['per_round']):.3f}–"
                             f"{max(r['per_round']):.3f})")
            cells += [f"{per_stack[s]['peak_mb']:.0f} MB" for s in stacks]
            cells += [f"{per_stack[s]['cpu_per_wall']:.2f}" for s in stacks]
            cells += [str(per_stack[s]["onednn_ops"]) for s in stacks]
            lines.append("| " + " | ".join(cells) + " |")
    loads = ", ".join(f"{r['pair']}: {r['load_before'][0]:.2f} → {r['load_after'][0]:.2f}"
                      for r in results)
    lines += ["", f"{args.rounds} rounds × {args.steps} steps per variant and stack after "
              f"{args.warmup} warm-up steps, {args.threads} thread(s) per process; "
              f"1-minute load average before → after: {loads}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--legacy-python")
    parser.add_argument("--pir-python")
    parser.add_argument("--pair", choices=[*PAIRS, "all"], default="all")
    parser.add_argument("--variants", default="distill,teacher",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="steps per worker per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pir-plain", action="store_true",
                        help="also PIR with SEGDISTILL_ONEDNN=0 (the teacher on plain kernels)")
    parser.add_argument("--out", default="", help="write <out>.json and <out>.md")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--teacher-dir", help=argparse.SUPPRESS)
    parser.add_argument("--write-teacher", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_teacher:
        write_teacher(args.pair, args.write_teacher)
        return 0
    if args.worker:
        worker(args.pair, args.worker, args.teacher_dir, args.warmup)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    if not (args.legacy_python and args.pir_python) or not set(variants) <= set(VARIANTS):
        print("error: --legacy-python and --pir-python are required; --variants from "
              f"{', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    stacks = {"legacy": (args.legacy_python, stack_env(args.threads, True)),
              "pir": (args.pir_python, stack_env(args.threads, True))}
    if args.pir_plain:
        stacks["pir-plain"] = (args.pir_python, stack_env(args.threads, False))
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"{cpu_model()}, {os.cpu_count()} cores; started {started}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    for pair in PAIRS if args.pair == "all" else [args.pair]:
        results.append(bench_pair(pair, stacks, variants, args.rounds, args.steps, args.warmup))
        print(markdown(results[-1:], list(stacks), args), flush=True)
    table = markdown(results, list(stacks), args)
    record = {"started": started, "cpu": cpu_model(), "cores": os.cpu_count(),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              # (not the interpreters' paths: the workers report their Paddle versions)
              "args": {k: v for k, v in vars(args).items()
                       if k not in ("worker", "teacher_dir", "write_teacher", "out",
                                    "legacy_python", "pir_python")},
              "results": results,
              "ratios": {r["pair"]: {v: {s: ratios(r, v, s) for s in stacks if s != "legacy"}
                                     for v in r["variants"]} for r in results}}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
