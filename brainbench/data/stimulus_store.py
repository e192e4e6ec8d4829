"""The stimulus store: every image a prepared subject saw, stored once and keyed by ``stim_id``.

Layout of the HDF5 file (no pickle anywhere; strings are UTF-8 JSON, one per row):

====================  ======================  ==================================================
dataset               dtype / shape           content
====================  ======================  ==================================================
``stim_id``           int64 ``(N,)``          0-based stimulus ids (NSD ``nsdId``), sorted, unique
``images``            uint8 ``(N, H, W, 3)``  RGB images, row ``i`` belongs to ``stim_id[i]``
``captions``          str ``(N,)``            JSON list of captions per row
``categories``        str ``(N,)``            JSON list of category names per row (largest first)
====================  ======================  ==================================================

h5py fancy indexing only accepts sorted, unique row indices (datasets.md §5.2, trap 16), so the reader
sorts the requested rows, reads them once and un-permutes the result.

Example:
    >>> store = StimulusStore("prepared/subj01/stimuli.hdf5")  # doctest: +SKIP
    >>> store.images([17, 3, 17]).shape  # doctest: +SKIP
    (3, 425, 425, 3)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np

from brainbench.errors import DataFormatError, MissingFileError

STORE_SCHEMA = 1
_REQUIRED = ("stim_id", "images", "captions", "categories")


def write_stimulus_store(
    path: str | Path,
    stim_ids: Sequence[int] | np.ndarray,
    images: np.ndarray | Iterable[np.ndarray],
    captions: Sequence[Sequence[str]],
    categories: Sequence[Sequence[str]],
) -> None:
    """Write a stimulus store atomically (a temporary file renamed into place).

    Args:
        path: Output ``.hdf5`` path.
        stim_ids: ``(N,)`` 0-based stimulus ids, unique. When ``images`` is an array they may come in any
            order (rows are sorted together); when ``images`` is an iterable of batches they must be sorted.
        images: ``(N, H, W, 3)`` uint8 array aligned with ``stim_ids``, or an iterable of ``(n_i, H, W, 3)``
            uint8 batches whose concatenation is aligned with the (sorted) ``stim_ids``. Batches let large
            stores (NSD: 10,000 × 425 × 425 × 3) be written without holding every image in memory.
        captions: per stimulus, its captions (aligned with ``stim_ids``).
        categories: per stimulus, its category names (aligned with ``stim_ids``).

    Raises:
        ValueError: on misaligned inputs, duplicate ids, unsorted ids with batches, or non-uint8 images.
    """
    path = Path(path)
    ids = np.asarray(stim_ids, dtype=np.int64)
    n = len(ids)
    if len(captions) != n or len(categories) != n:
        raise ValueError(
            f"stim_ids ({n}), captions ({len(captions)}) and categories ({len(categories)}) differ"
        )
    if len(np.unique(ids)) != n:
        raise ValueError("stim_ids must be unique")
    order = np.argsort(ids, kind="stable")
    batches: Iterable[np.ndarray]
    if isinstance(images, np.ndarray):
        if images.shape[0] != n:
            raise ValueError(f"images has {images.shape[0]} rows, stim_ids has {n}")
        batches = [images[order]]
    else:
        if not np.all(order == np.arange(n)):
            raise ValueError("stim_ids must be sorted when images are given as batches")
        batches = images
    captions_json = [json.dumps(list(captions[i]), ensure_ascii=False) for i in order]
    categories_json = [json.dumps(list(categories[i]), ensure_ascii=False) for i in order]

    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = STORE_SCHEMA
            f.create_dataset("stim_id", data=ids[order])
            str_dtype = h5py.string_dtype("utf-8")
            f.create_dataset("captions", data=np.array(captions_json, dtype=object), dtype=str_dtype)
            f.create_dataset("categories", data=np.array(categories_json, dtype=object), dtype=str_dtype)
            _write_images(f, batches, n)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_images(f: h5py.File, batches: Iterable[np.ndarray], n: int) -> None:
    """Append image batches into a chunked ``images`` dataset of ``n`` rows."""
    dset = None
    row = 0
    for batch in batches:
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (n, H, W, 3), got {batch.dtype} {batch.shape}")
        if dset is None:
            dset = f.create_dataset(
                "images",
                shape=(n, *batch.shape[1:]),
                dtype=np.uint8,
                chunks=(1, *batch.shape[1:]),
                compression="gzip",
                compression_opts=1,
            )
        if row + len(batch) > n:
            raise ValueError(f"image batches hold more than the {n} rows of stim_ids")
        dset[row : row + len(batch)] = batch
        row += len(batch)
    if dset is None:
        f.create_dataset("images", shape=(0, 0, 0, 3), dtype=np.uint8)
    elif row != n:
        raise ValueError(f"image batches hold {row} rows, stim_ids has {n}")


class StimulusStore:
    """Read-only access to a stimulus store written by :func:`write_stimulus_store`.

    The HDF5 file is opened lazily and re-opened after a fork, so a store can be handed to DataLoader
    workers.

    Args:
        path: The store's ``.hdf5`` path.

    Raises:
        MissingFileError: if the file does not exist.
        DataFormatError: if a required dataset is missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(self.path, "re-run `brainbench prepare` to rebuild the stimulus store")
        self._file: h5py.File | None = None
        self._pid = -1
        f = self._h5()
        missing = [name for name in _REQUIRED if name not in f]
        if missing:
            raise DataFormatError(
                self.path, f"stimulus store lacks datasets {missing}", "re-run `brainbench prepare`"
            )
        self.stim_ids: np.ndarray = f["stim_id"][()].astype(np.int64)
        if np.any(np.diff(self.stim_ids) <= 0):
            raise DataFormatError(
                self.path, "stim_id is not sorted and unique", "re-run `brainbench prepare`"
            )

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        return int(len(self.stim_ids))

    def __contains__(self, stim_id: object) -> bool:
        if not isinstance(stim_id, int | np.integer):
            return False
        row = int(np.searchsorted(self.stim_ids, stim_id))
        return row < len(self.stim_ids) and int(self.stim_ids[row]) == int(stim_id)

    def rows(self, stim_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Map stimulus ids to row numbers of the store.

        Args:
            stim_ids: 0-based stimulus ids.

        Returns:
            ``(n,)`` int64 row numbers.

        Raises:
            KeyError: naming the ids that are not in the store.
        """
        ids = np.asarray(stim_ids, dtype=np.int64).reshape(-1)
        rows = np.searchsorted(self.stim_ids, ids)
        if len(self) == 0:
            bad = np.ones(len(ids), dtype=bool)
        else:
            found = self.stim_ids[np.minimum(rows, len(self) - 1)]
            bad = (rows >= len(self)) | (found != ids)
        if np.any(bad):
            raise KeyError(f"stim ids {ids[bad][:10].tolist()} not in stimulus store {self.path}")
        return rows

    def images(self, stim_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images for the given ids, in the order given (duplicates allowed).

        Args:
            stim_ids: 0-based stimulus ids, any order.

        Returns:
            ``(n, H, W, 3)`` uint8.
        """
        rows = self.rows(stim_ids)
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        data = self._h5()["images"][unique_rows] if len(unique_rows) else np.zeros((0, 0, 0, 3), np.uint8)
        return data[inverse.reshape(-1)]

    def _json_row(self, name: str, stim_id: int) -> list[str]:
        row = int(self.rows([stim_id])[0])
        raw = self._h5()[name][row]
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        return list(json.loads(text))

    def captions(self, stim_id: int) -> list[str]:
        """All captions of one stimulus (may be empty)."""
        return self._json_row("captions", stim_id)

    def categories(self, stim_id: int) -> list[str]:
        """Category names of one stimulus, largest object first (may be empty)."""
        return self._json_row("categories", stim_id)

    def close(self) -> None:
        """Close the underlying HDF5 file (it reopens on next access)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StimulusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
