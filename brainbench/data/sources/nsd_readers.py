"""Readers for the NSD raw files, each turning a format trap (datasets.md §5.2) into one checked step.

Every reader names the file it read in its errors. Indices come out 0-based: the 1-based NSD ids
(``73KID``, ``masterordering``, ``subjectim``, ``sharedix``) are converted here, exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from brainbench.data.sources.nsd_layout import NsdLayout, subject_dir_name
from brainbench.errors import ConfigError, DataFormatError, MissingFileError, reading

PSC_SCALE = 300.0
_REDOWNLOAD = (
    "re-download this file from the NSD bucket (or regenerate the world with `brainbench world generate`)"
)


def require(layout: NsdLayout, path: Path) -> Path:
    """Return ``path`` or raise MissingFileError saying where the NSD layout expects it."""
    if path.is_file():
        return path
    try:
        rel = path.relative_to(layout.root)
    except ValueError:
        rel = path
    raise MissingFileError(
        path,
        f"the NSD layout (datasets.md §1.1) expects '{rel}' under the root {layout.root}; check --root, "
        "or run `brainbench world generate` to write an embedded world in this layout",
    )


def check_subject(layout: NsdLayout, subject: int) -> None:
    """Raise unless the root exists and holds ``nsddata/ppdata/subjAA``.

    Raises:
        MissingFileError: if the root or its ``nsddata/ppdata`` folder is missing.
        ConfigError: for an unknown subject, listing the subjects found.
    """
    if not layout.ppdata_root.is_dir():
        raise MissingFileError(
            layout.ppdata_root,
            f"--root {layout.root} does not look like an NSD root (no nsddata/ppdata); point --root at "
            "the folder holding nsddata/, nsddata_betas/ and nsddata_stimuli/, "
            "or run `brainbench world generate`",
        )
    if not layout.ppdata(subject).is_dir():
        found = ", ".join(subject_dir_name(s) for s in layout.subjects_found()) or "none"
        raise ConfigError(
            f"unknown subject {subject}: no folder {layout.ppdata(subject)}; subjects found under "
            f"{layout.ppdata_root}: {found}"
        )


def read_trials(layout: NsdLayout, subject: int) -> pd.DataFrame:
    """The subject's trial table from ``responses.tsv``, cross-checked against ``nsd_expdesign.mat``.

    Args:
        layout: the raw layout.
        subject: 1-based subject.

    Returns:
        One row per stimulus trial in file (= chronological = betas) order, columns ``trial`` (0-based global
        index), ``session`` (1-based), ``nsd_id`` (0-based ``73KID - 1``).

    Raises:
        MissingFileError: if ``responses.tsv`` is missing.
        DataFormatError: on missing columns, bad ids, or disagreement with the design file.
    """
    path = require(layout, layout.responses(subject))
    with reading(path, _REDOWNLOAD):
        table = pd.read_csv(path, sep="\t")
    for column in ("SESSION", "73KID"):
        if column not in table.columns:
            raise DataFormatError(
                path, f"column {column} is missing (columns: {list(table.columns)})", _REDOWNLOAD
            )
    if table[["SESSION", "73KID"]].isna().any().any():
        raise DataFormatError(path, "SESSION or 73KID holds empty values", _REDOWNLOAD)
    nsd_id = table["73KID"].to_numpy(np.int64) - 1  # 1-based -> 0-based, the only place this happens
    if len(nsd_id) and nsd_id.min() < 0:
        raise DataFormatError(path, "73KID must be 1-based (found a value < 1)", _REDOWNLOAD)
    trials = pd.DataFrame(
        {"trial": np.arange(len(table)), "session": table["SESSION"].to_numpy(np.int64), "nsd_id": nsd_id}
    )
    if layout.expdesign.is_file():
        design = read_expdesign(layout)
        master = design["masterordering"]
        if len(trials) > len(master):
            raise DataFormatError(
                path, f"{len(trials)} trials but masterordering has {len(master)}", _REDOWNLOAD
            )
        expected = design["subjectim"][subject - 1, master[: len(trials)]]
        bad = np.flatnonzero(expected != nsd_id)
        if len(bad):
            raise DataFormatError(
                path,
                f"73KID disagrees with nsd_expdesign.mat subjectim[masterordering] at {len(bad)} trials "
                f"(first: trial {bad[0]}, 73KID-1={nsd_id[bad[0]]}, design={expected[bad[0]]})",
                "make responses.tsv and nsd_expdesign.mat come from the same release",
            )
    return trials


def read_expdesign(layout: NsdLayout) -> dict[str, np.ndarray]:
    """``nsd_expdesign.mat`` with 0-based ``subjectim`` (S, n), ``masterordering`` (n,), ``sharedix``."""
    path = require(layout, layout.expdesign)
    with reading(path, f"{_REDOWNLOAD} (a MATLAB v5 file that scipy reads)"):
        mat = scipy.io.loadmat(path)
    out = {}
    for name in ("subjectim", "masterordering", "sharedix"):
        if name not in mat:
            raise DataFormatError(path, f"variable {name} is missing", _REDOWNLOAD)
        out[name] = np.asarray(mat[name]).astype(np.int64) - 1  # 1-based -> 0-based
    out["masterordering"] = out["masterordering"].reshape(-1)
    out["sharedix"] = out["sharedix"].reshape(-1)
    return out


def read_stim_info(layout: NsdLayout) -> pd.DataFrame:
    """``nsd_stim_info_merged.csv`` indexed by 0-based ``nsdId`` (cocoId, cocoSplit, shared1000, ...)."""
    path = require(layout, layout.stim_info)
    with reading(path, _REDOWNLOAD):
        info = pd.read_csv(path, index_col=0)
    missing = [c for c in ("nsdId", "cocoId", "cocoSplit", "shared1000") if c not in info.columns]
    if missing:
        raise DataFormatError(path, f"columns {missing} are missing", _REDOWNLOAD)
    return info.set_index("nsdId", drop=False)


def shared_ids(layout: NsdLayout, stim_info: pd.DataFrame) -> np.ndarray:
    """0-based ids of the shared (test) images, from ``sharedix`` when the design file exists, else the csv.

    Raises:
        DataFormatError: if both exist and disagree.
    """
    from_csv = np.sort(stim_info.index[stim_info["shared1000"].astype(bool)].to_numpy(np.int64))
    if not layout.expdesign.is_file():
        return from_csv
    from_mat = np.sort(read_expdesign(layout)["sharedix"])
    if not np.array_equal(from_mat, from_csv):
        raise DataFormatError(
            layout.stim_info,
            f"shared1000 column ({len(from_csv)} images) disagrees with sharedix in {layout.expdesign} "
            f"({len(from_mat)} images)",
            "make both files come from the same release",
        )
    return from_mat


def read_volume(path: Path) -> np.ndarray:
    """A 3-D integer label volume (ROI or brain mask) via ``dataobj``, never ``get_fdata``/``get_data``."""
    with reading(path, _REDOWNLOAD):
        volume = np.asarray(nib.load(path).dataobj)
    if volume.ndim != 3:
        raise DataFormatError(path, f"expected a 3-D volume, got shape {volume.shape}", _REDOWNLOAD)
    return np.rint(volume).astype(np.int64) if volume.dtype.kind == "f" else volume.astype(np.int64)


def read_ctab(layout: NsdLayout, atlas: str, subject: int) -> dict[int, str]:
    """Label index -> name from the subject's (else fsaverage's) ``<atlas>.mgz.ctab``; empty if none."""
    for path in (layout.ctab(atlas, subject), layout.ctab(atlas)):
        if path.is_file():
            labels = {}
            with reading(path, _REDOWNLOAD):
                text = path.read_text(encoding="utf-8")
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].lstrip("-").isdigit():
                    labels[int(parts[0])] = parts[1]
            return labels
    return {}


def roi_index_lists(layout: NsdLayout, subject: int, voxel_mask: np.ndarray) -> dict[str, list[int]]:
    """``"<atlas>/<label>"`` -> indices into the voxel vector, for every positive label of every ROI file.

    Selection is ``== label`` for ``label >= 1``: the ``-1`` (outside cortex) and ``0`` voxels never count.
    Hemisphere files (``lh.*``, ``rh.*``) are skipped; labels with no voxel in ``voxel_mask`` are left out.
    """
    rois: dict[str, list[int]] = {}
    for path in sorted(layout.roi_dir(subject).glob("*.nii.gz")):
        if path.name.startswith(("lh.", "rh.")):
            continue
        atlas = path.name[: -len(".nii.gz")]
        volume = read_volume(path)
        if volume.shape != voxel_mask.shape:
            raise DataFormatError(
                path,
                f"ROI grid {volume.shape} differs from the nsdgeneral grid {voxel_mask.shape}",
                _REDOWNLOAD,
            )
        in_vector = volume[voxel_mask]
        names = read_ctab(layout, atlas, subject)
        for label in np.unique(in_vector[in_vector > 0]):
            name = names.get(int(label), str(int(label)))
            key = f"{atlas}/{name}" if f"{atlas}/{name}" not in rois else f"{atlas}/{name}#{int(label)}"
            rois[key] = np.flatnonzero(in_vector == label).tolist()
    return rois


def read_session_betas(
    layout: NsdLayout, subject: int, session: int, voxel_mask: np.ndarray
) -> tuple[np.ndarray, Path]:
    """Raw betas of one session for the masked voxels, in C order over (x, y, z) of the NIfTI grid.

    Reads ``betas_sessionXX.nii.gz`` when present, else the ``.hdf5`` twin (``(T, Z, Y, X)`` in h5py:
    the block is transposed back to ``(T, X, Y, Z)`` before masking, so both give the same voxel order).

    Args:
        layout: the raw layout.
        subject: 1-based subject.
        session: 1-based session.
        voxel_mask: ``(X, Y, Z)`` bool.

    Returns:
        ``(T, V)`` raw values (int16 PSC×300 for real NSD) and the path read.

    Raises:
        MissingFileError: if neither file exists.
        DataFormatError: on a grid that does not match ``voxel_mask``, scaled NIfTI data, or NaN/inf values.
    """
    nifti, hdf5 = layout.betas_nifti(subject, session), layout.betas_hdf5(subject, session)
    if nifti.is_file():
        path = nifti
        with reading(path, _REDOWNLOAD):
            image = nib.load(path)
            grid = tuple(image.shape[:3])
            _check_grid(path, grid, len(image.shape), voxel_mask)
            proxy = image.dataobj
            if float(proxy.slope) != 1.0 or float(proxy.inter) != 0.0:
                raise DataFormatError(
                    path, "header sets scl_slope/scl_inter; NSD betas are raw int16", _REDOWNLOAD
                )
            values = np.asarray(proxy)[voxel_mask].T  # (T, V), C order over (x, y, z)
    elif hdf5.is_file():
        path = hdf5
        with reading(path, _REDOWNLOAD):
            with h5py.File(path, "r") as f:
                if "betas" not in f:
                    raise DataFormatError(path, "dataset /betas is missing", _REDOWNLOAD)
                dset = f["betas"]
                grid = tuple(dset.shape[1:][::-1])
                _check_grid(path, grid, dset.ndim, voxel_mask)
                ijk = np.argwhere(voxel_mask)
                lo, hi = ijk.min(axis=0), ijk.max(axis=0) + 1
                block = dset[:, lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]  # (T, z, y, x)
        sub_mask = voxel_mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        values = block.transpose(0, 3, 2, 1)[:, sub_mask]  # (T, V), C order over (x, y, z)
    else:
        raise MissingFileError(
            nifti,
            f"neither {nifti.name} nor {hdf5.name} exists in {nifti.parent}; download session {session} "
            "or prepare fewer sessions with --sessions",
        )
    values = np.ascontiguousarray(values)
    if values.dtype.kind == "f":
        n_bad = int(np.count_nonzero(~np.isfinite(values)))
        if n_bad:
            raise DataFormatError(path, f"{n_bad} NaN/inf values among the selected voxels", _REDOWNLOAD)
    return values, path


def _check_grid(path: Path, grid: tuple[int, ...], ndim: int, voxel_mask: np.ndarray) -> None:
    if ndim != 4 or grid != voxel_mask.shape:
        raise DataFormatError(
            path,
            f"betas grid {grid} does not match the nsdgeneral ROI grid {voxel_mask.shape} "
            f"(voxel count mismatch: the ROI selects {int(voxel_mask.sum())} voxels)",
            "use ROI files and betas of the same subject and space (func1pt8mm)",
        )


def betas_to_psc(raw: np.ndarray) -> np.ndarray:
    """NSD volume betas are percent signal change × 300 (datasets.md §1.3): ``raw / 300`` as float32."""
    return raw.astype(np.float32) / np.float32(PSC_SCALE)


def iter_images(layout: NsdLayout, stim_ids: np.ndarray, batch: int = 256) -> Iterator[np.ndarray]:
    """``imgBrick`` rows for sorted, unique 0-based ids, in batches (h5py needs sorted indices, trap 16)."""
    path = require(layout, layout.stimuli_hdf5)
    with reading(path, _REDOWNLOAD):
        with h5py.File(path, "r") as f:
            if "imgBrick" not in f:
                raise DataFormatError(path, "dataset imgBrick is missing", _REDOWNLOAD)
            brick = f["imgBrick"]
            if brick.ndim != 4 or brick.shape[-1] != 3 or brick.dtype != np.uint8:
                raise DataFormatError(
                    path, f"imgBrick must be uint8 (n, H, W, 3), got {brick.dtype} {brick.shape}", ""
                )
            if len(stim_ids) and stim_ids[-1] >= brick.shape[0]:
                raise DataFormatError(
                    path, f"imgBrick has {brick.shape[0]} rows, need id {stim_ids[-1]}", _REDOWNLOAD
                )
            for start in range(0, len(stim_ids), batch):
                yield brick[stim_ids[start : start + batch]]


def read_coco(
    layout: NsdLayout, stim_info: pd.DataFrame, stim_ids: np.ndarray
) -> tuple[list[list[str]], list[list[str]], bool]:
    """Captions (all per image) and category names (largest first, unique) for each stimulus via cocoId.

    Returns:
        ``(captions, categories, has_categories)`` aligned with ``stim_ids``; categories are empty lists when
        no ``instances_*.json`` exists.

    Raises:
        MissingFileError: if a needed ``captions_<split>.json`` is missing.
    """
    rows = stim_info.loc[stim_ids]
    captions: dict[int, list[str]] = {}
    categories: dict[int, list[str]] = {}
    has_categories = True
    for coco_split in sorted(rows["cocoSplit"].astype(str).unique()):
        wanted = set(rows.loc[rows["cocoSplit"] == coco_split, "cocoId"].astype(int))
        captions_path = require(layout, layout.coco("captions", coco_split))
        with reading(captions_path, _REDOWNLOAD):
            document = json.loads(captions_path.read_text(encoding="utf-8"))
        for ann in sorted(document["annotations"], key=lambda a: a["id"]):
            if ann["image_id"] in wanted:
                captions.setdefault(ann["image_id"], []).append(str(ann["caption"]).strip())
        instances_path = layout.coco("instances", coco_split)
        if not instances_path.is_file():
            has_categories = False
            continue
        with reading(instances_path, _REDOWNLOAD):
            document = json.loads(instances_path.read_text(encoding="utf-8"))
        names = {c["id"]: c["name"] for c in document["categories"]}
        anns = [a for a in document["annotations"] if a["image_id"] in wanted]
        for ann in sorted(anns, key=lambda a: (-float(a.get("area", 0.0)), a["id"])):
            image_names = categories.setdefault(ann["image_id"], [])
            if names[ann["category_id"]] not in image_names:
                image_names.append(names[ann["category_id"]])
    coco_ids = rows["cocoId"].astype(int).tolist()
    return [captions.get(c, []) for c in coco_ids], [categories.get(c, []) for c in coco_ids], has_categories
