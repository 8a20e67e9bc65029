"""The legacy "one file per variable" tensor format, in pure numpy: read a file's header or data,
encode and write tensors, and write whole directories or `.tgz` tarballs of them.

File path = `<dir>/<variable name>` (a `/` in a name is a sub-directory). Each file is one
serialized LoDTensor:
    u32 version=0 | u64 lod_level + lod data | u32 tensor version=0 | i32 desc size
    | TensorDesc protobuf (1: varint data_type, 2: int64 dims) | raw little-endian C-order data
"""
from __future__ import annotations

import io
import os
import struct
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import SegDistillError

# VarType.Type enum of Paddle's framework.proto -> numpy dtype. BF16 (22) has no numpy dtype.
_PROTO_TO_NUMPY: dict[int, np.dtype] = {
    0: np.dtype(np.bool_), 1: np.dtype("<i2"), 2: np.dtype("<i4"), 3: np.dtype("<i8"),
    4: np.dtype("<f2"), 5: np.dtype("<f4"), 6: np.dtype("<f8"), 20: np.dtype(np.uint8),
    21: np.dtype(np.int8), 23: np.dtype("<c8"), 24: np.dtype("<c16"),
}
_NUMPY_TO_PROTO: dict[np.dtype, int] = {dt: code for code, dt in _PROTO_TO_NUMPY.items()}


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
