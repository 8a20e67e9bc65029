"""Pair resolution, adapters and the teacher joining the student's program, on tiny DeepLab-like
static programs, on either IR.

The toy teacher has three bilinear resizes (image pool, decoder, logits) like the legacy Xception65
DeepLabv3+, so its logits are `bilinear_interp_v2_2.tmp_0`; the toy student has one, so its logits
are `bilinear_interp_v2_0.tmp_0` — the seed's pair. Each is built under its own unique_name guard,
through the library's layer backends and legacy-name recorder, as `programs.py` builds the real
models: on the legacy IR the teacher is a program of its own (cloned for test) that PaddleSlim's
merge joins to the student's; under PIR it is built into the student's program, frozen, under the
merged names (`recorded_programs.build_teacher_into`), and its values are found through the
recorder (`teacher.teacher_lookup`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from segdistill_cli.errors import ConfigError, SegDistillError
from segdistill_cli.paddle_env import import_paddle

paddle = import_paddle()
from paddle.base import unique_name  # noqa: E402

from segdistill_cli.distill.adapters import is_adapter_param  # noqa: E402
from segdistill_cli.distill.build import add_distill_losses  # noqa: E402
from segdistill_cli.distill.teacher import (  # noqa: E402
    TEACHER_PREFIX, check_teacher_frozen, merge_teacher, scope_values, teacher_lookup,
    teacher_persistables)
from segdistill_cli.distill.pairs import resolve_pairs  # noqa: E402
from segdistill_cli.engine.seg_loss import softmax_ce_loss  # noqa: E402
from segdistill_cli.models.layers import GraphOps, LegacyNet  # noqa: E402
from segdistill_cli.models.legacy_names import NamedOps  # noqa: E402
from segdistill_cli.models.pir_ops import PirOps  # noqa: E402
from segdistill_cli.program_vars import parameters  # noqa: E402
from segdistill_cli.programs import BuiltProgram  # noqa: E402

from conftest import IR, legacy_ir_only  # noqa: E402
from _program_checks import gradients_of  # noqa: E402

SIZE, CLASSES, IGNORE = 16, 5, 11
PLACE = paddle.CPUPlace()
PIR = IR == "pir"


@dataclass
class Net:
    built: BuiltProgram
    loss: object = None
    feeds: dict = field(default_factory=dict)

    @property
    def main(self):
        return self.built.main

    @property
    def startup(self):
        return self.built.startup

    @property
    def aliases(self) -> dict:
        return self.built.aliases

    @property
    def listing(self):
        return self.built.listing


def _layers(teacher: bool) -> tuple[LegacyNet, NamedOps]:
    """The backend `programs.py` builds with, wrapped in the legacy-name recorder: the legacy
    layers on the legacy IR (the teacher built for training, then cloned for test); PirOps
    under PIR (the teacher in inference mode, frozen, its parameters under the merged names)."""
    if PIR:
        inner = PirOps(is_test=teacher, param_prefix=TEACHER_PREFIX if teacher else "",
                       frozen=teacher)
    else:
        inner = GraphOps(is_test=False)
    ops = NamedOps(inner, cloned_for_test=teacher)
    return LegacyNet(ops, bn_momentum=0.9), ops


def conv_bn(net: LegacyNet, x, channels: int, scope: str, stride: int = 1):
    """3x3 conv (`<scope>/weights`) + BN (`<scope>/BatchNorm/...`) + ReLU."""
    with net.scope(scope):
        return net.bn_relu(net.conv(x, channels, 3, stride=stride, padding=1))


def conv1x1(net: LegacyNet, x, channels: int, scope: str, bias: bool = False):
    with net.scope(scope):
        return net.conv(x, channels, 1, bias=bias)


def _built(main, startup, image, logits, net: LegacyNet, ops: NamedOps, generator, role: str):
    aliases = {alias: ops.name_of(value) for alias, value in net.endpoints.items()}
    return BuiltProgram(main, startup, image, logits, aliases, generator, role,
                        is_test=role == "teacher", recorded=ops if PIR else None)


def _teacher_model(net: LegacyNet, image):
    s2 = net.mark("backbone.stride2", conv_bn(net, image, 8, "t/entry/conv1", stride=2))  # 8x8
    s4 = net.mark("backbone.out", conv_bn(net, s2, 16, "t/entry/conv2", stride=2))  # 16 x 4x4
    pool = conv1x1(net, net.ops.spatial_mean(s4), 16, "t/pool")
    aspp = net.mark("aspp.out", conv_bn(net, net.ops.concat([net.ops.resize_like(pool, s4), s4]),
                                        16, "t/encoder/concat"))
    decoder = net.mark("decoder.out", conv_bn(
        net, net.ops.concat([net.ops.resize_like(aspp, s2), s2]), 16, "t/decoder/conv"))
    return net.mark("logits", net.ops.resize_like(
        conv1x1(net, decoder, CLASSES, "t/logit", bias=True), image))


def build_teacher(student: Net | None = None, with_label: bool = False) -> Net:
    """Legacy IR: the teacher program, cloned for test. PIR: the teacher built into `student`'s
    program, reading its image (what `recorded_programs.build_teacher_into` does)."""
    net, ops = _layers(teacher=True)
    generator = unique_name.UniqueNameGenerator()
    if PIR:
        main, startup = student.main, student.startup
    else:
        main, startup = paddle.static.Program(), paddle.static.Program()
    with unique_name.guard(generator), paddle.static.program_guard(main, startup):
        image = student.built.image if PIR else paddle.static.data("image", [-1, 3, SIZE, SIZE],
                                                                   "float32")
        logits = _teacher_model(net, ops.feed(image, "image"))
        loss = None
        if with_label:  # a teacher that also computes its own loss reads `label`
            label = paddle.static.data("label", [-1, 1, SIZE, SIZE], "int32")
            loss = softmax_ce_loss(logits, label, paddle.ones_like(label), IGNORE)
    if not PIR:
        main = main.clone(for_test=True)
        image, logits = main.global_block().var("image"), main.global_block().var(logits.name)
    return Net(_built(main, startup, image, logits, net, ops, generator, "teacher"), loss)


def build_student(gen) -> Net:
    net, ops = _layers(teacher=False)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with unique_name.guard(gen), paddle.static.program_guard(main, startup):
        image = paddle.static.data("image", [-1, 3, SIZE, SIZE], "float32")
        label = paddle.static.data("label", [-1, 1, SIZE, SIZE], "int32")
        mask = paddle.static.data("mask", [-1, 1, SIZE, SIZE], "int32")
        x = ops.feed(image, "image")
        s2 = net.mark("backbone.stride2", conv_bn(net, x, 8, "conv1_1", stride=2))  # 8 x 8x8
        s4 = net.mark("backbone.out", conv_bn(net, s2, 8, "conv2_1", stride=2))  # 8 x 4x4
        logits = net.mark("logits", net.ops.resize_like(
            conv1x1(net, s4, CLASSES, "logit", bias=True), x))
        loss = softmax_ce_loss(logits, label, mask, IGNORE)
    built = _built(main, startup, image, logits, net, ops, gen, "student")
    return Net(built, loss, {"image": image, "label": label, "mask": mask})


def join_teacher(nets, scope, teacher_scope=None) -> None:
    """The teacher joins the student's program as training does it. Legacy IR: PaddleSlim's
    merge (the teacher's values from `teacher_scope`, by default its startup's, copied into
    `scope`). PIR: nothing left to do, it was built in; the student's startup initialises it."""
    if PIR:
        return
    _, student, teacher = nets
    if teacher_scope is None:
        teacher_scope = paddle.static.Scope()
        with paddle.static.scope_guard(teacher_scope):
            paddle.static.Executor(PLACE).run(teacher.startup)
    merge_teacher(teacher.main, student.main, PLACE, teacher_scope, scope)


