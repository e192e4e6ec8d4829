"""NSD anatomical transforms: read the look-up volumes, map data between spaces, resample onto a template.

NSD (Allen et al. 2022, Nature Neuroscience, doi:10.1038/s41593-021-00962-x; data manual "Transforms" and the
NSD team's ``nsd_mapdata.m``) ships, per subject, volume-to-volume transforms
``nsddata/ppdata/subjAA/transforms/{source}-to-{target}.nii.gz``. Each is an ``X x Y x Z x 3`` array **on the
target grid** whose values are **1-based voxel coordinates in the source volume** (a pull look-up table; 9999
marks target locations outside the source), stored column-major (MATLAB); nibabel returns it indexed
``[x, y, z, axis]``. Mapping data = interpolating the source volume at those coordinates; invalid
locations get a bad value. So:

- ``MNI-to-func1pt8.nii.gz`` lies on the func1pt8 grid: each functional voxel's MNI coordinate
  (:func:`voxel_template_coordinates`);
- ``func1pt8-to-MNI.nii.gz`` lies on the MNI grid (182 x 218 x 182, 1 mm on real NSD): where each template
  voxel reads the functional volume (:func:`map_volume`, :func:`template_weights`).

The mapping is ``scipy.ndimage.map_coordinates`` on that convention (the Python port ``nsdcode`` is not
wrapped: its field-of-view test, NaN reuse over 4-D input and integer casting differ from the MATLAB
reference). A coordinate is inside the source when ``1 <= c <= N`` on every axis (1-based, as MATLAB).

Template space in brainbench: the z-scored ``nsdgeneral`` vector of a prepared subject is resampled onto the
template voxels of a **group mask** (``nsddata/templates/nsdgeneral_group-MNI.nii.gz``; not part of the NSD
release: :func:`write_group_template_mask` writes it as the majority vote of the subjects' ``nsdgeneral``
pulled to the template grid). Interpolation is trilinear over the source neighbours that are inside the
subject's ``nsdgeneral``, with weights renormalised over them; a template voxel with none gets 0 (the
z-score mean). The resampling is a sparse ``(n_template, n_voxels)`` matrix saved next to the prepared shards
as ``template.npz`` (:func:`ensure_template`), with every voxel's template coordinate; the shards stay the
subject's native vectors and :class:`~brainbench.data.datamodule.FMRIDataModule` (``space="template"``)
applies the matrix.

Example:
    >>> coords = read_transform(layout.transform(1, "func1pt8", "MNI"))  # doctest: +SKIP
    >>> mni_volume = map_volume(func_volume, coords, order=1)  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import sparse
from scipy.ndimage import map_coordinates

from brainbench.data.manifest import Manifest
from brainbench.data.sources.nsd_layout import NsdLayout
from brainbench.errors import DataFormatError, MissingFileError

OUTSIDE = 9999.0
TEMPLATE_FILE = "template.npz"
FUNC, TEMPLATE = "func1pt8", "MNI"
_FIX = (
    "download the subject's transforms again from nsddata/ppdata/subjAA/transforms/ (NSD bucket), or "
    "regenerate the world (`brainbench world generate`)"
)


def read_transform(path: Path, source_grid: tuple[int, int, int] | None = None) -> np.ndarray:
    """Read a volume-to-volume transform as 0-based source coordinates, NaN where outside the source.

    Args:
        path: a ``{source}-to-{target}.nii.gz`` file.
        source_grid: the source volume's shape; coordinates outside ``1..N`` (1-based) become NaN.

    Returns:
        ``(X, Y, Z, 3)`` float64 on the target grid: source coordinates minus 1 (0-based), NaN outside.

    Raises:
        MissingFileError: no such file.
        DataFormatError: unreadable or truncated file, or not ``X x Y x Z x 3``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, _FIX)
    try:
        values = np.asarray(nib.load(path).dataobj, dtype=np.float64)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as error:
        raise DataFormatError(path, f"unreadable or truncated transform ({error})", _FIX) from error
    if values.ndim != 4 or values.shape[3] != 3:
        raise DataFormatError(
            path, f"expected an X x Y x Z x 3 look-up volume, got shape {values.shape}", _FIX
        )
    outside = ~np.isfinite(values).all(axis=3) | (values >= OUTSIDE).any(axis=3)
    if source_grid is not None:
        grid = np.asarray(source_grid, dtype=np.float64)
        outside |= ((values < 1) | (values > grid)).any(axis=3)
    coords = values - 1.0
    coords[outside] = np.nan
    return coords


