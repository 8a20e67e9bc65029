"""Legacy weights: the one-file-per-variable codec (byte-identical to Paddle), pdparams, structural
checks and loading into static programs (strict teacher / tolerant student, merged programs)."""
from __future__ import annotations

import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
from _legacy_fixtures import sparse_legacy_dir
import pytest

from segdistill_cli.config import load_config
from segdistill_cli.errors import SegDistillError
from segdistill_cli.models import parameter_manifest
from segdistill_cli.models.pir_ops import PirOps
from segdistill_cli.paddle_env import import_paddle
from segdistill_cli.program_vars import parameters
from segdistill_cli.weights import (LoadReport, check_structure, encode_tensor,
                                    load_weights, make_legacy_tarball, open_weights,
                                    read_pdparams, read_tensor, read_tensor_info, scan_weights,
                                    write_legacy_dir, write_tensor)
from conftest import ROOT, legacy_ir_only

paddle = import_paddle()

# The tiny model below: its parameters (BN moving stats included) and shapes.
TINY = {"conv1/weights": (4, 3, 3, 3), "conv1/BatchNorm/gamma": (4,),
        "conv1/BatchNorm/beta": (4,), "conv1/BatchNorm/moving_mean": (4,),
        "conv1/BatchNorm/moving_variance": (4,), "logit/weights": (5, 4, 1, 1),
        "logit/biases": (5,)}


def tiny_program(with_optimizer=True, is_test=False):
    """conv+BN+logit with legacy-style names, plus Momentum (velocity vars, learning_rate_0).
    Built with the library's PIR-capable primitives, which build on either IR."""
    ops = PirOps(is_test=is_test)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("image", [None, 3, 8, 8])
        y = ops.conv2d(x, 4, 3, 1, 0, 1, 1, "conv1/weights", None)
        y = ops.relu(ops.batch_norm(y, "conv1/BatchNorm/",
                                    ("gamma", "beta", "moving_mean", "moving_variance"),
                                    1e-5, 0.9, no_decay=False))
        y = ops.conv2d(y, 5, 1, 1, 0, 1, 1, "logit/weights", "logit/biases")
        if with_optimizer:
            paddle.optimizer.Momentum(0.1).minimize(paddle.mean(y))
    return main, startup, y


def fresh(program_parts):
    main, startup, out = program_parts
    scope, place = paddle.static.Scope(), paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    with paddle.static.scope_guard(scope):
        exe.run(startup)
    return main, scope, place, exe, out


def values(scope, name):
    return np.array(scope.find_var(name).get_tensor())


def random_tensors(manifest, seed=0):
    rng = np.random.default_rng(seed)
    out = {n: rng.standard_normal(s).astype(np.float32) for n, s in manifest.items()}
    for name in out:  # keep BN variances valid so forward passes stay finite
        if name.endswith(("moving_variance", "bn_variance")):
            out[name] = np.abs(out[name]) + 0.5
    return out


# ---- the codec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int32", "int8",
                                   "uint8", "bool"])
def test_round_trip_every_dtype(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    write_tensor(tmp_path / "a/b", arr)
    back = read_tensor(tmp_path / "a/b")
    assert back.dtype == arr.dtype and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr)


def test_header_layout_and_packed_dims(tmp_path):
    blob = encode_tensor(np.ones((2, 300), np.float32))
    # u32 0 | u64 0 | u32 0 | i32 len | 08 05 | 10 02 | 10 ac 02 | data
    assert blob[:20] == struct.pack("<IQIi", 0, 0, 0, 7)
    assert blob[20:27] == bytes([0x08, 5, 0x10, 2, 0x10, 0xAC, 0x02])
    assert len(blob) == 27 + 600 * 4
    # the same tensor with packed dims (field 2, wire type 2) and one LoD level reads the same
    desc = bytes([0x08, 5, 0x12, 3, 2, 0xAC, 0x02])
    lod = struct.pack("<Q", 8) + struct.pack("<Q", 0)
    packed = (struct.pack("<IQ", 0, 1) + lod + struct.pack("<Ii", 0, len(desc)) + desc
              + np.full((2, 300), 1, np.float32).tobytes())
    (tmp_path / "p").write_bytes(packed)
    info = read_tensor_info(tmp_path / "p")
    assert info.shape == (2, 300) and info.dtype == np.float32
    np.testing.assert_array_equal(read_tensor(tmp_path / "p"), np.ones((2, 300), np.float32))


