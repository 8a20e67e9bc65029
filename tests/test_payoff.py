"""benchmarks/payoff.py's counting (no export, no timing): the size override really reaches the
program, and the numbers order the models as their architectures say."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import legacy_ir_only

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def payoff():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("payoff", ROOT / "benchmarks" / "payoff.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["payoff"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_conv_macs_follow_the_input_size_and_parameters_do_not(payoff, tmp_path):
    student = payoff.ModelSpec("s", ROOT / "configs" / "camvid.yaml", tmp_path)
    teacher = payoff.ModelSpec("t", ROOT / "configs" / "camvid_teacher.yaml", tmp_path)
    params_small, macs_small = payoff.count_model(student, (64, 48))
    params_big, macs_big = payoff.count_model(student, (128, 96))
    assert params_small == params_big > 100_000
    # Conv multiply-adds scale with the pixel count (x4); a size override that did not reach the
    # program would give x1. Stride-rounding at 64x48 makes it only approximately 4.
    assert 3.6 < macs_big / macs_small < 4.4
    params_t, macs_t = payoff.count_model(teacher, (64, 48))
    assert params_t > 3 * params_small and macs_t > 3 * macs_small  # x1.0 + ASPP + decoder


def _toy_convs():
    """image [1, 3, 8, 8] -> 3x3 conv to 4 channels (padding 1) -> 3x3 depthwise, stride 2."""
    from segdistill_cli.models.pir_ops import PirOps
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    ops = PirOps(is_test=True)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [1, 3, 8, 8], "float32")
        x = ops.conv2d(image, 4, 3, 1, 1, 1, 1, "c1/weights", "c1/biases")
        x = ops.conv2d(x, 4, 3, 2, 1, 1, 4, "c2/weights", None)
    return main


def test_conv_macs_counts_each_conv_and_its_groups(payoff):
    # 8x8x4 outputs x (3x3x3) + 4x4x4 outputs x (3x3x1): the depthwise conv's C_in is 1 per group
    assert payoff.conv_macs(_toy_convs()) == 8 * 8 * 4 * 27 + 4 * 4 * 4 * 9


@legacy_ir_only("PaddleSlim's analysis.flops reads legacy programs only")
def test_conv_macs_equal_paddleslims_flops_on_the_legacy_ir(payoff):
    from paddleslim.analysis import flops

    from segdistill_cli.config import load_config
    from segdistill_cli.programs import build_eval

    assert payoff.conv_macs(_toy_convs()) == flops(_toy_convs())
    cfg = load_config(ROOT / "configs" / "camvid.yaml", payoff.size_overrides((64, 48)))
    built = build_eval(cfg)
    assert payoff.conv_macs(built.main) == flops(built.main) > 0


def test_markdown_row(payoff):
    spec = payoff.ModelSpec("student", payoff.ROOT / "configs" / "camvid.yaml", Path("w"))
    samples = [(14.5, 9.0), (11.0, 8.0), (12.3, 8.5)] * 4  # (wall ms, CPU ms)
    row = payoff.payoff_row(spec, (480_000, 0.44), samples)
    assert row.config == "configs/camvid.yaml" and row.cpu_ms_median == 8.5
    table = payoff.markdown([row], (480, 360), 1)
    assert "| student | 0.48 M | 0.44 | 12.3 ms (11.0–14.5) | 8.5 ms |" in table
    assert "1 thread(s), plain kernels" in table


@pytest.mark.parametrize("onednn", [False, True])
def test_the_kernels_asked_for_are_the_kernels_used(payoff, tmp_path, monkeypatch, onednn):
    """Paddle Inference 2.6 turns oneDNN on by default on the CPU: "plain kernels" must switch it
    off explicitly (the first payoff table timed oneDNN twice under two labels)."""
    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    assert paddle.inference.Config().mkldnn_enabled()  # the default this guards against
    seen = {}
    monkeypatch.setattr(paddle.inference, "create_predictor",
                        lambda config: seen.setdefault("onednn", config.mkldnn_enabled()))
    for path in payoff.model_files(tmp_path):  # Paddle 3's Config opens them when made
        path.write_bytes(b"")
    payoff.predictor(tmp_path, threads=1, onednn=onednn)
    assert seen["onednn"] is onednn


def test_op_profile_shares_come_from_the_real_trace(payoff, tmp_path):
    """A conv + softmax program saved as an inference model: the profile names exactly its op
    types (a parser that missed the trace's "conv2d[1.2 ms]" names would find none)."""
    import numpy as np

    from segdistill_cli.paddle_env import import_paddle

    paddle = import_paddle()
    from segdistill_cli.models.pir_ops import PirOps

    ops = PirOps(is_test=True)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [1, 3, 32, 48], "float32")
        conv = ops.conv2d(image, 4, 3, 1, 0, 1, 1, "conv/weights", None)
        probs = paddle.nn.functional.softmax(conv, axis=1)
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        paddle.static.save_inference_model(str(tmp_path / "model"), [image], [probs], exe,
                                           program=main)
        shares = payoff.op_profile(tmp_path, (48, 32), runs=2)
    assert {"conv2d", "softmax"} <= set(shares)
    assert abs(sum(shares.values()) - 1) < 1e-9 and all(v > 0 for v in shares.values())
    assert not np.isnan(list(shares.values())).any()
    # Paddle Inference reads the format the installed Paddle wrote (2.6: .pdmodel, 3.x: .json)
    wall_ms, _ = payoff.timed_run(payoff.predictor(tmp_path, threads=1, onednn=False),
                                  np.zeros((1, 3, 32, 48), np.float32))
    assert wall_ms > 0
