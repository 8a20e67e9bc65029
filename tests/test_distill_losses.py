"""Distillation losses against numpy references, run as real static programs on random inputs."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from segdistill_cli.errors import ConfigError
from segdistill_cli.paddle_env import import_paddle

paddle = import_paddle()

from segdistill_cli.distill import losses  # noqa: E402
from segdistill_cli.distill.build import add_distill_losses  # noqa: E402
from segdistill_cli.distill.custom import load_function  # noqa: E402
from segdistill_cli.distill.pairs import resolve_pairs  # noqa: E402
from segdistill_cli.program_vars import find_var  # noqa: E402

RNG = np.random.default_rng(7)


def run_static(build, feeds: dict[str, np.ndarray]):
    """Build `build(vars) -> Variable` over data vars named like `feeds`; run once; fetch it."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        data = {name: paddle.static.data(name, [-1, *value.shape[1:]], str(value.dtype))
                for name, value in feeds.items()}
        out = build(data)
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        (value,) = exe.run(main, feed=feeds, fetch_list=[out])
    return np.asarray(value)


def randn(*shape: int, scale: float = 2.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype("float32")


def np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def np_kl(t_logits, s_logits, axis, temperature):
    log_p = np_log_softmax(t_logits / temperature, axis)
    log_q = np_log_softmax(s_logits / temperature, axis)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=axis)


# ---- built-in losses ---------------------------------------------------------------------------

def test_l2_is_mean_squared_difference_over_all_elements():
    s, t = randn(2, 5, 6, 7), randn(2, 5, 6, 7)
    got = run_static(lambda v: losses.l2_loss(v["s"], v["t"]), {"s": s, "t": t})
    assert got.shape == ()
    np.testing.assert_allclose(got, np.mean((s - t) ** 2), rtol=1e-5)


def test_soft_label_softmaxes_over_the_class_axis():
    # C=5 != W=4: a last-axis softmax (PaddleSlim's) gives a clearly different number.
    s, t = randn(2, 5, 3, 4), randn(2, 5, 3, 4)
    got = run_static(lambda v: losses.soft_label_loss(v["s"], v["t"], 2.0, 0.5), {"s": s, "t": t})
    target = np.exp(np_log_softmax(t / 2.0, 1))
    expected = np.mean(-(target * np_log_softmax(s / 0.5, 1)).sum(axis=1))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    last_target = np.exp(np_log_softmax(t / 2.0, -1))
    last_axis = np.mean(-(last_target * np_log_softmax(s / 0.5, -1)).sum(-1))
    assert abs(float(got) - last_axis) > 0.05


def test_kl_masks_ignored_pixels_and_scales_by_t_squared():
    s, t = randn(2, 4, 6, 5), randn(2, 4, 6, 5)
    mask = (RNG.random((2, 1, 6, 5)) > 0.3).astype("int32")
    got = run_static(lambda v: losses.kl_loss(v["s"], v["t"], 3.0,
                                              losses.valid_mask(v["s"], mask=v["m"])),
                     {"s": s, "t": t, "m": mask})
    pixel_kl = np_kl(t, s, axis=1, temperature=3.0)  # [N,H,W]
    valid = mask[:, 0].astype(bool)
    expected = pixel_kl[valid].mean() * 9.0
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert abs(float(got) - pixel_kl.mean() * 9.0) > 1e-3  # the mask matters
    assert abs(float(got) - pixel_kl[valid].mean()) > 1e-3  # the T^2 factor matters


def test_kl_mask_from_label_is_resized_nearest_to_low_resolution_logits():
    s, t = randn(2, 3, 4, 4), randn(2, 3, 4, 4)
    label = RNG.integers(0, 3, (2, 1, 8, 8)).astype("int32")
    label[RNG.random(label.shape) < 0.4] = 11  # CamVid's ignore value
    got = run_static(lambda v: losses.kl_loss(v["s"], v["t"], 1.0, losses.valid_mask(
        v["s"], label=v["label"], ignore_index=11)), {"s": s, "t": t, "label": label})
    valid = label[:, 0, ::2, ::2] != 11  # nearest, scale 2: the top-left pixel of each 2x2 cell
    expected = np_kl(t, s, axis=1, temperature=1.0)[valid].mean()
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_kl_with_every_pixel_ignored_is_zero_not_nan():
    s, t = randn(1, 3, 2, 2), randn(1, 3, 2, 2)
    got = run_static(lambda v: losses.kl_loss(v["s"], v["t"], 2.0, losses.valid_mask(
        v["s"], mask=v["m"])), {"s": s, "t": t, "m": np.zeros((1, 1, 2, 2), "int32")})
    assert float(got) == 0.0


