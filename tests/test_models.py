"""Legacy-faithful DeepLabv3+ models: parameter names/shapes, aliases, tutorial pair, numerics."""
from __future__ import annotations


import numpy as np
import pytest

from segdistill_cli.config import load_config
from segdistill_cli.errors import ConfigError
from segdistill_cli.models import parameter_manifest
from segdistill_cli.paddle_env import import_paddle
from segdistill_cli.program_vars import parameters
from segdistill_cli.programs import build_eval, build_student_train, build_teacher

from conftest import IR, ROOT, legacy_ir_only

STUDENT = ROOT / "configs" / "cityscape.yaml"
TEACHER = ROOT / "configs" / "cityscape_teacher.yaml"
SMALL = ["TRAIN_CROP_SIZE=(65, 65)", "EVAL_CROP_SIZE=(65, 65)", "DATASET.NUM_CLASSES=3"]


def _numel(manifest: dict) -> int:
    return sum(int(np.prod(s)) for s in manifest.values())


def _persistables(built) -> dict:
    """Persistable name -> shape, as the built program lists them (under PIR: the recorder)."""
    return {v.name: tuple(v.shape) for v in built.listing.list_vars() if v.persistable}


def _name(built, value) -> str:
    """A value's variable name: its own (legacy IR), or the one the recorder gave it (PIR)."""
    return value.name if built.recorded is None else built.recorded.name_of(value)


def _param(built, name: str):
    return next(p for p in parameters(built.main) if p.name == name)


# PIR calls a few ops other than the legacy IR; and in-place ones end in "_" (pd_op.batch_norm_).
_PIR_TYPES = {"bilinear_interp": "bilinear_interp_v2"}


def _ops(built) -> list[tuple[str, dict]]:
    """(legacy op type, attributes) of every op of the built program, on either IR."""
    block = built.main.global_block()
    if IR == "pir":
        types = (op.name().removeprefix("pd_op.").rstrip("_") for op in block.ops)
        return [(_PIR_TYPES.get(t, t), op.attrs()) for t, op in zip(types, block.ops)]
    return [(op.type, {n: op.attr(n) for n in op.attr_names}) for op in block.ops]


def _dropout_prob(built) -> float:
    """The dropout op's probability: an attribute on the legacy IR, an input under PIR."""
    block = built.main.global_block()
    if IR == "pir":
        (op,) = [op for op in block.ops if op.name() == "pd_op.dropout"]
        return op.operand_source(2).get_defining_op().attrs()["value"]
    (op,) = [op for op in block.ops if op.type == "dropout"]
    return op.attr("dropout_prob")


def _resize_outputs(built) -> list[str]:
    """The output names of the bilinear resizes, as the program (or the recorder) names them."""
    if built.recorded is not None:
        return [op.outputs["Out"][0] for op in built.recorded.ops
                if op.type == "bilinear_interp_v2"]
    return [op.output("Out")[0] for op in built.main.global_block().ops
            if op.type == "bilinear_interp_v2"]


@pytest.fixture(scope="module")
def tutorial():
    """The tutorial pair, built once at its real 769x769 crop (graph only, never run)."""
    student = build_student_train(load_config(STUDENT))
    teacher = build_teacher(load_config(TEACHER), student.image.shape)
    return student, teacher


# ---- manifests ----------------------------------------------------------------------------------


def test_tutorial_manifests_match_reference_counts():
    teacher = parameter_manifest(load_config(TEACHER))
    student = parameter_manifest(load_config(STUDENT))
    assert (len(teacher), _numel(teacher)) == (732, 41_257_699)
    assert (len(student), _numel(student)) == (262, 1_850_515)


