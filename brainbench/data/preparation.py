"""Where a run's data comes from: the brainbench home, its locks, and prepared shards made on demand.

``prepare_dataset`` turns ``(dataset, subject)`` into a prepared folder (webdataset shards + manifest) under
``<home>/prepared/``: an embedded world is generated first if needed, a real copy is read from ``data_root``,
and the adapter of :mod:`brainbench.data.registry` writes the shards once. Every step holds a lock in
``<home>/locks/``, so concurrent runs and the ranks of a ``torchrun``/``srun`` job (each runs ``bench``) share
one home safely: one process writes, the others wait and reuse.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from filelock import FileLock

from brainbench.data.manifest import Manifest
from brainbench.data.registry import get_dataset, obtain_raw, prepare
from brainbench.data.sources.nsd_transforms import ensure_template
from brainbench.errors import BrainbenchError, ConfigError

log = logging.getLogger("brainbench")


def default_home() -> Path:
    """Where worlds, prepared shards and caches go: ``$BRAINBENCH_HOME`` or ``~/.cache/brainbench``."""
    return Path(os.environ.get("BRAINBENCH_HOME", Path.home() / ".cache" / "brainbench"))


def home_lock(home: Path, name: str) -> FileLock:
    """A lock in ``<home>/locks/``: one process generates, prepares or caches a dataset, the others wait."""
    (home / "locks").mkdir(parents=True, exist_ok=True)
    return FileLock(home / "locks" / f"{name}.lock")


def prepare_dataset(
    dataset: str,
    subject: int,
    *,
    home: Path,
    world_preset: str = "small",
    data_root: Path | None = None,
    val_fraction: float | None = None,
    progress: bool = True,
) -> Path:
    """Makes sure the prepared shards of ``(dataset, subject)`` exist and returns their folder.

    Args:
        dataset: a name of :data:`brainbench.data.registry.DATASETS`.
        subject: 1-based subject number.
        home: the brainbench home (:func:`default_home`).
        world_preset: size of an embedded world (``small``; ``tiny`` for tests).
        data_root: root of a real dataset copy (required for real datasets).
        val_fraction: share of training stimuli held out for validation; ``None``: the adapter's default.
        progress: progress bars while generating and preparing.

    Raises:
        ConfigError: the folder exists but was prepared with other options.
    """
    with home_lock(home, f"{dataset}-{world_preset}"):  # the world root is shared by its subjects
        entry = get_dataset(dataset)
        if entry.is_world:
            log.info("%s (%s), subject %d", entry.name, world_preset, subject)
        raw_root, version, options = obtain_raw(
            entry, subject, home=home, preset=world_preset, data_root=data_root, progress=progress
        )
        if val_fraction is not None:
            options["val_fraction"] = val_fraction
        prepared = home / "prepared" / f"{dataset}-{version}" / f"subj{subject:02d}"
        if (prepared / "manifest.json").is_file():
            recorded = Manifest.load(prepared).source.get("options", {})
            changed = {
                k: (recorded.get(k), v) for k, v in options.items() if k in recorded and recorded[k] != v
            }
            if changed:
                raise ConfigError(
                    f"{prepared} was prepared with other options {changed} (recorded, requested); delete it "
                    "or use another --home to prepare it again"
                )
        else:
            log.info("preparing %s subject %d -> %s", dataset, subject, prepared)
            prepare(entry, raw_root, subject, prepared, version=version, options=options, progress=progress)
        if entry.adapter == "nsd":  # template-space resampling, when the raw root has the NSD transforms
            try:
                ensure_template(prepared, raw_root, subject)
            except BrainbenchError as error:  # only template-space runs need it; they fail clearly without
                log.warning("no template space for %s: %s", prepared, error)
        return prepared
