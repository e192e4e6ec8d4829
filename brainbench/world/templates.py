"""The world's anatomical template: NSD-style transform files from the anatomy each subject already has.

Every world subject's brain is an ellipsoid that spans its own functional grid
(:mod:`brainbench.world.anatomy`; grids differ by up to 2 voxels per axis, so brains differ in size at 1.8
mm), with its own visual-cortex extent, area boundaries and category-blob positions. The world's template
("MNI" in the file names, as NSD's) is the grid of ``config.grid`` spanning the same normalised coordinates
``[-1, 1]^3``, so each subject maps onto it by a per-axis scaling, ``a = i (T - 1) / (N - 1)``. These files
are written in NSD's convention (:mod:`brainbench.data.sources.nsd_transforms`): ``func1pt8-to-MNI.nii.gz`` on
the template grid holding 1-based subject coordinates, ``MNI-to-func1pt8.nii.gz`` on the subject grid holding
1-based template coordinates, and the group mask ``nsddata/templates/nsdgeneral_group-MNI.nii.gz`` (majority
of all ``n_subjects`` subjects' ``nsdgeneral``, pulled to the template by nearest neighbour).

Differences from real NSD, stated in the data card: the template is 1.8 mm-like (the subject-1 grid), not the
1 mm 182 x 218 x 182 MNI grid, and the transforms are affine (NSD's are non-linear); what the alignment leaves
is the ROI-shape variance the world draws per subject. The betas and every file a v1 world already holds are
unchanged: these files are added next to them (missing ones are written on the next ``generate_world``).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from brainbench.data.sources.nsd_layout import NsdLayout
from brainbench.data.sources.nsd_transforms import (
    FUNC,
    TEMPLATE,
    group_template_mask,
    map_volume,
    write_transform,
)
from brainbench.world.anatomy import build_anatomy, subject_grid
from brainbench.world.config import WorldConfig
from brainbench.world.files import atomic_path


def scaling_coordinates(target_grid: tuple[int, ...], source_grid: tuple[int, ...]) -> np.ndarray:
    """``(X', Y', Z', 3)`` 0-based source coordinates of each target voxel; both grids span ``[-1, 1]``."""
    axes = [np.arange(t) * (s - 1) / (t - 1) for t, s in zip(target_grid, source_grid, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def write_world_transforms(root: Path, config: WorldConfig, subjects: list[int]) -> None:
    """Writes the missing transform files of ``subjects`` and the group template mask (idempotent)."""
    layout = NsdLayout(Path(root))
    template_grid = tuple(config.grid)
    for subject in subjects:
        grid = subject_grid(config, subject)
        pairs = (
            (layout.transform(subject, FUNC, TEMPLATE), template_grid, grid),
            (layout.transform(subject, TEMPLATE, FUNC), grid, template_grid),
        )
        for path, target, source in pairs:
            if not path.is_file():
                write_transform(path, scaling_coordinates(target, source), np.diag([1.8, 1.8, 1.8, 1.0]))
    if not layout.template_mask.is_file():
        pulled = []
        for subject in range(1, config.n_subjects + 1):
            grid = subject_grid(config, subject)
            roi = (build_anatomy(config, subject).rois["nsdgeneral"] > 0).astype(np.float64)
            pulled.append(map_volume(roi, scaling_coordinates(template_grid, grid), order=0) > 0.5)
        mask = group_template_mask(pulled).astype(np.int16)
        with atomic_path(layout.template_mask) as tmp:
            nib.save(nib.Nifti1Image(mask, np.diag([1.8, 1.8, 1.8, 1.0])), tmp)


def alignment_report(root: Path, config: WorldConfig, subjects: list[int]) -> dict[str, dict[str, float]]:
    """How well the world's alignment holds, from the written files and the world's ground truth.

    ``roi_dice``: mean pairwise Dice of every ROI label pulled to the template (nearest neighbour through
    ``func1pt8-to-MNI``) vs laid unaligned onto the template grid (each native grid at the template's corner).
    ``signal_r2``: median over template voxels (by encoding level) of the squared correlation, across the
    images every subject saw, between two subjects' **noise-free** signals (``brainbench_truth``) resampled to
    the same template voxel: the share of one subject's hidden signal that the other's aligned voxel carries.
    Needs the subjects' raw files (``generate_world``) and truth files.
    """
    from itertools import combinations

    from brainbench.data.sources.nsd_transforms import read_template_mask, read_transform, template_weights

    layout = NsdLayout(Path(root))
    mask = read_template_mask(layout)
    template_ijk = np.argwhere(mask)
    aligned_rois, unaligned_rois, signals, levels = {}, {}, {}, {}
    for subject in subjects:
        anatomy = build_anatomy(config, subject)
        grid = anatomy.grid
        coords = read_transform(layout.transform(subject, FUNC, TEMPLATE), grid)
        for atlas, volume in anatomy.rois.items():
            pulled = np.rint(map_volume(volume.astype(np.float64), coords, order=0, bad_value=-1)).astype(int)
            crop = np.full(mask.shape, -1)
            n = [min(a, b) for a, b in zip(grid, mask.shape, strict=True)]
            crop[: n[0], : n[1], : n[2]] = volume[: n[0], : n[1], : n[2]]
            aligned_rois.setdefault(atlas, []).append(pulled)
            unaligned_rois.setdefault(atlas, []).append(crop)
        voxel_ijk = np.argwhere(anatomy.rois["nsdgeneral"] > 0)
        weights = template_weights(coords, template_ijk, voxel_ijk, grid)
        with np.load(Path(root) / "brainbench_truth" / f"subj{subject:02d}.npz", allow_pickle=False) as truth:
            signals[subject] = (truth["stim_ids"], (weights @ truth["signal"].T).T)  # (n_images, V_t)
            levels[subject] = weights @ truth["level"].astype(np.float64)

    def dice(volumes: list[np.ndarray], label: int) -> float:
        pairs = [(a == label, b == label) for a, b in combinations(volumes, 2)]
        return float(np.mean([2 * (a & b).sum() / max(1, a.sum() + b.sum()) for a, b in pairs]))

    roi_dice = {}
    for atlas, volumes in aligned_rois.items():
        for label in sorted({int(v) for vol in volumes for v in np.unique(vol) if v > 0}):
            key = f"{atlas}/{label}"
            roi_dice[key] = {"aligned": dice(volumes, label), "unaligned": dice(unaligned_rois[atlas], label)}
    shared = set.intersection(*(set(ids.tolist()) for ids, _ in signals.values()))
    r2: dict[str, list[np.ndarray]] = {"low": [], "mid": [], "high": []}
    for a, b in combinations(subjects, 2):
        rows = []
        for subject in (a, b):
            ids, signal = signals[subject]
            order = {int(s): i for i, s in enumerate(ids)}
            rows.append(signal[[order[s] for s in sorted(shared)]])
        x, y = (r - r.mean(0) for r in rows)
        denom = np.sqrt((x**2).sum(0) * (y**2).sum(0))
        corr = np.divide((x * y).sum(0), denom, out=np.zeros(x.shape[1]), where=denom > 0)
        level = np.rint((levels[a] + levels[b]) / 2)
        for k, name in enumerate(("low", "mid", "high")):
            r2[name].append(corr[level == k] ** 2)
    signal_r2 = {name: float(np.median(np.concatenate(v))) for name, v in r2.items()}
    return {"roi_dice": roi_dice, "signal_r2": signal_r2, "n_shared_images": len(shared)}  # type: ignore[dict-item]