def lookup(nets):
    """Merged name -> value: the library's lookup under PIR, the merged block on the legacy IR."""
    _, student, teacher = nets
    found = teacher_lookup(student.built, teacher.built)
    return found or student.built.var


@pytest.fixture()
def nets():
    gen = unique_name.UniqueNameGenerator()
    student = build_student(gen)
    return gen, student, build_teacher(student)


def resolve(pairs, student, teacher, **kw):
    return resolve_pairs(pairs, student.listing, teacher.listing, student.aliases,
                         teacher.aliases, **kw)


def l2(teacher_name, student_name, **extra):
    return {"TEACHER": teacher_name, "STUDENT": student_name, "LOSS": "l2", "WEIGHT": 0.1, **extra}


# ---- name resolution ----------------------------------------------------------------------------

def test_the_seed_pair_names_match_the_toy_models(nets):
    _, student, teacher = nets
    assert teacher.aliases["logits"] == "bilinear_interp_v2_2.tmp_0"
    assert student.aliases["logits"] == "bilinear_interp_v2_0.tmp_0"


@pytest.mark.parametrize("teacher_name,student_name", [
    ("logits", "logits"),  # aliases
    ("bilinear_interp_v2_2.tmp_0", "bilinear_interp_v2_0.tmp_0"),  # raw names
    ("teacher_bilinear_interp_v2_2.tmp_0", "bilinear_interp_v2_0.tmp_0"),  # prefixed raw name
    ("teacher_logits", "logits"),  # prefixed alias
])
def test_alias_raw_and_prefixed_names_resolve_to_the_merged_names(nets, teacher_name, student_name):
    _, student, teacher = nets
    (pair,) = resolve([l2(teacher_name, student_name)], student, teacher)
    assert pair.teacher == ["teacher_bilinear_interp_v2_2.tmp_0"]
    assert pair.student == ["bilinear_interp_v2_0.tmp_0"]
    assert pair.teacher_shapes == pair.student_shapes == [(-1, CLASSES, SIZE, SIZE)]
    assert pair.name == "l2_0"  # config.parse_distill sets NAME; this is the same default
    assert not pair.needs_adapters


