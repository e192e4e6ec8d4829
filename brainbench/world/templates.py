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
