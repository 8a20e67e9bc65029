"""The one place that imports Paddle.

Paddle 2.6.2's libpaddle exports zlib symbols; if the interpreter's zlib is a shared module that is
first loaded *after* Paddle, later gzip/zlib use segfaults (docs/design.md, Legacy facts). So zlib
is imported first, always, and every module gets Paddle from here.
"""
from __future__ import annotations

import os
import warnings
import zlib  # noqa: F401  (must precede the first `import paddle`; see module docstring)
from types import ModuleType

# Paddle's C++ side logs INFO lines ("New Executor is Running") to stderr; keep warnings and errors.
os.environ.setdefault("GLOG_minloglevel", "2")
# PaddleSlim's import chain triggers this setuptools notice in the middle of command output.
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
# Paddle 3 warns at import that ccache (for compiling custom C++ ops, never used here) is missing.
warnings.filterwarnings("ignore", message="No ccache found")


# Set `SEGDISTILL_EXPERIMENTAL_PIR=1` to let a command run on Paddle 3's PIR through the PIR graph
# backend before every command works there (docs/design.md "Paddle 3.x" says what does).
EXPERIMENTAL_PIR_ENV = "SEGDISTILL_EXPERIMENTAL_PIR"
_pir_allowed = False


def allow_experimental_pir() -> None:
    """From now on, in this process, `import_paddle` also accepts Paddle >= 3 with PIR (the PIR
    graph backend's tests call it; users set EXPERIMENTAL_PIR_ENV). Other refusals stay."""
    global _pir_allowed
    _pir_allowed = True


def import_paddle(any_ir: bool = False) -> ModuleType:
    """Import Paddle in static-graph mode and return the module.

    A Paddle version or IR that segdistill's graph code cannot build on (Paddle 3, PIR: see
    stack.py) is refused with one line, exit 2, instead of a traceback from deep inside the
    first layer; `any_ir` lets `segdistill doctor` and the PIR prototype through."""
    import paddle

    if paddle.in_dynamic_mode():
        paddle.enable_static()
    if not any_ir:
        _refuse_unsupported(paddle)
    return paddle


def _refuse_unsupported(paddle: ModuleType) -> None:
    from .errors import ConfigError
    from .stack import PIR, ir_in_use, paddle_problem

    version, ir = str(paddle.__version__), ir_in_use(paddle)
    if ir == PIR and int(version.split(".")[0]) >= 3 and (
            _pir_allowed or os.environ.get(EXPERIMENTAL_PIR_ENV) == "1"):
        return
    problem = paddle_problem(version, ir)
    if problem is not None:
        raise ConfigError(f"{problem} ('segdistill doctor' shows the whole stack)")