def test_fsp_matches_the_legacy_matrix_definition():
    s1, s2, t1, t2 = randn(2, 3, 5, 4), randn(2, 6, 5, 4), randn(2, 3, 2, 3), randn(2, 6, 2, 3)

    def fsp(a, b):
        n, _, h, w = a.shape
        return np.einsum("nip,njp->nij", a.reshape(n, -1, h * w), b.reshape(n, -1, h * w)) / (h * w)

    matrix = run_static(lambda v: losses.fsp_matrix(v["a"], v["b"]), {"a": s1, "b": s2})
    np.testing.assert_allclose(matrix, fsp(s1, s2), rtol=1e-5, atol=1e-6)
    got = run_static(lambda v: losses.fsp_loss(v["s1"], v["s2"], v["t1"], v["t2"]),
                     {"s1": s1, "s2": s2, "t1": t1, "t2": t2})
    np.testing.assert_allclose(got, np.mean((fsp(s1, s2) - fsp(t1, t2)) ** 2), rtol=1e-5)


def test_cwd_is_spatial_softmax_kl_per_channel():
    s, t = randn(2, 3, 4, 5), randn(2, 3, 4, 5)
    got = run_static(lambda v: losses.cwd_loss(v["s"], v["t"], 4.0), {"s": s, "t": t})
    per_channel = np_kl(t.reshape(2, 3, 20), s.reshape(2, 3, 20), axis=-1, temperature=4.0)
    np.testing.assert_allclose(got, per_channel.mean() * 16.0, rtol=1e-4)
    class_axis = np_kl(t, s, axis=1, temperature=4.0).mean() * 16.0  # not a class-axis KL
    assert abs(float(got) - class_axis) > 1e-2


# ---- DIST (relation matching) -------------------------------------------------------------------

def np_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    return np.exp(np_log_softmax(x, axis))


def np_pearson(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    return (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))


def np_dist(s, t, temperature, valid):
    """DIST by its definition: rows = the valid pixels of the batch, columns = classes."""
    c = s.shape[1]
    ps = np_softmax(s / temperature, 1).transpose(0, 2, 3, 1).reshape(-1, c)
    pt = np_softmax(t / temperature, 1).transpose(0, 2, 3, 1).reshape(-1, c)
    keep = valid.reshape(-1)
    ps, pt = ps[keep], pt[keep]
    inter = (1 - np_pearson(ps, pt, axis=1)).mean()  # each pixel's class vector
    intra = (1 - np_pearson(ps, pt, axis=0)).mean()  # each class across the pixels
    return inter * temperature ** 2, intra * temperature ** 2


def test_dist_matches_its_definition_with_mask_and_t_squared():
    s, t = randn(2, 5, 4, 6), randn(2, 5, 4, 6)
    mask = (RNG.random((2, 1, 4, 6)) > 0.3).astype("int32")
    got = run_static(lambda v: paddle.stack(losses.dist_terms(
        v["s"], v["t"], 2.0, losses.valid_mask(v["s"], mask=v["m"]))), {"s": s, "t": t, "m": mask})
    inter, intra = np_dist(s, t, 2.0, mask[:, 0].astype(bool))
    np.testing.assert_allclose(got.reshape(-1), [inter, intra], rtol=1e-4)
    # Negative controls: the mask, the temperature's T^2 and the two axes all matter.
    all_in = np_dist(s, t, 2.0, np.ones((2, 4, 6), bool))
    assert abs(got.reshape(-1)[0] - all_in[0]) > 1e-3 and abs(got.reshape(-1)[1] - all_in[1]) > 1e-3
    assert abs(got.reshape(-1)[0] - inter / 4.0) > 1e-2
    assert abs(inter - intra) > 1e-2
    weighted = run_static(lambda v: losses.dist_loss(v["s"], v["t"], 2.0, 0.5, 3.0, losses.valid_mask(
        v["s"], mask=v["m"])), {"s": s, "t": t, "m": mask})
    np.testing.assert_allclose(weighted, 0.5 * inter + 3.0 * intra, rtol=1e-4)


def test_dist_without_mask_uses_every_pixel_and_is_zero_for_identical_logits():
    s, t = randn(2, 4, 3, 3), randn(2, 4, 3, 3)
    got = run_static(lambda v: paddle.stack(losses.dist_terms(v["s"], v["t"])), {"s": s, "t": t})
    np.testing.assert_allclose(got.reshape(-1), np_dist(s, t, 1.0, np.ones((2, 3, 3), bool)),
                               rtol=1e-4)
    same = run_static(lambda v: losses.dist_loss(v["s"], v["t"]), {"s": s, "t": s.copy()})
    assert abs(float(same)) < 1e-5


