"""`segdistill doctor`: the real stack of this venv, and the support rule (Paddle 2.6 + legacy IR,
Paddle 3.3 + PIR), with the other IR switched on by the environment as the negative control."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

from segdistill_cli import __version__
from segdistill_cli.cli import main
from segdistill_cli.paddle_env import import_paddle
from segdistill_cli.stack import (LEGACY, PIR, Gpu, Stack, ir_in_use, paddle_problem, report_lines,
                                  visible_gpus)

ROOT = Path(__file__).resolve().parents[1]
paddle = import_paddle(any_ir=True)  # the tests themselves say where they apply
IR = ir_in_use(paddle)
ON_SUPPORTED_STACK = paddle_problem(paddle.__version__, IR) is None
# The other IR of this Paddle (chosen by the flag when Paddle is imported): the negative control.
OTHER_IR, OTHER_FLAG = (PIR, "1") if IR == LEGACY else (LEGACY, "0")
IR_ROW = {LEGACY: "legacy (ProgramDesc)", PIR: "PIR (the new IR)"}


def _doctor(capsys, *args: str) -> tuple[int, str, list[str]]:
    code = main(["doctor", *args])
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


def test_json_describes_this_venv(capsys):
    code, out, err = _doctor(capsys, "--json")
    data = json.loads(out)
    assert data["segdistill"] == __version__
    assert data["paddle"] == paddle.__version__
    assert data["paddleslim"] == metadata.version("paddleslim")
    assert data["numpy"] == metadata.version("numpy")
    assert data["python_executable"] == sys.executable
    assert (data["cuda"] is None) == (not paddle.device.is_compiled_with_cuda())
    assert data["ir"] == (PIR if paddle.framework.in_pir_mode() else LEGACY)
    assert code == (0 if data["supported"] else 1)
    assert len(err) == len(data["problems"])


@pytest.mark.skipif(not ON_SUPPORTED_STACK, reason="the supported stacks are Paddle 2.6 (legacy "
                    f"IR) and 3.3 (PIR); this is Paddle {paddle.__version__} ({IR})")
def test_the_supported_stack_says_yes(capsys):
    code, out, err = _doctor(capsys)
    rows = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 0 and err == []
    assert rows["paddle"].startswith(f"{paddle.__version__} (commit ")
    major = paddle.__version__.split(".")[0]
    assert rows["IR"] == f"{IR_ROW[IR]}, Paddle {major}'s default"
    assert rows["paddleslim"] == f"{metadata.version('paddleslim')}, imports"
    assert rows["supported"] == "yes"


def _with_other_ir(*args: str) -> subprocess.CompletedProcess:
    """A fresh process (the flag is read when Paddle is imported) with this Paddle's other IR."""
    return subprocess.run([sys.executable, "-m", "segdistill_cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "FLAGS_enable_pir_api": OTHER_FLAG})


OTHER_IR_PROBLEM = {
    "2": ("runs PIR (set by FLAGS_enable_pir_api); on Paddle 2.6.x segdistill builds on the "
          "legacy IR: unset FLAGS_enable_pir_api"),
    "3": ("legacy IR (FLAGS_enable_pir_api=0) is being removed: from 3.2 on, more and more ops "
          "reject its variables"),
}[paddle.__version__.split(".")[0]]


@pytest.mark.skipif(not ON_SUPPORTED_STACK, reason="needs a supported stack, whose other IR is "
                    f"the control; this is Paddle {paddle.__version__} ({IR})")
def test_the_other_ir_switched_on_by_the_environment_is_not_supported():
    """The negative control, for real: the same Paddle with its other IR (2.6 with PIR, 3.3 with
    the legacy IR) is reported as such and refused with exit 1 and one error line."""
    proc = _with_other_ir("doctor")
    rows = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert rows["IR"] == f"{IR_ROW[OTHER_IR]}, set by FLAGS_enable_pir_api={OTHER_FLAG}"
    assert rows["supported"].startswith("no (1 problem")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: Paddle {paddle.__version__}")
    assert OTHER_IR_PROBLEM in errors[0]


@pytest.mark.skipif(not ON_SUPPORTED_STACK, reason="needs a supported stack, whose other IR is "
                    f"the control; this is Paddle {paddle.__version__} ({IR})")
def test_commands_refuse_an_unsupported_ir_with_one_line():
    """Before: a traceback from inside the first conv layer. The control: the same command
    without the flag lists the variables (tests/test_inspect.py)."""
    proc = _with_other_ir("inspect-vars", "--cfg", str(ROOT / "configs" / "demo.yaml"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and OTHER_IR_PROBLEM in lines[0], lines
    assert lines[0].endswith("('segdistill doctor' shows the whole stack)")


def _stack(**changes) -> Stack:
    base = Stack(segdistill="0.1.0", python="3.11.7 (CPython)", python_executable="/py",
                 paddle="2.6.2", paddle_commit="8ce0de584c", cuda=None, cudnn=None, ir=LEGACY,
                 ir_source="Paddle 2's default", paddleslim="2.6.0", paddleslim_import=None,
                 numpy="1.26.4", protobuf="6.33.6", cuda_visible_devices=None)
    return replace(base, **changes)


@pytest.mark.parametrize("changes,fragment", [
    ({"ir": PIR}, "on Paddle 2.6.x segdistill builds on the legacy IR"),
    ({"paddle": "3.2.2", "ir": PIR}, "Paddle 3.2.2 is untested"),
    ({"paddle": "3.3.1", "ir": LEGACY}, "legacy IR (FLAGS_enable_pir_api=0) is being removed"),
    ({"paddle": "2.5.2"}, "not a version segdistill supports"),
    ({"paddleslim": None}, "PaddleSlim is not installed"),
    ({"paddleslim_import": "ModuleNotFoundError: No module named 'six'"}, "No module named 'six'"),
])
def test_each_unsupported_part_is_named(changes, fragment, monkeypatch):
    monkeypatch.delenv("SEGDISTILL_EXPERIMENTAL_PIR", raising=False)
    assert _stack().supported  # the controls: 2.6.2 with the legacy IR, 3.3.1 with PIR
    assert _stack(paddle="3.3.1", ir=PIR).supported
    problems = _stack(**changes).problems()
    assert len(problems) == 1 and fragment in problems[0], problems


def test_an_untested_paddle_3_release_passes_only_with_the_opt_in(monkeypatch):
    monkeypatch.setenv("SEGDISTILL_EXPERIMENTAL_PIR", "1")
    assert _stack(paddle="3.2.2", ir=PIR).supported
    assert not _stack(paddle="3.2.2", ir=LEGACY).supported  # the opt-in is for PIR only


def test_a_cuda_build_lists_its_gpus():
    """The CUDA branch, which this CPU machine cannot run: a CUDA build's answers, as Paddle
    gives them (device count and properties), become the GPU row."""
    props = [SimpleNamespace(name="NVIDIA A100-SXM4-40GB", total_memory=40 * 1024 ** 3),
             SimpleNamespace(name="NVIDIA A100-SXM4-40GB", total_memory=40 * 1024 ** 3)]
    cuda = SimpleNamespace(device_count=lambda: len(props), get_device_properties=props.__getitem__)
    fake = SimpleNamespace(device=SimpleNamespace(is_compiled_with_cuda=lambda: True, cuda=cuda))
    gpus = visible_gpus(fake)
    assert gpus == [Gpu(0, "NVIDIA A100-SXM4-40GB", 40960), Gpu(1, "NVIDIA A100-SXM4-40GB", 40960)]
    rows = dict(report_lines(_stack(cuda="11.8", cudnn="8.6.0", gpus=gpus,
                                    cuda_visible_devices="0,1")))
    assert rows["paddle"] == "2.6.2 (commit 8ce0de584c), CUDA 11.8, cuDNN 8.6.0"
    assert rows["GPUs"] == ("2 visible (CUDA_VISIBLE_DEVICES=0,1): 0: NVIDIA A100-SXM4-40GB "
                            "40960 MiB, 1: NVIDIA A100-SXM4-40GB 40960 MiB")
    hidden = dict(report_lines(_stack(cuda="11.8", cuda_visible_devices="")))
    assert hidden["GPUs"].startswith("none visible (CUDA_VISIBLE_DEVICES=)")
    if not paddle.device.is_compiled_with_cuda():  # this machine's build sees none, whatever it has
        assert visible_gpus(paddle) == []


@pytest.mark.parametrize("command", [["doctor"], ["inspect-vars", "--cfg", "configs/demo.yaml"]])
def test_a_missing_paddle_is_one_line_exit_2(command):
    """`pip install .` without an extra brings no Paddle: before, a traceback from `import paddle`.
    (A fresh process where `import paddle` fails, as it does where Paddle is not installed.)"""
    script = ("import sys; sys.modules['paddle'] = None\n"
              "from segdistill_cli.cli import main\n"
              f"sys.exit(main({command!r}))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: Paddle does not import in {sys.executable}: import of paddle halted; None in "
        'sys.modules; install a supported stack, e.g. pip install ".[cpu]" (README "Install")']


def test_unknown_option_is_one_line_exit_2(capsys):
    code, _, err = _doctor(capsys, "--no-such-option")
    assert code == 2 and len(err) == 1 and "segdistill doctor --help" in err[0]