def test_writer_is_byte_identical_to_paddle_save_vars(tmp_path):
    main, scope, place, exe, _ = fresh(tiny_program())
    with paddle.static.scope_guard(scope):
        paddle.static.save_vars(exe, str(tmp_path / "paddle"), main,
                                predicate=lambda v: v.persistable)
    saved = open_weights(tmp_path / "paddle").names()
    assert set(TINY) < set(saved) and "conv1/weights_velocity_0" in saved
    for name in saved:
        ours = encode_tensor(values(scope, name))
        assert (tmp_path / "paddle" / name).read_bytes() == ours, name
        np.testing.assert_array_equal(read_tensor(tmp_path / "paddle" / name), values(scope, name))


def _corrupt(path: Path, how: str) -> None:
    good = encode_tensor(np.ones((4, 3), np.float32))
    if how == "truncated data":
        path.write_bytes(good[:-5])
    elif how == "trailing bytes":
        path.write_bytes(good + b"\0" * 4)
    elif how == "bad header":
        path.write_bytes(struct.pack("<I", 7) + good[4:])
    elif how == "truncated header":
        path.write_bytes(good[:10])
    elif how == "unsupported dtype":  # BF16 = 22
        path.write_bytes(good.replace(bytes([0x08, 5]), bytes([0x08, 22]), 1))
    elif how == "garbage desc":
        path.write_bytes(good[:20] + bytes([0x1A, 0xFF]) + good[22:])


@pytest.mark.parametrize("how,message", [
    ("truncated data", "needs 48"), ("trailing bytes", "52 data bytes"),
    ("bad header", "bad header"), ("truncated header", "truncated header"),
    ("unsupported dtype", "unsupported dtype in weight file"),
    ("garbage desc", "unexpected TensorDesc field")])
def test_corrupt_files_name_the_file(tmp_path, how, message):
    path = tmp_path / "conv1_weights"
    _corrupt(path, how)
    with pytest.raises(SegDistillError) as err:
        read_tensor(path)
    assert str(path) in str(err.value)
    assert re.search(message, str(err.value))
    if how == "unsupported dtype":
        assert "data_type 22" in str(err.value)


def test_scan_reads_headers_and_skips_non_tensors(tmp_path):
    d = write_legacy_dir(tmp_path / "w", random_tensors(TINY))
    (d / "__model__").write_bytes(b"\x0a\x05hello")
    scanned = scan_weights(d)
    assert {n: i.shape for n, i in scanned.items()} == TINY
    assert scan_weights(d, ["logit/biases", "nope"]).keys() == {"logit/biases"}


# ---- pdparams -----------------------------------------------------------------------------------

def test_pdparams_dir_and_file_and_refusal_of_code(tmp_path):
    arrays = random_tensors(TINY)
    blob = dict(arrays, **{"StructuredToParameterName@@": {"a": "b"}})
    (tmp_path / "ckpt").mkdir()
    with open(tmp_path / "ckpt" / "model.pdparams", "wb") as fh:
        pickle.dump(blob, fh, protocol=2)  # legacy (py2-era) protocol
    got = read_pdparams(tmp_path / "ckpt" / "model.pdparams")
    assert got.keys() == arrays.keys()
    np.testing.assert_array_equal(got["logit/weights"], arrays["logit/weights"])
    # a dir holding model.pdparams wins over tensor files, like legacy load_pretrained_weights
    write_tensor(tmp_path / "ckpt" / "logit" / "biases", np.zeros(5, np.float32))
    src = open_weights(tmp_path / "ckpt")
    np.testing.assert_array_equal(src.read("logit/biases"), arrays["logit/biases"])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.pdparams", "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(SegDistillError, match="evil.pdparams.*refusing to load posix.system"):
        read_pdparams(tmp_path / "evil.pdparams")


