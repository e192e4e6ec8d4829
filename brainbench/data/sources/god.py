"""Generic Object Decoding adapter: GOD raw layout (BData) -> webdataset shards, stimulus store, manifest.

GOD (Horikawa & Kamitani 2017, "Generic decoding of seen and imagined objects using hierarchical visual
features", Nature Communications 8:15037, doi:10.1038/ncomms15037): 5 subjects saw ImageNet images in 9-s
blocks at 3T; each sample is one block (already hemodynamically shifted and averaged, datasets.md §3.1).
Training: 150 categories × 8 images, each shown once; test: 50 images (one per category) × 35 repeats;
imagery: the 50 test categories imagined 10 times each. Train and test categories are disjoint, which makes
GOD the zero-shot benchmark.

What :func:`prepare_god` does (datasets.md §3.4; the traps of §5.2 in brackets):

- reads ``Subject{N}.h5`` (or a ``.mat`` twin, sniffed [4]) with h5py/scipy, no bdpy, decoding the bytes
  metadata [14] (:mod:`brainbench.data.sources.god_readers`);
- voxels are the ``VoxelData == 1 & ROI_<roi> == 1`` columns in column order; ``rois`` maps every ``ROI_*``
  flag to indices into that vector;
- rows are split by ``DataType``, never by position: 1 -> train/val, one sample per row, val being a seeded
  ``val_fraction`` of the training **categories** (all their images); 2 -> test, one sample per image with
  every repeat and their mean; 3 -> imagery, one sample per category with every repeat and their mean;
- ``stim_id = round(float_id × 1e6)`` via the 6-decimal string [13] (1518878.01491 is image 14910);
  imagery samples carry the category-level id ``category × 1e6`` (image number 0), which is *not* in the
  stimulus store;
- z-score per voxel with mean/std (ddof 0) of the DataType 1 rows only (val categories included), applied to
  every row before averaging [11]; float16 in the shards;
- the stimulus store holds every train/val/test image (category name: the xlsx ``category`` for test images,
  the wnid string for training images, whose names GOD does not ship); without an image folder it holds no
  pixels and ``stimulus_store["has_images"]`` is false;
- ``manifest.zero_shot`` is the 50-way candidate set (test category names, ids, wnids) every method uses;
- the split is named ``god-test{n_test_images}x{repeats}`` (``god-test50x35`` on real GOD).

Example:
    >>> manifest = prepare_god(Path("/data/god"), 1, Path("out/god.subj01"), image_size=256)  # doctest: +SKIP
    >>> manifest.split_name, manifest.n_voxels  # doctest: +SKIP
    ('god-test50x35', 4466)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainbench.data.manifest import MANIFEST_NAME, Manifest
from brainbench.data.shards import Sample, SplitWriter, sha256_file
from brainbench.data.sources import god_readers as raw
from brainbench.data.sources.common import (
    adapter_source,
    atomic_output,
    choose_val_ids,
    close_writers,
    existing_manifest,
    split_writers,
)
from brainbench.data.sources.nsd import zscore_session
from brainbench.data.stimulus_store import write_stimulus_store
from brainbench.errors import ConfigError, DataFormatError, MissingFileError

ADAPTER_VERSION = "1"
STIMULUS_STORE_NAME = "stimuli.hdf5"
ZSCORE_STATS_NAME = "zscore_stats.npz"
ZERO_SHOT_PROMPT = "a photo of a {}."
VOXEL_ORDER = "VoxelData == 1 and ROI_{roi} == 1 columns of the BData dataset, in column order"
_FLOAT16_MAX = 65504.0
log = logging.getLogger(__name__)

__all__ = ["prepare_god"]


def prepare_god(
    root: Path,
    subject: int,
    out: Path,
    *,
    roi: str = "VC",
    images: Path | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.05,
    samples_per_shard: int = 1000,
    dataset: str = "god",
    dataset_version: str = "god-v2",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Turn one GOD subject (real or embedded-world) into shards, a stimulus store and a manifest.

    The result is written into a temporary sibling of ``out`` and renamed into place at the end, so a failed
    run leaves no ``out``. Re-running with identical options returns the existing manifest.

    Args:
        root: GOD raw root (``Subject{N}.h5``, the two stimulus tsvs, ``ImageNetTest_synset.xlsx``).
        subject: 1-based subject number.
        out: output directory.
        roi: the ROI flag ``ROI_<roi>`` whose voxels form the voxel vector (``VC``, ``V1``, ``HVC``, ...).
        images: image folder with ``training/`` and ``test/`` (default ``root/images``). If the default folder
            is missing, the store holds no pixels (a warning says so); a given folder must exist.
        image_size: centre-crop each image to a square and resize it (bicubic) to this size; if None, every
            image must already have the same size.
        val_fraction: fraction of the training categories whose images form the val split.
        samples_per_shard: maximum samples per tar shard.
        dataset: dataset id written to the manifest (``"god"``, ``"world-god"``).
        dataset_version: version string written to the manifest.
        seed: seed of the val category choice.
        progress: show a progress bar over the images.
        overwrite: replace an existing, different ``out``.

    Returns:
        The manifest (also saved as ``out/manifest.json``).

    Raises:
        MissingFileError: a raw file or an image is missing.
        ConfigError: unknown subject, bad options, images of different sizes without ``image_size``, or an
            existing different ``out``.
        DataFormatError: malformed raw data (unknown DataType codes, missing ROI flag, ids not in the tsvs,
            overlapping train/test categories, NaN voxels, float16 overflow, ...).
    """
    root, out = Path(root), Path(out)
    roi = roi.removeprefix("ROI_")
    options: dict[str, Any] = {"subject": subject, "roi": roi, "images": None, "image_size": image_size}
    if images is not None:
        options["images"] = str(Path(images).resolve())
    options |= {"val_fraction": val_fraction, "samples_per_shard": samples_per_shard, "seed": seed}
    options |= {"dataset": dataset, "dataset_version": dataset_version}
    source = adapter_source(root, "brainbench.data.sources.god", ADAPTER_VERSION, options)
    existing = existing_manifest(out, source, overwrite)
    if existing is not None:
        return existing
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
    if images is not None and not Path(images).is_dir():
        raise MissingFileError(images, "--images must be the folder holding training/ and test/")

    image_dir = Path(images) if images is not None else root / "images"
    inputs = _read_inputs(root, subject, roi, image_dir)
    with atomic_output(out) as tmp:
        manifest = _prepare_into(tmp, inputs, source, progress)
    return manifest


