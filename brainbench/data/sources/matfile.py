"""MATLAB ``.mat`` files whatever their version: v5 through scipy, v7.3 (HDF5) through h5py.

The extension does not tell the format (datasets.md §5.2 trap 4): the 128-byte text header starts with
``MATLAB 5.0`` for v5 files and ``MATLAB 7.3`` for v7.3 files, which are HDF5 containers (HDF5 signature at
byte 512); files written by h5py under a ``.mat`` name have the HDF5 signature at byte 0. h5py shows a v7.3
array's dimensions **reversed** (MATLAB is column-major): a MATLAB ``(59412, 240, 10)`` array reads as
``(10, 240, 59412)``; :func:`read_v73_array` transposes it back.

Example:
    >>> mat_format("testing_fmri.mat")  # doctest: +SKIP
    'v7.3'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import scipy.io

from brainbench.errors import DataFormatError, MissingFileError

MatFormat = Literal["v5", "v7.3", "hdf5"]
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def mat_format(path: str | Path) -> MatFormat:
    """Sniff a ``.mat`` (or BData) file: ``"v5"``, ``"v7.3"`` (MATLAB's HDF5) or ``"hdf5"`` (plain HDF5).

    Raises:
        MissingFileError: the file does not exist.
        DataFormatError: neither a MATLAB v5 header nor an HDF5 signature (v4 and v6 are not supported).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "check --root; the file name follows the dataset's release")
    with open(path, "rb") as f:
        head = f.read(520)
    if head.startswith(_HDF5_SIGNATURE):
        return "hdf5"
    if head.startswith(b"MATLAB 7.3") and head[512:520] == _HDF5_SIGNATURE:
        return "v7.3"
    if head.startswith(b"MATLAB 5.0"):
        return "v5"
    raise DataFormatError(
        path,
        f"not a MATLAB v5/v7.3 or HDF5 file (header {head[:24]!r})",
        "re-download the file; MATLAB v4/v6 files are not supported",
    )


def load_v5(path: str | Path) -> dict[str, Any]:
    """A MATLAB v5 file as scipy reads it (structs as nested objects with attribute access).

    Raises:
        DataFormatError: the file is not v5 (names the detected format).
    """
    fmt = mat_format(path)
    if fmt != "v5":
        raise DataFormatError(path, f"expected a MATLAB v5 file, found {fmt}", "open it with h5py instead")
    try:
        return scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=False)
    except (ValueError, OSError) as exc:
        raise DataFormatError(path, f"unreadable MATLAB v5 file ({exc})", "re-download the file") from exc


def read_v73_array(file: h5py.File, name: str) -> np.ndarray:
    """A numeric array of a v7.3 file in MATLAB's axis order (h5py shows it reversed).

    Raises:
        DataFormatError: ``name`` is missing or not a numeric dataset.
    """
    node = file.get(name)
    if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "biuf":
        raise DataFormatError(
            file.filename, f"no numeric dataset '{name}'", "check the file against the dataset's release"
        )
    return np.asarray(node[()]).transpose()