def test_reads_paddle_static_save_pdparams(tmp_path):
    main, scope, _, _, _ = fresh(tiny_program())
    with paddle.static.scope_guard(scope):
        paddle.static.save(main, str(tmp_path / "model"))
    got = read_pdparams(tmp_path / "model.pdparams")
    assert got.keys() == TINY.keys()  # parameters only; optimizer state is in model.pdopt
    for name in TINY:
        np.testing.assert_array_equal(got[name], values(scope, name))


def test_load_from_pdparams_file(tmp_path):
    arrays = random_tensors(TINY, seed=3)
    with open(tmp_path / "m.pdparams", "wb") as fh:
        pickle.dump(arrays, fh, protocol=4)
    main, scope, place, _, _ = fresh(tiny_program())
    report = load_weights(main, tmp_path / "m.pdparams", scope=scope, place=place, strict=True)
    assert sorted(report.loaded) == sorted(TINY)
    np.testing.assert_array_equal(values(scope, "conv1/weights"), arrays["conv1/weights"])


# ---- loading into a program ---------------------------------------------------------------------

def test_round_trip_dir_to_program_strict(tmp_path):
    arrays = random_tensors(TINY)
    d = write_legacy_dir(tmp_path / "w", dict(arrays, extra_velocity_0=np.zeros(3, np.float32)))
    main, scope, place, exe, out = fresh(tiny_program())
    before_lr = values(scope, "learning_rate_0")
    report = load_weights(main, d, scope=scope, place=place, strict=True, label="teacher weights")
    assert sorted(report.loaded) == sorted(TINY) and not report.missing
    assert report.unexpected == ["extra_velocity_0"]
    for name, arr in arrays.items():
        np.testing.assert_array_equal(values(scope, name), arr)
    np.testing.assert_array_equal(values(scope, "learning_rate_0"), before_lr)
    # the loaded values are the ones the program computes with: an inference build of the same
    # model (BN on its moving statistics) reads them from the scope by name
    test_prog, _, test_out = tiny_program(with_optimizer=False, is_test=True)
    img = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with paddle.static.scope_guard(scope):
        got = exe.run(test_prog, feed={"image": img}, fetch_list=[test_out])[0]
    a = arrays
    conv = np.zeros((1, 4, 6, 6), np.float32)
    for i in range(6):
        for j in range(6):
            conv[0, :, i, j] = np.tensordot(a["conv1/weights"], img[0, :, i:i + 3, j:j + 3], 3)
    bn = lambda k: a[f"conv1/BatchNorm/{k}"][None, :, None, None]  # noqa: E731
    h = np.maximum((conv - bn("moving_mean")) / np.sqrt(bn("moving_variance") + 1e-5)
                   * bn("gamma") + bn("beta"), 0)
    want = np.einsum("oc,nchw->nohw", a["logit/weights"][:, :, 0, 0], h) \
        + a["logit/biases"][None, :, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_paddle_load_vars_reads_our_directory(tmp_path):
    arrays = random_tensors(TINY, seed=5)
    d = write_legacy_dir(tmp_path / "w", arrays)
    main, scope, place, exe, _ = fresh(tiny_program())
    with paddle.static.scope_guard(scope):
        paddle.static.load_vars(exe, str(d), main_program=main,
                                vars=parameters(main))
    for name, arr in arrays.items():
        np.testing.assert_array_equal(values(scope, name), arr)


def test_strict_names_missing_and_misshaped_and_loads_nothing(tmp_path):
    arrays = random_tensors(TINY)
    del arrays["conv1/BatchNorm/moving_mean"]
    arrays["logit/weights"] = np.zeros((19, 4, 1, 1), np.float32)
    d = write_legacy_dir(tmp_path / "w", arrays)
    main, scope, place, _, _ = fresh(tiny_program())
    before = values(scope, "conv1/weights")
    with pytest.raises(SegDistillError) as err:
        load_weights(main, d, scope=scope, place=place, strict=True, label="teacher weights")
    msg = str(err.value)
    assert msg.startswith(f"teacher weights in {d} do not fit the model: 7 parameters")
    assert "1 missing (conv1/BatchNorm/moving_mean)" in msg
    assert "1 with the wrong shape or dtype (logit/weights: file [19, 4, 1, 1], model [5, 4, 1, 1])" in msg
    np.testing.assert_array_equal(values(scope, "conv1/weights"), before)
    with pytest.raises(SegDistillError, match=f"teacher weights not found: {tmp_path}/nope"):
        load_weights(main, tmp_path / "nope", scope=scope, place=place, strict=True,
                     label="teacher weights")


def test_strict_lists_first_few_and_the_count(tmp_path):
    d = write_legacy_dir(tmp_path / "w", {"unrelated": np.zeros(1, np.float32)})
    main, scope, place, _, _ = fresh(tiny_program())
    with pytest.raises(SegDistillError, match=r"7 missing \(conv1/weights, .*, \.\.\. and 2 more\)"):
        load_weights(main, d, scope=scope, place=place, strict=True)


def test_tolerant_load_skips_and_reports_like_legacy(tmp_path):
    arrays = random_tensors(TINY)
    del arrays["logit/biases"]
    arrays["logit/weights"] = np.zeros((19, 4, 1, 1), np.float32)  # other NUM_CLASSES
    d = write_legacy_dir(tmp_path / "w", dict(arrays, **{"logit/weights_velocity_0":
                                                         np.zeros(1, np.float32)}))
    main, scope, place, _, _ = fresh(tiny_program())
    lines: list[str] = []
    report = load_weights(main, d, scope=scope, place=place, strict=False, log=lines.append)
    assert isinstance(report, LoadReport)
    assert report.missing == ["logit/biases"]
    assert [m.name for m in report.mismatched] == ["logit/weights"]
    assert len(report.loaded) == 5 and report.total == 7
    assert report.unexpected == ["logit/weights_velocity_0"]
    assert lines == [
        f"[SKIP] Shape of pretrained weight {d}/logit/weights doesn't match. "
        "(Pretrained: [19, 4, 1, 1] float32, Actual: [5, 4, 1, 1] float32)",
        f"[SKIP] Pretrained weight {d}/logit/biases doesn't exist",
        f"There are 5/7 variables in {d} are loaded."]
    np.testing.assert_array_equal(values(scope, "conv1/weights"), arrays["conv1/weights"])
    # a missing folder is not fatal for a student: it trains from scratch, and says so
    report = load_weights(main, tmp_path / "none", scope=scope, place=place, strict=False,
                          log=lines.append)
    assert not report.found and "does not exist, training from scratch" in lines[-1]


def test_corrupt_file_fails_the_load_naming_it(tmp_path):
    d = write_legacy_dir(tmp_path / "w", random_tensors(TINY))
    _corrupt(d / "logit" / "biases", "truncated data")
    main, scope, place, _, _ = fresh(tiny_program())
    with pytest.raises(SegDistillError, match=f"corrupt weight file {d}/logit/biases"):
        load_weights(main, d, scope=scope, place=place, strict=False, log=lambda s: None)


@legacy_ir_only("PaddleSlim's merge copies a legacy ProgramDesc; under PIR the teacher is built "
                "into the student's program as frozen teacher_ parameters, "
                "loaded by prefix: test_teacher_built_into_the_students_program_loads_by_prefix")
def test_teacher_before_and_after_paddleslim_merge(tmp_path):
    from paddleslim.dist import merge

    arrays = random_tensors(TINY, seed=7)
    d = write_legacy_dir(tmp_path / "teacher", arrays)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)

    def merged(load_first: bool):
        s_main, s_start, _ = tiny_program()
        t_main, t_start, _ = tiny_program(with_optimizer=False)
        scope, t_scope = paddle.static.Scope(), paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe.run(s_start)
        with paddle.static.scope_guard(t_scope):
            exe.run(t_start)
        if load_first:  # recommended: strict load into the teacher's own program and scope
            load_weights(t_main, d, scope=t_scope, place=place, strict=True)
        merge(t_main, s_main, {"image": "image"}, place, scope=scope, teacher_scope=t_scope)
        return s_main, scope

    s_main, scope = merged(load_first=True)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(values(scope, "teacher_" + name), arr)

    s_main, scope = merged(load_first=False)
    # merge makes teacher vars plain persistables: without the prefix nothing would match them
    _loads_teacher_by_prefix(s_main, d, scope, place, arrays)
    with pytest.raises(SegDistillError, match="no parameters named nobody_"):
        load_weights(s_main, d, scope=scope, place=place, strict=True, prefix="nobody_")


