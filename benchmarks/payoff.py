"""Why anyone distils: size, compute and CPU latency of the teacher vs the student, beside val mIoU.

    python benchmarks/payoff.py --model teacher=configs/camvid_teacher.yaml:../shared/models/camvid-teacher \
        --model baseline=configs/camvid.yaml:/tmp/camvid_gain_v2/full/runs/baseline_s0/final \
        --model distilled=configs/camvid.yaml:/tmp/camvid_gain_v2/full/runs/kl_T2_w1_s0/final \
        [--size 480,360] [--runs 100] [--threads 1] [--json out.json]

For each NAME=CONFIG:WEIGHTS:
  parameters  the eval program's trainable parameters (BN moving statistics are not parameters)
  GMACs       multiply-adds of the conv layers at --size, batch 1 (counted as PaddleSlim's
              `analysis.flops` counts them, on either IR; resize, BN and activations are left out)
  latency     `segdistill export` at --size (the exported inference model, verified by export
              itself), then Paddle Inference on the CPU: batch 1, --threads math threads, plain
              kernels or --onednn, --warmup runs dropped, then the
              median and the 10th/90th percentiles of --runs timed runs on one fixed input.
  CPU time    the same runs' process CPU time (time.process_time: every thread of the process,
              but not the time spent waiting for a core), median. On a loaded machine wall time
              grows with the queue for the cores; CPU time grows much less (shared caches), so
              it is the column to compare across runs of this script.
--op-profile N: where the time goes, per op type (Paddle's profiler over N runs of each exported
program in the static executor, which skips Paddle Inference's fusions: shares, not latencies).
Models are timed interleaved (A, B, C, A, B, C, ...) so a load change on the machine hits all of
them alike; the load average before and after is printed and recorded. Run it on a quiet machine.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from _common import ROOT, machine  # noqa: E402  (puts the project on sys.path)

from segdistill_cli.config import load_config  # noqa: E402
from segdistill_cli.paddle_env import import_paddle  # noqa: E402


@dataclass
class ModelSpec:
    name: str
    config: Path
    weights: Path


@dataclass
class Payoff:
    name: str
    config: str
    weights: str
    parameters: int
    gmacs: float
    latency_ms_median: float
    latency_ms_p10: float
    latency_ms_p90: float
    cpu_ms_median: float


def parse_model(text: str) -> ModelSpec:
    name, _, rest = text.partition("=")
    config, _, weights = rest.partition(":")
    if not (name and config and weights):
        raise SystemExit(f"--model {text!r}: expected NAME=CONFIG:WEIGHTS")
    return ModelSpec(name, Path(config).resolve(), Path(weights).resolve())


def size_overrides(size: tuple[int, int]) -> list[str]:
    wh = f"({size[0]},{size[1]})"
    return [f"EVAL_CROP_SIZE={wh}", f"AUG.FIX_RESIZE_SIZE={wh}", f"TRAIN_CROP_SIZE={wh}"]


def count_model(spec: ModelSpec, size: tuple[int, int]) -> tuple[int, float]:
    """(trainable parameters, conv GMACs at `size`) of the eval program."""
    import numpy as np

    from segdistill_cli.program_vars import parameters
    from segdistill_cli.programs import build_eval

    import_paddle()
    built = build_eval(load_config(spec.config, size_overrides(size)))
    params = sum(int(np.prod(p.shape)) for p in parameters(built.main) if p.trainable)
    return params, conv_macs(built.main) / 1e9


CONV_OPS = ("conv2d", "depthwise_conv2d")


def _convs(program: Any) -> list[tuple[list[int], list[int]]]:
    """(filter shape, output shape) of every conv op of `program`, on either IR."""
    from segdistill_cli.program_vars import is_pir_program

    block = program.global_block()
    if is_pir_program(program):  # pd_op.conv2d(input, filter) -> output
        return [(list(op.operand_source(1).shape), list(op.result(0).shape))
                for op in block.ops if op.name() in {f"pd_op.{t}" for t in CONV_OPS}]
    return [(list(block.var(op.input("Filter")[0]).shape),
             list(block.var(op.output("Output")[0]).shape))
            for op in block.ops if op.type in CONV_OPS]


def conv_macs(program: Any) -> float:
    """Multiply-adds of the conv layers, batch 1: out H x W x C_out x (k_h x k_w x C_in/groups)
    per conv (the filter's C_in is already per group), as PaddleSlim's `analysis.flops` counts
    them on the legacy IR (the bias is a separate add op here, so no +1); PaddleSlim does not
    read PIR programs."""
    total = 0.0
    for (c_out, c_in, k_h, k_w), (_, _, h_out, w_out) in _convs(program):
        total += h_out * w_out * c_out * k_h * k_w * float(c_in)
    return total


def export(spec: ModelSpec, size: tuple[int, int], out: Path, labels_only: bool = False) -> Path:
    """The model as `segdistill export` writes it (the command verifies the export itself)."""
    cmd = [sys.executable, "-m", "segdistill_cli", "export", "--cfg", str(spec.config),
           "--model-dir", str(spec.weights), "--out", str(out),
           *(["--labels-only"] if labels_only else [])]
    for o in size_overrides(size):
        cmd += ["--set", o]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out


def model_files(folder: Path) -> tuple[Path, Path]:
    """(program file, parameters file) of an exported model: as its deploy.yaml names them, or
    else the format the installed Paddle writes (2.6: model.pdmodel; 3.x with PIR: model.json)."""
    deploy = folder / "deploy.yaml"
    if deploy.is_file():
        import yaml

        model = yaml.safe_load(deploy.read_text(encoding="utf-8"))["model"]
        return folder / model["file"], folder / model["params"]
    from segdistill_cli.stack import PIR, ir_in_use

    name = "model.json" if ir_in_use(import_paddle()) == PIR else "model.pdmodel"
    return folder / name, folder / "model.pdiparams"


def predictor(folder: Path, threads: int, onednn: bool) -> Any:
    paddle = import_paddle()
    config = paddle.inference.Config(*(str(f) for f in model_files(folder)))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads)
    # Say which kernels, both ways: Paddle Inference 2.6's CPU Config has oneDNN ON by default
    # (`mkldnn_enabled()` is True on a fresh Config), so leaving it alone is not "plain kernels".
    # One measurement at 480x360, 1 thread, under load: oneDNN made the student ~3x slower and the
    # teacher no faster.
    if onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    if config.mkldnn_enabled() != onednn:
        raise SystemExit(f"Paddle Inference did not take onednn={onednn} for {folder}")
    return paddle.inference.create_predictor(config)


def timed_run(pred: Any, image: Any) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one inference, outputs copied out."""
    handle = pred.get_input_handle(pred.get_input_names()[0])
    handle.copy_from_cpu(image)
    start, cpu_start = time.perf_counter(), time.process_time()
    pred.run()
    for name in pred.get_output_names():
        pred.get_output_handle(name).copy_to_cpu()
    return (time.perf_counter() - start) * 1000.0, (time.process_time() - cpu_start) * 1000.0


def time_interleaved(predictors: dict[str, Any], size: tuple[int, int], runs: int,
                     warmup: int) -> dict[str, list[tuple[float, float]]]:
    import numpy as np

    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, size[1], size[0])).astype(np.float32)
    for pred in predictors.values():
        for _ in range(warmup):
            timed_run(pred, image)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in predictors}
    for _ in range(runs):
        for name, pred in predictors.items():
            samples[name].append(timed_run(pred, image))
    return samples