def test_teacher_legacy_names_and_shapes():
    m = parameter_manifest(load_config(TEACHER))
    expected = {
        "xception_65/entry_flow/conv1/weights": (32, 3, 3, 3),
        "xception_65/entry_flow/conv2/weights": (64, 32, 3, 3),
        "xception_65/entry_flow/conv1/BatchNorm/moving_mean": (32,),
        "xception_65/entry_flow/block1/separable_conv1/depthwise/weights": (64, 1, 3, 3),
        "xception_65/entry_flow/block1/separable_conv1/pointwise/BatchNorm/moving_variance": (128,),
        "xception_65/entry_flow/block1/shortcut/weights": (128, 64, 1, 1),
        "xception_65/entry_flow/block3/shortcut/weights": (728, 256, 1, 1),
        "xception_65/middle_flow/block16/separable_conv3/pointwise/weights": (728, 728, 1, 1),
        "xception_65/exit_flow/block1/shortcut/weights": (1024, 728, 1, 1),
        "xception_65/exit_flow/block2/separable_conv3/pointwise/weights": (2048, 1536, 1, 1),
        "encoder/image_pool/weights": (256, 2048, 1, 1),
        "encoder/aspp0/weights": (256, 2048, 1, 1),
        "encoder/aspp3/depthwise/weights": (2048, 1, 3, 3),
        "encoder/aspp3/pointwise/weights": (256, 2048, 1, 1),
        "encoder/concat/weights": (256, 1280, 1, 1),
        "decoder/concat/weights": (48, 256, 1, 1),
        "decoder/separable_conv1/depthwise/weights": (304, 1, 3, 3),
        "decoder/separable_conv1/pointwise/weights": (256, 304, 1, 1),
        "decoder/separable_conv2/pointwise/BatchNorm/gamma": (256,),
        "logit/weights": (19, 256, 1, 1),
        "logit/biases": (19,),
    }
    for name, shape in expected.items():
        assert m[name] == shape, name
    assert "xception_65/middle_flow/block1/shortcut/weights" not in m  # identity skip
    assert "xception_65/exit_flow/block2/shortcut/weights" not in m  # has_skip=False
    assert not any(k.startswith("xception_65/middle_flow/block17") for k in m)


def test_student_legacy_names_and_shapes():
    m = parameter_manifest(load_config(STUDENT))
    expected = {
        "conv1_1_weights": (32, 3, 3, 3), "conv1_1_bn_mean": (32,),
        "conv2_1_expand_weights": (32, 32, 1, 1),  # expand conv exists although t=1
        "conv2_1_dwise_weights": (32, 1, 3, 3), "conv2_1_linear_weights": (16, 32, 1, 1),
        "conv3_1_expand_weights": (96, 16, 1, 1), "conv3_2_expand_weights": (144, 24, 1, 1),
        "conv8_1_expand_weights": (960, 160, 1, 1), "conv8_1_linear_weights": (320, 960, 1, 1),
        "conv8_1_linear_bn_variance": (320,), "logit/weights": (19, 320, 1, 1),
        "logit/biases": (19,),
    }
    for name, shape in expected.items():
        assert m[name] == shape, name
    assert "conv9_weights" not in m and "conv8_2_expand_weights" not in m
    assert not any(k.startswith(("encoder/", "decoder/")) for k in m)


def test_depth_multiplier_half_uses_legacy_truncation():
    m = parameter_manifest(load_config(STUDENT, ["MODEL.DEEPLAB.DEPTH_MULTIPLIER=0.5"]))
    assert len(m) == 262
    # int(32*0.5)=16, groups int(c*0.5), expansions int(round(in*t)).
    assert m["conv1_1_weights"] == (16, 3, 3, 3)
    assert m["conv2_1_expand_weights"] == (16, 16, 1, 1)
    assert m["conv2_1_linear_weights"] == (8, 16, 1, 1)
    assert m["conv3_1_expand_weights"] == (48, 8, 1, 1)
    assert m["conv7_1_linear_weights"] == (80, 288, 1, 1)
    assert m["conv8_1_linear_weights"] == (160, 480, 1, 1)
    assert m["logit/weights"] == (19, 160, 1, 1)
    assert _numel(m) == 496_243


def test_rgba_input_changes_first_conv_only():
    m = parameter_manifest(load_config(TEACHER, ["DATASET.IMAGE_TYPE=rgba"]))
    assert m["xception_65/entry_flow/conv1/weights"] == (32, 4, 3, 3)
    assert len(m) == 732


def test_manifest_equals_built_programs(tutorial):
    student, teacher = tutorial
    for built, path in ((student, STUDENT), (teacher, TEACHER)):
        params = _persistables(built)
        assert params == parameter_manifest(load_config(path)), path