def test_teacher_built_into_the_students_program_loads_by_prefix(tmp_path):
    """The one-program distillation (PIR's; it builds on the legacy IR too): the teacher's frozen
    `teacher_` parameters in the student's program fill from the teacher's weights by prefix, the
    student's own parameters are left alone."""
    arrays = random_tensors(TINY, seed=9)
    d = write_legacy_dir(tmp_path / "teacher", arrays)
    main, startup, _ = tiny_program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        ops = PirOps(is_test=True, param_prefix="teacher_", frozen=True)
        image = paddle.static.data("teacher_image", [None, 3, 8, 8])
        y = ops.conv2d(image, 4, 3, 1, 0, 1, 1, "conv1/weights", None)
        y = ops.batch_norm(y, "conv1/BatchNorm/", ("gamma", "beta", "moving_mean",
                                                   "moving_variance"), 1e-5, 0.9, no_decay=False)
        ops.conv2d(ops.relu(y), 5, 1, 1, 0, 1, 1, "logit/weights", "logit/biases")
    main, scope, place, _, _ = fresh((main, startup, None))
    student_before = _loads_teacher_by_prefix(main, d, scope, place, arrays)
    assert not np.array_equal(student_before, arrays["conv1/weights"])  # control: they differ


def _loads_teacher_by_prefix(main, folder, scope, place, arrays):
    """Load `folder` into the `teacher_` parameters of `main`: every one gets its array, the
    student's own `conv1/weights` is left as it was (returned)."""
    student_before = values(scope, "conv1/weights")
    report = load_weights(main, folder, scope=scope, place=place, strict=True, prefix="teacher_")
    assert sorted(report.loaded) == sorted("teacher_" + n for n in TINY)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(values(scope, "teacher_" + name), arr)
    np.testing.assert_array_equal(values(scope, "conv1/weights"), student_before)
    return student_before


