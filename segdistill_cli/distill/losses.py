"""Distillation losses between a student and a (frozen) teacher variable, static graph: the math.
Which losses exist and what each reads is registry.py.

Every function takes legacy static `Variable`s and returns an UNWEIGHTED scalar Variable;
`build.add_distill_losses` multiplies by the pair's WEIGHT. The merged teacher variables are
already stop_gradient (`merge`), and Paddle's backward skips branches computed only from them; the
teacher-side intermediates are marked stop_gradient as well so that holds by construction, not by
pruning (`teacher.check_teacher_frozen` verifies no teacher-side gradient exists).

Why our own code instead of `paddleslim.dist`: PaddleSlim 2.6's `soft_label` softmaxes over the last
axis (W of NCHW logits, not classes) and its `fsp` calls the removed `paddle.fluid`
(docs/design.md, Legacy facts: PaddleSlim's losses). Only ops that accept legacy Variables in
Paddle 2.6.2 are used, and `@` rather than `paddle.matmul` (the latter rejects legacy Variables
from Paddle 3.2 on).

Conventions: tensors are NCHW; the class axis of logits is 1.
"""
from __future__ import annotations

from typing import Any, Optional

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
                    student_temperature: float = 1.0, mask: Optional[Variable] = None) -> Variable:
    """Soft-target cross-entropy -sum_c softmax(t/Tt) * log_softmax(s/Ts), averaged over pixels.

    PaddleSlim's semantics (no T^2 factor), but the softmax runs over the CLASS axis (1) of NCHW
    logits instead of the last axis. `mask` (float [N,1,H,W]) restricts the average to its pixels
    (padding excluded, `MASK: confident|correct`); None averages over every pixel, as PaddleSlim.
    """
    target = _frozen(F.softmax(teacher / teacher_temperature, axis=1))
    log_prob = F.log_softmax(student / student_temperature, axis=1)
    pixel_ce = -paddle.sum(target * log_prob, axis=1, keepdim=True)
    return paddle.mean(pixel_ce) if mask is None else masked_mean(pixel_ce, mask)