def test_unknown_name_names_pair_side_name_and_close_candidates(nets):
    _, student, teacher = nets
    pairs = [l2("logits", "logits"), l2("bilinear_interp_v2_7.tmp_0", "logits")]
    with pytest.raises(ConfigError) as err:
        resolve(pairs, student, teacher, source="camvid.yaml")
    msg = str(err.value)
    assert msg.startswith("DISTILL[1].TEACHER (camvid.yaml): no variable or alias "
                          "'bilinear_interp_v2_7.tmp_0' in the teacher program; closest: ")
    assert "bilinear_interp_v2_2.tmp_0" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"DISTILL\[0\]\.STUDENT: .*'backbone\.ot'.*student "
                                          r"program; closest: backbone\.out"):
        resolve([l2("logits", "backbone.ot")], student, teacher)
    fsp = {"TEACHER": ["aspp.out", "nope_teacher_var"], "STUDENT": ["backbone.out"] * 2,
           "LOSS": "fsp"}
    with pytest.raises(ConfigError, match=r"DISTILL\[0\]\.TEACHER\[1\]: .*'nope_teacher_var'"):
        resolve([fsp], student, teacher)


def test_student_side_cannot_name_a_teacher_variable_once_the_teacher_joined(nets):
    _, student, teacher = nets
    join_teacher(nets, paddle.static.Scope())
    before = resolve([l2("logits", "logits")], student, teacher)  # pre-flight also works merged
    assert before[0].teacher == ["teacher_bilinear_interp_v2_2.tmp_0"]
    with pytest.raises(ConfigError, match=r"DISTILL\[0\]\.STUDENT: .*'teacher_bilinear"):
        resolve([l2("logits", "teacher_bilinear_interp_v2_2.tmp_0")], student, teacher)


def test_shape_mismatch_reports_both_shapes_and_the_fix(nets):
    _, student, teacher = nets
    with pytest.raises(ConfigError) as err:
        resolve([l2("decoder.out", "backbone.out")], student, teacher)
    assert str(err.value) == (
        "DISTILL[0]: student relu_1.tmp_0 has shape [-1, 8, 4, 4] but teacher "
        f"{teacher.aliases['decoder.out']} has [-1, 16, 8, 8] (set ADAPTER: conv1x1 and "
        "RESIZE: bilinear on this pair to adapt the student)")