# ---- structural checks against the real manifests ------------------------------------------------

def test_teacher_structure_check_with_the_real_manifest(tmp_path):
    manifest = parameter_manifest(load_config(ROOT / "configs" / "cityscape_teacher.yaml"))
    assert len(manifest) == 732
    d = tmp_path / "xception65_bn_cityscapes"
    sparse_legacy_dir(d, manifest)
    (d / "__model__").write_bytes(b"program")
    assert check_structure(d, manifest).ok
    os.remove(d / "logit" / "biases")
    name = "xception_65/entry_flow/block1/separable_conv1/depthwise/weights"
    write_tensor(d / name, np.zeros((32, 1, 3, 3), np.float32))
    report = check_structure(d, manifest)
    assert report.missing == ["logit/biases"]
    assert report.wrong == [f"{name}: file [32, 1, 3, 3], model needs [64, 1, 3, 3]"]
    assert "1 of 732 parameters missing (logit/biases)" in report.describe()


def test_real_student_tarball_loads_strictly_into_the_built_student(tmp_path):
    import tarfile

    from segdistill_cli.programs import build_eval

    cfg = load_config(ROOT / "configs" / "cityscape.yaml", ["EVAL_CROP_SIZE=(33, 33)"])
    manifest = parameter_manifest(cfg)
    assert len(manifest) == 262
    arrays = random_tensors(manifest)
    tgz = make_legacy_tarball(tmp_path / "m.tgz", "mobilenet_cityscapes", arrays)
    with tarfile.open(tgz) as tar:
        files = [m.name for m in tar.getmembers() if m.isfile()]
        tar.extractall(tmp_path / "x", filter="data")
    assert len(files) == 262 and "mobilenet_cityscapes/logit/weights" in files
    built = build_eval(cfg)  # the student as eval builds it, on either IR
    main, scope, place, _, _ = fresh((built.main, built.startup, None))
    report = load_weights(main, tmp_path / "x" / "mobilenet_cityscapes", scope=scope,
                          place=place, strict=True)
    assert len(report.loaded) == 262 and not report.unexpected
    for name in ("conv1_1_weights", "conv8_1_linear_bn_variance", "logit/biases"):
        np.testing.assert_array_equal(values(scope, name), arrays[name])