def op_type(name: str) -> str:
    """An op's type as Paddle 2.6 names it: PIR's "pd_op.softmax_" (in-place) is "softmax"."""
    return name.removeprefix("pd_op.").rstrip("_") if name.startswith("pd_op.") else name


def op_profile(folder: Path, size: tuple[int, int], runs: int) -> dict[str, float]:
    """Share of operator time per op type (sums to 1) over `runs` runs of an exported model."""
    import collections

    import numpy as np
    import paddle.profiler as profiler

    paddle = import_paddle()
    exe = paddle.static.Executor(paddle.CPUPlace())
    program, feeds, fetches = paddle.static.load_inference_model(str(folder / "model"), exe)
    feed = {feeds[0]: np.zeros((1, 3, size[1], size[0]), np.float32)}
    exe.run(program, feed=feed, fetch_list=fetches)  # warm-up, not profiled
    # on_trace_ready: by default the profiler writes ./profiler_log/ into the caller's folder.
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda _: None)
    prof.start()
    for _ in range(runs):
        exe.run(program, feed=feed, fetch_list=fetches)
        prof.step()
    prof.stop()
    trace = folder / "op_trace.json"
    prof.export(str(trace), format="json")
    events = json.loads(trace.read_text(encoding="utf-8"))["traceEvents"]
    per_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Operator":  # names read "conv2d[12.6 ms]"
            per_op[op_type(event["name"].split("[", 1)[0])] += float(event["dur"])
    total = sum(per_op.values())
    return {op: dur / total for op, dur in per_op.most_common()}


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=10)[int(q * 10) - 1]