def test_fsp_checks_spatial_size_within_a_side_and_channels_across(nets):
    _, student, teacher = nets
    ok = {"TEACHER": ["backbone.stride2", "decoder.out"], "STUDENT": ["backbone.stride2"] * 2,
          "LOSS": "fsp"}
    with pytest.raises(ConfigError, match=r"student .* has shape \[-1, 8, 8, 8\] but teacher "
                                          r".* has \[-1, 16, 8, 8\]; their channel counts"):
        resolve([ok], student, teacher)
    ok["TEACHER"] = ["backbone.stride2", "backbone.stride2"]
    assert resolve([ok], student, teacher)[0].teacher_shapes == [(-1, 8, 8, 8)] * 2
    bad = {**ok, "STUDENT": ["backbone.stride2", "backbone.out"]}
    with pytest.raises(ConfigError, match=r"fsp needs two student variables with the same static"):
        resolve([bad], student, teacher)


def test_duplicate_names_and_empty_section_are_refused(nets):
    _, student, teacher = nets
    with pytest.raises(ConfigError, match=r"DISTILL\[1\]\.NAME: 'same' is also the name of "
                                          r"DISTILL\[0\]"):
        resolve([l2("logits", "logits", NAME="same")] * 2, student, teacher)
    with pytest.raises(ConfigError, match=r"^DISTILL: no pairs"):
        resolve([], student, teacher)


# ---- adapters ------------------------------------------------------------------------------

def np_resize_align_corners(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize, align_corners=True, along H then W (reference for RESIZE: bilinear)."""
    def along(a, axis, out):
        size = a.shape[axis]
        src = np.arange(out) * (size - 1) / (out - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, size - 1)
        frac = (src - lo).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
        return np.take(a, lo, axis) * (1 - frac) + np.take(a, hi, axis) * frac
    return along(along(x, 2, out_h), 3, out_w)


def merged(nets, pairs):
    """Resolve, join the teacher, add losses + Momentum under the student's generator, run
    startup: the trainer's flow (engine/graph.py)."""
    gen, student, teacher = nets
    resolved = resolve(pairs, student, teacher)
    scope = paddle.static.Scope()
    join_teacher(nets, scope)
    with unique_name.guard(gen), paddle.static.program_guard(student.main, student.startup):
        distill = add_distill_losses(student.main, student.startup, resolved,
                                     mask=student.feeds["mask"],
                                     lookup=teacher_lookup(student.built, teacher.built))
        total = student.loss + distill.total
        paddle.optimizer.Momentum(learning_rate=0.05, momentum=0.9).minimize(total)
    exe = paddle.static.Executor(PLACE)
    with paddle.static.scope_guard(scope):
        exe.run(student.startup)
    return resolved, distill, total, scope, exe


def batch(seed=0, n=2):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, CLASSES, (n, 1, SIZE, SIZE)).astype("int32")
    label[rng.random(label.shape) < 0.2] = IGNORE
    return {"image": rng.standard_normal((n, 3, SIZE, SIZE)).astype("float32"), "label": label,
            "mask": (label != IGNORE).astype("int32")}


def test_conv1x1_adapter_makes_a_channel_mismatch_work_with_its_own_param_names(nets):
    pair = l2("backbone.out", "backbone.out", ADAPTER="conv1x1")  # student 8 ch, teacher 16 ch
    (plan,) = resolve([pair], nets[1], nets[2])[0].adapters
    assert (plan.in_channels, plan.out_channels, plan.out_hw) == (8, 16, None)
    _, distill, total, scope, exe = merged(nets, [pair])
    student = nets[1]
    params = {p.name: tuple(p.shape) for p in parameters(student.main)}
    adapter = {n: s for n, s in params.items() if is_adapter_param(n)}
    assert adapter == {"distill_adapter_0/weights": (16, 8, 1, 1),
                       "distill_adapter_0/BatchNorm/gamma": (16,),
                       "distill_adapter_0/BatchNorm/beta": (16,),
                       "distill_adapter_0/BatchNorm/moving_mean": (16,),
                       "distill_adapter_0/BatchNorm/moving_variance": (16,)}
    with paddle.static.scope_guard(scope):
        before = scope_values(scope, ["distill_adapter_0/weights"])
        (value,) = exe.run(student.main, feed=batch(), fetch_list=[distill.terms["l2_0"]])
        after = scope_values(scope, ["distill_adapter_0/weights"])
    assert np.isfinite(value) and value > 0
    assert not np.array_equal(before["distill_adapter_0/weights"],
                              after["distill_adapter_0/weights"])  # trained with the student


