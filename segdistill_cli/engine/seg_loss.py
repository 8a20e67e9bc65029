"""The student's own loss: softmax cross-entropy over valid pixels (legacy `softmax_with_loss`).

Legacy: `mean(ce * mask) / mean(mask)` over all pixels, i.e. the mean CE of the pixels whose label
is not IGNORE_INDEX. Computed over the class axis of NCHW logits. The small epsilon keeps an
all-ignored batch at 0 instead of NaN (legacy v0.8.0 added it too).
"""
from __future__ import annotations

from typing import Any

from ..paddle_env import import_paddle

_EPSILON = 1e-5


def softmax_ce_loss(logits: Any, label: Any, mask: Any, ignore_index: int) -> Any:
    """logits [N,C,H,W] float, label/mask [N,1,H,W] int32 → scalar mean CE over valid pixels."""
    paddle = import_paddle()
    import paddle.nn.functional as F

    label64 = paddle.cast(label, "int64")
    pixel_ce = F.softmax_with_cross_entropy(logits, label64, ignore_index=ignore_index, axis=1)
    maskf = paddle.cast(mask, "float32")
    return paddle.mean(pixel_ce * maskf) / (paddle.mean(maskf) + _EPSILON)
