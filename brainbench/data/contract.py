"""Write a prepared folder from arrays: bring your own fMRI data to ``brainbench bench --prepared``.

A prepared folder is what every adapter (``brainbench prepare nsd|god|cc2017|mindeye``) writes and what
``bench``, ``evaluate`` and ``predict`` read (the contract is documented in ``docs/prepared-data.md``):

- ``manifest.json``: dataset, version, subject, voxel count, ROIs, normalisation, split name, the shards of
  each split with their sample counts and SHA-256, the stimulus store, and where the data came from;
- ``{train,val,test}-NNNNNN.tar``: webdataset shards, one sample per trial (``voxels.npy`` float16 ``(V,)``,
  ``meta.json``; test samples are the mean of their repeats and keep every repeat in ``repeats.npy``);
- ``stimuli.hdf5``: the stimulus store, each stimulus once by ``stim_id``: images uint8 ``(N, H, W, 3)``,
  captions and category names.

:func:`write_prepared` writes such a folder from numpy arrays, into a temporary sibling renamed at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.data.manifest import MANIFEST_NAME, Manifest
from brainbench.data.shards import Sample, sha256_file
from brainbench.data.sources.common import atomic_output, close_writers, split_writers
from brainbench.data.stimulus_store import write_stimulus_store
from brainbench.errors import ConfigError

STIMULUS_STORE_NAME = "stimuli.hdf5"
CONTRACT_VERSION = "1"


@dataclass(frozen=True)
class Trials:
    """The trials of one split.

    Attributes:
        stim_ids: ``(N,)`` the stimulus each trial showed (an id of the stimulus store).
        voxels: ``(N, V)`` one trial per row (train, val); for test, ``(N, R, V)``: the ``R`` repeats of each
            test stimulus, averaged into its sample (every repeat is kept too).
    """

    stim_ids: np.ndarray
    voxels: np.ndarray


def write_prepared(
    out: str | Path,
    *,
    dataset: str,
    dataset_version: str,
    subject: int,
    splits: Mapping[str, Trials],
    images: np.ndarray,
    image_ids: np.ndarray,
    captions: Sequence[Sequence[str]] | None = None,
    categories: Sequence[Sequence[str]] | None = None,
    rois: Mapping[str, Sequence[int]] | None = None,
    normalisation: str = "z-scored per voxel on the training trials by the data owner",
    samples_per_shard: int = 1000,
) -> Manifest:
    """Write a prepared folder (manifest, shards, stimulus store) from arrays.

    Args:
        out: the folder to write (replaced atomically if it exists).
        dataset: the dataset's name; rows go to ``leaderboards/<dataset>/<task>.csv``.
        dataset_version: the data's version, recorded in every row.
        subject: 1-based subject number.
        splits: ``train``, ``val`` and ``test`` trials (``val`` may be empty but must be given).
        images: ``(S, H, W, 3)`` uint8 stimuli.
        image_ids: ``(S,)`` their ids; every ``stim_id`` of ``splits`` must be one of them.
        captions: per image, its captions (optional; text retrieval is scored when given).
        categories: per image, its category names (optional).
        rois: ROI name -> voxel indices (optional).
        normalisation: how the voxels were normalised (recorded in the manifest).
        samples_per_shard: samples per tar shard.

    Returns:
        The manifest written.

    Raises:
        ConfigError: a missing split, misaligned shapes, unknown stimulus ids or values that are not finite.
    """
    _check(splits, image_ids)
    n_voxels = int(splits["train"].voxels.shape[-1])
    with atomic_output(Path(out)) as tmp:
        with split_writers(tmp, ("train", "val", "test"), samples_per_shard) as writers:
            trial = 0
            for split in ("train", "val", "test"):
                for stim_id, voxels in zip(splits[split].stim_ids, splits[split].voxels, strict=True):
                    repeats = voxels.astype(np.float16) if split == "test" else None
                    mean = voxels.mean(axis=0) if split == "test" else voxels
                    n_repeats = len(voxels) if split == "test" else 1
                    key = f"subj{subject:02d}_{split}{trial:07d}"
                    sample = Sample(
                        key,
                        subject,
                        split,
                        int(stim_id),
                        mean.astype(np.float16),
                        repeats,
                        1,
                        trial,
                        n_repeats,
                    )
                    writers[split].add(sample)
                    trial += 1
            shard_splits = close_writers(writers)
        store = tmp / STIMULUS_STORE_NAME
        n_images = len(image_ids)
        write_stimulus_store(
            store,
            np.asarray(image_ids, dtype=np.int64),
            np.asarray(images, dtype=np.uint8),
            captions if captions is not None else [[] for _ in range(n_images)],
            categories if categories is not None else [[] for _ in range(n_images)],
        )
        manifest = Manifest(
            dataset=dataset,
            dataset_version=dataset_version,
            subject=subject,
            n_voxels=n_voxels,
            voxel_order="as given by the data owner",
            voxel_ijk=[],
            rois={name: [int(i) for i in indices] for name, indices in (rois or {}).items()},
            normalisation={"values": normalisation, "dtype": "float16"},
            split_name=f"test{len(splits['test'].stim_ids)}",
            splits=shard_splits,
            stimulus_store=_store_info(store, n_images, categories is not None, captions is not None),
            source={
                "root": str(Path(out).resolve()),
                "adapter": __name__,
                "adapter_version": CONTRACT_VERSION,
            },
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        manifest.save(tmp / MANIFEST_NAME)
    return manifest


def _store_info(store: Path, n_images: int, has_categories: bool, has_captions: bool) -> dict[str, Any]:
    return {
        "path": STIMULUS_STORE_NAME,
        "sha256": sha256_file(store),
        "n_stimuli": n_images,
        "has_images": True,
        "has_categories": has_categories,
        "captions": "given" if has_captions else "none",
    }


def _check(splits: Mapping[str, Trials], image_ids: np.ndarray) -> None:
    missing = [s for s in ("train", "val", "test") if s not in splits]
    if missing:
        raise ConfigError(
            f"write_prepared: splits {missing} are missing (pass empty Trials for an empty val)"
        )
    known = set(np.asarray(image_ids).tolist())
    n_voxels = splits["train"].voxels.shape[-1]
    for split, trials in splits.items():
        expected_ndim = 3 if split == "test" else 2
        voxels = np.asarray(trials.voxels)
        if len(trials.stim_ids) and (voxels.ndim != expected_ndim or voxels.shape[-1] != n_voxels):
            raise ConfigError(
                f"write_prepared: {split} voxels have shape {voxels.shape}; expected "
                f"{'(N, R, V)' if split == 'test' else '(N, V)'} with V = {n_voxels}"
            )
        if len(voxels) != len(trials.stim_ids):
            raise ConfigError(
                f"write_prepared: {split} has {len(voxels)} voxel rows for {len(trials.stim_ids)} ids"
            )
        unknown = sorted(set(np.asarray(trials.stim_ids).tolist()) - known)
        if unknown:
            raise ConfigError(f"write_prepared: {split} stim_ids {unknown[:5]} are not among image_ids")
        if not np.isfinite(voxels).all():
            raise ConfigError(f"write_prepared: {split} voxels hold NaN or inf values")
