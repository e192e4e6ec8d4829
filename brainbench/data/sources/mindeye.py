"""MindEye shard import: a MindEye1 or MindEye2 download -> brainbench shards, stimulus store and manifest.

Many users already hold MindEye's NSD webdatasets; this adapter turns them into our format without the raw NSD
bucket. Both carry the nsdgeneral voxels of one subject in MindEye's own voxel order and normalisation,
which are kept as shipped (``voxel_ijk = []``, ``rois = {}``).

**MindEye1** (Scotti et al. 2023, arXiv:2305.18274; HF ``pscotti/naturalscenesdataset``, datasets.md §2.1)::

    webdataset_avg_split/{train,val,test}/{split}_subj0{s}_{k}.tar
    webdataset_avg_split/metadata_subj0{s}.json   optional; its totals are cross-checked
    COCO_73k_annots_curated.npy                   optional (73000, 5) captions

One sample per image: ``nsdgeneral.npy`` (3, V) float16, one row per repeat; ``num_uniques.npy`` the number of
real repeats; ``coco73k.npy`` the 0-based 73k id; ``trial.npy`` the 0-based global trial of its first showing;
``jpg``/``png`` the image. Rows past ``num_uniques`` are padding (MedARC's webdataset scripts copy a single
repeat and add the mean of two; MindEye1 averages all three rows at test, which the padding leaves exact),
so only the real rows are kept (trap 10). train/val samples become one single-trial sample per real repeat
(MindEye1's val split stays our val); test samples keep every real repeat plus their mean.

**MindEye2** (Scotti et al. 2024, arXiv:2403.11207; HF ``pscotti/mindeyev2``, datasets.md §2.2)::

    wds/subj0{s}/train/{k}.tar            one tar per session, non-shared trials
    wds/subj0{s}/{new_test,test}/0.tar    shared1000 trials (40-session or old test set)
    betas_all_subj0{s}_fp32_renorm.hdf5   'betas' (n_trials, V), row = GLOBAL_TRIAL
    coco_images_224_float16.hdf5          'images' (73000, 3, 224, 224) float16 in [0, 1]
    COCO_73k_annots_curated.npy           optional (73000, 5) captions

Tar samples hold only ``behav.npy`` (1, 17) (+ past/future/olds, unread), -1 meaning NaN; column 0 is the
0-based COCO id, 2 the session, 5 the GLOBAL_TRIAL. Voxels are ``betas[GLOBAL_TRIAL]``, read with sorted
unique indices and un-permuted (trap 16). Train trials are single-trial samples; val is a seeded
``val_fraction`` of the training images (all their trials); test trials are grouped by image: all repeats
plus their mean, no padding. ``session`` and ``trial`` (= GLOBAL_TRIAL) are kept so that past/future context
can be rebuilt.

Tars are read with :mod:`tarfile`, grouped into samples as webdataset does (trap 15); ``.npy`` members only
with ``allow_pickle=False``; a pickle-capable member is refused (datasets.md §2.3). Output is written
atomically (nothing partial on error) and an identical re-run reuses it.

Example:
    >>> manifest = prepare_mindeye(Path("/data/mindeyev2"), 1, Path("out/me2.subj01"))  # doctest: +SKIP
    >>> manifest.split_name  # doctest: +SKIP
    'shared1000@me2-new_test'
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from brainbench.data.manifest import MANIFEST_NAME, Manifest
from brainbench.data.shards import Sample, SplitWriter, sha256_file
from brainbench.data.sources import mindeye_readers as me
from brainbench.data.sources.common import (
    adapter_source,
    atomic_output,
    choose_val_ids,
    close_writers,
    existing_manifest,
    split_writers,
)
from brainbench.data.stimulus_store import write_stimulus_store
from brainbench.errors import ConfigError, DataFormatError, MissingFileError, reading

ADAPTER_VERSION = "1"
VOXEL_ORDER = "as in the MindEye shards (nsdgeneral, their order)"
STIMULUS_STORE_NAME = "stimuli.hdf5"
VERSIONS = ("auto", "1", "2")
TEST_SETS = ("new_test", "test")
DATASET_VERSIONS = {"1": "mindeye1-webdataset_avg_split", "2": "mindeye2-wds"}
_SPLITS = ("train", "val", "test")
_SAME_SUBJECT = "all files must come from the same subject and MindEye release; re-download the odd one"
log = logging.getLogger(__name__)

__all__ = ["prepare_mindeye", "detect_version"]


def detect_version(root: Path) -> str:
    """``"1"`` if ``root`` holds ``webdataset_avg_split/``, ``"2"`` if it holds ``wds/``.

    Raises:
        MissingFileError: if neither folder exists.
        ConfigError: if both exist.
    """
    layout = me.MindEyeLayout(Path(root))
    found = [v for v, folder in (("1", layout.me1_dir), ("2", layout.me2_dir)) if folder.is_dir()]
    if not found:
        raise MissingFileError(
            layout.me1_dir,
            f"--root {root} holds neither webdataset_avg_split/ (MindEye1) nor wds/ (MindEye2); point "
            "--root at the downloaded pscotti/naturalscenesdataset or pscotti/mindeyev2 folder",
        )
    if len(found) > 1:
        raise ConfigError(f"{root} holds both MindEye1 and MindEye2 folders; choose version='1' or '2'")
    return found[0]


@dataclass
class _Import:
    """What a version-specific import hands to :func:`_finish`."""

    n_voxels: int
    splits: dict[str, dict[str, Any]]
    n_test_images: int
    stim_ids: np.ndarray
    images: Callable[[], Iterator[np.ndarray]]
    normalisation: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)


def prepare_mindeye(
    root: Path,
    subject: int,
    out: Path,
    *,
    version: str = "auto",
    test_set: str = "new_test",
    image_size: int | None = None,
    val_fraction: float = 0.05,
    samples_per_shard: int = 1000,
    dataset: str = "nsd",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Import one subject of a MindEye1 or MindEye2 download into shards, a stimulus store and a manifest.

    Args:
        root: the download's top folder (holding ``webdataset_avg_split/``, or ``wds/`` and the side files).
        subject: 1-based NSD subject.
        out: output directory (written atomically; an identical earlier run is reused).
        version: ``"1"``, ``"2"`` or ``"auto"`` (detect from the folders present).
        test_set: MindEye2's test tar, ``"new_test"`` (40 sessions) or ``"test"`` (the old one).
        image_size: resize every image to ``image_size × image_size``; ``None`` keeps them (then all must
            share a size).
        val_fraction: MindEye2 only: fraction of the training images whose trials form val (MindEye1 ships
            its own val split).
        samples_per_shard: maximum samples per tar shard.
        dataset: dataset id written to the manifest.
        seed: seed of the MindEye2 val image choice.
        progress: show a progress bar over tars.
        overwrite: replace an existing, different ``out``.

    Returns:
        The manifest (also saved as ``out/manifest.json``).

    Raises:
        MissingFileError: a folder, tar or side file is missing (names the expected path).
        ConfigError: unknown subject, bad options, or an existing different ``out``.
        DataFormatError: malformed input (pickle member, voxel-count mismatch, bad ids, ...), naming the file.
    """
    root, out = Path(root), Path(out)
    _check_options(subject, version, test_set, image_size, val_fraction, samples_per_shard)
    options = {"subject": subject, "version": version, "test_set": test_set, "image_size": image_size}
    options |= {"val_fraction": val_fraction, "seed": seed, "samples_per_shard": samples_per_shard}
    source = adapter_source(root, __name__, ADAPTER_VERSION, options | {"dataset": dataset})
    existing = existing_manifest(out, source, overwrite)
    if existing is not None:
        return existing
    resolved = detect_version(root) if version == "auto" else version
    layout = me.MindEyeLayout(root)
    with atomic_output(out) as tmp:
        with split_writers(tmp, _SPLITS, samples_per_shard) as writers:
            if resolved == "1":
                result = _import_me1(layout, subject, writers, image_size, progress)
            else:
                result = _import_me2(
                    layout, subject, writers, test_set, image_size, (val_fraction, seed), progress
                )
        manifest = _finish(tmp, layout, subject, resolved, test_set, source, result)
    return manifest


