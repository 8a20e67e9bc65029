"""Where weights come from: a legacy directory or a `.pdparams` pickle (restricted unpickler),
behind one small interface (`names`, `info`, `read`, `path`); `open_weights` picks one."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from ..errors import ConfigError, SegDistillError
from .tensor_format import TensorInfo, read_tensor, read_tensor_info

PDPARAMS_FILE = "model.pdparams"


class LegacyDirWeights:
    """A one-file-per-variable directory. Headers are read lazily, data only on `read`."""

    def __init__(self, directory: Path):
        self.location = directory

    def names(self) -> list[str]:
        """Every regular file, as a variable name (relative path with `/`)."""
        found = []
        for root, _dirs, files in os.walk(self.location):
            for fname in files:
                found.append((Path(root) / fname).relative_to(self.location).as_posix())
        return sorted(found)

    def path(self, name: str) -> Path:
        return self.location / name

    def info(self, name: str) -> Optional[TensorInfo]:
        """Header of `name`, None if there is no such file; corrupt files raise."""
        path = self.path(name)
        return read_tensor_info(path) if path.is_file() else None

    def read(self, name: str) -> np.ndarray:
        return read_tensor(self.path(name))


class PdparamsWeights:
    """A `model.pdparams` pickle, read once into memory (it is one file anyway)."""

    def __init__(self, file: Path):
        self.location = file
        self._arrays = read_pdparams(file)

    def names(self) -> list[str]:
        return sorted(self._arrays)

    def path(self, name: str) -> str:
        return f"{self.location}[{name}]"

    def info(self, name: str) -> Optional[TensorInfo]:
        arr = self._arrays.get(name)
        return None if arr is None else TensorInfo(tuple(arr.shape), arr.dtype)

    def read(self, name: str) -> np.ndarray:
        return self._arrays[name]


WeightSource = Union[LegacyDirWeights, PdparamsWeights]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only plain containers and numpy arrays: a .pdparams may come from the internet and
    an unrestricted pickle can run arbitrary code."""

    _ALLOWED = {
        ("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("builtins", "slice"),
        ("_codecs", "encode"),  # how protocol-2 pickles (legacy, Python 2 era) spell bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pdparams(file: str | os.PathLike) -> dict[str, np.ndarray]:
    """`model.pdparams` -> {name: ndarray}. Non-array entries (Paddle 2.x bookkeeping such as
    `StructuredToParameterName@@`) are dropped."""
    file = Path(file)
    try:
        with open(file, "rb") as fh:
            data = _ArrayUnpickler(fh, encoding="latin1").load()
    except OSError as exc:
        raise SegDistillError(f"cannot read {file}: {exc.strerror or exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise SegDistillError(f"corrupt or unsupported pdparams file {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise SegDistillError(f"corrupt pdparams file {file}: expected a dict of arrays, "
                              f"got {type(data).__name__}")
    return {str(k): np.asarray(v) for k, v in data.items() if isinstance(v, np.ndarray)}


def open_weights(path: str | os.PathLike) -> WeightSource:
    """A legacy directory, a directory holding `model.pdparams` (legacy loader precedence), or a
    `.pdparams` file. A missing path raises."""
    path = Path(path)
    if path.is_file():
        return PdparamsWeights(path)
    if path.is_dir():
        if (path / PDPARAMS_FILE).is_file():
            return PdparamsWeights(path / PDPARAMS_FILE)
        return LegacyDirWeights(path)
    raise ConfigError(f"weights not found: {path} does not exist")


def scan_weights(path: str | os.PathLike,
                 names: Optional[Iterable[str]] = None) -> dict[str, TensorInfo]:
    """name -> (shape, dtype) from headers only. With `names`, only those (absent ones left out,
    corrupt ones raise); without, every file that parses as a tensor (others, e.g. `__model__`,
    are skipped)."""
    source = open_weights(path)
    if names is not None:
        infos = {n: source.info(n) for n in names}
        return {n: i for n, i in infos.items() if i is not None}
    found = {}
    for name in source.names():
        try:
            found[name] = source.info(name)
        except SegDistillError:
            continue
    return found
