"""The installed Paddle stack: versions, build, the IR in use, visible GPUs, and whether segdistill
supports it (`segdistill doctor` prints this; docs/design.md "Paddle 3.x" says why the rule is what
it is).

segdistill's graph code runs on two stacks: Paddle 2.6 with the legacy IR (ProgramDesc, where every
intermediate variable has a name; PaddleSlim's merge) and Paddle 3.3 with its new IR (PIR), through
the PIR backend (values have no names there, so the recorder keeps the legacy ones; the teacher is
built into the student's program). Paddle 3's legacy IR (`FLAGS_enable_pir_api=0`, read once at
import) is no target: from 3.2 on more and more of its ops reject legacy variables (on 3.3.1
`paddle.sum`, `paddle.argmax`, ...). Other Paddle 3 releases with PIR are untested: refused unless
SEGDISTILL_EXPERIMENTAL_PIR=1.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Optional

from . import __version__
LEGACY, PIR = "legacy", "pir"
# The supported stacks: Paddle release prefix -> the IR segdistill builds on there (the pins in
# pyproject.toml: paddlepaddle(-gpu)==2.6.2 and paddlepaddle==3.3.1).
SUPPORTED_STACKS = {"2.6.": LEGACY, "3.3.": PIR}
SUPPORTED_TEXT = "Paddle 2.6 with the legacy IR or Paddle 3.3 with PIR"
# Lets another Paddle 3 release with PIR through (untested there; `doctor` still says so).
EXPERIMENTAL_PIR_ENV = "SEGDISTILL_EXPERIMENTAL_PIR"
PIR_FLAG = "FLAGS_enable_pir_api"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: Optional[int]


@dataclass
class Stack:
    """What `collect()` found. `cuda` is the CUDA version the Paddle build was compiled for (None
    for a CPU build); `gpus` are the devices that build can see."""

    segdistill: str
    python: str
    python_executable: str
    paddle: str
    paddle_commit: str
    cuda: Optional[str]
    cudnn: Optional[str]
    ir: str
    ir_source: str
    paddleslim: Optional[str]
    paddleslim_import: Optional[str]  # None = imports; else the error
    numpy: Optional[str]
    protobuf: Optional[str]
    cuda_visible_devices: Optional[str]
    gpus: list[Gpu] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Why segdistill cannot run on this stack (empty = it can)."""
        paddle = paddle_problem(self.paddle, self.ir)
        found = [paddle] if paddle else []
        if self.paddleslim is None:
            found.append("PaddleSlim is not installed (pip install paddleslim==2.6.0)")
        elif self.paddleslim_import is not None:
            found.append(f"PaddleSlim {self.paddleslim} does not import: {self.paddleslim_import}")
        return found

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["supported"] = self.supported
        data["problems"] = self.problems()
        return data


def paddle_problem(version: str, ir: str) -> Optional[str]:
    """Why segdistill's graph code cannot run on this Paddle version and IR (None: it can)."""
    wanted = next((want for prefix, want in SUPPORTED_STACKS.items()
                   if version.startswith(prefix)), None)
    if ir == wanted:
        return None
    if version.startswith("3.") and ir == LEGACY:
        return (f"Paddle {version}'s legacy IR ({PIR_FLAG}=0) is being removed: from 3.2 on, more "
                "and more ops reject its variables (on 3.3.1 paddle.sum, paddle.argmax, "
                f"paddle.matmul, paddle.sqrt), so training fails; segdistill supports {SUPPORTED_TEXT}")
    if wanted is not None:  # Paddle 2.6 with PIR switched on
        return (f"Paddle {version} runs PIR (set by {PIR_FLAG}); on Paddle {version[:3]}.x "
                f"segdistill builds on the legacy IR: unset {PIR_FLAG}")
    if version.startswith("3."):
        if os.environ.get(EXPERIMENTAL_PIR_ENV) == "1":
            return None
        return (f"Paddle {version} is untested: segdistill supports {SUPPORTED_TEXT} "
                f"(set {EXPERIMENTAL_PIR_ENV}=1 to try this Paddle 3 release's PIR anyway)")
    return f"Paddle {version} is not a version segdistill supports ({SUPPORTED_TEXT})"


def ir_in_use(paddle: Any) -> str:
    """LEGACY or PIR: the IR that static programs are built in. Asked in static mode, since
    `in_pir_mode()` is False in dynamic mode whatever the IR."""
    framework = paddle.framework
    if not hasattr(framework, "in_pir_mode"):  # Paddle before 2.6 knew no PIR
        return LEGACY
    was_dynamic = paddle.in_dynamic_mode()
    if was_dynamic:
        paddle.enable_static()
    try:
        return PIR if framework.in_pir_mode() else LEGACY
    finally:
        if was_dynamic:
            paddle.disable_static()


