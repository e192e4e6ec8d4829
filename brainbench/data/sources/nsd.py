"""Natural Scenes Dataset adapter: NSD raw layout -> webdataset shards, stimulus store and manifest.

NSD (Allen et al. 2022, "A massive 7T fMRI dataset to bridge cognitive neuroscience and artificial
intelligence", Nature Neuroscience 25:116-126, doi:10.1038/s41593-021-00962-x): 8 subjects viewed COCO images
at 7T, 750 trials per session and up to 40 sessions; each image was shown up to 3 times; 1,000 images
(shared1000) were shown to every subject. Betas are GLMsingle ``betas_fithrf_GLMdenoise_RR`` at 1.8 mm.

What :func:`prepare_nsd` does (datasets.md §1.7; the traps of §5.2 in brackets):

- trials come from ``responses.tsv`` in file order (= betas order), cross-checked against
  ``nsd_expdesign.mat``; 1-based ids become 0-based exactly once [2];
- voxels are ``nsdgeneral > 0`` [6], enumerated in C order over (x, y, z) of the NIfTI grid; the ``.hdf5``
  betas, ``(T, Z, Y, X)`` in h5py, are reordered to the same order [5]; files are read via ``dataobj`` [7];
- raw int16 / 300 = percent signal change [1], then z-scored per voxel per session with statistics from that
  session's non-shared trials only [11]; voxels with zero std get std 1 and are counted in the manifest;
- shared images form the test split: every repeat is kept (z-scored) and averaged, with ``n_repeats`` [10];
  other images are single trials, split into train/val by image (a seeded ``val_fraction`` of the images,
  all their trials), so no image is in two splits;
- the split is named ``shared{n_test_images}@{n_sessions}sess`` [12].

Example:
    >>> manifest = prepare_nsd(Path("/data/nsd"), 1, Path("out/nsd.subj01"), sessions=37)  # doctest: +SKIP
    >>> manifest.split_name  # doctest: +SKIP
    'shared982@37sess'
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainbench.data.manifest import MANIFEST_NAME, Manifest
from brainbench.data.shards import Sample, SplitWriter, sha256_file
from brainbench.data.sources import nsd_readers as raw
from brainbench.data.sources.common import (
    adapter_source,
    atomic_output,
    choose_val_ids,
    close_writers,
    existing_manifest,
    split_writers,
)
from brainbench.data.sources.nsd_layout import NsdLayout, subject_dir_name
from brainbench.data.stimulus_store import write_stimulus_store
from brainbench.errors import ConfigError, DataFormatError

ADAPTER_VERSION = "1"
VOXEL_ORDER = "nsdgeneral > 0, C order over (x, y, z) of the func1pt8mm NIfTI grid (z fastest)"
STIMULUS_STORE_NAME = "stimuli.hdf5"
ZSCORE_STATS_NAME = "zscore_stats.npz"
_ZERO_STD = 1e-6
_FLOAT16_MAX = 65504.0
log = logging.getLogger(__name__)

__all__ = ["prepare_nsd", "zscore_session", "betas_to_psc"]
betas_to_psc = raw.betas_to_psc


def zscore_session(psc: np.ndarray, is_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Z-score one session per voxel with statistics of its train trials only.

    Args:
        psc: ``(T, V)`` float32 percent signal change.
        is_train: ``(T,)`` bool, the trials whose mean and std (ddof 0) are used.

    Returns:
        ``(z (T, V) float32, mean (V,), std (V,), n_zero_std)``; voxels with zero std get std 1.
    """
    train = psc[is_train].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    zero = std < _ZERO_STD
    std[zero] = 1.0
    z = ((psc - mean) / std).astype(np.float32)
    return z, mean.astype(np.float32), std.astype(np.float32), int(zero.sum())


