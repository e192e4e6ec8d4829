"""NSD anatomical transforms: reader, mapper and template resampling against transforms from a known affine.

The fixture (``tests/data/nsd/make_transforms.py``) writes ``func1pt8-to-MNI`` / ``MNI-to-func1pt8`` in NSD's
convention (target grid, 1-based source coordinates, 9999 outside) from ``c = SCALE * t + OFFSET``; linear
interpolation of a linear function is exact, so mapped values are known in closed form.
"""

import gzip
import importlib.util
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.shards import Sample
from brainbench.data.sources.nsd import prepare_nsd
from brainbench.data.sources.nsd_layout import NsdLayout
from brainbench.data.sources.nsd_transforms import (
    ensure_template,
    load_template_matrix,
    map_volume,
    read_transform,
    roi_dice_in_template,
    template_weights,
    voxel_template_coordinates,
    write_group_template_mask,
)
from brainbench.errors import DataFormatError, MissingFileError


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fx = _load("nsd_make_fixture", "data/nsd/make_fixture.py")
tf = _load("nsd_make_transforms", "data/nsd/make_transforms.py")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd") / "root"
    fx.make_fixture(root, write_hdf5=False)
    tf.add_transforms(root)
    return root


def linear(grid):
    i, j, k = np.meshgrid(*[np.arange(n) for n in grid], indexing="ij")
    return 2.0 * i - 3.0 * j + 0.5 * k + 7.0


def test_reader_returns_zero_based_source_coordinates_and_nan_outside(root):
    layout = NsdLayout(root)
    coords = read_transform(layout.transform(1, "func1pt8", "MNI"), tf.FUNC_GRID)
    expected = tf.template_to_func()
    assert coords.shape == (*tf.TEMPLATE_GRID, 3)
    np.testing.assert_allclose(coords, expected, atol=1e-5, equal_nan=True)
    assert np.isnan(coords).any() and np.isfinite(coords).any()  # both cases are exercised


def test_mapping_a_linear_volume_is_exact_and_outside_gets_the_bad_value(root):
    layout = NsdLayout(root)
    coords = read_transform(layout.transform(1, "func1pt8", "MNI"), tf.FUNC_GRID)
    mapped = map_volume(linear(tf.FUNC_GRID), coords, order=1, bad_value=-5.0)
    valid = np.isfinite(coords).all(axis=3)
    c = coords[valid]
    np.testing.assert_allclose(mapped[valid], 2 * c[:, 0] - 3 * c[:, 1] + 0.5 * c[:, 2] + 7, atol=1e-4)
    assert (mapped[~valid] == -5.0).all()


def test_four_d_input_keeps_the_bad_value_in_every_volume(root):
    """nsdcode reuses NaN coordinates from the second volume on; each volume must map on its own."""
    coords = read_transform(NsdLayout(root).transform(1, "func1pt8", "MNI"), tf.FUNC_GRID)
    volumes = np.stack([linear(tf.FUNC_GRID), 100 + linear(tf.FUNC_GRID)], axis=-1)
    mapped = map_volume(volumes, coords, order=1, bad_value=0.0)
    valid = np.isfinite(coords).all(axis=3)
    assert (mapped[~valid] == 0).all()
    np.testing.assert_allclose(mapped[valid, 1] - mapped[valid, 0], 100, atol=1e-4)


def test_edge_coordinate_one_is_inside(tmp_path):
    """1-based coordinate 1.0 is the first voxel (nsdcode rejects [1, 2) after its 0-based shift)."""
    values = np.ones((2, 1, 1, 3), dtype=np.float32)
    values[1] = [1.5, 1, 1]
    path = tmp_path / "func1pt8-to-MNI.nii.gz"
    nib.save(nib.Nifti1Image(values, np.eye(4)), path)
    coords = read_transform(path, (2, 1, 1))
    np.testing.assert_allclose(coords[:, 0, 0], [[0, 0, 0], [0.5, 0, 0]])
    np.testing.assert_allclose(map_volume(np.array([[[10.0]], [[20.0]]]), coords)[:, 0, 0], [10, 15])


