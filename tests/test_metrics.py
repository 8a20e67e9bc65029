"""The legacy confusion matrix against an independent loop-based computation and a hand example."""
from __future__ import annotations

import numpy as np
import pytest

from segdistill_cli.engine.metrics import ConfusionMatrix


def _reference(pred, label, n, ignore):
    """Straightforward per-pixel loop: rows = label, cols = prediction."""
    cm = np.zeros((n, n), dtype=np.int64)
    for p, l in zip(pred.ravel(), label.ravel()):
        if l != ignore:
            cm[l, p] += 1
    iou, acc = [], []
    for c in range(n):
        tp = cm[c, c]
        union = cm[c, :].sum() + cm[:, c].sum() - tp
        iou.append(tp / union if union else 0.0)
        acc.append(tp / cm[:, c].sum() if cm[:, c].sum() else 0.0)
    total = cm.sum()
    po = np.trace(cm) / total
    pe = sum(cm[c, :].sum() * cm[:, c].sum() for c in range(n)) / total ** 2
    return cm, np.array(iou), np.array(acc), po, (po - pe) / (1 - pe)


def test_matches_reference_on_random_batches_with_absent_classes_and_ignore():
    rng = np.random.default_rng(0)
    n, ignore = 7, 255
    cm = ConfusionMatrix(n, ignore_index=ignore)
    preds, labels = [], []
    for _ in range(3):
        # Classes 5 and 6 never appear in labels; 6 never predicted either.
        label = rng.integers(0, 5, size=(2, 1, 9, 11))
        label[rng.random(label.shape) < 0.2] = ignore
        pred = rng.integers(0, 6, size=(2, 9, 11, 1))  # other layout, same pixel count
        cm.update(pred, label.reshape(2, 9, 11, 1))
        preds.append(pred.ravel())
        labels.append(label.ravel())
    ref_cm, ref_iou, ref_acc, ref_po, ref_kappa = _reference(
        np.concatenate(preds), np.concatenate(labels), n, ignore)
    np.testing.assert_array_equal(cm.matrix, ref_cm)
    assert cm.matrix.dtype == np.int64
    np.testing.assert_allclose(cm.class_iou(), ref_iou)
    assert ref_iou[6] == 0 and ref_iou[5] == 0
    assert cm.mean_iou() == pytest.approx(ref_iou.mean())  # over all 7, absent count as 0
    assert cm.mean_iou_present() == pytest.approx(ref_iou[:5].mean())
    np.testing.assert_allclose(cm.class_accuracy(), ref_acc)
    assert cm.accuracy() == pytest.approx(ref_po)
    assert cm.kappa() == pytest.approx(ref_kappa)
    assert cm.total == sum(int((l != ignore).sum()) for l in labels)


def test_hand_worked_example():
    # label: 0 0 1 1 2(ignored via mask)   pred: 0 1 1 1 0
    label = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    mask = np.array([1, 1, 1, 1, 0])
    cm = ConfusionMatrix(3).update(pred, label, mask)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    # IoU0 = 1/(2+1-1) = 0.5, IoU1 = 2/(2+3-2) = 2/3, IoU2 = 0 (absent)
    np.testing.assert_allclose(cm.class_iou(), [0.5, 2 / 3, 0.0])
    assert cm.mean_iou() == pytest.approx((0.5 + 2 / 3) / 3)
    assert cm.mean_iou_present() == pytest.approx((0.5 + 2 / 3) / 2)
    # "acc" is column-normalised: class 1 predicted 3 times, right twice.
    np.testing.assert_allclose(cm.class_accuracy(), [1.0, 2 / 3, 0.0])
    assert cm.accuracy() == pytest.approx(3 / 4)
    # po = 3/4, pe = (2*1 + 2*3)/16 = 1/2, kappa = (3/4 - 1/2)/(1/2) = 1/2
    assert cm.kappa() == pytest.approx(0.5)


def test_merge_and_add_equal_one_matrix_over_all_data():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, size=200)
    pred = rng.integers(0, 4, size=200)
    whole = ConfusionMatrix(4).update(pred, label)
    a = ConfusionMatrix(4).update(pred[:120], label[:120])
    b = ConfusionMatrix(4).update(pred[120:], label[120:])
    np.testing.assert_array_equal((a + b).matrix, whole.matrix)
    np.testing.assert_array_equal(a.matrix.sum() + b.matrix.sum(), 200)
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, whole.matrix)
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(5))


def test_out_of_range_label_is_a_clear_error():
    cm = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(ValueError, match="IGNORE_INDEX"):
        cm.update(np.array([0, 1]), np.array([0, 7]))


def test_empty_matrix_gives_zeros_not_nan():
    cm = ConfusionMatrix(3)
    assert cm.mean_iou() == 0 and cm.accuracy() == 0 and cm.kappa() == 0
    assert cm.summary()["pixels"] == 0