def test_dist_with_every_pixel_ignored_is_zero_and_has_finite_gradients():
    s, t = randn(1, 3, 2, 2), randn(1, 3, 2, 2)

    def build(v):
        v["s"].stop_gradient = False
        loss = losses.dist_loss(v["s"], v["t"], 1.0, 1.0, 1.0, losses.valid_mask(v["s"], mask=v["m"]))
        (grad,) = paddle.static.gradients([loss], [v["s"]])
        return paddle.concat([paddle.reshape(loss, [1]), paddle.reshape(grad, [-1])])

    got = run_static(build, {"s": s, "t": t, "m": np.zeros((1, 1, 2, 2), "int32")})
    assert got[0] == 0.0 and np.isfinite(got).all() and (got[1:] == 0).all()


# ---- MASK: confident / correct on kl and soft_label -----------------------------------------------

def _mask_feeds(n=2, c=4, h=5, w=6, ignore=11):
    s, t = randn(n, c, h, w), randn(n, c, h, w)
    label = RNG.integers(0, c, (n, 1, h, w)).astype("int32")
    teacher_argmax = t.argmax(axis=1)[:, None]
    # Half the labels agree with the teacher, so MASK correct keeps a real part of them.
    label = np.where(RNG.random(label.shape) < 0.5, teacher_argmax, label).astype("int32")
    label[RNG.random(label.shape) < 0.2] = ignore  # unlabelled pixels inside a labelled image
    pixels = np.ones((n, 1, h, w), "int32")
    pixels[:, :, -1:, :] = 0  # padding: never distilled
    return {"s": s, "t": t, "label": label, "labelled": (label != ignore).astype("int32"),
            "pixels": pixels}


def _masked_pair_values(pair_extra, feeds, loss="kl"):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        for name in ("feat", "teacher_feat"):
            paddle.static.data(name, [-1, 4, 5, 6], "float32")
        for name in ("label", "labelled", "pixels"):
            paddle.static.data(name, [-1, 1, 5, 6], "int32")
    teacher = paddle.static.Program()
    with paddle.static.program_guard(teacher, paddle.static.Program()):
        paddle.static.data("feat", [-1, 4, 5, 6], "float32")
    pair = {"TEACHER": "feat", "STUDENT": "feat", "LOSS": loss, "WEIGHT": 2.0, "NAME": "p",
            **pair_extra}
    resolved = resolve_pairs([pair], main, teacher)
    with paddle.static.program_guard(main, startup):
        built = add_distill_losses(main, startup, resolved, mask=find_var(main, "pixels"),
                                   label=find_var(main, "label"), ignore_index=11,
                                   label_mask=find_var(main, "labelled"))
    names = ["p", *built.logged]
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        values = exe.run(main, feed={"feat": feeds["s"], "teacher_feat": feeds["t"],
                                     "label": feeds["label"], "labelled": feeds["labelled"],
                                     "pixels": feeds["pixels"]},
                         fetch_list=[built.terms["p"], *built.logged.values()])
    return dict(zip(names, (float(v) for v in values)))


def test_kl_mask_confident_keeps_confident_teacher_pixels_and_logs_coverage():
    f = _mask_feeds()
    got = _masked_pair_values({"MASK": "confident", "THRESHOLD": 0.6, "TEMPERATURE": 2.0}, f)
    top = np_softmax(f["t"], 1).max(axis=1)  # the teacher's own confidence (T = 1)
    base = f["pixels"][:, 0].astype(bool)
    keep = base & (top >= 0.6)
    pixel_kl = np_kl(f["t"], f["s"], axis=1, temperature=2.0)
    np.testing.assert_allclose(got["raw/p"], pixel_kl[keep].mean() * 4.0, rtol=1e-4)
    np.testing.assert_allclose(got["p"], 2.0 * got["raw/p"], rtol=1e-6)
    np.testing.assert_allclose(got["mask/p"], keep.sum() / base.sum(), rtol=1e-6)
    assert 0.05 < got["mask/p"] < 0.95  # the threshold really selects (negative control)
    assert abs(got["raw/p"] - pixel_kl[base].mean() * 4.0) > 1e-3


