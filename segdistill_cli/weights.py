"""Pretrained and checkpoint weights in the legacy formats: read, write, check, load into a program.

Two on-disk formats (reference/legacy-paddleseg.md §3.7, paddle-compat.md §5):

* the legacy "one file per variable" directory written by `fluid.io.save_vars` / today's
  `paddle.static.save_vars` (no `filename`): file path = `<dir>/<variable name>`, so a `/` in a name
  is a sub-directory. Each file is one serialized LoDTensor:
      u32 version=0 | u64 lod_level + lod data | u32 tensor version=0 | i32 desc size
      | TensorDesc protobuf (1: varint data_type, 2: int64 dims) | raw little-endian C-order data
* a `model.pdparams` pickle (dict name -> ndarray, legacy and Paddle 2.x static `save`).

The codec is pure numpy so tests and `segdistill fetch` work without Paddle; only
`load_weights` (which writes into a Paddle scope) touches Paddle, and only through the objects it is
given. Every user-facing failure is a one-line `SegDistillError` naming the file.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import struct
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import SegDistillError

_log = logging.getLogger(__name__)

# VarType.Type enum of Paddle's framework.proto -> numpy dtype. BF16 (22) has no numpy dtype.
_PROTO_TO_NUMPY: dict[int, np.dtype] = {
    0: np.dtype(np.bool_), 1: np.dtype("<i2"), 2: np.dtype("<i4"), 3: np.dtype("<i8"),
    4: np.dtype("<f2"), 5: np.dtype("<f4"), 6: np.dtype("<f8"), 20: np.dtype(np.uint8),
    21: np.dtype(np.int8), 23: np.dtype("<c8"), 24: np.dtype("<c16"),
}
_NUMPY_TO_PROTO: dict[np.dtype, int] = {dt: code for code, dt in _PROTO_TO_NUMPY.items()}

PDPARAMS_FILE = "model.pdparams"
MAX_LISTED = 5  # how many names an error message lists before "... and N more"


# ---------------------------------------------------------------------------------------------
# One tensor file
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """What a tensor file's header says: enough for structural checks without reading the data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int = 0  # where the raw data starts in the file (0 for in-memory tensors)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _varint(buf: bytes, pos: int, path: Path) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise SegDistillError(f"corrupt weight file {path}: bad TensorDesc varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _to_int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_tensor_desc(desc: bytes, path: Path) -> tuple[int, tuple[int, ...]]:
    """Decode VarType.TensorDesc by hand: two fields, not worth a protobuf dependency."""
    data_type, dims, pos = None, [], 0
    while pos < len(desc):
        tag, pos = _varint(desc, pos, path)
        if tag == 0x08:  # field 1, varint: data_type
            data_type, pos = _varint(desc, pos, path)
        elif tag == 0x10:  # field 2, varint: one dim (proto2 default, what Paddle writes)
            dim, pos = _varint(desc, pos, path)
            dims.append(_to_int64(dim))
        elif tag == 0x12:  # field 2, length-delimited: packed dims (accepted for robustness)
            length, pos = _varint(desc, pos, path)
            end = pos + length
            if end > len(desc):
                raise SegDistillError(f"corrupt weight file {path}: truncated TensorDesc")
            while pos < end:
                dim, pos = _varint(desc, pos, path)
                dims.append(_to_int64(dim))
        else:
            raise SegDistillError(f"corrupt weight file {path}: unexpected TensorDesc field "
                                  f"tag 0x{tag:x}")
    if data_type is None:
        raise SegDistillError(f"corrupt weight file {path}: TensorDesc has no data_type")
    if any(d < 0 for d in dims):
        raise SegDistillError(f"corrupt weight file {path}: negative dimension in {dims}")
    return data_type, tuple(dims)