def test_func_voxels_get_their_template_coordinates(root):
    coords = read_transform(NsdLayout(root).transform(1, "MNI", "func1pt8"), tf.TEMPLATE_GRID)
    ijk = np.array([[1, 1, 1], [3, 2, 1], [5, 4, 3]])
    got = voxel_template_coordinates(coords, ijk)
    expected = tf.func_to_template()[tuple(ijk.T)]
    np.testing.assert_allclose(got, expected, atol=1e-5, equal_nan=True)


def test_sparse_resampling_equals_map_coordinates_inside_and_renormalises_at_edges(root):
    coords = read_transform(NsdLayout(root).transform(1, "func1pt8", "MNI"), tf.FUNC_GRID)
    template_ijk = np.argwhere(np.isfinite(coords).all(axis=3))
    full = np.argwhere(np.ones(tf.FUNC_GRID, bool))
    values = linear(tf.FUNC_GRID)
    weights = template_weights(coords, template_ijk, full, tf.FUNC_GRID)
    reference = map_coordinates(values, coords[tuple(template_ijk.T)].T, order=1, mode="nearest")
    np.testing.assert_allclose(weights @ values[tuple(full.T)], reference, atol=1e-4)
    partial = full[full[:, 0] >= 2]  # a mask that misses the x < 2 slab
    w = template_weights(coords, template_ijk, partial, tf.FUNC_GRID)
    sums = np.asarray(w.sum(axis=1)).ravel()
    assert np.allclose(sums[sums > 0], 1) and (sums == 0).any()
    x = coords[tuple(template_ijk.T)][:, 0]
    np.testing.assert_array_equal(sums == 0, x <= 1 + 1e-6)  # empty rows: no neighbour with weight in x >= 2


def test_bad_missing_and_truncated_files_fail_with_one_clear_error(root, tmp_path):
    path = NsdLayout(root).transform(1, "func1pt8", "MNI")
    with pytest.raises(MissingFileError, match="fix:"):
        read_transform(tmp_path / "func1pt8-to-MNI.nii.gz")
    truncated = tmp_path / "truncated" / path.name
    truncated.parent.mkdir()
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataFormatError, match=r"truncated[\s\S]*fix:"):
        read_transform(truncated)
    wrong = tmp_path / "wrong.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3, 2), np.float32), np.eye(4)), wrong)
    with pytest.raises(DataFormatError, match="X x Y x Z x 3"):
        read_transform(wrong)
    not_gzip = tmp_path / "garbage.nii.gz"
    not_gzip.write_bytes(gzip.compress(b"not a nifti"))
    with pytest.raises(DataFormatError, match="garbage.nii.gz"):
        read_transform(not_gzip)


def test_adapter_path_writes_template_file_and_datamodule_serves_template_voxels(root, tmp_path):
    out = tmp_path / "prepared"
    manifest = prepare_nsd(root, 1, out, val_fraction=0.2, samples_per_shard=5, progress=False)
    assert ensure_template(out, root, 1) == out / "template.npz"
    with np.load(out / "template.npz", allow_pickle=False) as f:
        xyz = f["voxel_template_xyz"]
        n_template = len(f["template_ijk"])
    expected = tf.func_to_template()[tuple(np.asarray(manifest.voxel_ijk).T)]
    np.testing.assert_allclose(xyz, expected, atol=1e-5, equal_nan=True)
    dm = FMRIDataModule(out, backbone="world-clip:v1", space="template", verify=False)
    assert dm.n_voxels == n_template == int(nib.load(NsdLayout(root).template_mask).get_fdata().sum())
    voxels = np.arange(manifest.n_voxels, dtype=np.float16)
    item = dm._item(Sample("k", 1, "train", 0, voxels, None, 1, 0, n_repeats=1))
    np.testing.assert_allclose(item["voxels"].numpy(), load_template_matrix(out) @ voxels.astype(np.float32))
    native = FMRIDataModule(out, backbone="world-clip:v1", verify=False)
    assert native.n_voxels == manifest.n_voxels


