"""seg_loss.py: the student's CE is the mean over pixels whose label is not IGNORE_INDEX."""
from __future__ import annotations

import numpy as np
import pytest

from segdistill_cli.engine.seg_loss import softmax_ce_loss
from segdistill_cli.paddle_env import import_paddle

IGNORE = 11


def _run(logits: np.ndarray, label: np.ndarray) -> float:
    paddle = import_paddle()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", list(logits.shape), "float32")
        y = paddle.static.data("y", list(label.shape), "int32")
        m = paddle.static.data("m", list(label.shape), "int32")
        loss = softmax_ce_loss(x, y, m, IGNORE)
    exe = paddle.static.Executor(paddle.CPUPlace())
    mask = (label != IGNORE).astype("int32")
    (value,) = exe.run(main, feed={"x": logits, "y": label, "m": mask}, fetch_list=[loss],
                       scope=paddle.static.Scope())
    return float(np.asarray(value).reshape(-1)[0])


def _numpy_ce(logits: np.ndarray, label: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    valid = label[:, 0] != IGNORE
    picked = np.take_along_axis(log_p, np.where(valid, label[:, 0], 0)[:, None], axis=1)[:, 0]
    return float(-picked[valid].mean())


def test_ce_is_the_mean_over_labelled_pixels_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 3, 5)).astype("float32")
    label = rng.integers(0, 4, size=(2, 1, 3, 5)).astype("int32")
    label[0, 0, 0, :] = IGNORE
    assert _run(logits, label) == pytest.approx(_numpy_ce(logits, label), rel=1e-4)
    # An ignored pixel's logits do not count; a labelled pixel's do (the negative control).
    changed = logits.copy()
    changed[0, :, 0, 0] += 5.0
    assert _run(changed, label) == pytest.approx(_run(logits, label), rel=1e-6)
    changed[0, :, 1, 0] += 5.0 * np.arange(4)
    assert _run(changed, label) != pytest.approx(_run(logits, label), rel=1e-3)


def test_an_all_ignored_batch_gives_zero_not_nan():
    logits = np.ones((1, 4, 2, 2), "float32")
    assert _run(logits, np.full((1, 1, 2, 2), IGNORE, "int32")) == 0.0