def test_kl_mask_correct_uses_the_label_and_falls_back_to_confident_on_unlabelled_pixels():
    f = _mask_feeds()
    got = _masked_pair_values({"MASK": "correct", "THRESHOLD": 0.5}, f)
    top = np_softmax(f["t"], 1).max(axis=1)
    labelled = f["labelled"][:, 0].astype(bool)
    right = f["t"].argmax(axis=1) == f["label"][:, 0]
    base = f["pixels"][:, 0].astype(bool)
    keep = base & np.where(labelled, right, top >= 0.5)
    pixel_kl = np_kl(f["t"], f["s"], axis=1, temperature=1.0)
    np.testing.assert_allclose(got["raw/p"], pixel_kl[keep].mean(), rtol=1e-4)
    np.testing.assert_allclose(got["mask/p"], keep.sum() / base.sum(), rtol=1e-6)
    # Negative controls: neither "labelled pixels only" nor "confident only" gives this value.
    assert abs(got["raw/p"] - pixel_kl[base & labelled & right].mean()) > 1e-4
    assert abs(got["raw/p"] - pixel_kl[base & (top >= 0.5)].mean()) > 1e-4


def test_soft_label_mask_and_all_ignored_batch():
    f = _mask_feeds()
    got = _masked_pair_values({"MASK": "confident", "THRESHOLD": 0.5}, f, loss="soft_label")
    keep = f["pixels"][:, 0].astype(bool) & (np_softmax(f["t"], 1).max(axis=1) >= 0.5)
    pixel_ce = -(np_softmax(f["t"], 1) * np_log_softmax(f["s"], 1)).sum(axis=1)
    np.testing.assert_allclose(got["raw/p"], pixel_ce[keep].mean(), rtol=1e-4)
    f["pixels"][:] = 0  # all padding / ignored: 0 and 0 % kept, not NaN
    for loss in ("soft_label", "kl"):
        empty = _masked_pair_values({"MASK": "correct"}, f, loss=loss)
        assert empty["p"] == 0.0 and empty["mask/p"] == 0.0, loss


def test_dist_pair_logs_its_inter_and_intra_parts():
    f = _mask_feeds()
    got = _masked_pair_values({"INTER_WEIGHT": 0.5, "INTRA_WEIGHT": 2.0}, f, loss="dist")
    inter, intra = np_dist(f["s"], f["t"], 1.0, f["pixels"][:, 0].astype(bool))
    np.testing.assert_allclose([got["raw/p.inter"], got["raw/p.intra"]], [inter, intra], rtol=1e-4)
    np.testing.assert_allclose(got["raw/p"], 0.5 * inter + 2.0 * intra, rtol=1e-4)
    np.testing.assert_allclose(got["p"], 2.0 * got["raw/p"], rtol=1e-6)


# ---- custom losses and weighting through resolve_pairs + add_distill_losses --------------------

CUSTOM_MODULE = """
import paddle

def scaled_gap(student, teacher, scale=1.0, temperature=1.0, mask=None):
    gap = paddle.mean(paddle.square(student - teacher) * mask) / paddle.mean(mask)
    return gap * scale / temperature

def first_minus_second(student, teacher):
    return paddle.mean(student[0] - student[1]) + 0.0 * paddle.mean(teacher[0])

def not_scalar(student, teacher):
    return student - teacher
"""


