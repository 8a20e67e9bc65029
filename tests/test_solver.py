"""LR schedules against the legacy formulas, and the optimizer's weight-decay rule on a real program."""
from __future__ import annotations

import math

import numpy as np
import pytest

from segdistill_cli.config import load_config
from segdistill_cli.engine.solver import (LRSchedule, build_lr_scheduler, build_optimizer,
                                          legacy_lr, schedule_from_config)
from segdistill_cli.errors import ConfigError
from segdistill_cli.paddle_env import import_paddle

paddle = import_paddle()


def _cfg(*sets):
    return load_config(None, list(sets))


def test_tutorial_poly_numbers_keep_the_legacy_off_by_one():
    # cityscape.yaml: 2975 train images, BATCH_SIZE 16, 100 epochs, LR 0.001, poly 0.9, no warmup.
    cfg = _cfg("BATCH_SIZE=16", "SOLVER.NUM_EPOCHS=100", "SOLVER.LR=0.001")
    s = schedule_from_config(cfg, train_total_images=2975)
    assert s.steps_per_epoch == 186 and s.total_steps == 18600 and s.decay_steps == 18601
    for t in (0, 1, 185, 9300, 18499, 18600, 18601, 20000):
        expected = 0.001 * (1 - min(t, 18601) / 18601) ** 0.9
        assert legacy_lr(s, t) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert legacy_lr(s, 18499) > 0  # 185 real steps/epoch: legacy never reaches 0
    assert legacy_lr(s, 18601) == 0


def test_piecewise_boundaries_are_epochs_times_steps():
    cfg = _cfg("BATCH_SIZE=4", "SOLVER.LR_POLICY=piecewise", "SOLVER.LR=0.1",
               "SOLVER.DECAY_EPOCH=[2, 5]", "SOLVER.GAMMA=0.5", "SOLVER.NUM_EPOCHS=8")
    s = schedule_from_config(cfg, train_total_images=10)  # ceil(10/4) = 3 steps/epoch
    assert s.steps_per_epoch == 3
    expected = {0: 0.1, 5: 0.1, 6: 0.05, 14: 0.05, 15: 0.025, 100: 0.025}
    for t, lr in expected.items():
        assert legacy_lr(s, t) == pytest.approx(lr)


def test_cosine_uses_the_floored_epoch_like_fluid_cosine_decay():
    cfg = _cfg("BATCH_SIZE=2", "SOLVER.LR_POLICY=cosine", "SOLVER.LR=0.2", "SOLVER.NUM_EPOCHS=4")
    s = schedule_from_config(cfg, train_total_images=8)  # 4 steps/epoch
    # no warmup: warmup_steps = -1, so epochs = 4 + 1/4 (legacy decay_epochs)
    epochs = 4 + 1 / 4
    for t in (0, 3, 4, 7, 8, 15):
        expected = 0.2 * 0.5 * (math.cos(math.floor(t / 4) * math.pi / epochs) + 1)
        assert legacy_lr(s, t) == pytest.approx(expected)
    assert legacy_lr(s, 3) == legacy_lr(s, 0)  # constant within an epoch


def test_warmup_is_linear_from_zero_then_decay_restarts_at_zero():
    cfg = _cfg("BATCH_SIZE=1", "SOLVER.LR=1.0", "SOLVER.NUM_EPOCHS=1", "SOLVER.LR_WARMUP=true",
               "SOLVER.LR_WARMUP_STEPS=4", "SOLVER.POWER=1.0")
    s = schedule_from_config(cfg, train_total_images=20)
    assert s.decay_steps == 16
    assert [legacy_lr(s, t) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert legacy_lr(s, 4) == pytest.approx(1.0)           # decay counter held at 0
    assert legacy_lr(s, 5) == pytest.approx(1 - 1 / 16)
    assert legacy_lr(s, 12) == pytest.approx(1 - 8 / 16)


def test_scheduler_state_round_trips_for_resume():
    cfg = _cfg("BATCH_SIZE=2", "SOLVER.LR=0.1", "SOLVER.NUM_EPOCHS=3")
    a = build_lr_scheduler(cfg, train_total_images=10)
    for _ in range(7):
        a.step()
    b = build_lr_scheduler(cfg, train_total_images=10)
    b.set_state_dict(a.state_dict())
    assert b.last_epoch == 7 and b() == pytest.approx(legacy_lr(a.schedule, 7))


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match="TRAIN_TOTAL_IMAGES"):
        schedule_from_config(_cfg(), train_total_images=0)
    with pytest.raises(ConfigError, match="LR_WARMUP_STEPS"):
        schedule_from_config(_cfg("SOLVER.LR_WARMUP=true", "SOLVER.LR_WARMUP_STEPS=0"), 10)