def _check_options(
    subject: int, version: str, test_set: str, image_size: int | None, val_fraction: float, per_shard: int
) -> None:
    if isinstance(subject, bool) or not isinstance(subject, int) or not 1 <= subject <= 8:
        raise ConfigError(f"unknown subject {subject!r}: NSD subjects are 1..8")
    if version not in VERSIONS:
        raise ConfigError(f"version must be one of {VERSIONS}, got {version!r}")
    if test_set not in TEST_SETS:
        raise ConfigError(f"test_set must be one of {TEST_SETS} (MindEye2's test tars), got {test_set!r}")
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels or None, got {image_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if per_shard < 1:
        raise ConfigError(f"samples_per_shard must be >= 1, got {per_shard}")


def _unknown_subject(subject: int, expected: Path, found: list[int]) -> None:
    """Raise ConfigError listing the subjects found, or MissingFileError when there is none at all."""
    if found:
        names = ", ".join(me.subject_name(s) for s in found)
        raise ConfigError(f"unknown subject {subject}: {expected} does not exist; subjects found: {names}")
    raise MissingFileError(
        expected, "download this subject's MindEye files (datasets.md §2), or check --root"
    )


def _sample(subject: int, split: str, key: str, stim_id: int, trials: np.ndarray, trial: int) -> Sample:
    """A single trial (train/val: ``trials`` is (1, V)) or a test sample (every repeat plus their mean)."""
    mean = trials.astype(np.float32).mean(axis=0).astype(np.float16)
    repeats = trials.astype(np.float16) if split == "test" else None
    session = trial // me.TRIALS_PER_SESSION + 1
    return Sample(key, subject, split, stim_id, mean, repeats, session, trial, len(trials))


# --------------------------------------------------------------------------------------------- MindEye1


def _me1_tars(layout: me.MindEyeLayout, subject: int) -> dict[str, list[Path]]:
    name = me.subject_name(subject)
    train_dir = layout.me1_dir / "train"
    if not any(train_dir.glob(f"train_{name}_*.tar")):
        found = me.subjects_in(p.name for p in train_dir.glob("train_subj*_*.tar"))
        _unknown_subject(subject, layout.me1_tar("train", subject, 0), found)
    return {split: me.numbered_tars(layout.me1_dir / split, f"{split}_{name}_") for split in _SPLITS}


def _write_me1(subject: int, split: str, record: me.Me1Record, writers: dict[str, SplitWriter]) -> None:
    """train/val: one single-trial sample per real repeat; test: one sample with every real repeat + mean."""
    key = f"{me.subject_name(subject)}_stim{record.stim_id:06d}"
    if split == "test":
        writers[split].add(_sample(subject, split, key, record.stim_id, record.real, record.trial))
        return
    for r, row in enumerate(record.real):
        writers[split].add(_sample(subject, split, f"{key}_rep{r}", record.stim_id, row[None], record.trial))


def _import_me1(
    layout: me.MindEyeLayout, subject: int, writers: dict[str, SplitWriter], size: int | None, progress: bool
) -> _Import:
    tars = _me1_tars(layout, subject)
    jobs = [(split, tar) for split in _SPLITS for tar in tars[split]]
    n_voxels, first_tar = 0, Path()
    seen: dict[int, str] = {}
    images: dict[int, tuple[Path, str, tuple[int, int]]] = {}
    counts = dict.fromkeys(_SPLITS, 0)
    odd_padding = 0
    for split, tar in tqdm(jobs, desc=f"mindeye1 subject {subject}", unit="tar", disable=not progress):
        for raw in me.iter_tar_samples(tar, me.ME1_MEMBERS, frozenset(me.IMAGE_SUFFIXES)):
            record = me.parse_me1(raw)
            width = record.real.shape[1]
            if not n_voxels:
                n_voxels, first_tar = width, tar
            elif width != n_voxels:
                problem = (
                    f"voxel-count mismatch: sample '{raw.key}' has {width}, {first_tar.name} has {n_voxels}"
                )
                raise DataFormatError(tar, problem, _SAME_SUBJECT)
            if record.stim_id in seen:
                problem = (
                    f"sample '{raw.key}' shows coco73k id {record.stim_id}, as does {seen[record.stim_id]}"
                )
                raise DataFormatError(tar, f"{problem}; an image must be one MindEye1 sample", _SAME_SUBJECT)
            seen[record.stim_id] = f"sample '{raw.key}' of {tar.name}"
            images[record.stim_id] = record.image
            counts[split] += 1
            odd_padding += not record.padded_as_medarc
            _write_me1(subject, split, record, writers)
    if not n_voxels:
        raise DataFormatError(layout.me1_dir, f"no samples for {me.subject_name(subject)}", _SAME_SUBJECT)
    if odd_padding:
        log.warning(
            "%d MindEye1 samples pad repeats unlike MedARC; only the real rows were kept", odd_padding
        )
    stim_ids = np.array(sorted(images), dtype=np.int64)
    return _Import(
        n_voxels=n_voxels,
        splits=close_writers(writers),
        n_test_images=counts["test"],
        stim_ids=stim_ids,
        images=lambda: me.tar_images(images, stim_ids, size),
        normalisation={
            "values": "as shipped by MindEye1; no re-normalisation",
            "mindeye": "nsdgeneral.npy float16 betas, session-wise z-scored by the MindEye1 authors "
            "(datasets.md §2.1)",
            "repeats": "the first num_uniques.npy rows are the real repeats; padding rows are dropped",
            "test": "mean of the real repeats; every real repeat kept",
            "dtype": "float16",
            "padding_unlike_medarc": odd_padding,
        },
        source={
            "me1_images_per_split": counts,
            "me1_metadata_totals": me.me1_totals(layout.me1_metadata(subject), counts),
            "session_trial": "those of the image's first showing (trial.npy); MindEye1 ships no other "
            "trial ids, so every repeat sample of an image carries them",
        },
    )


# --------------------------------------------------------------------------------------------- MindEye2


def _me2_files(layout: me.MindEyeLayout, subject: int, test_set: str) -> tuple[list[Path], Path]:
    if not layout.me2_subject_dir(subject).is_dir():
        found = me.subjects_in(p.name for p in layout.me2_dir.glob("subj*") if p.is_dir())
        _unknown_subject(subject, layout.me2_subject_dir(subject), found)
    train_tars = me.numbered_tars(layout.me2_subject_dir(subject) / "train")
    test_tar = layout.me2_tar(subject, test_set, 0)
    if not test_tar.is_file():
        present = [t for t in TEST_SETS if layout.me2_tar(subject, t, 0).is_file()]
        raise MissingFileError(
            test_tar, f"download it, or choose a test set that is present: {present or 'none'}"
        )
    for path, what in ((layout.me2_betas(subject), "the voxels"), (layout.me2_images, "the images")):
        if not path.is_file():
            fix = (
                f"MindEye2 keeps {what} in this side file next to wds/ (datasets.md §2.2); download it there"
            )
            raise MissingFileError(path, fix)
    return train_tars, test_tar


def _read_trials(tars: list[Path], subject: int, progress: bool) -> np.ndarray:
    """``(n, 4)`` int64 rows ``[coco_id, session, global_trial, tar_index]``, one per ``behav.npy``."""
    rows = []
    for index, tar in enumerate(
        tqdm(tars, desc=f"mindeye2 subject {subject}", unit="tar", disable=not progress)
    ):
        rows += [
            (*me.parse_behav(raw, subject), index)
            for raw in me.iter_tar_samples(tar, frozenset({"behav.npy"}))
        ]
    trials = np.array(rows, dtype=np.int64).reshape(-1, 4)
    values, counts = np.unique(trials[:, 2], return_counts=True)
    if (counts > 1).any():
        twice = int(values[counts > 1][0])
        where = sorted({tars[i].name for i in trials[trials[:, 2] == twice, 3]})
        raise DataFormatError(
            tars[0].parent, f"GLOBAL_TRIAL {twice} appears more than once ({where})", _SAME_SUBJECT
        )
    return trials


def _betas(file: h5py.File, path: Path, trials: np.ndarray) -> h5py.Dataset:
    dset = file.get("betas")
    if not isinstance(dset, h5py.Dataset) or dset.ndim != 2:
        raise DataFormatError(path, "dataset 'betas' (n_trials, V) is missing or not 2-D", _SAME_SUBJECT)
    if len(trials) and int(trials[:, 2].max()) >= dset.shape[0]:
        problem = f"GLOBAL_TRIAL {int(trials[:, 2].max())} is past its {dset.shape[0]} rows"
        raise DataFormatError(path, problem, _SAME_SUBJECT)
    return dset


def _import_me2(
    layout: me.MindEyeLayout,
    subject: int,
    writers: dict[str, SplitWriter],
    test_set: str,
    size: int | None,
    val: tuple[float, int],
    progress: bool,
) -> _Import:
    train_tars, test_tar = _me2_files(layout, subject, test_set)
    trials = _read_trials([*train_tars, test_tar], subject, progress)
    is_test = trials[:, 3] == len(train_tars)
    test_ids = np.unique(trials[is_test, 0])
    leaked = ~is_test & np.isin(trials[:, 0], test_ids)
    if leaked.any():
        log.warning("%d training trials show %s images; dropped from train", int(leaked.sum()), test_set)
    train = trials[~is_test & ~leaked]
    train = train[np.argsort(train[:, 2], kind="stable")]
    val_ids = choose_val_ids(np.unique(train[:, 0]), *val)
    test = trials[is_test]
    test = test[np.lexsort((test[:, 2], test[:, 0]))]
    prefix, betas_path = me.subject_name(subject), layout.me2_betas(subject)
    with reading(betas_path, me.REDOWNLOAD):
        betas_file = h5py.File(betas_path, "r")
    with betas_file as f:
        dset = _betas(f, betas_path, trials)
        for index, tar in enumerate(train_tars):
            rows = train[train[:, 3] == index]
            voxels = me.as_float16(me.read_rows(dset, rows[:, 2]), betas_path, f"the rows of {tar.name}")
            for (coco, _, trial, _), vox in zip(rows.tolist(), voxels, strict=True):
                split = "val" if coco in val_ids else "train"
                writers[split].add(
                    _sample(subject, split, f"{prefix}_trial{trial:06d}", coco, vox[None], trial)
                )
        test_voxels = me.as_float16(me.read_rows(dset, test[:, 2]), betas_path, f"the rows of {test_tar}")
        n_voxels = int(dset.shape[1])
    for coco in test_ids.tolist():
        mine = test[:, 0] == coco
        first_trial = int(test[mine][0, 2])
        writers["test"].add(
            _sample(subject, "test", f"{prefix}_stim{coco:06d}", coco, test_voxels[mine], first_trial)
        )
    stim_ids = np.unique(np.concatenate([train[:, 0], test_ids])).astype(np.int64)
    return _Import(
        n_voxels=n_voxels,
        splits=close_writers(writers),
        n_test_images=len(test_ids),
        stim_ids=stim_ids,
        images=lambda: me.hdf5_images(layout.me2_images, stim_ids, size),
        normalisation={
            "values": "as shipped by MindEye2; no re-normalisation",
            "mindeye": f"{betas_path.name}: betas per-session z-scored by MindEye2 (datasets.md §1.3, §2.2)",
            "test": f"mean of each image's trials in {test_set}/0.tar; every trial kept, no padding",
            "dtype": "float16",
        },
        source={
            "test_set": test_set,
            "train_trials_dropped_in_test": int(leaked.sum()),
            "session_trial": "behav SESSION and GLOBAL_TRIAL (the betas row); a test sample's first trial",
        },
    )


# --------------------------------------------------------------------------------------------- manifest


def _finish(
    tmp: Path,
    layout: me.MindEyeLayout,
    subject: int,
    version: str,
    test_set: str,
    source: dict[str, Any],
    result: _Import,
) -> Manifest:
    captions, caption_status = me.read_captions(layout.captions, result.stim_ids)
    store_path = tmp / STIMULUS_STORE_NAME
    categories: list[list[str]] = [[] for _ in result.stim_ids]
    write_stimulus_store(store_path, result.stim_ids, result.images(), captions, categories)
    tag = "me1-webdataset_avg_split" if version == "1" else f"me2-{test_set}"
    manifest = Manifest(
        dataset=source["options"]["dataset"],
        dataset_version=DATASET_VERSIONS[version],
        subject=subject,
        n_voxels=result.n_voxels,
        voxel_order=VOXEL_ORDER,
        voxel_ijk=[],
        rois={},
        normalisation=result.normalisation,
        split_name=f"shared{result.n_test_images}@{tag}",
        splits=result.splits,
        stimulus_store={
            "path": STIMULUS_STORE_NAME,
            "sha256": sha256_file(store_path),
            "n_stimuli": len(result.stim_ids),
            "has_categories": False,
            "captions": caption_status,
        },
        source={**source, "mindeye_version": version, **result.source},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    manifest.save(tmp / MANIFEST_NAME)
    return manifest
