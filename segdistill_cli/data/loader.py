"""Batches of ready numpy arrays for `exe.run(feed=batch)`, built by worker processes.

    with BatchLoader(dataset, batch_size=8, num_workers=4, prefetch=8) as loader:
        for epoch in range(begin, end):
            for batch in loader.epoch(epoch):   # {'image': f32 [N,C,H,W], 'label'/'mask': i32 [N,1,H,W]}
                exe.run(program, feed=batch, fetch_list=[...])

Why not `paddle.io.DataLoader`: measured on CamVid (240x180 crops, batch 4, 2 workers, 2-core CPU;
benchmarks/loader_bench.py --compare-paddle) it is slower than this loader, in static mode it hands
back LoDTensors that must be converted back to numpy for `feed=`, and its per-worker seeding ties
augmentation to the worker layout. Here each sample is seeded by (seed, epoch, index) (dataset.py),
so batches are identical for any worker count.

Design: persistent workers (started once, reused by every epoch) take batch tasks from a queue and
write the finished arrays straight into one of `prefetch` shared-memory slots; only a small message
goes back through a pipe, so the training process pays one memcpy per batch instead of pickling
megabytes. The main process keeps at most `prefetch` batches in flight and yields them in order.
Workers are forked where the OS allows (as Paddle's and PyTorch's loaders do: instant start, no
`__main__`-guard requirement) and run only numpy/OpenCV/Pillow code with OpenCV single-threaded.
Shutdown is explicit (`close()` / `with`), also on GC and at exit; workers ignore Ctrl-C (the main
process handles it and stops them) and exit by themselves if the parent dies. Training drops the
last partial batch (legacy drop_last), eval keeps it.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import queue
import signal
import traceback
import weakref
from typing import Any, Dict, Iterator, Sequence

import numpy as np

from ..errors import SegDistillError

FEED_NAMES = ("image", "label", "mask", "distill_mask")
Batch = Dict[str, np.ndarray]  # typing.Dict: a runtime alias, and Python 3.8 has no dict[...]
_POLL_SECONDS = 0.5
_START_METHOD = "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def collate(samples: Sequence[Batch]) -> Batch:
    return {name: np.stack([s[name] for s in samples]) for name in FEED_NAMES}


def build_batch(dataset: Any, indices: Sequence[int], epoch: int) -> Batch:
    return collate([dataset.sample(int(i), epoch) for i in indices])


def batch_plan(dataset: Any, batch_size: int, epoch: int, drop_last: bool) -> list[np.ndarray]:
    """The epoch's batches as arrays of entry indices."""
    order = dataset.epoch_indices(epoch)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


def default_prefetch(buf_size: int, num_workers: int) -> int:
    """Batches in flight: DATALOADER.BUF_SIZE bounds it, but legacy's 256 batches of 769x769 crops
    would be ~14 GB, so keep two per worker (enough to hide decode jitter) unless BUF_SIZE is smaller."""
    return max(1, min(int(buf_size), 2 * max(1, num_workers)))


# ---- shared-memory slots --------------------------------------------------------------------------


def _slot_bytes(dataset: Any, batch_size: int) -> int:
    shapes = getattr(dataset, "sample_shapes", lambda: None)()
    if not shapes:
        return 0
    return sum(batch_size * int(np.prod(shape)) * np.dtype(dtype).itemsize
               for shape, dtype in shapes.values())


def _write_slot(slot: Any, batch: Batch) -> dict | None:
    """Copy the batch into the slot; returns its layout, or None if it does not fit."""
    if slot is None or sum(a.nbytes for a in batch.values()) > len(slot):
        return None
    layout, offset = {}, 0
    for name, array in batch.items():
        view = np.frombuffer(slot, dtype=array.dtype, count=array.size, offset=offset)
        view[:] = array.ravel()
        layout[name] = (array.shape, array.dtype.str, offset)
        offset += array.nbytes
    return layout


def _read_slot(slot: Any, layout: dict) -> Batch:
    """A private copy of the batch (the slot is reused for a later batch)."""
    return {name: np.frombuffer(slot, dtype=dtype, count=int(np.prod(shape)), offset=offset)
            .reshape(shape).copy()
            for name, (shape, dtype, offset) in layout.items()}


# ---- worker side ---------------------------------------------------------------------------------


def _worker_main(dataset: Any, tasks: Any, results: Any, slots: list, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the workers; avoid oversubscribing the cores
    while True:
        try:
            task = tasks.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != parent_pid:  # parent gone (even SIGKILL): do not linger
                return
            continue
        if task is None:
            return
        generation, number, epoch, indices, slot_id = task
        try:
            batch = build_batch(dataset, indices, epoch)
            layout = _write_slot(slots[slot_id] if slots else None, batch)
            results.put((generation, number, ("slot", layout) if layout else ("inline", batch), None))
        except SegDistillError as exc:
            results.put((generation, number, None, str(exc)))
        except Exception:  # noqa: BLE001 - report any worker failure to the parent, with traceback
            results.put((generation, number, None, traceback.format_exc()))


def _shutdown(processes: list, tasks: Any, results: Any) -> None:
    for _ in processes:
        try:
            tasks.put_nowait(None)
        except Exception:  # noqa: BLE001 - the queue may already be gone at interpreter exit
            break
    for proc in processes:
        proc.join(timeout=2)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=2)
    for q in (tasks, results):
        q.cancel_join_thread()  # never block exit on undelivered buffers
        q.close()