def _tiny_program(cfg, train_total_images):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [4, 3], "float32")
        w_decay = paddle.static.create_parameter([3, 2], "float32", name="w_decay")
        w_keep = paddle.static.create_parameter(
            [3, 2], "float32",
            attr=paddle.ParamAttr(name="w_keep", regularizer=paddle.regularizer.L2Decay(0.0)))
        y = x @ w_decay + x @ w_keep
        loss = paddle.mean(paddle.square(y))
        optimizer, scheduler = build_optimizer(cfg, train_total_images)
        optimizer.minimize(loss)
    return main, startup, scheduler


def test_per_parameter_l2decay_zero_overrides_the_global_decay():
    """Two Momentum steps vs numpy: w_keep (own L2Decay(0.0)) gets no decay, w_decay gets 0.5."""
    cfg = _cfg("SOLVER.LR=0.1", "SOLVER.WEIGHT_DECAY=0.5", "SOLVER.MOMENTUM=0.9", "BATCH_SIZE=2",
               "SOLVER.NUM_EPOCHS=1")
    main, startup, scheduler = _tiny_program(cfg, train_total_images=4)
    scope = paddle.static.Scope()
    exe = paddle.static.Executor(paddle.CPUPlace())
    rng = np.random.default_rng(0)
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        start = rng.standard_normal((3, 2)).astype("float32")
        for n in ("w_decay", "w_keep"):  # equal start: any difference comes from the decay
            scope.find_var(n).get_tensor().set(start, paddle.CPUPlace())
        w = {n: start.copy() for n in ("w_decay", "w_keep")}
        v = {n: np.zeros_like(a) for n, a in w.items()}
        coeff = {"w_decay": 0.5, "w_keep": 0.0}
        for step in range(2):
            x = rng.standard_normal((4, 3)).astype("float32")
            lr = scheduler()
            assert lr == pytest.approx(legacy_lr(scheduler.schedule, step))
            exe.run(main, feed={"x": x})
            scheduler.step()
            y = x @ w["w_decay"] + x @ w["w_keep"]
            grad = x.T @ (2 * y / y.size)  # same gradient for both weights
            for n in w:
                v[n] = 0.9 * v[n] + grad + coeff[n] * w[n]
                w[n] = w[n] - lr * v[n]
            for n in w:
                np.testing.assert_allclose(np.array(scope.find_var(n).get_tensor()), w[n],
                                           rtol=1e-5, atol=1e-6)
    got_decay = np.array(scope.find_var("w_decay").get_tensor())
    got_keep = np.array(scope.find_var("w_keep").get_tensor())
    assert np.abs(got_decay - got_keep).max() > 1e-3


def test_adam_uses_momentum_as_beta1():
    cfg = _cfg("SOLVER.OPTIMIZER=adam", "SOLVER.MOMENTUM=0.8", "SOLVER.MOMENTUM2=0.99")
    optimizer, _ = build_optimizer(cfg, 10)
    assert isinstance(optimizer, paddle.optimizer.Adam)
    assert optimizer._beta1 == 0.8 and optimizer._beta2 == 0.99


def test_schedule_dataclass_properties():
    s = LRSchedule("poly", 0.01, steps_per_epoch=10, num_epochs=2, warmup_steps=5)
    assert s.total_steps == 20 and s.decay_steps == 15 and s.cosine_epochs == 1.5
