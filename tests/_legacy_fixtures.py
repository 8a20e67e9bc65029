"""Test fixtures in the legacy formats (shared by several test modules)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from segdistill_cli.weights import encode_header


def sparse_legacy_dir(directory: Path, manifest: Mapping[str, Sequence[int]]) -> Path:
    """A legacy one-file-per-variable folder with real headers and the data as a sparse hole:
    the 157 MiB tutorial teacher costs no disk and no time (values read back as zeros)."""
    for name, shape in manifest.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        header = encode_header(shape, np.float32)
        with open(path, "wb") as fh:
            fh.write(header)
            fh.truncate(len(header) + int(np.prod(shape)) * 4)
    return directory