def prepare_nsd(
    root: Path,
    subject: int,
    out: Path,
    *,
    sessions: int | None = None,
    val_fraction: float = 0.05,
    samples_per_shard: int = 1000,
    dataset: str = "nsd",
    dataset_version: str = "nsd-2021",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Turn one NSD subject (real or embedded-world) into shards, a stimulus store and a manifest.

    The result is written into a temporary sibling of ``out`` and renamed into place at the end, so an
    interrupted or failed run leaves no ``out``. Re-running with identical options returns the existing
    manifest.

    Args:
        root: NSD raw root (holding ``nsddata/``, ``nsddata_betas/``, ``nsddata_stimuli/``).
        subject: 1-based subject number.
        out: output directory.
        sessions: use the first ``sessions`` sessions (default: every session in ``responses.tsv``).
        val_fraction: fraction of non-shared images whose trials form the val split.
        samples_per_shard: maximum samples per tar shard.
        dataset: dataset id written to the manifest (``"nsd"``, ``"world-nsd"``).
        dataset_version: version string written to the manifest.
        seed: seed of the val image choice.
        progress: show a progress bar over sessions.
        overwrite: replace an existing, different ``out``.

    Returns:
        The manifest (also saved as ``out/manifest.json``).

    Raises:
        MissingFileError: a raw file is missing (names the expected NSD path).
        ConfigError: unknown subject, too many sessions, bad options, or an existing different ``out``.
        DataFormatError: malformed raw data (NaN betas, grid mismatch, inconsistent ids, ...).
    """
    root, out = Path(root), Path(out)
    options = {"subject": subject, "sessions": sessions, "val_fraction": val_fraction, "seed": seed}
    options |= {
        "samples_per_shard": samples_per_shard,
        "dataset": dataset,
        "dataset_version": dataset_version,
    }
    source = adapter_source(root, "brainbench.data.sources.nsd", ADAPTER_VERSION, options)
    existing = existing_manifest(out, source, overwrite)
    if existing is not None:
        return existing
    layout = NsdLayout(root)
    raw.check_subject(layout, subject)
    trials = raw.read_trials(layout, subject)
    available = sorted(trials["session"].unique().tolist())
    if sessions is None:
        sessions = len(available)
    if not 1 <= sessions <= len(available):
        raise ConfigError(
            f"sessions={sessions} but {layout.responses(subject)} lists {len(available)} sessions "
            f"({available}); choose 1..{len(available)}"
        )
    trials = trials[trials["session"].isin(available[:sessions])].reset_index(drop=True)

    with atomic_output(out) as tmp:
        manifest = _prepare_into(
            tmp, layout, subject, trials, available[:sessions], source, val_fraction, progress
        )
    return manifest


def _write_sessions(
    layout: NsdLayout,
    subject: int,
    trials: pd.DataFrame,
    sessions: list[int],
    voxel_mask: np.ndarray,
    val_images: set[int],
    writers: dict[str, SplitWriter],
    progress: bool,
) -> tuple[dict[int, list[tuple[int, int, np.ndarray]]], list, list, dict[str, int], set[str]]:
    """Z-score each session, write its train/val trials, and collect the shared trials' z-scores.

    Returns:
        ``(test_repeats, means, stds, zero_std, formats)``: ``test_repeats`` maps a shared image to its
        ``(trial, session, z (V,) float32)`` repeats in chronological order; ``means``/``stds`` hold
        per-session ``(V,)`` statistics; ``zero_std`` maps a session to its count of zero-std voxels;
        ``formats`` are the betas file formats read.
    """
    test_repeats: dict[int, list[tuple[int, int, np.ndarray]]] = {}
    means, stds, zero_std, formats = [], [], {}, set()
    prefix = subject_dir_name(subject)
    fix = "check this session's betas file and responses.tsv (same subject and release?)"
    for session in tqdm(sessions, desc=f"nsd {prefix}", unit="session", disable=not progress):
        rows = trials[trials["session"] == session]
        values, path = raw.read_session_betas(layout, subject, session, voxel_mask)
        formats.add(path.name.split(".", 1)[1])
        if values.shape[0] != len(rows):
            raise DataFormatError(path, f"{values.shape[0]} trials, but responses.tsv lists {len(rows)}", fix)
        is_train = ~rows["shared"].to_numpy()
        if not is_train.any():
            raise DataFormatError(
                path, f"session {session} has no non-shared trial for z-score statistics", fix
            )
        z, mean, std, n_zero = zscore_session(raw.betas_to_psc(values), is_train)
        if np.abs(z).max(initial=0.0) > _FLOAT16_MAX:
            raise DataFormatError(path, "z-scored betas exceed the float16 range", fix)
        means.append(mean)
        stds.append(std)
        if n_zero:
            zero_std[str(session)] = n_zero
        for row, (trial, nsd_id, is_shared) in enumerate(
            rows[["trial", "nsd_id", "shared"]].itertuples(False)
        ):
            trial, nsd_id = int(trial), int(nsd_id)
            if is_shared:  # copy: a view would keep the whole session's array alive
                test_repeats.setdefault(nsd_id, []).append((trial, session, z[row].copy()))
                continue
            split = "val" if nsd_id in val_images else "train"
            voxels = z[row].astype(np.float16)
            key = f"{prefix}_trial{trial:06d}"
            writers[split].add(Sample(key, subject, split, nsd_id, voxels, None, session, trial, n_repeats=1))
    if zero_std:
        log.warning("%s: voxels with zero std set to std 1, per session: %s", prefix, zero_std)
    return test_repeats, means, stds, zero_std, formats


def _test_samples(subject: int, test_repeats: dict[int, list[tuple[int, int, np.ndarray]]]) -> list[Sample]:
    """One test sample per shared image: every z-scored repeat plus their mean, sorted by image id."""
    samples = []
    for nsd_id in sorted(test_repeats):
        reps = test_repeats[nsd_id]
        stack = np.stack([z for _, _, z in reps])  # (R, V) float32
        first_trial, first_session = reps[0][0], reps[0][1]
        samples.append(
            Sample(
                key=f"{subject_dir_name(subject)}_stim{nsd_id:06d}",
                subject=subject,
                split="test",
                stim_id=nsd_id,
                voxels=stack.mean(axis=0).astype(np.float16),
                repeats=stack.astype(np.float16),
                session=first_session,
                trial=first_trial,
                n_repeats=len(reps),
            )
        )
    return samples


def _prepare_into(
    tmp: Path,
    layout: NsdLayout,
    subject: int,
    trials: pd.DataFrame,
    sessions: list[int],
    source: dict[str, Any],
    val_fraction: float,
    progress: bool,
) -> Manifest:
    options = source["options"]
    stim_info = raw.read_stim_info(layout)
    shared = set(raw.shared_ids(layout, stim_info).tolist())
    missing_ids = sorted(set(trials["nsd_id"]) - set(stim_info.index))
    if missing_ids:
        raise DataFormatError(
            layout.stim_info, f"no rows for nsdId {missing_ids[:10]}", "use the matching release"
        )
    trials["shared"] = trials["nsd_id"].isin(shared)
    val_images = choose_val_ids(
        trials.loc[~trials["shared"], "nsd_id"].unique(), val_fraction, options["seed"]
    )

    roi_path = raw.require(layout, layout.roi(subject, "nsdgeneral"))
    voxel_mask = raw.read_volume(roi_path) > 0
    n_voxels = int(voxel_mask.sum())
    if n_voxels == 0:
        raise DataFormatError(roi_path, "no voxel has a label > 0", "use the subject's nsdgeneral ROI file")
    rois = raw.roi_index_lists(layout, subject, voxel_mask)

    with split_writers(tmp, ("train", "val", "test"), options["samples_per_shard"]) as writers:
        test_repeats, means, stds, zero_std, formats = _write_sessions(
            layout, subject, trials, sessions, voxel_mask, val_images, writers, progress
        )
        for sample in _test_samples(subject, test_repeats):
            writers["test"].add(sample)
        splits = close_writers(writers)

    stim_ids = np.sort(trials["nsd_id"].unique()).astype(np.int64)
    captions, categories, has_categories = raw.read_coco(layout, stim_info, stim_ids)
    store_path = tmp / STIMULUS_STORE_NAME
    write_stimulus_store(store_path, stim_ids, raw.iter_images(layout, stim_ids), captions, categories)
    stats_path = tmp / ZSCORE_STATS_NAME
    np.savez(
        stats_path, mean=np.stack(means), std=np.stack(stds), sessions=np.asarray(sessions, dtype=np.int64)
    )

    manifest = Manifest(
        dataset=options["dataset"],
        dataset_version=options["dataset_version"],
        subject=subject,
        n_voxels=n_voxels,
        voxel_order=VOXEL_ORDER,
        voxel_ijk=np.argwhere(voxel_mask).tolist(),
        rois=rois,
        normalisation={
            "scale": "int16 / 300 -> percent signal change",
            "zscore": "per voxel per session; mean and std (ddof 0) from that session's non-shared "
            "(train and val) trials only",
            "test": "each repeat z-scored with its own session's statistics, then averaged; all repeats kept",
            "dtype": "float16",
            "zero_std_voxels": zero_std,
            "stats": {
                "path": ZSCORE_STATS_NAME,
                "sha256": sha256_file(stats_path),
                "content": "mean, std: (n_sessions, n_voxels) float32 PSC; sessions: 1-based numbers",
            },
        },
        split_name=f"shared{len(test_repeats)}@{len(sessions)}sess",
        splits=splits,
        stimulus_store={
            "path": STIMULUS_STORE_NAME,
            "sha256": sha256_file(store_path),
            "n_stimuli": len(stim_ids),
            "has_categories": has_categories,
        },
        source={**source, "betas_format": sorted(formats)},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    manifest.save(tmp / MANIFEST_NAME)
    return manifest
