"""Loader throughput on real CamVid and its cost inside a static-graph training step.

    python benchmarks/loader_bench.py [--batches 40] [--workers 2] [--compare-paddle]

Measures (configs/camvid.yaml: 240x180 crops, batch 4, DATALOADER.NUM_WORKERS 2):
  1. loader batches/s with 0 workers (in-process) and with N workers (segdistill's BatchLoader);
     with --compare-paddle also paddle.io.DataLoader over the same dataset;
  2. ms per training step fed from the loader vs fed one in-memory batch, and their ratio (goal
     <= 1.05). The step is the real trainer step of the camvid student (see _common.train_step).
Run from the project root (the config's paths are relative to it) or pass --data-dir.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segdistill_cli.config import load_config  # noqa: E402
from segdistill_cli.data import BatchLoader, SegDataset  # noqa: E402


def camvid_config(data_dir: Path):
    return load_config(ROOT / "configs" / "camvid.yaml",
                       [f"DATASET.DATA_DIR={data_dir}", f"DATASET.TRAIN_FILE_LIST={data_dir / 'train.txt'}",
                        f"DATASET.VAL_FILE_LIST={data_dir / 'val.txt'}"])


def time_loader(loader, batches: int) -> float:
    """Batches per second over `batches` batches (epochs chained), after one warm-up batch."""
    def stream():
        epoch = 0
        while True:
            yield from loader.epoch(epoch)
            epoch += 1
    it = stream()
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - start)


def time_paddle_loader(ds, batch_size: int, workers: int, batches: int) -> float:
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()

    class Wrapped(paddle.io.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            s = ds.sample(int(i), 0)
            return s["image"], s["label"], s["mask"]

    loader = paddle.io.DataLoader(Wrapped(), batch_size=batch_size, shuffle=True, drop_last=True,
                                  num_workers=workers, return_list=True, places=paddle.CPUPlace())
    seen, start = 0, None
    while seen < batches + 1:
        for batch in loader:
            arrays = [np.array(t) for t in batch]  # what feed= needs
            assert arrays[0].shape[0] == batch_size
            seen += 1
            if seen == 1:
                start = time.perf_counter()
            if seen == batches + 1:
                break
    return batches / (time.perf_counter() - start)


def build_step(cfg):
    """The student's training step exactly as `segdistill train --no-teacher` runs it
    (engine.graph.build_train_graph + the trainer's CompiledProgram, fetching the logged terms)."""
    from _common import train_step
    from segdistill_cli.config import Configs

    return train_step(Configs(cfg, None), use_teacher=False)


def time_steps(step, feeds, steps: int) -> float:
    """Median ms per step (waiting for the batch included) over `steps` steps, after 2 warm-ups."""
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        step.feed = next(feeds)
        step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3, help="alternations in-memory/loader")
    parser.add_argument("--workers", type=int, default=None, help="default: DATALOADER.NUM_WORKERS")
    parser.add_argument("--compare-paddle", action="store_true")
    parser.add_argument("--no-step", action="store_true", help="loader throughput only")
    args = parser.parse_args()
    cfg = camvid_config(args.data_dir)
    workers = cfg.DATALOADER.NUM_WORKERS if args.workers is None else args.workers
    ds = SegDataset(cfg, "train", seed=0)
    bs = cfg.BATCH_SIZE
    print(f"CamVid train: {len(ds)} samples, crop {cfg.TRAIN_CROP_SIZE}, batch {bs}")
    with BatchLoader(ds, bs, 0) as loader:
        print(f"loader, in-process:   {time_loader(loader, args.batches):6.1f} batches/s")
    with BatchLoader(ds, bs, workers) as loader:
        print(f"loader, {workers} workers:    {time_loader(loader, args.batches):6.1f} batches/s")
    if args.compare_paddle:
        rate = time_paddle_loader(ds, bs, workers, args.batches)
        print(f"paddle.io.DataLoader, {workers} workers: {rate:6.1f} batches/s")
    if args.no_step:
        return
    step = build_step(cfg)
    print("training step: the camvid student's real trainer step (build_train_graph + CompiledProgram)")
    with BatchLoader(ds, bs, workers) as loader:
        fixed = next(iter(loader.epoch(0)))

        def repeat():
            while True:
                yield fixed

        def stream():
            epoch = 0
            while True:
                yield from loader.epoch(epoch)
                epoch += 1
        # Alternate the two measurements so that machine load affects both alike.
        memory, through = [], []
        for _ in range(args.rounds):
            memory.append(time_steps(step, repeat(), args.steps))
            through.append(time_steps(step, stream(), args.steps))
    m, t = float(np.median(memory)), float(np.median(through))
    print(f"step on in-memory batch: {m:7.1f} ms   step through loader: {t:7.1f} ms   "
          f"ratio {t / m:.3f} (goal <= 1.05)")
    print("  per round (in-memory / loader ms): "
          + ", ".join(f"{a:.0f}/{b:.0f}={b / a:.3f}" for a, b in zip(memory, through)))


if __name__ == "__main__":
    main()
