"""Loader throughput on real CamVid and its cost inside a static-graph training step.

    python benchmarks/loader_bench.py [--batches 40] [--workers 2] [--compare-paddle]

Measures (configs/camvid.yaml: 240x180 crops, batch 4, DATALOADER.NUM_WORKERS 2):
  1. loader batches/s with 0 workers (in-process) and with N workers (segdistill's BatchLoader);
     with --compare-paddle also paddle.io.DataLoader over the same dataset;
  2. ms per training step fed from the loader vs fed one in-memory batch, and their ratio (goal
     <= 1.05). The step is `segdistill_cli.models.build_deeplabv3p` when importable, otherwise a
     stand-in conv net built here.
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


def build_step(cfg, batch_size: int):
    """(exe, program, loss) for one training step on feeds image/label/mask."""
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    w, h = cfg.TRAIN_CROP_SIZE
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [-1, 3, h, w], "float32")
        label = paddle.static.data("label", [-1, 1, h, w], "int32")
        mask = paddle.static.data("mask", [-1, 1, h, w], "int32")
        try:
            from segdistill_cli.models import build_deeplabv3p
            logits = build_deeplabv3p(cfg, image, is_test=False).logits
            what = "build_deeplabv3p (camvid student)"
        except ImportError:
            x = image
            for channels, stride in ((16, 2), (32, 2), (64, 2), (64, 1)):
                x = paddle.nn.functional.relu(paddle.static.nn.batch_norm(
                    paddle.static.nn.conv2d(x, channels, 3, stride=stride, padding=1)))
            x = paddle.static.nn.conv2d(x, cfg.DATASET.NUM_CLASSES, 1)
            logits = paddle.nn.functional.interpolate(x, size=[h, w], mode="bilinear", align_corners=True)
            what = "stand-in conv net (segdistill_cli.models not importable)"
        target = paddle.minimum(label, paddle.full_like(label, cfg.DATASET.NUM_CLASSES - 1))
        pixel = paddle.nn.functional.softmax_with_cross_entropy(
            logits, paddle.cast(target, "int64"), axis=1)
        valid = paddle.cast(mask, "float32")
        loss = paddle.mean(pixel * valid) / (paddle.mean(valid) + 1e-5)
        paddle.optimizer.Momentum(0.01, 0.9).minimize(loss)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    return exe, main, loss, what


def time_steps(exe, program, loss, feeds, steps: int) -> float:
    """Median ms per step over `steps` steps (after 2 warm-up steps)."""
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        feed = next(feeds)
        exe.run(program, feed=feed, fetch_list=[loss])
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--steps", type=int, default=15)
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
    exe, program, loss, what = build_step(cfg, bs)
    print(f"training step: {what}")
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
        for _ in range(3):
            memory.append(time_steps(exe, program, loss, repeat(), args.steps))
            through.append(time_steps(exe, program, loss, stream(), args.steps))
    m, t = float(np.median(memory)), float(np.median(through))
    print(f"step on in-memory batch: {m:7.1f} ms   step through loader: {t:7.1f} ms   "
          f"ratio {t / m:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