# ---- main side -----------------------------------------------------------------------------------


class BatchLoader:
    """Ordered, prefetched batches of `dataset` (a SegDataset, or anything with `sample(index,
    epoch)` and `epoch_indices(epoch)`). num_workers=0 builds batches in the calling process.
    drop_last defaults to True for a train dataset, False otherwise."""

    def __init__(self, dataset: Any, batch_size: int, num_workers: int = 0, prefetch: int | None = None,
                 drop_last: bool | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.num_workers = max(0, int(num_workers))
        self.prefetch = max(1, prefetch or 2 * max(1, self.num_workers))
        self.drop_last = (getattr(dataset, "mode", "train") == "train") if drop_last is None else drop_last
        self._processes: list = []
        self._slots: list = []
        self._generation = 0
        self._in_flight = 0
        self._finalizer = None
        self._tasks = self._results = None

    # -- lifecycle --
    def _start(self) -> None:
        if self._processes:
            return
        ctx = mp.get_context(_START_METHOD)
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        size = _slot_bytes(self.dataset, self.batch_size)
        self._slots = [ctx.RawArray("B", size) for _ in range(self.prefetch)] if size else []
        for _ in range(self.num_workers):
            proc = ctx.Process(target=_worker_main, daemon=True,
                               args=(self.dataset, self._tasks, self._results, self._slots, os.getpid()))
            proc.start()
            self._processes.append(proc)
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._tasks, self._results)
        atexit.register(self._finalizer)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()
            atexit.unregister(self._finalizer)
            self._finalizer = None
        self._processes, self._slots, self._in_flight = [], [], 0

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- iteration --
    def num_batches(self, epoch: int = 0) -> int:
        return len(batch_plan(self.dataset, self.batch_size, epoch, self.drop_last))

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches in order, from batch number `start` on (a mid-epoch resume skips
        the batches already trained on without loading them)."""
        plan = batch_plan(self.dataset, self.batch_size, epoch, self.drop_last)[start:]
        if self.num_workers == 0:
            for indices in plan:
                yield build_batch(self.dataset, indices, epoch)
            return
        self._start()
        self._drain()  # a previous epoch left early: its tasks must not write into reused slots
        self._generation += 1
        generation, ready, submitted = self._generation, {}, 0
        for number in range(len(plan)):
            while submitted < len(plan) and submitted < number + self.prefetch:
                slot_id = submitted % self.prefetch
                self._tasks.put((generation, submitted, epoch, plan[submitted], slot_id))
                self._in_flight += 1
                submitted += 1
            while number not in ready:
                got_gen, got_no, payload, error = self._receive()
                if error is not None:
                    raise SegDistillError(f"data loading failed: {error.strip()}")
                ready[got_no] = payload
            kind, data = ready.pop(number)
            yield _read_slot(self._slots[number % self.prefetch], data) if kind == "slot" else data

    def _drain(self) -> None:
        while self._in_flight:
            self._receive()

    def _receive(self) -> tuple:
        while True:
            try:
                message = self._results.get(timeout=_POLL_SECONDS)
                self._in_flight -= 1
                return message
            except queue.Empty:
                dead = [p for p in self._processes if not p.is_alive()]
                if dead:
                    codes = ", ".join(str(p.exitcode) for p in dead)
                    self.close()
                    raise SegDistillError(f"a data loader worker died (exit code {codes})") from None


def batches(dataset: Any, batch_size: int, epoch: int = 0, num_workers: int = 0,
            prefetch: int | None = None, drop_last: bool | None = None) -> Iterator[Batch]:
    """One epoch of batches; the workers live as long as the iteration (use BatchLoader to keep
    them across epochs)."""
    with BatchLoader(dataset, batch_size, num_workers, prefetch, drop_last) as loader:
        yield from loader.epoch(epoch)


def loader_from_config(cfg: Any, dataset: Any, batch_size: int,
                       num_workers: int | None = None) -> BatchLoader:
    """A BatchLoader of `batch_size` samples (training: a trainer's share of the global batch,
    launcher.per_rank_batch) with DATALOADER.NUM_WORKERS workers (or `num_workers`) and
    BUF_SIZE-bounded prefetch. Train datasets drop the last partial batch, eval datasets keep it."""
    workers = int(cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers)
    return BatchLoader(dataset, batch_size, workers,
                       default_prefetch(int(cfg.DATALOADER.BUF_SIZE), workers))
