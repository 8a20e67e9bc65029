"""The one place that imports Paddle.

Paddle 2.6.2's libpaddle exports zlib symbols; if the interpreter's zlib is a shared module that is
first loaded *after* Paddle, later gzip/zlib use segfaults (reference/paddle-compat.md §1). So zlib is
imported first, always, and every module gets Paddle from here.
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


def import_paddle() -> ModuleType:
    """Import Paddle in static-graph mode (legacy IR) and return the module."""
    import paddle

    if paddle.in_dynamic_mode():
        paddle.enable_static()
    return paddle
