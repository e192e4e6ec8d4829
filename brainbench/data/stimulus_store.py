"""The stimulus store: every image (or video clip) a prepared subject saw, stored once, keyed by ``stim_id``.

Layout of the HDF5 file (no pickle anywhere; strings are UTF-8 JSON, one per row):

====================  =========================  ===============================================
dataset               dtype / shape              content
====================  =========================  ===============================================
``stim_id``           int64 ``(N,)``             0-based stimulus ids (NSD ``nsdId``), sorted, unique
``images``            uint8 ``(N, H, W, 3)``     RGB images, row ``i`` belongs to ``stim_id[i]``
``captions``          str ``(N,)``               JSON list of captions per row
``categories``        str ``(N,)``               JSON list of category names per row (largest first)
``frames``            uint8 ``(N, F, H, W, 3)``  optional, video datasets only (CC2017): the ``F`` frames
                                                 of each clip; ``images`` then holds one keyframe per
                                                 clip (attribute ``keyframe`` of ``frames``) so image
                                                 backbones work unchanged
====================  =========================  ===============================================

``images`` and ``frames`` are chunked one row per chunk, so reading a few stimuli reads only their rows.

h5py fancy indexing only accepts sorted, unique row indices (datasets.md §5.2, trap 16), so the reader
sorts the requested rows, reads them once and un-permutes the result.

Example:
    >>> store = StimulusStore("prepared/subj01/stimuli.hdf5")  # doctest: +SKIP
    >>> store.images([17, 3, 17]).shape  # doctest: +SKIP
    (3, 425, 425, 3)
    >>> store.has_frames, store.frames([3]).shape  # a CC2017 store  # doctest: +SKIP
    (True, (1, 6, 224, 224, 3))
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
    images: np.ndarray | Iterable[np.ndarray] | None,
    captions: Sequence[Sequence[str]],
    categories: Sequence[Sequence[str]],
    frames: np.ndarray | Iterable[np.ndarray] | None = None,
    keyframe: int | None = None,
) -> None:
    """Write a stimulus store atomically (a temporary file renamed into place).

    Video datasets pass ``frames``. Their ``images`` may be ``None``, and then ``images`` is
    ``frames[:, keyframe]``, taken while the frames are written, so frame batches can be streamed (each
    clip decoded once, never all clips in memory).

    Args:
        path: Output ``.hdf5`` path.
        stim_ids: ``(N,)`` 0-based stimulus ids, unique. When ``images`` is an array they may come in any
            order (rows are sorted together); when ``images`` is an iterable of batches they must be sorted.
        images: ``(N, H, W, 3)`` uint8 array aligned with ``stim_ids``, or an iterable of ``(n_i, H, W, 3)``
            uint8 batches whose concatenation is aligned with the (sorted) ``stim_ids``. Batches let large
            stores (NSD: 10,000 × 425 × 425 × 3) be written without holding every image in memory.
        captions: per stimulus, its captions (aligned with ``stim_ids``).
        categories: per stimulus, its category names (aligned with ``stim_ids``).
        frames: optional ``(N, F, H, W, 3)`` uint8 clip frames aligned with ``stim_ids``, or an iterable of
            ``(n_i, F, H, W, 3)`` batches aligned with the (sorted) ``stim_ids``, like ``images``.
        keyframe: the frame index (``0 <= keyframe < F``) stored as ``images`` when ``images`` is ``None``;
            recorded as the ``keyframe`` attribute of ``frames``.

    Raises:
        ValueError: on misaligned inputs, duplicate ids, unsorted ids with batches, non-uint8 images or
            frames, or ``images=None`` without ``frames`` and ``keyframe``.
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
    if images is None and (frames is None or keyframe is None):
        raise ValueError("images=None needs frames and a keyframe to take the images from")
    order = np.argsort(ids, kind="stable")
    image_batches = None if images is None else _aligned_batches("images", images, order)
    frame_batches = None if frames is None else _aligned_batches("frames", frames, order)
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
            if image_batches is not None:
                images_out = _RowWriter(f, "images", n, ndim=4)
                for batch in image_batches:
                    images_out.add(batch)
                images_out.finish()
            if frame_batches is not None:
                _write_frames(f, frame_batches, n, keyframe, with_images=image_batches is None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _aligned_batches(
    name: str, rows: np.ndarray | Iterable[np.ndarray], order: np.ndarray
) -> Iterable[np.ndarray]:
    """Batches of ``rows`` in sorted ``stim_id`` order (an array is permuted; batches must already be)."""
    if isinstance(rows, np.ndarray):
        if rows.shape[0] != len(order):
            raise ValueError(f"{name} has {rows.shape[0]} rows, stim_ids has {len(order)}")
        return [rows[order]]
    if not np.all(order == np.arange(len(order))):
        raise ValueError(f"stim_ids must be sorted when {name} are given as batches")
    return rows


class _RowWriter:
    """Append uint8 batches of trailing shape ``(..., 3)`` into a row-chunked dataset of ``n`` rows."""

    def __init__(self, f: h5py.File, name: str, n: int, ndim: int) -> None:
        self.f, self.name, self.n, self.ndim = f, name, n, ndim
        self.dset: h5py.Dataset | None = None
        self.row = 0

    def add(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != self.ndim or batch.shape[-1] != 3:
            shape = "(n, H, W, 3)" if self.ndim == 4 else "(n, F, H, W, 3)"
            raise ValueError(f"{self.name} must be uint8 {shape}, got {batch.dtype} {batch.shape}")
        if self.dset is None:
            self.dset = self.f.create_dataset(
                self.name,
                shape=(self.n, *batch.shape[1:]),
                dtype=np.uint8,
                chunks=(1, *batch.shape[1:]),
                compression="gzip",
                compression_opts=1,
            )
        elif batch.shape[1:] != self.dset.shape[1:]:
            raise ValueError(
                f"{self.name} batches differ in shape: {batch.shape[1:]} vs {self.dset.shape[1:]}"
            )
        if self.row + len(batch) > self.n:
            raise ValueError(f"{self.name} batches hold more than the {self.n} rows of stim_ids")
        self.dset[self.row : self.row + len(batch)] = batch
        self.row += len(batch)

    def finish(self) -> h5py.Dataset:
        if self.dset is None:
            self.dset = self.f.create_dataset(self.name, shape=(0,) * (self.ndim - 1) + (3,), dtype=np.uint8)
        elif self.row != self.n:
            raise ValueError(f"{self.name} batches hold {self.row} rows, stim_ids has {self.n}")
        return self.dset


def _write_frames(
    f: h5py.File, batches: Iterable[np.ndarray], n: int, keyframe: int | None, with_images: bool
) -> None:
    """Write ``frames``; with ``with_images``, also write each batch's keyframe as ``images``."""
    frames = _RowWriter(f, "frames", n, ndim=5)
    images = _RowWriter(f, "images", n, ndim=4) if with_images else None
    for batch in batches:
        frames.add(batch)
        if images is not None:
            assert keyframe is not None
            if not 0 <= keyframe < batch.shape[1]:
                raise ValueError(f"keyframe {keyframe} is outside the {batch.shape[1]} frames per stimulus")
            images.add(np.ascontiguousarray(batch[:, keyframe]))
    dset = frames.finish()
    if images is not None:
        images.finish()
    if keyframe is not None:
        dset.attrs["keyframe"] = int(keyframe)


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
        return self._read_rows("images", stim_ids)

    @property
    def has_frames(self) -> bool:
        """Whether the store holds video frames (``frames``) besides the keyframe ``images``."""
        return "frames" in self._h5()

    def frames(self, stim_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Clip frames for the given ids, in the order given (duplicates allowed).

        Args:
            stim_ids: 0-based stimulus ids, any order.

        Returns:
            ``(n, F, H, W, 3)`` uint8.

        Raises:
            DataFormatError: the store has no frames (an image dataset).
        """
        if not self.has_frames:
            raise DataFormatError(
                self.path,
                "this stimulus store holds images only, no video frames",
                "use images(); frames exist for video datasets (CC2017) prepared by `brainbench prepare`",
            )
        return self._read_rows("frames", stim_ids)

    def _read_rows(self, name: str, stim_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of ``name`` in ``stim_ids`` order, read sorted and unique (datasets.md §5.2 trap 16)."""
        rows = self.rows(stim_ids)
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        dset = self._h5()[name]
        if not len(unique_rows):
            return np.zeros((0, *dset.shape[1:]), np.uint8)
        return dset[unique_rows][inverse.reshape(-1)]

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
