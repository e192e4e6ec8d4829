"""What every dataset adapter shares: reuse, all-or-nothing output, validation choice, split writers.

An adapter builds its output inside :func:`atomic_output` and returns the manifest; a failure at any point
leaves no ``out`` (and no half-written one), and an existing ``out`` is only replaced at the very end.

Example:
    >>> source = adapter_source(root, "brainbench.data.sources.god", "1", {"subject": 1})  # doctest: +SKIP
    >>> if (m := existing_manifest(out, source, overwrite=False)) is not None:  # doctest: +SKIP
    ...     return m
    >>> with atomic_output(out) as tmp:  # doctest: +SKIP
    ...     with split_writers(tmp, ("train", "test"), 1000) as writers:
    ...         ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.data.manifest import MANIFEST_NAME, Manifest
from brainbench.data.shards import SplitWriter
from brainbench.errors import ConfigError, DataFormatError, MissingFileError

log = logging.getLogger(__name__)


def adapter_source(root: Path, adapter: str, adapter_version: str, options: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``source`` block: where the raw data was, which adapter read it, with what options."""
    return {
        "root": str(Path(root).resolve()),
        "adapter": adapter,
        "adapter_version": adapter_version,
        "options": options,
    }


def existing_manifest(out: Path, source: dict[str, Any], overwrite: bool) -> Manifest | None:
    """The manifest in ``out`` if it was prepared identically; ``None`` if ``out`` is free (or overwritten).

    Raises:
        ConfigError: ``out`` is a file, or holds something else and ``overwrite`` is false.
    """
    out = Path(out)
    if out.is_file():
        raise ConfigError(f"--out {out} is a file; choose a directory path")
    if overwrite or not out.exists() or not any(out.iterdir()):
        return None
    try:
        existing = Manifest.load(out / MANIFEST_NAME)
    except (MissingFileError, DataFormatError):
        existing = None
    same_keys = ("root", "adapter", "adapter_version", "options")
    if existing is not None and all(existing.source.get(k) == source[k] for k in same_keys):
        log.info("%s already prepared with the same options; reusing it", out)
        return existing
    raise ConfigError(
        f"{out} already holds a different prepared directory (or something else); pass overwrite=True "
        "(`--overwrite`) to replace it, or choose another --out"
    )


@contextlib.contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to write into; on success it replaces ``out`` in one rename.

    On any exception the temporary directory is removed and ``out`` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def split_writers(
    out: Path, splits: Iterable[str], samples_per_shard: int
) -> Iterator[dict[str, SplitWriter]]:
    """One :class:`SplitWriter` per split; every writer is aborted if the block raises."""
    writers = {split: SplitWriter(out, split, samples_per_shard) for split in splits}
    try:
        yield writers
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def close_writers(writers: dict[str, SplitWriter]) -> dict[str, dict[str, Any]]:
    """Close every writer; the manifest's ``splits`` block (``n_samples`` and shard infos per split)."""
    splits = {}
    for split, writer in writers.items():
        infos = writer.close()
        splits[split] = {"n_samples": sum(i["n_samples"] for i in infos), "shards": infos}
    return splits


def choose_val_ids(train_ids: Iterable[int] | np.ndarray, val_fraction: float, seed: int) -> set[int]:
    """A seeded ``val_fraction`` of the training ids (at least one when the fraction is positive).

    Validation is chosen by stimulus (or category), never by trial, so no stimulus is in two splits.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = np.unique(np.asarray(list(train_ids) if not isinstance(train_ids, np.ndarray) else train_ids))
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and n_val == 0 and len(ids) > 1:
        n_val = 1
    return set(np.random.default_rng(seed).choice(ids, size=n_val, replace=False).tolist())
