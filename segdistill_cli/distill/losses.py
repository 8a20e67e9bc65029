"""Distillation losses between a student and a (frozen) teacher variable, static graph.

Every function takes legacy static `Variable`s and returns an UNWEIGHTED scalar Variable;
`build.add_distill_losses` multiplies by the pair's WEIGHT. The merged teacher variables are
already stop_gradient (`merge`), and Paddle's backward skips branches computed only from them; the
teacher-side intermediates are marked stop_gradient as well so that holds by construction, not by
pruning (`merge.check_teacher_frozen` verifies no teacher-side gradient exists).

Why our own code instead of `paddleslim.dist`: PaddleSlim 2.6's `soft_label` softmaxes over the last
axis (W of NCHW logits, not classes) and its `fsp` calls the removed `paddle.fluid`
(reference/paddle-compat.md §3). Only ops that accept legacy Variables in Paddle 2.6.2 are used,
and `@` rather than `paddle.matmul` (the latter rejects legacy Variables from Paddle 3.2 on).

Conventions: tensors are NCHW; the class axis of logits is 1.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..paddle_env import import_paddle

paddle = import_paddle()
import paddle.nn.functional as F  # noqa: E402  (after import_paddle: zlib first, static mode)

Variable = Any  # paddle.static.Variable; kept loose so type hints don't import Paddle internals

# Keeps an all-ignored batch at 0 instead of NaN (same as the student CE in engine/seg_loss.py).
_EPSILON = 1e-5


def _frozen(var: Variable) -> Variable:
    """Mark a teacher-side intermediate as constant for backward."""
    var.stop_gradient = True
    return var


def l2_loss(student: Variable, teacher: Variable) -> Variable:
    """Legacy PaddleSlim `l2_loss`: mean of (s - t)^2 over ALL elements, no ignore mask."""
    return F.mse_loss(student, _frozen(teacher), reduction="mean")


def soft_label_loss(student: Variable, teacher: Variable, teacher_temperature: float = 1.0,
                    student_temperature: float = 1.0) -> Variable:
    """Soft-target cross-entropy -sum_c softmax(t/Tt) * log_softmax(s/Ts), averaged over pixels.

    PaddleSlim's semantics (no T^2 factor), but the softmax runs over the CLASS axis (1) of NCHW
    logits instead of the last axis.
    """
    target = _frozen(F.softmax(teacher / teacher_temperature, axis=1))
    log_prob = F.log_softmax(student / student_temperature, axis=1)
    return paddle.mean(-paddle.sum(target * log_prob, axis=1))


def kl_loss(student: Variable, teacher: Variable, temperature: float = 1.0,
            mask: Optional[Variable] = None) -> Variable:
    """T^2 * KL(softmax(t/T) || softmax(s/T)) over the class axis, averaged over valid pixels.

    `mask`: float32 [N,1,H,W], 1 where the label is valid; same H,W as the logits (see
    `valid_mask`). None means every pixel counts.
    """
    log_p_teacher = _frozen(F.log_softmax(teacher / temperature, axis=1))
    p_teacher = _frozen(F.softmax(teacher / temperature, axis=1))
    log_p_student = F.log_softmax(student / temperature, axis=1)
    # Explicit p*(log p - log q) with log_softmax on both sides: stable where p underflows to 0.
    pixel_kl = paddle.sum(p_teacher * (log_p_teacher - log_p_student), axis=1, keepdim=True)
    scale = temperature * temperature
    if mask is None:
        return paddle.mean(pixel_kl) * scale
    return paddle.mean(pixel_kl * mask) / (paddle.mean(mask) + _EPSILON) * scale


def fsp_matrix(a: Variable, b: Variable) -> Variable:
    """Legacy `fluid.layers.fsp_matrix`: [N,C1,H,W] x [N,C2,H,W] -> [N,C1,C2], divided by H*W."""
    height, width = a.shape[2], a.shape[3]
    a_flat = paddle.reshape(a, [0, 0, -1])  # 0 = keep that dim (batch stays dynamic)
    b_flat = paddle.reshape(b, [0, 0, -1])
    return (a_flat @ paddle.transpose(b_flat, [0, 2, 1])) / float(height * width)


def fsp_loss(student_first: Variable, student_second: Variable, teacher_first: Variable,
             teacher_second: Variable) -> Variable:
    """Legacy FSP loss: mean((fsp(s1, s2) - fsp(t1, t2))^2). Needs static H, W per side."""
    teacher_fsp = _frozen(fsp_matrix(_frozen(teacher_first), _frozen(teacher_second)))
    return F.mse_loss(fsp_matrix(student_first, student_second), teacher_fsp, reduction="mean")


def cwd_loss(student: Variable, teacher: Variable, temperature: float = 1.0) -> Variable:
    """Channel-wise distillation (Shu et al., ICCV 2021).

    Each channel's map becomes a distribution over its H*W locations (softmax with temperature T);
    loss = T^2 * sum over locations of KL(teacher || student), averaged over the N*C channels.
    """
    teacher_maps = paddle.reshape(teacher, [0, 0, -1]) / temperature
    student_maps = paddle.reshape(student, [0, 0, -1]) / temperature
    log_p_teacher = _frozen(F.log_softmax(teacher_maps, axis=-1))
    p_teacher = _frozen(F.softmax(teacher_maps, axis=-1))
    log_p_student = F.log_softmax(student_maps, axis=-1)
    channel_kl = paddle.sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
    return paddle.mean(channel_kl) * (temperature * temperature)


def valid_mask(logits: Variable, mask: Optional[Variable] = None, label: Optional[Variable] = None,
               ignore_index: int = 255) -> Optional[Variable]:
    """Float32 [N,1,h,w] valid-pixel mask at the logits' resolution, or None if neither is given.

    From `mask` (int, 1 = valid, the legacy feed) or else from `label != ignore_index`. When the
    logits are smaller than the label, the mask is resized with nearest neighbour (a pixel of the
    small map counts as valid iff its nearest label pixel is valid).
    """
    if mask is None and label is None:
        return None
    if mask is not None:
        maskf = paddle.cast(mask, "float32")
    else:
        maskf = paddle.cast(label != ignore_index, "float32")
    target_hw = list(logits.shape[2:4])
    if list(maskf.shape[2:4]) != target_hw and all(d > 0 for d in target_hw):
        maskf = F.interpolate(maskf, size=target_hw, mode="nearest")
    return _frozen(maskf)


# ---- registry --------------------------------------------------------------------------------
# name -> builder(students, teachers, options, mask) -> unweighted scalar. `options` holds the
# pair's temperatures (already defaulted); `mask` is the float valid mask or None.
LossBuilder = Callable[[Sequence[Variable], Sequence[Variable], dict, Optional[Variable]], Variable]

LOSS_BUILDERS: dict[str, LossBuilder] = {
    "l2": lambda s, t, o, m: l2_loss(s[0], t[0]),
    "soft_label": lambda s, t, o, m: soft_label_loss(
        s[0], t[0], o["teacher_temperature"], o["student_temperature"]),
    "kl": lambda s, t, o, m: kl_loss(s[0], t[0], o["temperature"], m),
    "fsp": lambda s, t, o, m: fsp_loss(s[0], s[1], t[0], t[1]),
    "cwd": lambda s, t, o, m: cwd_loss(s[0], t[0], o["temperature"]),
}

# Losses that read the valid-pixel mask (the trainer must pass mask or label).
MASKED_LOSSES = frozenset({"kl"})