@pytest.mark.parametrize("overrides", [
    ["MODEL.DEEPLAB.DEPTH_MULTIPLIER=0.5", "MODEL.DEEPLAB.ENCODER_WITH_ASPP=True",
     "MODEL.DEEPLAB.ENABLE_DECODER=True", "MODEL.DEEPLAB.OUTPUT_STRIDE=8"],
    ["MODEL.DEEPLAB.BACKBONE=xception_41", "MODEL.DEEPLAB.ASPP_WITH_SEP_CONV=False",
     "MODEL.DEEPLAB.DECODER_USE_SEP_CONV=False", "MODEL.DEEPLAB.ENCODER_WITH_ASPP=True",
     "MODEL.DEEPLAB.ENABLE_DECODER=True"],
])
def test_manifest_equals_built_program_for_variants(overrides):
    cfg = load_config(STUDENT, SMALL + overrides)
    assert _persistables(build_student_train(cfg)) == parameter_manifest(cfg)


def test_xception71_and_plain_conv_names():
    m = parameter_manifest(load_config(TEACHER, ["MODEL.DEEPLAB.BACKBONE=xception_71",
                                                 "MODEL.DEEPLAB.ASPP_WITH_SEP_CONV=False",
                                                 "MODEL.DEEPLAB.DECODER_USE_SEP_CONV=False"]))
    assert m["xception_71/entry_flow/block5/shortcut/weights"] == (728, 728, 1, 1)
    assert m["encoder/aspp1/weights"] == (256, 2048, 3, 3)
    assert m["decoder/decoder_conv1/weights"] == (256, 304, 3, 3)
    # decode point 3: the shortcut comes from entry block3 (256 ch)
    assert m["decoder/concat/weights"] == (48, 256, 1, 1)


def test_bad_model_settings_are_config_errors():
    with pytest.raises(ConfigError, match="DEPTH_MULTIPLIER"):
        parameter_manifest(load_config(STUDENT, ["MODEL.DEEPLAB.DEPTH_MULTIPLIER=3.0"]))
    with pytest.raises(ConfigError, match="NORM_TYPE"):
        parameter_manifest(load_config(STUDENT, ["MODEL.DEFAULT_NORM_TYPE=gn"]))


# ---- built programs: names, aliases, numerics ---------------------------------------------------


def test_tutorial_pair_names_and_shapes(tutorial):
    student, teacher = tutorial
    assert _name(student, student.logits) == "bilinear_interp_v2_0.tmp_0"
    assert _name(teacher, teacher.logits) == "bilinear_interp_v2_2.tmp_0"
    assert tuple(student.logits.shape) == tuple(teacher.logits.shape) == (-1, 19, 769, 769)
    assert student.aliases["logits"] == _name(student, student.logits)
    assert _name(teacher, teacher.var("logits")) == _name(teacher, teacher.logits)
    assert _name(student, student.image) == _name(teacher, teacher.image) == "image"


def test_alias_maps(tutorial):
    student, teacher = tutorial
    shapes = lambda b: {a: tuple(b.var(a).shape) for a in b.aliases}  # noqa: E731
    assert shapes(student) == {
        "image": (-1, 3, 769, 769), "backbone.stride4": (-1, 144, 193, 193),
        "backbone.stride8": (-1, 32, 97, 97), "backbone.stride16": (-1, 320, 49, 49),
        "backbone.out": (-1, 320, 49, 49), "logits_lowres": (-1, 19, 49, 49),
        "logits": (-1, 19, 769, 769)}
    assert shapes(teacher) == {
        "image": (-1, 3, 769, 769), "backbone.stride4": (-1, 256, 193, 193),
        "backbone.stride8": (-1, 256, 97, 97), "backbone.stride16": (-1, 2048, 49, 49),
        "backbone.out": (-1, 2048, 49, 49), "aspp.concat": (-1, 1280, 49, 49),
        "aspp.out": (-1, 256, 49, 49), "aspp.dropout": (-1, 256, 49, 49),
        "decoder.concat": (-1, 304, 193, 193), "decoder.out": (-1, 256, 193, 193),
        "logits_lowres": (-1, 19, 193, 193), "logits": (-1, 19, 769, 769)}
    assert student.aliases["backbone.stride4"].startswith("relu6_")  # conv3_2 depthwise output
    assert teacher.aliases["aspp.dropout"].startswith("dropout_")