@dataclass(frozen=True)
class _Inputs:
    """Everything read and cross-checked from the raw root, before anything is written."""

    bdata: raw.BData
    voxels: raw.VoxelSelection
    rows: pd.DataFrame
    id_source: str
    zero_shot: dict[str, Any]
    store: dict[str, Any]


def _read_inputs(root: Path, subject: int, roi: str, image_dir: Path) -> _Inputs:
    bdata = raw.read_bdata(raw.subject_file(root, subject))
    train = raw.read_stimulus_tsv(root / raw.TRAIN_TSV)
    test = raw.read_stimulus_tsv(root / raw.TEST_TSV)
    synsets = raw.read_test_synsets(root / raw.SYNSET_XLSX)
    zero_shot = _zero_shot(root / raw.SYNSET_XLSX, synsets, test)
    voxels = raw.select_voxels(bdata, roi)
    if not np.isfinite(bdata.dataset[:, voxels.columns]).all():
        raise DataFormatError(bdata.path, "NaN/inf values in the chosen voxel columns", "re-download it")
    rows, id_source = raw.read_rows(bdata, train, test)
    _check_ids(bdata.path, rows, train, test)
    store = _store_plan(rows, train, test, synsets, image_dir)
    return _Inputs(bdata, voxels, rows, id_source, zero_shot, store)