def write_transform(path: Path, coords: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Write 0-based source coordinates ``(X, Y, Z, 3)`` (NaN = outside) in NSD's convention (1-based, 9999).

    Reproducible bytes (gzip mtime 0), written under a temporary name and renamed into place.
    """
    values = np.where(np.isnan(coords), OUTSIDE, coords + 1.0).astype(np.float32)
    image = nib.Nifti1Image(values, np.eye(4) if affine is None else affine)
    image.header.set_data_dtype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(image.to_bytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def map_volume(source: np.ndarray, coords: np.ndarray, order: int = 1, bad_value: float = 0.0) -> np.ndarray:
    """Interpolate ``source`` (3-D, or 4-D with volumes last) at ``coords`` (from :func:`read_transform`).

    Args:
        source: ``(X, Y, Z)`` or ``(X, Y, Z, T)`` data on the source grid.
        coords: ``(X', Y', Z', 3)`` 0-based source coordinates on the target grid, NaN outside.
        order: 0 nearest (labels), 1 linear, 3 cubic (``nsd_mapdata``'s default).
        bad_value: what target voxels outside the source get.

    Returns:
        ``(X', Y', Z')`` or ``(X', Y', Z', T)`` float64; each volume is mapped on its own (no NaN reuse).
    """
    valid = np.isfinite(coords).all(axis=3)
    points = coords[valid].T  # (3, n_valid)
    volumes = source[..., None] if source.ndim == 3 else source
    out = np.full((*coords.shape[:3], volumes.shape[3]), bad_value, dtype=np.float64)
    for t in range(volumes.shape[3]):
        out[valid, t] = map_coordinates(
            np.asarray(volumes[..., t], dtype=np.float64), points, order=order, mode="nearest"
        )
    return out[..., 0] if source.ndim == 3 else out


def voxel_template_coordinates(func_to_template_inverse: np.ndarray, voxel_ijk: np.ndarray) -> np.ndarray:
    """Each functional voxel's 0-based template coordinate, read from ``MNI-to-func1pt8`` (on the func grid).

    Args:
        func_to_template_inverse: :func:`read_transform` of ``MNI-to-func1pt8.nii.gz``.
        voxel_ijk: ``(V, 3)`` voxel indices on the func grid.

    Returns:
        ``(V, 3)`` float32, NaN for voxels outside the template.
    """
    return func_to_template_inverse[tuple(np.asarray(voxel_ijk).T)].astype(np.float32)


def template_weights(
    template_to_func: np.ndarray, template_ijk: np.ndarray, voxel_ijk: np.ndarray, func_grid: tuple[int, ...]
) -> sparse.csr_matrix:
    r"""Trilinear resampling of a subject's voxel vector onto template voxels, as a sparse matrix.

    .. math::
        t_j = \frac{\sum_{n \in N(c_j) \cap M} w_{jn} v_n}{\sum_{n \in N(c_j) \cap M} w_{jn}}

    with ``c_j`` the source coordinate of template voxel ``j`` (from ``func1pt8-to-MNI``), ``N`` its 8
    neighbours, ``w`` the trilinear weights and ``M`` the subject's voxels (its ``nsdgeneral``); rows with no
    neighbour in ``M`` are empty (the voxel reads 0). Where every neighbour is in ``M`` this equals
    ``map_coordinates(order=1)``.

    Args:
        template_to_func: :func:`read_transform` of ``func1pt8-to-MNI.nii.gz`` (on the template grid).
        template_ijk: ``(V_t, 3)`` template voxels (the group mask).
        voxel_ijk: ``(V, 3)`` the subject's voxels, in the order of its voxel vector.
        func_grid: the subject's func grid shape.

    Returns:
        ``(V_t, V)`` float32 CSR matrix.
    """
    index = np.full(func_grid, -1, dtype=np.int64)
    index[tuple(np.asarray(voxel_ijk).T)] = np.arange(len(voxel_ijk))
    coords = template_to_func[tuple(np.asarray(template_ijk).T)]  # (V_t, 3)
    valid = np.isfinite(coords).all(axis=1)
    base = np.floor(np.where(valid[:, None], coords, 0)).astype(np.int64)
    frac = np.where(valid[:, None], coords, 0) - base
    rows, cols, vals = [], [], []
    upper = np.asarray(func_grid) - 1
    for corner in itertools.product((0, 1), repeat=3):
        offset = np.asarray(corner)
        ijk = np.clip(base + offset, 0, upper)
        weight = np.prod(np.where(offset == 1, frac, 1 - frac), axis=1)
        col = index[tuple(ijk.T)]
        keep = valid & (col >= 0) & (weight > 0)
        rows.append(np.flatnonzero(keep))
        cols.append(col[keep])
        vals.append(weight[keep])
    matrix = sparse.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(template_ijk), len(voxel_ijk)),
    ).tocsr()  # duplicates (clipped corners) are summed
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    return sparse.diags(scale) @ matrix


def read_template_mask(layout: NsdLayout) -> np.ndarray:
    """The group ``nsdgeneral`` mask on the template grid (bool), or a clear error naming the fix."""
    path = layout.template_mask
    if not path.is_file():
        raise MissingFileError(
            path,
            "write it once from the subjects' transforms and nsdgeneral ROIs: python -c \"from pathlib "
            "import Path; from brainbench.data.sources.nsd_transforms import write_group_template_mask; "
            "write_group_template_mask(Path('<root>'), range(1, 9))\" (the embedded world writes its own)",
        )
    try:
        volume = np.asarray(nib.load(path).dataobj)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise DataFormatError(path, f"unreadable template mask ({error})", "write it again") from error
    if volume.ndim != 3:
        raise DataFormatError(path, f"expected a 3-D mask, got {volume.shape}", "write it again")
    return volume > 0


def group_template_mask(label_volumes: list[np.ndarray], min_fraction: float = 0.5) -> np.ndarray:
    """Template voxels labelled by at least ``min_fraction`` of the subjects (volumes on the template)."""
    votes = np.mean([np.asarray(v) > 0 for v in label_volumes], axis=0)
    return votes >= min_fraction


def write_group_template_mask(root: Path, subjects: list[int] | range, min_fraction: float = 0.5) -> Path:
    """Majority vote of the subjects' ``nsdgeneral`` pulled (nearest) through ``func1pt8-to-MNI``; saved."""
    layout = NsdLayout(Path(root))
    pulled = []
    for subject in subjects:
        roi = np.asarray(nib.load(layout.roi(subject, "nsdgeneral")).dataobj) > 0
        coords = read_transform(layout.transform(subject, FUNC, TEMPLATE), roi.shape)
        pulled.append(map_volume(roi.astype(np.float64), coords, order=0) > 0.5)
    mask = group_template_mask(pulled, min_fraction).astype(np.int16)
    path = layout.template_mask
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def roi_dice_in_template(layout: NsdLayout, subjects: list[int], atlas: str) -> dict[str, float]:
    """Mean pairwise Dice of each label of ``atlas`` across ``subjects`` after pulling them to the template.

    The hidden-variance check of an alignment: 1.0 means every subject's ROI lands on the same template
    voxels. Labels are pulled with nearest-neighbour look-up through ``func1pt8-to-MNI``.
    """
    pulled = []
    for subject in subjects:
        roi = np.asarray(nib.load(layout.roi(subject, atlas)).dataobj).astype(np.int64)
        coords = read_transform(layout.transform(subject, FUNC, TEMPLATE), roi.shape)
        pulled.append(np.rint(map_volume(roi.astype(np.float64), coords, order=0, bad_value=-1)).astype(int))
    labels = sorted({int(v) for p in pulled for v in np.unique(p) if v > 0})
    dice = {}
    for label in labels:
        scores = []
        for a, b in itertools.combinations(pulled, 2):
            in_a, in_b = a == label, b == label
            total = in_a.sum() + in_b.sum()
            if total:
                scores.append(2.0 * (in_a & in_b).sum() / total)
        dice[str(label)] = float(np.mean(scores)) if scores else float("nan")
    return dice


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ensure_template(prepared: Path, raw_root: Path, subject: int) -> Path | None:
    """Writes ``template.npz`` next to a prepared subject's shards when its raw root has the transforms.

    Holds ``voxel_template_xyz`` ``(V, 3)`` (each voxel's 0-based template coordinate), ``template_grid``,
    ``template_ijk`` ``(V_t, 3)`` and the CSR resampling matrix (``data``, ``indices``, ``indptr``,
    ``shape``), plus the sha256 of the transform and mask files it came from. Returns its path, or ``None``
    when the subject has no ``func1pt8-to-MNI.nii.gz`` (a release without transforms: native space only).
    """
    path = Path(prepared) / TEMPLATE_FILE
    if path.is_file():
        return path
    layout = NsdLayout(Path(raw_root))
    forward = layout.transform(subject, FUNC, TEMPLATE)
    if not forward.is_file():
        return None
    inverse = layout.transform(subject, TEMPLATE, FUNC)
    manifest = Manifest.load(prepared)
    voxel_ijk = np.asarray(manifest.voxel_ijk, dtype=np.int64)
    func_grid = tuple(int(n) for n in nib.load(layout.roi(subject, "nsdgeneral")).shape)
    mask = read_template_mask(layout)
    template_to_func = read_transform(forward, func_grid)
    if template_to_func.shape[:3] != mask.shape:
        raise DataFormatError(
            forward, f"template grid {template_to_func.shape[:3]} != group mask grid {mask.shape}", _FIX
        )
    func_to_template = read_transform(inverse, mask.shape)
    if func_to_template.shape[:3] != func_grid:
        raise DataFormatError(inverse, f"grid {func_to_template.shape[:3]} != func grid {func_grid}", _FIX)
    template_ijk = np.argwhere(mask)
    weights = template_weights(template_to_func, template_ijk, voxel_ijk, func_grid)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        np.savez(
            tmp,
            voxel_template_xyz=voxel_template_coordinates(func_to_template, voxel_ijk),
            template_grid=np.asarray(mask.shape, dtype=np.int64),
            template_ijk=template_ijk.astype(np.int64),
            data=weights.data.astype(np.float32),
            indices=weights.indices.astype(np.int64),
            indptr=weights.indptr.astype(np.int64),
            shape=np.asarray(weights.shape, dtype=np.int64),
            sources=np.asarray([f"{p.name}:{_sha256(p)}" for p in (forward, inverse, layout.template_mask)]),
            interpolation=np.asarray(
                "trilinear over the subject's nsdgeneral neighbours, renormalised; 0 if none"
            ),
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_template_matrix(prepared: Path) -> sparse.csr_matrix:
    """The ``(V_t, V)`` resampling matrix of a prepared subject (``template.npz``, no pickles)."""
    path = Path(prepared) / TEMPLATE_FILE
    if not path.is_file():
        raise MissingFileError(
            path,
            "template space needs the subject's NSD transforms (nsddata/ppdata/subjAA/transforms/) and the "
            "group mask; add them to the raw root and prepare again, or use space: native",
        )
    with np.load(path, allow_pickle=False) as f:
        return sparse.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
