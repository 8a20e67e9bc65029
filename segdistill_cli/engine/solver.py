"""Optimizer and learning-rate schedule, as legacy `pdseg/solver.py` built them.

The schedule is a pure function of the global step (`legacy_lr`), wrapped in a Paddle
`LRScheduler` so the static-graph optimizer reads it: the executor copies `scheduler()` into the
program's LR variable before each run, the trainer calls `scheduler.step()` after each run, and
resume restores `scheduler.last_epoch` (= steps done) from the checkpoint.

Legacy numbers kept on purpose (so LR curves match the original runs):

* `steps_per_epoch = ceil(TRAIN_TOTAL_IMAGES / BATCH_SIZE)` although the reader drops the last
  partial batch (186 vs 185 actual steps for Cityscapes), so the LR never quite reaches 0.
* `warmup_steps = LR_WARMUP_STEPS if LR_WARMUP else -1` and `decay_steps = total - warmup_steps`:
  without warmup that is `total + 1` (18 601 for the tutorial) — the legacy off-by-one.
* warmup is linear from 0: step s < W uses `LR * (s + 1) / W`; the decay counter is held at 0
  during warmup, so afterwards the decay sees `t = s - W`.
* cosine uses fluid's `cosine_decay`: the epoch is `floor(t / steps_per_epoch)` (the LR changes
  once per epoch, not per step) over `NUM_EPOCHS - W / steps_per_epoch` epochs.
* Adam also gets the global L2 weight decay (legacy passed `regularization=` to both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from ..errors import ConfigError
from ..paddle_env import import_paddle

paddle = import_paddle()

POLICIES = ("poly", "piecewise", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    """Every number the legacy LR formulas need, computed once from the config."""

    policy: str
    base_lr: float
    steps_per_epoch: int
    num_epochs: int
    power: float = 0.9
    gamma: float = 0.1
    decay_epochs: Tuple[int, ...] = (10, 20)
    warmup_steps: int = -1  # legacy: -1 when warmup is off

    @property
    def total_steps(self) -> int:
        return self.num_epochs * self.steps_per_epoch

    @property
    def decay_steps(self) -> int:
        # Legacy: total - warmup, and warmup is -1 when off, hence total + 1 (the off-by-one).
        return self.total_steps - self.warmup_steps

    @property
    def cosine_epochs(self) -> float:
        return self.num_epochs - self.warmup_steps / self.steps_per_epoch


def lr_steps_per_epoch(train_total_images: int, batch_size: int) -> int:
    """Legacy `step_per_epoch`: ceil(TRAIN_TOTAL_IMAGES / BATCH_SIZE) (global batch)."""
    if train_total_images <= 0:
        raise ConfigError(f"DATASET.TRAIN_TOTAL_IMAGES: the train list has {train_total_images} "
                          "images; the LR schedule needs at least one")
    return math.ceil(train_total_images / batch_size)


def schedule_from_config(cfg: Any, train_total_images: int) -> LRSchedule:
    """The schedule for `cfg.SOLVER`; `train_total_images` is the real length of the train list."""
    solver = cfg.SOLVER
    policy = str(solver.LR_POLICY).lower()
    if policy not in POLICIES:
        raise ConfigError(f"SOLVER.LR_POLICY: {solver.LR_POLICY!r} is not one of "
                          + ", ".join(POLICIES))
    warmup = int(solver.LR_WARMUP_STEPS) if solver.LR_WARMUP else -1
    if solver.LR_WARMUP and warmup <= 0:
        raise ConfigError(f"SOLVER.LR_WARMUP_STEPS: {warmup} must be positive when LR_WARMUP is on")
    return LRSchedule(
        policy=policy,
        base_lr=float(solver.LR),
        steps_per_epoch=lr_steps_per_epoch(train_total_images, int(cfg.BATCH_SIZE)),
        num_epochs=int(solver.NUM_EPOCHS),
        power=float(solver.POWER),
        gamma=float(solver.GAMMA),
        decay_epochs=tuple(int(e) for e in solver.DECAY_EPOCH),
        warmup_steps=warmup,
    )


def _decayed_lr(s: LRSchedule, t: int) -> float:
    if s.policy == "poly":
        # fluid.layers.polynomial_decay(LR, decay_steps, end_learning_rate=0, power, cycle=False)
        t = min(t, s.decay_steps)
        return s.base_lr * (1.0 - t / s.decay_steps) ** s.power
    if s.policy == "piecewise":
        # fluid.layers.piecewise_decay: values[i] while t < boundaries[i], the last value after.
        boundaries = [s.steps_per_epoch * e for e in s.decay_epochs]
        index = sum(1 for b in boundaries if t >= b)
        return s.base_lr * s.gamma ** index
    # cosine: fluid.layers.cosine_decay(LR, steps_per_epoch, epochs) uses the floored epoch.
    epoch = math.floor(t / s.steps_per_epoch)
    return s.base_lr * 0.5 * (math.cos(epoch * math.pi / s.cosine_epochs) + 1.0)


def legacy_lr(s: LRSchedule, step: int) -> float:
    """The learning rate legacy used at global step `step` (0 = the first iteration)."""
    if step < s.warmup_steps:
        return s.base_lr * (step + 1) / s.warmup_steps
    return _decayed_lr(s, step - max(s.warmup_steps, 0))


class LegacyLR(paddle.optimizer.lr.LRScheduler):
    """`legacy_lr` as a Paddle scheduler. `last_epoch` counts optimizer steps, not epochs."""

    def __init__(self, schedule: LRSchedule, last_epoch: int = -1, verbose: bool = False):
        self.schedule = schedule
        super().__init__(learning_rate=schedule.base_lr, last_epoch=last_epoch, verbose=verbose)

    def get_lr(self) -> float:
        return legacy_lr(self.schedule, max(self.last_epoch, 0))


def build_lr_scheduler(cfg: Any, train_total_images: int) -> LegacyLR:
    return LegacyLR(schedule_from_config(cfg, train_total_images))


def build_optimizer(cfg: Any, train_total_images: int,
                    parameters: Optional[Sequence[Any]] = None) -> Tuple[Any, LegacyLR]:
    """(optimizer, lr_scheduler) for `cfg.SOLVER`. Call `optimizer.minimize(loss)` inside the
    training program (or wrap it with `launcher.distributed_optimizer` first).

    `sgd` = Momentum with L2Decay(WEIGHT_DECAY); `adam` = Adam(beta1=MOMENTUM, beta2=MOMENTUM2)
    with the same L2 decay. A parameter created with its own regularizer (bn() gamma/beta use
    L2Decay(0.0)) keeps it: Paddle lets the per-parameter regularizer override the optimizer's.
    `parameters=None` = every trainable parameter of the program (teacher vars merged by
    PaddleSlim are not Parameters, so they are never optimized).
    """
    scheduler = build_lr_scheduler(cfg, train_total_images)
    solver = cfg.SOLVER
    decay = paddle.regularizer.L2Decay(float(solver.WEIGHT_DECAY))
    name = str(solver.OPTIMIZER).lower()
    if name == "sgd":
        optimizer = paddle.optimizer.Momentum(
            learning_rate=scheduler, momentum=float(solver.MOMENTUM), parameters=parameters,
            weight_decay=decay)
    elif name == "adam":
        optimizer = paddle.optimizer.Adam(
            learning_rate=scheduler, beta1=float(solver.MOMENTUM), beta2=float(solver.MOMENTUM2),
            parameters=parameters, weight_decay=decay)
    else:
        raise ConfigError(f"SOLVER.OPTIMIZER: {solver.OPTIMIZER!r} is not one of 'sgd', 'adam'")
    return optimizer, scheduler