def _prepare_into(tmp: Path, inputs: _Inputs, source: dict[str, Any], progress: bool) -> Manifest:
    options, rows, voxels = source["options"], inputs.rows, inputs.voxels
    values = inputs.bdata.dataset[:, voxels.columns]
    z, mean, std, n_zero = zscore_session(values, (rows["data_type"] == 1).to_numpy())
    if np.abs(z).max(initial=0.0) > _FLOAT16_MAX:
        raise DataFormatError(inputs.bdata.path, "z-scored voxels exceed the float16 range", "check the file")
    train_categories = rows.loc[rows["data_type"] == 1, "category"]
    val_categories = choose_val_ids(train_categories, options["val_fraction"], options["seed"])
    splits, test_repeats = _write_splits(
        tmp, options["subject"], rows, z, val_categories, options["samples_per_shard"]
    )
    store_info = _write_store(tmp, inputs.store, options["image_size"], progress)
    stats_path = tmp / ZSCORE_STATS_NAME
    np.savez(stats_path, mean=mean, std=std, columns=voxels.columns.astype(np.int64))
    bdata_info = {"bdata_file": inputs.bdata.path.name, "bdata_format": inputs.bdata.format}
    manifest = Manifest(
        dataset=options["dataset"],
        dataset_version=options["dataset_version"],
        subject=options["subject"],
        n_voxels=len(voxels.columns),
        voxel_order=VOXEL_ORDER.format(roi=options["roi"]),
        voxel_ijk=voxels.ijk,
        rois=voxels.rois,
        normalisation=_normalisation(n_zero, sha256_file(stats_path)),
        split_name=f"god-test{len(test_repeats)}x{_repeats_label(test_repeats)}",
        splits=splits,
        stimulus_store=store_info,
        source={**source, **bdata_info, "ids": inputs.id_source},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        zero_shot=inputs.zero_shot,
    )
    manifest.save(tmp / MANIFEST_NAME)
    return manifest


