"""Write NSD anatomical transforms from a known affine into an NSD raw root (NSD data manual, "Transforms").

Written with nibabel directly, independently of brainbench's transform code. The template ("MNI") grid is
``TEMPLATE_GRID``; the func grid is the NSD fixture's ``(6, 5, 4)``. Template voxel ``t`` (0-based) reads the
func volume at ``c = SCALE * t + OFFSET`` (0-based), so:

- ``func1pt8-to-MNI.nii.gz`` (on the template grid) holds ``c + 1`` (1-based), 9999 where ``c`` is outside
  ``[0, N - 1]`` on some axis;
- ``MNI-to-func1pt8.nii.gz`` (on the func grid) holds ``(i - OFFSET) / SCALE + 1``, 9999 outside the template;
- ``nsddata/templates/nsdgeneral_group-MNI.nii.gz`` marks the template voxels whose ``c`` is inside the grid
  and away from the ``x == 0`` plane.

Run ``python tests/data/nsd/make_transforms.py ROOT`` to add them to a fixture root.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

FUNC_GRID = (6, 5, 4)
TEMPLATE_GRID = (9, 8, 7)
SCALE = np.array([0.7, 0.6, 0.55])
OFFSET = np.array([0.3, -0.4, 0.1])
OUTSIDE = 9999.0


def template_to_func() -> np.ndarray:
    """``(9, 8, 7, 3)`` 0-based func coordinates of every template voxel (NaN outside the func grid)."""
    t = np.stack(np.meshgrid(*[np.arange(n) for n in TEMPLATE_GRID], indexing="ij"), axis=-1)
    c = t * SCALE + OFFSET
    inside = ((c >= 0) & (c <= np.asarray(FUNC_GRID) - 1)).all(axis=-1)
    return np.where(inside[..., None], c, np.nan)


def func_to_template() -> np.ndarray:
    """``(6, 5, 4, 3)`` 0-based template coordinates of every func voxel (NaN outside the template)."""
    i = np.stack(np.meshgrid(*[np.arange(n) for n in FUNC_GRID], indexing="ij"), axis=-1)
    t = (i - OFFSET) / SCALE
    inside = ((t >= 0) & (t <= np.asarray(TEMPLATE_GRID) - 1)).all(axis=-1)
    return np.where(inside[..., None], t, np.nan)


def _save(path: Path, coords: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.where(np.isnan(coords), OUTSIDE, coords + 1).astype(np.float32)
    nib.save(nib.Nifti1Image(values, np.eye(4)), path)


def add_transforms(root: Path, subjects: tuple[int, ...] = (1, 2)) -> None:
    """Write both transforms for ``subjects`` and the group template mask under ``root``."""
    for subject in subjects:
        folder = root / "nsddata" / "ppdata" / f"subj{subject:02d}" / "transforms"
        _save(folder / "func1pt8-to-MNI.nii.gz", template_to_func())
        _save(folder / "MNI-to-func1pt8.nii.gz", func_to_template())
    coords = template_to_func()
    mask = np.isfinite(coords).all(axis=-1) & (np.nan_to_num(coords[..., 0], nan=0) >= 1)
    path = root / "nsddata" / "templates" / "nsdgeneral_group-MNI.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.int16), np.eye(4)), path)


if __name__ == "__main__":
    add_transforms(Path(sys.argv[1]))
    print(f"transforms written under {sys.argv[1]}")