def test_bilinear_resize_adapter_matches_align_corners_reference(nets):
    pair = l2("backbone.stride2", "backbone.out", RESIZE="bilinear", WEIGHT=1.0)  # 4x4 -> 8x8
    resolved, distill, _, scope, exe = merged(nets, [pair])
    assert resolved[0].adapters[0].out_hw == (8, 8) and resolved[0].adapters[0].out_channels is None
    main, find = nets[1].main, lookup(nets)
    with paddle.static.scope_guard(scope):
        loss, s, t = exe.run(main, feed=batch(1), fetch_list=[
            distill.total, find(resolved[0].student[0]), find(resolved[0].teacher[0])])
    expected = np.mean((np_resize_align_corners(s, 8, 8) - t) ** 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


# ---- the teacher in the student's program: the trainer-style flow ----------------------------

ALL_PAIRS = [
    l2("logits", "logits"),
    {"TEACHER": "logits", "STUDENT": "logits", "LOSS": "kl", "TEMPERATURE": 2.0, "NAME": "kl"},
    {"TEACHER": "logits", "STUDENT": "logits", "LOSS": "soft_label", "NAME": "soft"},
    {"TEACHER": "aspp.out", "STUDENT": "backbone.out", "LOSS": "cwd", "ADAPTER": "conv1x1",
     "NAME": "cwd"},
    {"TEACHER": ["backbone.stride2", "backbone.stride2"],
     "STUDENT": ["backbone.stride2", "backbone.stride2"], "LOSS": "fsp", "NAME": "fsp"},
]


def test_teacher_stays_bit_identical_while_the_student_trains(nets):
    """Legacy IR: the merged teacher; PIR: the teacher built into the student's program."""
    gen, student, teacher = nets
    _, distill, total, scope, exe = merged(nets, ALL_PAIRS)
    teacher_names = teacher_persistables(student.main)
    assert "teacher_t/entry/conv1/weights" in teacher_names
    assert "teacher_t/decoder/conv/BatchNorm/moving_mean" in teacher_names
    assert len(teacher_names) == 23  # 4 conv+BN blocks (5 each), the pool conv, the head (2)
    assert not gradients_of(student.main, "teacher_")
    assert gradients_of(student.main, "conv1_1/")  # the student's do exist (the control)
    teacher_params = [p for p in parameters(student.main) if p.name.startswith("teacher_")]
    if PIR:  # parameters, but none the optimizer may touch
        assert len(teacher_params) == 23
        assert all(p.stop_gradient and not p.trainable for p in teacher_params)
    else:  # merge copies them as plain persistable variables
        assert teacher_params == []
    check_teacher_frozen(student.main)
    student_params = [p.name for p in parameters(student.main)
                      if not p.name.startswith("teacher_")]
    with paddle.static.scope_guard(scope):
        teacher_before = scope_values(scope, teacher_names)
        student_before = scope_values(scope, student_params)
        for step in range(3):
            values = exe.run(student.main, feed=batch(step),
                             fetch_list=[total, *distill.terms.values()])
            assert all(np.isfinite(v) for v in values)
        teacher_after = scope_values(scope, teacher_names)
        student_after = scope_values(scope, student_params)
    assert set(distill.terms) == {"l2_0", "kl", "soft", "cwd", "fsp"}
    unchanged = [n for n in teacher_names if np.array_equal(teacher_before[n], teacher_after[n])]
    assert unchanged == teacher_names
    changed = [n for n in student_params
               if not np.array_equal(student_before[n], student_after[n])]
    assert len(changed) == len(student_params)


@legacy_ir_only("PaddleSlim's merge copies the teacher's values; under PIR the teacher is built "
                "into the student's program and its weights are loaded into the teacher_ names "
                "in place (test_pir_graph.py::test_teacher_weights_are_loaded_strictly)")
def test_merge_copies_teacher_values_under_the_prefix(nets):
    _, student, teacher = nets
    teacher_scope = paddle.static.Scope()
    with paddle.static.scope_guard(teacher_scope):
        paddle.static.Executor(PLACE).run(teacher.startup)
    scope = paddle.static.Scope()
    names = merge_teacher(teacher.main, student.main, PLACE, teacher_scope, scope)
    original = np.array(teacher_scope.find_var("t/entry/conv1/weights").get_tensor())
    np.testing.assert_array_equal(scope_values(scope, names)["teacher_t/entry/conv1/weights"],
                                  original)


@legacy_ir_only("merge's own checks; under PIR the teacher reads the student's image value "
                "itself, and its strict in-place load refuses a missing weight file "
                "(test_pir_graph.py::test_teacher_weights_are_loaded_strictly)")
def test_merge_refuses_an_unfed_teacher_input_and_an_uninitialised_teacher(nets):
    gen, student, _ = nets
    teacher = build_teacher(with_label=True)
    teacher_scope = paddle.static.Scope()
    with pytest.raises(SegDistillError, match=r"teacher reads input 'label'"):
        merge_teacher(teacher.main, student.main, PLACE, teacher_scope, paddle.static.Scope())
    with pytest.raises(SegDistillError, match=r"^23 teacher variable\(s\) have no value in the "
                                              r"teacher scope \(run its startup .*: "
                                              r"t/decoder/conv/BatchNorm/beta"):
        merge_teacher(teacher.main, student.main, PLACE, teacher_scope, paddle.static.Scope(),
                      data_name_map={"image": "image", "label": "label"})


def test_check_teacher_frozen_catches_a_trainable_teacher_variable():
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("image", [-1, 3], "float32")
        w = paddle.static.create_parameter([3, 1], "float32", name="teacher_w")
        paddle.optimizer.SGD(0.1).minimize(paddle.mean(x @ w))
    with pytest.raises(SegDistillError, match="teacher variable 'teacher_w' is trainable"):
        check_teacher_frozen(main)


@legacy_ir_only("PIR values have no generated names, so a second generator cannot make two ops "
                "write one variable")
def test_losses_under_a_different_name_generator_are_refused_before_they_corrupt_training(nets):
    """A second name generator restarts the counters (docs/design.md, Legacy facts: Name
    generators), so an adapter conv would write the student's `conv2d_0.tmp_0`. The trainer-style
    flow above (one generator) runs."""
    _, student, teacher = nets
    pairs = resolve([l2("backbone.out", "backbone.out", ADAPTER="conv1x1")], student, teacher)
    join_teacher(nets, paddle.static.Scope())
    with unique_name.guard(unique_name.UniqueNameGenerator()):
        with pytest.raises(SegDistillError, match=r"writes 'conv2d_0\.tmp_0', which the student "
                                                  r"already writes.*ONE unique_name generator"):
            add_distill_losses(student.main, student.startup, pairs)


def test_pairs_from_the_config_loader_resolve_directly(nets):
    from segdistill_cli.config import parse_distill

    _, student, teacher = nets
    pairs = parse_distill([  # lower-case keys as a user may write them; normalised by the config loader
        {"teacher": "logits", "student": "logits", "loss": "l2", "weight": 0.1},
        {"teacher": "aspp.out", "student": "backbone.out", "loss": "cwd", "adapter": "conv1x1",
         "temperature": 4},
    ])
    first, second = resolve(pairs, student, teacher)
    assert (first.name, first.weight, first.teacher) == (
        "l2_0", 0.1, ["teacher_bilinear_interp_v2_2.tmp_0"])
    assert second.options["temperature"] == 4.0 and second.adapters[0].out_channels == 16
    assert second.describe() == (
        "cwd_1: cwd x 1 on relu_1.tmp_0[-1, 8, 4, 4] <- "
        f"teacher_{teacher.aliases['aspp.out']}[-1, 16, 4, 4]; "
        "adapters: relu_1.tmp_0: conv1x1 8->16")