def _zero_shot(path: Path, synsets: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    """The N-way candidate set: test categories in category_index order, cross-checked against the tsv."""
    for category, index in zip(test["category"], test["category_index"], strict=True):
        if not 1 <= index <= len(synsets) or synsets["category_id"].iloc[index - 1] != category:
            raise DataFormatError(
                path,
                f"row {index} (category_index) is not {raw.wnid(category)} as {raw.TEST_TSV} says",
                "use the synset list and stimulus tsvs of the same GOD release",
            )
    return {
        "split": "test",
        "names": synsets["name"].tolist(),
        "ids": synsets["category_id"].tolist(),
        "wnids": synsets["synset_id"].tolist(),
        "prompt": ZERO_SHOT_PROMPT,
    }


def _check_ids(path: Path, rows: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame) -> None:
    for code, table, name in ((1, train, raw.TRAIN_TSV), (2, test, raw.TEST_TSV)):
        ids = rows.loc[rows["data_type"] == code, "stim_id"]
        unknown = sorted(set(ids) - set(table["stim_id"]))
        if unknown:
            shown = [f"{i // raw.ID_SCALE}.{i % raw.ID_SCALE:06d}" for i in unknown[:5]]
            raise DataFormatError(
                path,
                f"{len(unknown)} stimulus ids of DataType {code} rows are not in {name} (first: {shown})",
                "use the subject files and stimulus tsvs of the same GOD release",
            )
    categories = [set(rows.loc[rows["data_type"] == code, "category"]) for code in (1, 2)]
    if overlap := categories[0] & categories[1]:
        raise DataFormatError(
            path,
            f"training and test categories overlap ({[raw.wnid(c) for c in sorted(overlap)][:5]}); GOD keeps "
            "them disjoint for zero-shot decoding",
            "use an unmodified GOD subject file and stimulus tsvs",
        )


def _write_splits(
    tmp: Path,
    subject: int,
    rows: pd.DataFrame,
    z: np.ndarray,
    val_categories: set[int],
    samples_per_shard: int,
) -> tuple[dict[str, dict[str, Any]], dict[int, list[int]]]:
    """Write every split; the manifest's ``splits`` block and the test image -> rows map."""
    prefix = f"subj{subject:02d}"
    test_repeats = _group_rows(rows, 2, "stim_id")
    with split_writers(tmp, ("train", "val", "test", "imagery"), samples_per_shard) as writers:
        for row in rows.loc[rows["data_type"] == 1].itertuples(index=False):
            split = "val" if row.category in val_categories else "train"
            voxels, session, trial = z[row.row].astype(np.float16), int(row.run), int(row.row)
            key = f"{prefix}_row{row.row:06d}"
            writers[split].add(Sample(key, subject, split, int(row.stim_id), voxels, None, session, trial, 1))
        _add_averaged(writers["test"], subject, rows, z, test_repeats, f"{prefix}_stim{{}}")
        imagery = _group_rows(rows, 3, "category")
        _add_averaged(writers["imagery"], subject, rows, z, imagery, f"{prefix}_imag{{}}")
        return close_writers(writers), test_repeats


def _group_rows(rows: pd.DataFrame, data_type: int, by: str) -> dict[int, list[int]]:
    """``by`` value -> its rows of one DataType, chronological, sorted by value."""
    chosen = rows.loc[rows["data_type"] == data_type]
    return {int(k): sorted(group["row"].tolist()) for k, group in chosen.groupby(by, sort=True)}


def _add_averaged(
    writer: SplitWriter,
    subject: int,
    rows: pd.DataFrame,
    z: np.ndarray,
    groups: dict[int, list[int]],
    key: str,
) -> None:
    """One sample per group: every z-scored repeat (chronological) and their mean."""
    for group_id, group_rows in groups.items():
        stack = z[group_rows]  # (R, V) float32
        first = group_rows[0]
        stim_id = int(rows["stim_id"].iloc[first])
        writer.add(
            Sample(
                key=key.format(group_id),
                subject=subject,
                split=writer.split,
                stim_id=stim_id,
                voxels=stack.mean(axis=0).astype(np.float16),
                repeats=stack.astype(np.float16),
                session=int(rows["run"].iloc[first]),
                trial=int(first),
                n_repeats=len(group_rows),
            )
        )


def _repeats_label(test_repeats: dict[int, list[int]]) -> str:
    counts = sorted({len(r) for r in test_repeats.values()})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def _store_plan(
    rows: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, synsets: pd.DataFrame, image_dir: Path
) -> dict[str, Any]:
    """Ids, category names and image paths of the stimulus store (sorted ids; no pixels read yet).

    Raises:
        MissingFileError: the image folder exists but lacks an image.
    """
    ids = np.unique(rows.loc[rows["data_type"] != 3, "stim_id"].to_numpy(np.int64))
    names = dict(zip(synsets["category_id"], synsets["name"], strict=True))
    files = {
        **{int(s): image_dir / "training" / n for s, n in zip(train["stim_id"], train["name"], strict=True)},
        **{int(s): image_dir / "test" / n for s, n in zip(test["stim_id"], test["name"], strict=True)},
    }
    test_ids = set(test["stim_id"].tolist())
    categories = [
        [names[i // raw.ID_SCALE] if i in test_ids else raw.wnid(i // raw.ID_SCALE)] for i in ids.tolist()
    ]
    paths = [files[i] for i in ids.tolist()]
    has_images = image_dir.is_dir()
    if has_images:
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise MissingFileError(
                missing[0], f"{len(missing)} of {len(paths)} images missing; {raw.IMAGES_FIX}"
            )
    return {"ids": ids, "categories": categories, "paths": paths if has_images else None, "dir": image_dir}


def _write_store(tmp: Path, plan: dict[str, Any], image_size: int | None, progress: bool) -> dict[str, Any]:
    """Write the stimulus store; the manifest's ``stimulus_store`` block."""
    ids, paths = plan["ids"], plan["paths"]
    if paths is None:
        log.warning(
            "no GOD image folder at %s: the stimulus store holds ids and class names but no images. Image "
            "targets (and so training, retrieval and reconstruction) need the images (GOD images are "
            "released on request); put them under images/training and images/test or pass --images DIR.",
            plan["dir"],
        )
        batches: Any = iter(())
    else:
        bar = tqdm(paths, desc="god images", unit="image", disable=not progress)
        batches = raw.iter_images(bar, image_size)
    path = tmp / STIMULUS_STORE_NAME
    write_stimulus_store(path, ids, batches, [[] for _ in ids], plan["categories"])
    with h5py.File(path, "r") as file:
        image_hw = list(file["images"].shape[1:3]) if paths is not None else None
    return {
        "path": STIMULUS_STORE_NAME,
        "sha256": sha256_file(path),
        "n_stimuli": len(ids),
        "has_images": paths is not None,
        "has_categories": True,
        "image_hw": image_hw,
        "imagery_ids": "imagery stim_ids are category-level (category id × 1e6, image number 0); "
        "they are not in this store",
    }


def _normalisation(n_zero_std: int, stats_sha256: str) -> dict[str, Any]:
    return {
        "scale": "values as stored in the BData dataset (block averages, already hemodynamically shifted)",
        "zscore": "per voxel; mean and std (ddof 0) from the training-perception rows (DataType 1) only, val "
        "categories included; test and imagery rows never enter the statistics",
        "test": "each repeat z-scored with the training statistics, then averaged; all repeats kept",
        "imagery": "as test, one sample per imagined category",
        "dtype": "float16",
        "zero_std_voxels": n_zero_std,
        "stats": {
            "path": ZSCORE_STATS_NAME,
            "sha256": stats_sha256,
            "content": "mean, std: (n_voxels,) float32; columns: the voxels' BData column indices",
        },
    }