def test_legacy_op_attributes(tutorial):
    student, teacher = tutorial
    ops = _ops(teacher)
    assert _resize_outputs(teacher) == [f"bilinear_interp_v2_{i}.tmp_0" for i in range(3)]
    assert [(a["out_h"], a["align_corners"]) for t, a in ops if t == "bilinear_interp_v2"] == [
        (49, True), (193, True), (769, True)]
    (dropout,) = [a for t, a in ops if t == "dropout"]
    assert dropout.get("dropout_implementation", dropout.get("mode")) == "downgrade_in_infer"
    assert _dropout_prob(teacher) == pytest.approx(0.9) and dropout["is_test"]
    bn = {(round(a["epsilon"], 7), round(a["momentum"], 3), a["is_test"])
          for t, a in ops if t == "batch_norm"}
    assert bn == {(1e-3, 0.99, True), (1e-5, 0.99, True)}
    student_ops = _ops(student)
    student_bn = {(round(a["epsilon"], 7), round(a["momentum"], 3), a["is_test"])
                  for t, a in student_ops if t == "batch_norm"}
    assert student_bn == {(1e-5, 0.9, False)}
    types = [t for t, _ in student_ops]
    assert "relu6" in types and "depthwise_conv2d" in types and "relu" not in types


def test_weight_decay_attributes(tutorial):
    student, teacher = tutorial
    gamma = _param(teacher, "xception_65/entry_flow/conv1/BatchNorm/gamma")
    assert gamma.regularizer is not None and gamma.regularizer._coeff == 0.0
    for name in ("xception_65/entry_flow/conv1/weights", "logit/biases"):
        assert _param(teacher, name).regularizer is None
    assert _param(student, "conv1_1_bn_scale").regularizer is None
    assert not _param(student, "conv1_1_bn_mean").trainable


@legacy_ir_only("PIR values have no names to continue; the recorder names them "
                "(test_tutorial_pair_names_and_shapes)")
def test_guard_continues_the_name_generator():
    cfg = load_config(STUDENT, SMALL)
    built = build_student_train(cfg)
    paddle = import_paddle()
    with built.guard():
        extra = paddle.nn.functional.interpolate(built.logits, size=[33, 33], mode="bilinear")
        label = paddle.static.data("label", [-1, 1, 65, 65], "int32")
    assert extra.name == "bilinear_interp_v2_1.tmp_0"  # not a second bilinear_interp_v2_0
    assert built.main.global_block().has_var(label.name)


# ---- running the programs -----------------------------------------------------------------------


def _run(built, *images: np.ndarray) -> list[np.ndarray]:
    """Initialise once, then fetch the logits for each image batch in turn (same weights)."""
    paddle = import_paddle()
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(built.startup)
        return [exe.run(built.main, feed={"image": image}, fetch_list=[built.logits])[0]
                for image in images]


def test_forward_shapes_and_inference_behaviour():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 3, 65, 65)).astype("float32")
    student = build_student_train(load_config(STUDENT, SMALL))
    teacher = build_teacher(load_config(TEACHER, SMALL), student.image.shape)
    s1, s_single = _run(student, image, image[:1])
    t1, t2, t_single = _run(teacher, image, image, image[:1])
    assert s1.shape == t1.shape == (2, 3, 65, 65)
    assert np.isfinite(t1).all() and np.isfinite(s1).all()
    np.testing.assert_array_equal(t1, t2)  # dropout in inference mode: deterministic
    # BN uses moving statistics in the teacher: sample 0 does not depend on the rest of the batch.
    np.testing.assert_allclose(t_single[0], t1[0], rtol=1e-4, atol=1e-7)
    # ... whereas the student (training program) normalises with batch statistics.
    assert not np.allclose(s_single[0], s1[0], rtol=1e-3, atol=1e-6)


