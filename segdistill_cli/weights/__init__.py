"""Pretrained and checkpoint weights in the legacy formats: read, write, check, load into a program.

Two on-disk formats (docs/design.md "Legacy facts"):

* the legacy "one file per variable" directory written by `fluid.io.save_vars` / today's
  `paddle.static.save_vars` (no `filename`): file path = `<dir>/<variable name>`, so a `/` in a name
  is a sub-directory. Each file is one serialized LoDTensor:
      u32 version=0 | u64 lod_level + lod data | u32 tensor version=0 | i32 desc size
      | TensorDesc protobuf (1: varint data_type, 2: int64 dims) | raw little-endian C-order data
* a `model.pdparams` pickle (dict name -> ndarray, legacy and Paddle 2.x static `save`).

The codec is pure numpy so tests and `segdistill fetch` work without Paddle; only
`load_weights` (which writes into a Paddle scope) touches Paddle, and only through the objects it is
given. Every user-facing failure is a one-line `SegDistillError` naming the file.

    tensor_format.py  the tensor file codec, dir/tarball writers
    sources.py        legacy dir / pdparams sources, open_weights, scan_weights
    structure.py      check_structure (headers only)
    loading.py        load_weights into a program's scope, LoadReport
"""
from .loading import LoadReport, Mismatch, load_weights
from .sources import (PDPARAMS_FILE, LegacyDirWeights, PdparamsWeights, WeightSource,
                      open_weights, read_pdparams, scan_weights)
from .structure import MAX_LISTED, StructureReport, check_structure
from .tensor_format import (TensorInfo, encode_header, encode_tensor, make_legacy_tarball,
                            read_tensor, read_tensor_info, write_legacy_dir, write_tensor)

__all__ = ["LegacyDirWeights", "LoadReport", "MAX_LISTED", "Mismatch", "PDPARAMS_FILE",
           "PdparamsWeights", "StructureReport", "TensorInfo", "WeightSource", "check_structure",
           "encode_header", "encode_tensor", "load_weights", "make_legacy_tarball", "open_weights",
           "read_pdparams", "read_tensor", "read_tensor_info", "scan_weights", "write_legacy_dir",
           "write_tensor"]