@pytest.fixture()
def custom_module(tmp_path, monkeypatch):
    (tmp_path / "my_distill_losses.py").write_text(textwrap.dedent(CUSTOM_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_distill_losses", raising=False)
    return "my_distill_losses"


def _pair_programs():
    """A 'merged-like' program (student vars + `teacher_` vars) and the teacher as built."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        for name in ("feat", "feat2", "teacher_feat"):
            paddle.static.data(name, [-1, 3, 4, 4], "float32")
        paddle.static.data("mask", [-1, 1, 4, 4], "int32")
    teacher = paddle.static.Program()
    with paddle.static.program_guard(teacher, paddle.static.Program()):
        paddle.static.data("feat", [-1, 3, 4, 4], "float32")
    return main, startup, teacher


def _run_pairs(pairs, feeds):
    main, startup, teacher = _pair_programs()
    resolved = resolve_pairs(pairs, main, teacher)
    with paddle.static.program_guard(main, startup):
        built = add_distill_losses(main, startup, resolved, mask=find_var(main, "mask"))
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        exe.run(startup)
        values = exe.run(main, feed=feeds, fetch_list=[built.total, *built.terms.values()])
    return dict(zip(["total", *built.terms], (float(v) for v in values)))


def test_custom_loss_gets_options_temperature_and_mask_and_is_weighted(custom_module):
    s, t = randn(2, 3, 4, 4), randn(2, 3, 4, 4)
    mask = (RNG.random((2, 1, 4, 4)) > 0.5).astype("int32")
    pairs = [
        {"TEACHER": "feat", "STUDENT": "feat", "LOSS": "custom", "WEIGHT": 0.5, "NAME": "mine",
         "FUNCTION": f"{custom_module}:scaled_gap", "TEMPERATURE": 2.0, "OPTIONS": {"scale": 3.0}},
        {"TEACHER": "feat", "STUDENT": "feat", "LOSS": "l2", "WEIGHT": 0.1, "NAME": "l2"},
    ]
    got = _run_pairs(pairs, {"feat": s, "feat2": s, "teacher_feat": t, "mask": mask})
    valid = np.broadcast_to(mask.astype(bool), s.shape)
    gap = ((s - t) ** 2 * valid).mean() / mask.mean()
    np.testing.assert_allclose(got["mine"], 0.5 * gap * 3.0 / 2.0, rtol=1e-5)
    np.testing.assert_allclose(got["l2"], 0.1 * np.mean((s - t) ** 2), rtol=1e-5)
    np.testing.assert_allclose(got["total"], got["mine"] + got["l2"], rtol=1e-6)


def test_custom_loss_receives_lists_when_the_config_gives_lists(custom_module):
    s, s2, t = randn(1, 3, 4, 4), randn(1, 3, 4, 4), randn(1, 3, 4, 4)
    pairs = [{"TEACHER": ["feat"], "STUDENT": ["feat", "feat2"], "LOSS": "custom", "WEIGHT": 1.0,
              "FUNCTION": f"{custom_module}:first_minus_second"}]
    got = _run_pairs(pairs, {"feat": s, "feat2": s2, "teacher_feat": t,
                             "mask": np.ones((1, 1, 4, 4), "int32")})
    np.testing.assert_allclose(got["total"], np.mean(s - s2), rtol=1e-4, atol=1e-6)


def test_custom_loss_must_return_a_scalar(custom_module):
    pairs = [{"TEACHER": "feat", "STUDENT": "feat", "LOSS": "custom",
              "FUNCTION": f"{custom_module}:not_scalar"}]
    with pytest.raises(ConfigError, match=r"DISTILL\[0\].*shape \[-1, 3, 4, 4\].*scalar"):
        _run_pairs(pairs, {})


def test_custom_function_import_errors_name_the_pair_and_the_cause(custom_module):
    with pytest.raises(ConfigError, match=r"DISTILL\[3\]\.FUNCTION: cannot import module "
                                          r"'no_such_pkg\.mod' \(ModuleNotFoundError"):
        load_function("no_such_pkg.mod:fn", "DISTILL[3].FUNCTION")
    with pytest.raises(ConfigError, match=r"has no attribute 'missing'"):
        load_function(f"{custom_module}:missing", "DISTILL[0].FUNCTION")
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        load_function(custom_module, "DISTILL[0].FUNCTION")
    main, _, teacher = _pair_programs()
    pairs = [{"TEACHER": "feat", "STUDENT": "feat", "LOSS": "custom", "FUNCTION": "nope.x:f"}]
    with pytest.raises(ConfigError, match=r"DISTILL\[0\]\.FUNCTION \(s\.yaml\): cannot import"):
        resolve_pairs(pairs, main, teacher, source="s.yaml")  # pre-flight, nothing built


def test_default_lookup_finds_the_programs_variables_and_names_a_missing_one():
    from segdistill_cli.errors import SegDistillError

    main, startup, teacher = _pair_programs()
    (pair,) = resolve_pairs([{"TEACHER": "feat", "STUDENT": "feat2", "LOSS": "l2"}], main, teacher)
    assert find_var(main, "teacher_feat") is not None and find_var(main, "nope") is None
    pair.teacher = ["teacher_gone"]  # e.g. resolved against a teacher that was never merged
    with pytest.raises(SegDistillError, match=r"^DISTILL\[0\]\.TEACHER: variable 'teacher_gone' is "
                                              r"not in the training program \(was the teacher"):
        add_distill_losses(main, startup, [pair])


def test_kl_without_mask_or_label_is_refused():
    from segdistill_cli.errors import SegDistillError

    main, startup, teacher = _pair_programs()
    resolved = resolve_pairs([{"TEACHER": "feat", "STUDENT": "feat", "LOSS": "kl"}], main, teacher)
    with pytest.raises(SegDistillError, match=r"DISTILL\[0\]: LOSS kl needs the label or mask"):
        add_distill_losses(main, startup, resolved)
