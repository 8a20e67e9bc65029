"""The one place that imports Paddle.

Paddle 2.6.2's libpaddle exports zlib symbols; if the interpreter's zlib is a shared module that is
first loaded *after* Paddle, later gzip/zlib use segfaults (docs/design.md, Legacy facts). So zlib
is imported first, always, and every module gets Paddle from here.
"""
from __future__ import annotations

import os
import sys
import warnings
import zlib  # noqa: F401  (must precede the first `import paddle`; see module docstring)
from types import ModuleType

# Paddle's C++ side logs INFO lines ("New Executor is Running") to stderr; keep warnings and errors.
os.environ.setdefault("GLOG_minloglevel", "2")
# PaddleSlim's import chain triggers these setuptools notices in the middle of command output (the
# second with setuptools 81, the last to have pkg_resources, which PaddleSlim 2.6.0 imports).
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API")
# Paddle 3 warns at import that ccache (for compiling custom C++ ops, never used here) is missing.
warnings.filterwarnings("ignore", message="No ccache found")
# Paddle 3, once per run: the CE keeps the legacy op (engine/seg_loss.py: pixel-wise, class axis 1,
# ignore_index) on purpose, and Paddle's own PIR backward asks a value for its place.
warnings.filterwarnings("ignore", message=r'(?s).*"paddle\.nn\.functional\.loss\.'
                                          r'softmax_with_cross_entropy" is deprecated')
warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface for pir graph mode")


def import_paddle(any_ir: bool = False) -> ModuleType:
    """Import Paddle in static-graph mode and return the module.

    A Paddle version or IR that segdistill's graph code cannot build on (stack.py says which it
    can) is refused with one line, exit 2, instead of a traceback from deep inside the first
    layer; `any_ir` lets `segdistill doctor` through."""
    try:
        import paddle
    except ImportError as exc:  # not installed (`pip install .` alone brings no Paddle), or broken
        from .errors import ConfigError

        raise ConfigError(f"Paddle does not import in {sys.executable}: {exc}; install a supported "
                          "stack, e.g. pip install \".[cpu]\" (README \"Install\")") from None
    if paddle.in_dynamic_mode():
        paddle.enable_static()
    if not any_ir:
        _refuse_unsupported(paddle)
    return paddle


def _refuse_unsupported(paddle: ModuleType) -> None:
    from .errors import ConfigError
    from .stack import ir_in_use, paddle_problem

    problem = paddle_problem(str(paddle.__version__), ir_in_use(paddle))
    if problem is not None:
        raise ConfigError(f"{problem} ('segdistill doctor' shows the whole stack)")