def test_template_space_without_transforms_says_how_to_fix(root, tmp_path):
    bare = tmp_path / "root"
    shutil.copytree(root, bare)
    shutil.rmtree(bare / "nsddata/ppdata/subj01/transforms")
    out = tmp_path / "prepared"
    prepare_nsd(bare, 1, out, val_fraction=0.2, samples_per_shard=5, progress=False)
    assert ensure_template(out, bare, 1) is None
    with pytest.raises(MissingFileError, match="space: native"):
        FMRIDataModule(out, backbone="world-clip:v1", space="template", verify=False)


def test_group_mask_and_roi_dice(root, tmp_path):
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    (copy / "nsddata/templates/nsdgeneral_group-MNI.nii.gz").unlink()
    path = write_group_template_mask(copy, [1, 2])
    mask = np.asarray(nib.load(path).dataobj) > 0
    nsdgeneral = np.asarray(nib.load(NsdLayout(copy).roi(1, "nsdgeneral")).dataobj) > 0
    coords = read_transform(NsdLayout(copy).transform(1, "func1pt8", "MNI"), tf.FUNC_GRID)
    pulled = map_volume(nsdgeneral.astype(float), coords, order=0) > 0.5
    assert np.array_equal(mask, pulled)  # both fixture subjects share ROI and transform: the vote is theirs
    assert roi_dice_in_template(NsdLayout(copy), [1, 2], "nsdgeneral") == {"1": 1.0}


def test_world_transforms_align_subjects_better_than_native_grids(tmp_path):
    from brainbench.world.anatomy import build_anatomy, subject_grid
    from brainbench.world.config import get_world_config
    from brainbench.world.templates import write_world_transforms

    config = get_world_config("tiny")
    write_world_transforms(tmp_path, config, [1, 2, 3])
    layout = NsdLayout(tmp_path)
    pulled, native = [], []
    for subject in (1, 2, 3):
        coords = read_transform(layout.transform(subject, "func1pt8", "MNI"), subject_grid(config, subject))
        assert coords.shape[:3] == config.grid and np.isfinite(coords).all()
        roi = build_anatomy(config, subject).rois["nsdgeneral"] > 0
        pulled.append(map_volume(roi.astype(float), coords, order=0) > 0.5)
        crop = np.zeros(config.grid, bool)  # unaligned: the native grid laid onto the template's corner
        n = [min(a, b) for a, b in zip(roi.shape, config.grid, strict=True)]
        crop[: n[0], : n[1], : n[2]] = roi[: n[0], : n[1], : n[2]]
        native.append(crop)

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    aligned = np.mean([dice(pulled[0], p) for p in pulled[1:]])
    unaligned = np.mean([dice(native[0], p) for p in native[1:]])
    assert aligned > 0.85 and aligned > unaligned
    assert layout.template_mask.is_file()
    files = sorted(p.name for p in layout.transform(2, "func1pt8", "MNI").parent.iterdir())
    assert files == ["MNI-to-func1pt8.nii.gz", "func1pt8-to-MNI.nii.gz"]


def test_preparation_without_group_mask_keeps_native_space_working(root, tmp_path, caplog):
    from brainbench.data.preparation import prepare_dataset

    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    (copy / "nsddata/templates/nsdgeneral_group-MNI.nii.gz").unlink()
    caplog.set_level("WARNING")
    prepared = prepare_dataset(
        "nsd", 1, home=tmp_path / "home", data_root=copy, val_fraction=0.2, progress=False
    )
    assert (prepared / "manifest.json").is_file() and not (prepared / "template.npz").exists()
    assert "nsdgeneral_group-MNI.nii.gz" in caplog.text
    with pytest.raises(MissingFileError, match="space: native"):
        FMRIDataModule(prepared, backbone="world-clip:v1", space="template", verify=False)
    tf.add_transforms(copy)  # the mask is back: the next preparation adds template.npz to the same folder
    assert prepare_dataset("nsd", 1, home=tmp_path / "home", data_root=copy, val_fraction=0.2, progress=False)
    assert (prepared / "template.npz").is_file()