def markdown(rows: list[Payoff], size: tuple[int, int], threads: int,
             kernels: str = "plain") -> str:
    lines = [f"| model | parameters | GMACs at {size[0]}×{size[1]} | CPU latency, batch 1, "
             f"{threads} thread(s), {kernels} kernels: median (p10–p90) | CPU time (median) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.parameters / 1e6:.2f} M | {r.gmacs:.2f} | "
                     f"{r.latency_ms_median:.1f} ms ({r.latency_ms_p10:.1f}–{r.latency_ms_p90:.1f}) "
                     f"| {r.cpu_ms_median:.1f} ms |")
    return "\n".join(lines)


def payoff_row(spec: ModelSpec, counts: tuple[int, float],
               samples: list[tuple[float, float]]) -> Payoff:
    wall = [w for w, _ in samples]
    config = str(spec.config.relative_to(ROOT)) if spec.config.is_relative_to(ROOT) else str(spec.config)
    return Payoff(spec.name, config, str(spec.weights), *counts, statistics.median(wall),
                  _percentile(wall, 0.1), _percentile(wall, 0.9),
                  statistics.median(c for _, c in samples))


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="NAME=CONFIG:WEIGHTS (repeat)")
    p.add_argument("--size", default="480,360", help="W,H of the exported input")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="Paddle Inference CPU math threads")
    p.add_argument("--onednn", action="store_true", help="Paddle Inference with oneDNN kernels")
    p.add_argument("--labels-only", action="store_true",
                   help="export with `--labels-only` (label map only, no softmax probabilities)")
    p.add_argument("--json", type=Path, help="write the rows and the machine/load here")
    p.add_argument("--op-profile", type=int, default=0, metavar="N",
                   help="also print each model's share of time per op type over N profiled runs")
    args = p.parse_args(argv)
    args.models = [parse_model(m) for m in args.model]
    w, h = (int(v) for v in args.size.split(","))
    args.size = (w, h)
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    counts = {m.name: count_model(m, args.size) for m in args.models}
    with tempfile.TemporaryDirectory(prefix="segdistill-payoff-") as tmp:
        folders = {m.name: export(m, args.size, Path(tmp) / m.name, args.labels_only)
                   for m in args.models}
        load_before = os.getloadavg()
        predictors = {name: predictor(folder, args.threads, args.onednn)
                      for name, folder in folders.items()}
        samples = time_interleaved(predictors, args.size, args.runs, args.warmup)
        load_after = os.getloadavg()
        shares = {name: op_profile(folder, args.size, args.op_profile)
                  for name, folder in folders.items()} if args.op_profile else {}
    rows = [payoff_row(m, counts[m.name], samples[m.name]) for m in args.models]
    print(markdown(rows, args.size, args.threads, "oneDNN" if args.onednn else "plain"))
    print("exported outputs: " + ("label map only (--labels-only)" if args.labels_only
                                  else "label map and probabilities"))
    print(f"load average before timing {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{args.runs} runs per model after {args.warmup} warm-up runs")
    for name, share in shares.items():
        print(f"{name}: " + ", ".join(f"{op} {100 * v:.1f} %" for op, v in share.items() if v >= 0.005))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "size": list(args.size), "threads": args.threads,
            "onednn": args.onednn, "labels_only": args.labels_only,
            "runs": args.runs, "warmup": args.warmup, "load_before": load_before,
            "load_after": load_after, "rows": [asdict(r) for r in rows],
            "samples_wall_cpu_ms": samples, "op_time_shares": shares}, indent=1),
            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