def _ir_source(paddle_version: str) -> str:
    """Where the IR choice came from: the environment flag (read once, when Paddle is imported;
    setting it later has no effect) or the version's default."""
    value = os.environ.get(PIR_FLAG)
    if value is not None:
        return f"set by {PIR_FLAG}={value}"
    return f"Paddle {paddle_version.split('.')[0]}'s default"


def _version_of(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _paddleslim_import_error() -> Optional[str]:
    """PaddleSlim 2.6.0 imports packages it does not declare (six, requests, decorator)."""
    try:
        import paddleslim  # noqa: F401
    except Exception as exc:  # any import failure is the answer here, not a crash
        return f"{type(exc).__name__}: {exc}"
    return None


def _build_version(value: Any) -> Optional[str]:
    """paddle.version.cuda()/cudnn() return the string 'False' on a CPU build."""
    text = str(value)
    return None if text in ("False", "", "None") else text


def visible_gpus(paddle: Any) -> list[Gpu]:
    """The GPUs this Paddle build can use (none on a CPU build, whatever the machine has)."""
    if not paddle.device.is_compiled_with_cuda():
        return []
    gpus = []
    for index in range(int(paddle.device.cuda.device_count())):
        props = paddle.device.cuda.get_device_properties(index)
        memory = getattr(props, "total_memory", None)
        gpus.append(Gpu(index, str(props.name),
                        None if memory is None else int(memory) // (1024 * 1024)))
    return gpus


def collect() -> Stack:
    """Import Paddle (through paddle_env, zlib first) and PaddleSlim and describe the stack."""
    from .paddle_env import import_paddle

    paddle = import_paddle(any_ir=True)  # describing an unsupported stack is the point
    return Stack(
        segdistill=__version__,
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        python_executable=sys.executable,
        paddle=str(paddle.__version__),
        paddle_commit=str(paddle.version.commit)[:10],
        cuda=_build_version(paddle.version.cuda()),
        cudnn=_build_version(paddle.version.cudnn()),
        ir=ir_in_use(paddle),
        ir_source=_ir_source(str(paddle.__version__)),
        paddleslim=_version_of("paddleslim"),
        paddleslim_import=_paddleslim_import_error(),
        numpy=_version_of("numpy"),
        protobuf=_version_of("protobuf"),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        gpus=visible_gpus(paddle),
    )


def report_lines(stack: Stack) -> list[tuple[str, str]]:
    """(label, text) rows of the doctor report, in reading order."""
    build = (f"CUDA {stack.cuda}" + (f", cuDNN {stack.cudnn}" if stack.cudnn else "")
             if stack.cuda else "CPU build (no CUDA)")
    slim = ("not installed" if stack.paddleslim is None else
            stack.paddleslim + (", imports" if stack.paddleslim_import is None
                                else f", does not import: {stack.paddleslim_import}"))
    rows = [
        ("segdistill", stack.segdistill),
        ("python", f"{stack.python}, {stack.python_executable}"),
        ("paddle", f"{stack.paddle} (commit {stack.paddle_commit}), {build}"),
        ("IR", f"{_IR_NAMES[stack.ir]}, {stack.ir_source}"),
        ("paddleslim", slim),
        ("numpy", stack.numpy or "not installed"),
        ("protobuf", stack.protobuf or "not installed"),
        ("GPUs", _gpu_text(stack)),
    ]
    problems = stack.problems()
    rows.append(("supported", "yes" if not problems else
                 f"no ({len(problems)} problem{'s' if len(problems) > 1 else ''}: error lines below)"))
    return rows


_IR_NAMES = {LEGACY: "legacy (ProgramDesc)", PIR: "PIR (the new IR)"}


def _gpu_text(stack: Stack) -> str:
    if stack.cuda is None:
        return "none usable: this is Paddle's CPU build (see README \"Install\" for the GPU one)"
    visible = ("" if stack.cuda_visible_devices is None
               else f" (CUDA_VISIBLE_DEVICES={stack.cuda_visible_devices})")
    if not stack.gpus:
        return f"none visible{visible}: no driver, no device, or all hidden"
    names = ", ".join(f"{g.index}: {g.name}" + (f" {g.memory_mib} MiB" if g.memory_mib else "")
                      for g in stack.gpus)
    return f"{len(stack.gpus)} visible{visible}: {names}"