def _read_exact(fh: io.BufferedIOBase, n: int, path: Path, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise SegDistillError(f"corrupt weight file {path}: truncated {what} "
                              f"(wanted {n} bytes, got {len(data)})")
    return data


def _read_header(fh: io.BufferedIOBase, path: Path) -> TensorInfo:
    (version,) = struct.unpack("<I", _read_exact(fh, 4, path, "header"))
    if version != 0:
        raise SegDistillError(f"corrupt weight file {path}: bad header (version {version}, "
                              "expected 0; not a legacy Paddle tensor file)")
    (lod_level,) = struct.unpack("<Q", _read_exact(fh, 8, path, "header"))
    if lod_level > 16:
        raise SegDistillError(f"corrupt weight file {path}: bad header (lod_level {lod_level})")
    for _ in range(lod_level):
        (nbytes,) = struct.unpack("<Q", _read_exact(fh, 8, path, "LoD"))
        _read_exact(fh, nbytes, path, "LoD")
    (tensor_version,) = struct.unpack("<I", _read_exact(fh, 4, path, "header"))
    if tensor_version != 0:
        raise SegDistillError(f"corrupt weight file {path}: bad header (tensor version "
                              f"{tensor_version}, expected 0)")
    (desc_size,) = struct.unpack("<i", _read_exact(fh, 4, path, "header"))
    if not 0 < desc_size < 1 << 16:
        raise SegDistillError(f"corrupt weight file {path}: bad header (TensorDesc size "
                              f"{desc_size})")
    data_type, shape = _parse_tensor_desc(_read_exact(fh, desc_size, path, "TensorDesc"), path)
    dtype = _PROTO_TO_NUMPY.get(data_type)
    if dtype is None:
        raise SegDistillError(f"unsupported dtype in weight file {path}: Paddle data_type "
                              f"{data_type} (supported: FP16/32/64, INT8/16/32/64, UINT8, BOOL)")
    return TensorInfo(shape, dtype, fh.tell())


def read_tensor_info(path: str | os.PathLike) -> TensorInfo:
    """Header only (shape, dtype), and check the file holds exactly that much data."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            info = _read_header(fh, path)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise SegDistillError(f"cannot read weight file {path}: {exc.strerror or exc}") from exc
    if size - info.data_offset != info.nbytes:
        raise SegDistillError(
            f"corrupt weight file {path}: {size - info.data_offset} data bytes but shape "
            f"{list(info.shape)} of {info.dtype.name} needs {info.nbytes} (truncated?)")
    return info


def read_tensor(path: str | os.PathLike) -> np.ndarray:
    """One legacy tensor file -> ndarray (native byte order)."""
    path = Path(path)
    info = read_tensor_info(path)
    with open(path, "rb") as fh:
        fh.seek(info.data_offset)
        data = _read_exact(fh, info.nbytes, path, "data")
    return np.frombuffer(data, dtype=info.dtype).reshape(info.shape).astype(
        info.dtype.newbyteorder("="), copy=True)


def _little_endian(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype


def encode_header(shape: Sequence[int], dtype: Any) -> bytes:
    """Everything before the raw data: version, no LoD, tensor version, TensorDesc."""
    code = _NUMPY_TO_PROTO.get(_little_endian(dtype))
    if code is None:
        raise SegDistillError(f"cannot write dtype {np.dtype(dtype)} in the legacy tensor format")
    desc = bytearray([0x08]) + _encode_varint(code)
    for dim in shape:
        desc += bytes([0x10]) + _encode_varint(int(dim))
    return struct.pack("<IQIi", 0, 0, 0, len(desc)) + bytes(desc)


def encode_tensor(array: np.ndarray) -> bytes:
    """The exact bytes `paddle.static.save_vars` writes for a LoD-free tensor."""
    array = np.asarray(array)
    dtype = _little_endian(array.dtype)
    return encode_header(array.shape, dtype) + np.ascontiguousarray(array, dtype=dtype).tobytes()


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def write_tensor(path: str | os.PathLike, array: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_tensor(array))


def write_legacy_dir(directory: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> Path:
    """Write `{name: array}` as a legacy one-file-per-variable directory (names with `/` nest)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in tensors.items():
        write_tensor(directory / _safe_relative(name), array)
    return directory


def make_legacy_tarball(path: str | os.PathLike, root_name: str,
                        tensors: Mapping[str, np.ndarray],
                        extra_files: Optional[Mapping[str, bytes]] = None) -> Path:
    """A `.tgz` shaped like the real pretrained tarballs: one root folder `root_name/` holding the
    legacy tensor files (plus `extra_files` {relative name: bytes}, e.g. `__model__`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {name: encode_tensor(arr) for name, arr in tensors.items()}
    members.update(extra_files or {})
    now = int(time.time())
    with tarfile.open(path, "w:gz") as tar:
        dirs: set[str] = set()
        for name in sorted(members):
            parts = f"{root_name}/{_safe_relative(name).as_posix()}".split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
                    tar.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode, info.mtime = len(members[name]), 0o644, now
            tar.addfile(info, io.BytesIO(members[name]))
    return path


def _safe_relative(name: str) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not name:
        raise SegDistillError(f"variable name {name!r} cannot be a file path inside a directory")
    return rel


# ---------------------------------------------------------------------------------------------
# Weight sources: a legacy directory or a .pdparams pickle, behind one small interface
# ---------------------------------------------------------------------------------------------


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
    raise SegDistillError(f"weights not found: {path} does not exist")


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


# ---------------------------------------------------------------------------------------------
# Structural check: does a folder hold every parameter a model needs, with the right shapes?
# ---------------------------------------------------------------------------------------------


def _listing(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


@dataclass
class StructureReport:
    location: str
    expected: int
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # "name: file [..], model needs [..]"

    @property
    def ok(self) -> bool:
        return not self.missing and not self.wrong

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} of {self.expected} parameters missing "
                         f"({_listing(self.missing)})")
        if self.wrong:
            parts.append(f"{len(self.wrong)} wrong ({_listing(self.wrong)})")
        return f"{self.location}: " + ("; ".join(parts) if parts else
                                        f"all {self.expected} parameters present")


def check_structure(path: str | os.PathLike,
                    manifest: Mapping[str, Sequence[int]]) -> StructureReport:
    """Compare a weights folder/file against `{parameter name: shape}` using headers only.
    Extra files (optimizer velocity, `__model__`) are fine."""
    source = open_weights(path)
    report = StructureReport(str(path), len(manifest))
    for name, shape in manifest.items():
        try:
            info = source.info(name)
        except SegDistillError as exc:
            report.wrong.append(f"{name}: {exc}")
            continue
        if info is None:
            report.missing.append(name)
        elif tuple(info.shape) != tuple(shape):
            report.wrong.append(f"{name}: file {list(info.shape)}, model needs {list(shape)}")
    return report


# ---------------------------------------------------------------------------------------------
# Loading into a static program's scope
# ---------------------------------------------------------------------------------------------


@dataclass
class Mismatch:
    name: str  # variable name in the program
    file_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    file_dtype: str
    model_dtype: str

    def __str__(self) -> str:
        if self.file_shape != self.model_shape:
            return f"{self.name}: file {list(self.file_shape)}, model {list(self.model_shape)}"
        return f"{self.name}: file dtype {self.file_dtype}, model {self.model_dtype}"


@dataclass
class LoadReport:
    """What `load_weights` did. Names are program variable names, except `unexpected` (files in
    the source that no considered parameter asked for, e.g. optimizer velocity)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    total: int = 0  # parameters considered (loaded + missing + mismatched once done)
    found: bool = True  # False when a non-strict load found no source at all

    def summary(self) -> str:
        if not self.found:
            return f"Pretrained model dir {self.source} does not exist, training from scratch."
        if not self.loaded:
            return (f"No pretrained weights were loaded from {self.source}; check that it is "
                    "the right pretrained model.")
        return f"There are {len(self.loaded)}/{self.total} variables in {self.source} are loaded."


def _candidates(program: Any, prefix: str) -> list[tuple[Any, str]]:
    """(variable, name in the weights) for every variable the weights should fill."""
    if not prefix:
        return [(var, var.name) for var in program.all_parameters()]
    # After `paddleslim.dist.merge` the teacher's parameters are plain persistable variables
    # (not Parameters) named `<prefix><name>`; the teacher is inference-only, so every persistable
    # with the prefix is a parameter or a BN statistic.
    from .paddle_env import import_paddle

    dense = import_paddle().base.core.VarDesc.VarType.LOD_TENSOR
    return [(var, var.name[len(prefix):]) for var in program.list_vars()
            if var.persistable and var.name.startswith(prefix) and var.type == dense]


def _numpy_dtype_name(var: Any) -> str:
    from .paddle_env import import_paddle

    import_paddle()
    from paddle.base.data_feeder import convert_dtype

    return convert_dtype(var.dtype)


def load_weights(program: Any, path: str | os.PathLike, *, scope: Any, place: Any,
                 strict: bool, prefix: str = "", label: str = "weights",
                 log: Optional[Callable[[str], None]] = None) -> LoadReport:
    """Load a program's parameters from a legacy directory or pdparams into `scope`.

    Which variables: without `prefix`, `program.all_parameters()` — every parameter including BN
    moving mean/variance; optimizer state, LR counters and feed/fetch are never touched (legacy
    `load_pretrained_weights` semantics). With `prefix` (a program merged by PaddleSlim), the
    persistable variables named `<prefix><name>`, read from the files `<name>`; the rest of the
    program is left alone.

    For the teacher the trainer should load into the teacher's own program and scope *before*
    `merge` (`strict=True`, no prefix): merge then copies the values from `teacher_scope` under
    `teacher_` names. Loading after merge with `prefix="teacher_"` into the merged program and the
    student scope is equivalent. Student pretrained weights: `strict=False`, no prefix.

    strict=True: a missing path, or any missing or mis-shaped parameter, raises one
    SegDistillError naming the first few and the count; nothing is loaded then. A strict load
    that finds no variable to fill is an error too (never a silently random teacher).
    strict=False: skips them, logging `[SKIP] ...` lines like legacy, and logs the summary.
    """
    emit = log or _log.info
    path = Path(path)
    if not path.exists():
        if strict:
            raise SegDistillError(f"{label} not found: {path} does not exist")
        report = LoadReport(str(path), found=False)
        emit(report.summary())
        return report
    source = open_weights(path)
    report = LoadReport(str(path))
    candidates = _candidates(program, prefix)
    report.total = len(candidates)
    if strict and not candidates:
        raise SegDistillError(f"{label}: the program has no parameters"
                              + (f" named {prefix}*" if prefix else "") + f" to load from {path}")
    to_set: list[tuple[str, str]] = []  # (variable name, name in the source)
    for var, file_name in candidates:
        info = source.info(file_name)
        if info is None:
            report.missing.append(var.name)
            if not strict:
                emit(f"[SKIP] Pretrained weight {source.path(file_name)} doesn't exist")
            continue
        model_shape, model_dtype = tuple(var.shape), _numpy_dtype_name(var)
        if tuple(info.shape) != model_shape or info.dtype.name != model_dtype:
            report.mismatched.append(Mismatch(var.name, tuple(info.shape), model_shape,
                                              info.dtype.name, model_dtype))
            if not strict:
                emit(f"[SKIP] Shape of pretrained weight {source.path(file_name)} doesn't match. "
                     f"(Pretrained: {list(info.shape)} {info.dtype.name}, "
                     f"Actual: {list(model_shape)} {model_dtype})")
            continue
        to_set.append((var.name, file_name))
    wanted = {file_name for _, file_name in candidates}
    report.unexpected = [n for n in source.names() if n not in wanted]
    if strict and (report.missing or report.mismatched):
        raise SegDistillError(_strict_message(label, path, report))
    # Values are set with numpy rather than `paddle.static.load_vars`: one code path serves legacy
    # directories and pdparams alike, file names may differ from variable names (`teacher_`
    # prefix after merge), the headers were already validated above, and it behaves the same
    # under PIR, where load_vars ignores its predicate (paddle-compat.md §5).
    for var_name, file_name in to_set:
        scope.var(var_name).get_tensor().set(source.read(file_name), place)
        report.loaded.append(var_name)
    if not strict:
        emit(report.summary())
    return report


def _strict_message(label: str, path: Path, report: LoadReport) -> str:
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing)} missing ({_listing(report.missing)})")
    if report.mismatched:
        parts.append(f"{len(report.mismatched)} with the wrong shape or dtype "
                     f"({_listing([str(m) for m in report.mismatched])})")
    return (f"{label} in {path} do not fit the model: {report.total} parameters, "
            + "; ".join(parts))