def test_eval_program_is_in_inference_mode():
    cfg = load_config(STUDENT, SMALL + ["EVAL_CROP_SIZE=(49, 33)"])
    built = build_eval(cfg)
    assert tuple(built.image.shape) == (-1, 3, 33, 49) and tuple(built.logits.shape) == (-1, 3, 33, 49)
    bn = [a["is_test"] for t, a in _ops(built) if t == "batch_norm"]
    assert bn and all(bn)


def _onednn_ops(program) -> list:
    """The ops of `program` that run on oneDNN: marked `use_mkldnn` (legacy IR) or rewritten
    into the `onednn_op` dialect (PIR)."""
    from segdistill_cli.program_vars import is_pir_program

    if is_pir_program(program):
        return [op.name() for op in program.global_block().ops if op.name().startswith("onednn_op.")]
    return [op.type for op in program.global_block().ops
            if op.has_attr("use_mkldnn") and op.attr("use_mkldnn")]


def test_onednn_inference_programs_match_plain_kernels(monkeypatch):
    """The teacher's kernel choice runs conv/BN/ReLU on oneDNN on either IR: every such op of
    the teacher, not the resize; same logits as Paddle's own kernels (within float noise, and
    not bit-identical: the oneDNN kernels did run). SEGDISTILL_ONEDNN=0 is the control."""
    import numpy as np

    from segdistill_cli.distill.teacher import ONEDNN_INFERENCE_OPS, use_teacher_kernels
    from segdistill_cli.paddle_env import import_paddle
    from segdistill_cli.program_vars import is_pir_program, parameters
    from segdistill_cli.programs import build_teacher

    paddle = import_paddle()
    if not paddle.base.core.is_compiled_with_mkldnn():
        pytest.skip("this Paddle is built without oneDNN")
    cfg = load_config(ROOT / "configs" / "camvid_teacher.yaml",
                      ["TRAIN_CROP_SIZE=(64, 48)", "MODEL.DEEPLAB.DEPTH_MULTIPLIER=0.5"])
    image = np.random.RandomState(0).randn(2, 3, 48, 64).astype("float32")
    outputs = []
    for flag in ("1", "0"):
        monkeypatch.setenv("SEGDISTILL_ONEDNN", flag)
        paddle.seed(5)
        teacher = build_teacher(cfg)
        scope = paddle.static.Scope()
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(teacher.startup, scope=scope)
        for p in parameters(teacher.main):  # non-trivial BN statistics and weights
            value = np.random.RandomState(len(p.name)).rand(*p.shape).astype("float32") * 0.2
            scope.find_var(p.name).get_tensor().set(value + 0.01, paddle.CPUPlace())
        candidates = _kernel_candidates(teacher.main)
        count = use_teacher_kernels(teacher.main, prefix="")  # the program is the teacher alone
        marked = _onednn_ops(teacher.main)
        assert count == len(marked) == (len(candidates) if flag == "1" else 0)
        kinds = {m.replace("onednn_op.", "") for m in marked}
        assert kinds <= ONEDNN_INFERENCE_OPS | {"batch_norm_"}
        with paddle.static.scope_guard(scope):  # (PIR's executor also reads the global scope)
            (logits,) = exe.run(teacher.main, feed={"image": image},
                                fetch_list=[teacher.logits], scope=scope)
        outputs.append(np.asarray(logits))
    scale = np.abs(outputs[1]).max()
    assert scale > 0 and len(candidates) > 100
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5 * scale, rtol=1e-4)
    assert not np.array_equal(outputs[0], outputs[1])
    assert is_pir_program(teacher.main) or all(
        op.type != "bilinear_interp_v2" or not op.attr("use_mkldnn")
        for op in teacher.main.global_block().ops)


def _kernel_candidates(program) -> list:
    """The teacher's conv, BN and ReLU ops (what oneDNN should run), either IR."""
    from segdistill_cli.distill.teacher import ONEDNN_INFERENCE_OPS
    from segdistill_cli.program_vars import is_pir_program

    if is_pir_program(program):
        wanted = {f"pd_op.{n}" for n in ONEDNN_INFERENCE_OPS | {"batch_norm_"}}
        return [op.name() for op in program.global_block().ops if op.name() in wanted]
    return [op.type for op in program.global_block().ops if op.type in ONEDNN_INFERENCE_OPS]
