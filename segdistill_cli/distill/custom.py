"""User-defined distillation losses: `LOSS: custom` with `FUNCTION: "package.module:function"`.

Call contract (documented for users):

    fn(student, teacher, **kwargs) -> scalar Variable (shape [] or [1]), UNWEIGHTED

* `student` / `teacher`: a static Variable each, or a list of Variables when the config gave a
  list for that side. Student variables come after the pair's ADAPTER/RESIZE; teacher variables
  are the merged, frozen `teacher_*` variables.
* `kwargs`: the pair's TEMPERATURE / TEACHER_TEMPERATURE / STUDENT_TEMPERATURE if set (as
  `temperature`, `teacher_temperature`, `student_temperature`), then the pair's OPTIONS mapping
  (OPTIONS wins on a clash).
* `mask=`: only if the function declares a parameter named `mask`: float32 [N,1,H,W], 1 where the
  label is valid (at label resolution), or None when the trainer has no label.
The result is multiplied by WEIGHT by the caller. Paddle is imported by the function's own module.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Optional

from ..errors import ConfigError


def load_function(spec: str, where: str) -> Callable[..., Any]:
    """Import "package.module:function"; ConfigError naming `where` (e.g. DISTILL[2].FUNCTION)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{where}: {spec!r} is not of the form \"package.module:function\"")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a config problem
        raise ConfigError(f"{where}: cannot import module {module_name!r} "
                          f"({type(exc).__name__}: {exc})") from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{where}: {spec!r} is not callable")
    return target


def accepts_mask(fn: Callable[..., Any]) -> bool:
    try:
        return "mask" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def call_custom(fn: Callable[..., Any], student: Any, teacher: Any, kwargs: dict[str, Any],
                mask: Optional[Any], where: str) -> Any:
    """Call the user's loss and check that it returned a scalar static Variable."""
    if accepts_mask(fn):
        kwargs = {**kwargs, "mask": mask}
    result = fn(student, teacher, **kwargs)
    shape = getattr(result, "shape", None)
    if shape is None or not hasattr(result, "block"):
        raise ConfigError(f"{where}: custom loss returned {type(result).__name__}, "
                          "expected a scalar static Variable")
    if tuple(shape) not in ((), (1,)):
        raise ConfigError(f"{where}: custom loss returned shape {list(shape)}, expected a scalar "
                          "(reduce it, e.g. with paddle.mean)")
    return result