def kl_loss(student: Variable, teacher: Variable, temperature: float = 1.0,
            mask: Optional[Variable] = None) -> Variable:
    """T^2 * KL(softmax(t/T) || softmax(s/T)) over the class axis, averaged over valid pixels.

    `mask`: float32 [N,1,H,W], 1 where the pixel counts; same H,W as the logits (see
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
    return masked_mean(pixel_kl, mask) * scale


def masked_mean(values: Variable, mask: Variable) -> Variable:
    """sum(values * mask) / max(sum(mask), 1): the exact mean over the mask's pixels, and 0 (not
    NaN) when the mask is empty. (`mean(v*m) / (mean(m) + eps)` would bias a sparse mask.)"""
    return paddle.sum(values * mask) / paddle.clip(paddle.sum(mask), min=1.0)


# ---- DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher") ---------

# Inside the square root of the correlation's denominator: keeps the gradient finite when a
# vector is constant (all-ignored batch, a class the teacher never predicts).
_CORR_EPSILON = 1e-12


def _centred(probs: Variable, axes: list[int], mask: Variable, count: Variable) -> Variable:
    mean = paddle.sum(probs * mask, axis=axes, keepdim=True) / count
    return (probs - mean) * mask


def _pearson(a: Variable, b: Variable, axes: list[int]) -> Variable:
    """Pearson correlation of already centred (and masked) a, b along `axes`."""
    covariance = paddle.sum(a * b, axis=axes)
    norms = paddle.sum(a * a, axis=axes) * paddle.sum(b * b, axis=axes)
    return covariance / paddle.sqrt(norms + _CORR_EPSILON)


def dist_terms(student: Variable, teacher: Variable, temperature: float = 1.0,
               mask: Optional[Variable] = None) -> tuple[Variable, Variable]:
    """DIST's two relation losses on NCHW logits, each already multiplied by T^2.

    inter-class: mean over the mask's pixels of 1 - pearson(p_s[:, pixel], p_t[:, pixel]) (the
    class-probability vectors of one pixel); intra-class: mean over classes of 1 - pearson of that
    class's probabilities across all mask pixels of the batch. Masked-out pixels take no part in
    either mean or correlation; an empty mask gives 0 for both.
    """
    p_student = F.softmax(student / temperature, axis=1)
    p_teacher = _frozen(F.softmax(teacher / temperature, axis=1))
    if mask is None:
        mask = _frozen(paddle.ones_like(paddle.sum(p_teacher, axis=1, keepdim=True)))
    count = paddle.clip(paddle.sum(mask), min=1.0)
    any_pixel = paddle.clip(paddle.sum(mask), max=1.0)  # 0 for an empty mask, else 1
    scale = temperature * temperature
    # Per pixel, across classes (the mask is 0/1, so masking after centring is exact).
    class_count = float(student.shape[1])
    inter_s = p_student - paddle.mean(p_student, axis=1, keepdim=True)
    inter_t = _frozen(p_teacher - paddle.mean(p_teacher, axis=1, keepdim=True))
    pixel_corr = paddle.unsqueeze(_pearson(inter_s, inter_t, [1]), [1])
    inter = masked_mean(1.0 - pixel_corr, mask) * scale
    # Per class, across the batch's mask pixels.
    intra_s = _centred(p_student, [0, 2, 3], mask, count)
    intra_t = _frozen(_centred(p_teacher, [0, 2, 3], mask, count))
    class_corr = _pearson(intra_s, intra_t, [0, 2, 3])
    intra = (1.0 - paddle.sum(class_corr) / class_count) * any_pixel * scale
    return inter, intra


def dist_loss(student: Variable, teacher: Variable, temperature: float = 1.0,
              inter_weight: float = 1.0, intra_weight: float = 1.0,
              mask: Optional[Variable] = None) -> Variable:
    """DIST = inter_weight * inter-class + intra_weight * intra-class relation loss (`dist_terms`)."""
    inter, intra = dist_terms(student, teacher, temperature, mask)
    return inter * inter_weight + intra * intra_weight


# ---- which pixels a class-axis loss distils (MASK: confident | correct) --------------------------

def confident_mask(teacher: Variable, threshold: float) -> Variable:
    """Float [N,1,H,W]: 1 where the teacher's top class probability (softmax at T = 1, the
    teacher's own confidence, whatever the loss's temperature) >= threshold."""
    top = paddle.max(F.softmax(teacher, axis=1), axis=1, keepdim=True)
    return _frozen(paddle.cast(top >= threshold, "float32"))


def correct_mask(teacher: Variable, label: Variable, labelled: Variable,
                 threshold: float) -> Variable:
    """Float [N,1,H,W]: where the pixel has a label (`labelled` = 1), 1 iff the teacher's argmax
    equals it; elsewhere (unlabelled images, IGNORE_INDEX pixels) `confident_mask`'s rule."""
    argmax = paddle.unsqueeze(paddle.argmax(teacher, axis=1), [1])
    right = paddle.cast(argmax == paddle.cast(label, "int64"), "float32")
    confident = confident_mask(teacher, threshold)
    return _frozen(labelled * right + (1.0 - labelled) * confident)
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
    return at_resolution(mask if mask is not None else label != ignore_index, logits)


def at_resolution(var: Variable, like: Variable) -> Variable:
    """`var` ([N,1,H,W], any dtype) at `like`'s H, W with nearest neighbour, as float32."""
    varf = paddle.cast(var, "float32")
    target_hw = list(like.shape[2:4])
    if list(varf.shape[2:4]) != target_hw and all(d > 0 for d in target_hw):
        varf = F.interpolate(varf, size=target_hw, mode="nearest")
    return _frozen(varf)
