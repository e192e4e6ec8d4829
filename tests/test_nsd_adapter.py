import importlib.util
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainbench.data.manifest import Manifest
from brainbench.data.shards import iter_split, verify_checksums
from brainbench.data.sources import nsd_readers
from brainbench.data.sources.nsd import betas_to_psc, prepare_nsd, zscore_session
from brainbench.data.sources.nsd_layout import NsdLayout
from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import ConfigError, DataFormatError, MissingFileError

_spec = importlib.util.spec_from_file_location(
    "nsd_make_fixture", Path(__file__).parent / "data/nsd/make_fixture.py"
)
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

OPTIONS = {"val_fraction": 0.2, "samples_per_shard": 5, "progress": False}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return fx.make_fixture(tmp_path_factory.mktemp("nsd") / "root")


@pytest.fixture(scope="module")
def prepared(fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "nsd.subj01"
    manifest = prepare_nsd(fixture["root"], 1, out, **OPTIONS)
    samples = {split: list(iter_split(out, manifest, split)) for split in ("train", "val", "test")}
    return out, manifest, samples


def copy_root(fixture, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(fixture["root"], root)
    return root


def betas_dir(root, subject=1):
    return root / "nsddata_betas/ppdata" / f"subj{subject:02d}" / "func1pt8mm/betas_fithrf_GLMdenoise_RR"


def test_counts_per_split(prepared, fixture):
    out, manifest, samples = prepared
    ids = fixture["trial_nsd_ids"][1]
    n_shared_trials = int(np.isin(ids, fx.SHARED_IDS).sum())
    assert n_shared_trials == 18
    assert len(samples["train"]) + len(samples["val"]) == len(ids) - n_shared_trials == 18
    assert len(samples["test"]) == fx.N_SHARED == 6
    assert manifest.split_name == "shared6@3sess"
    assert {k: v["n_samples"] for k, v in manifest.splits.items()} == {k: len(v) for k, v in samples.items()}
    assert [s["n_samples"] for s in manifest.splits["test"]["shards"]] == [5, 1]
    assert manifest.n_voxels == int((fixture["nsdgeneral"] == 1).sum())
    assert all(s.voxels.shape == (manifest.n_voxels,) for split in samples.values() for s in split)
    assert len({s.key for split in samples.values() for s in split}) == 24


def test_test_samples_keep_and_average_repeats(prepared, fixture):
    _, _, samples = prepared
    ids = fixture["trial_nsd_ids"][1]
    for sample in samples["test"]:
        shown = np.flatnonzero(ids == sample.stim_id)
        assert sample.n_repeats == len(shown) == 3
        assert sample.repeats.shape == (3, sample.voxels.shape[0])
        assert sample.trial == shown[0] and sample.session == shown[0] // fx.TRIALS_PER_SESSION + 1
        np.testing.assert_allclose(
            sample.voxels, sample.repeats.astype(np.float32).mean(0), atol=2e-2, rtol=2e-3
        )
    assert all(s.n_repeats == 1 and s.repeats is None for s in samples["train"] + samples["val"])


def test_int16_scale_is_divided_by_300_exactly(fixture):
    layout = NsdLayout(fixture["root"])
    mask = fixture["nsdgeneral"] == 1
    raw, path = nsd_readers.read_session_betas(layout, 1, 2, mask)
    expected = fixture["raw_betas"][1][1][mask].T
    assert raw.dtype == np.int16 and path.name == "betas_session02.nii.gz"
    np.testing.assert_array_equal(raw, expected)
    psc = betas_to_psc(raw)
    assert psc.dtype == np.float32
    np.testing.assert_array_equal(np.rint(psc * 300).astype(np.int16), expected)
    assert abs(float(psc.std()) - float(expected.std()) / 300) < 1e-3


def test_pre_zscore_values_times_300_match_raw(prepared, fixture):
    out, manifest, samples = prepared
    stats = np.load(out / manifest.normalisation["stats"]["path"], allow_pickle=False)
    mask = fixture["nsdgeneral"] == 1
    for sample in samples["train"]:
        s = sample.session - 1
        psc = sample.voxels.astype(np.float32) * stats["std"][s] + stats["mean"][s]
        raw = fixture["raw_betas"][1][s][mask][:, sample.trial % fx.TRIALS_PER_SESSION]
        np.testing.assert_allclose(psc * 300, raw, atol=1.0, rtol=2e-3)


def test_zscore_statistics_exclude_shared_trials(prepared):
    _, manifest, samples = prepared
    zero_std = fx.ZERO_STD_VOXEL
    for session in (1, 2, 3):
        train = np.stack([s.voxels for s in samples["train"] + samples["val"] if s.session == session])
        np.testing.assert_allclose(train.astype(np.float32).mean(0), 0.0, atol=5e-3)
    # the planted +3000 offset (10 PSC) of shared trials is many train std away, not absorbed by the mean
    repeats = np.concatenate([s.repeats for s in samples["test"]]).astype(np.float32)
    assert np.median(repeats) > 10
    assert zero_std and manifest.normalisation["zero_std_voxels"] == {"1": 1, "2": 1, "3": 1}
    assert np.isfinite(repeats).all()


def test_zscore_session_unit():
    psc = np.array([[1.0, 5.0], [3.0, 5.0], [100.0, 5.0]], dtype=np.float32)
    z, mean, std, n_zero = zscore_session(psc, np.array([True, True, False]))
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(std, [1.0, 1.0])  # the constant voxel gets std 1
    np.testing.assert_allclose(z[:, 0], [-1.0, 1.0, 98.0])
    assert n_zero == 1


def test_one_based_ids_pair_the_right_images(prepared, fixture):
    out, manifest, samples = prepared
    ids = fixture["trial_nsd_ids"][1]
    store = StimulusStore(out / manifest.stimulus_store["path"])
    assert set(store.stim_ids.tolist()) == set(ids.tolist())
    for sample in samples["train"] + samples["val"]:
        assert sample.stim_id == ids[sample.trial]
        np.testing.assert_array_equal(store.images([sample.stim_id])[0], fixture["images"][ids[sample.trial]])
    assert {s.stim_id for s in samples["test"]} == set(fx.SHARED_IDS.tolist())
    black, white = store.images([0, 1])
    assert black.max() == 0 and white.min() == 255  # image 0 and image 1 are the planted extremes
    assert store.captions(0) == ["a picture number 0", "image 0 again"]
    assert store.captions(int(fx.SHARED_IDS[0])) == [
        f"a picture number {fx.SHARED_IDS[0]}",
        f"image {fx.SHARED_IDS[0]} again",
    ]
    for stim_id in store.stim_ids:
        assert store.categories(int(stim_id)) == fixture["categories"][int(stim_id)]


def test_hdf5_betas_give_identical_voxels(prepared, fixture, tmp_path):
    _, manifest, samples = prepared
    root = copy_root(fixture, tmp_path)
    for path in betas_dir(root).glob("*.nii.gz"):
        path.unlink()
    manifest_h5 = prepare_nsd(root, 1, tmp_path / "out", **OPTIONS)
    assert manifest_h5.source["betas_format"] == ["hdf5"] and manifest.source["betas_format"] == ["nii.gz"]
    samples_h5 = {split: list(iter_split(tmp_path / "out", manifest_h5, split)) for split in samples}
    for split in samples:
        for a, b in zip(samples[split], samples_h5[split], strict=True):
            assert a.key == b.key
            np.testing.assert_array_equal(a.voxels, b.voxels)
    # the trap is real: h5py masking with mask.T enumerates voxels in a different (Fortran) order
    mask = fixture["nsdgeneral"] == 1
    with h5py.File(betas_dir(root) / "betas_session01.hdf5") as f:
        naive = f["betas"][()][:, mask.T]
    raw, _ = nsd_readers.read_session_betas(NsdLayout(root), 1, 1, mask)
    assert not np.array_equal(naive, raw)
    assert np.array_equal(np.sort(naive, axis=1), np.sort(raw, axis=1))


def test_roi_minus_one_voxels_are_excluded(prepared, fixture):
    _, manifest, _ = prepared
    nsdgeneral, prf = fixture["nsdgeneral"], fixture["prf"]
    assert (nsdgeneral == -1).sum() > 0
    assert manifest.n_voxels == (nsdgeneral == 1).sum() < (nsdgeneral != 0).sum()
    ijk = np.array(manifest.voxel_ijk)
    np.testing.assert_array_equal(ijk, np.argwhere(nsdgeneral == 1))
    assert (ijk[:, 0] > 0).all()  # x == 0 is the -1 plane
    for label, name in fx.PRF_LABELS.items():
        idx = manifest.rois.get(f"prf-visualrois/{name}", [])
        np.testing.assert_array_equal(idx, np.flatnonzero(prf[nsdgeneral == 1] == label))
    assert set(manifest.rois) == {
        "nsdgeneral/nsdgeneral",
        "prf-visualrois/V1v",
        "prf-visualrois/V1d",
        "prf-visualrois/V2v",
        "streams/early",
        "streams/ventral",
    }
    assert manifest.rois["nsdgeneral/nsdgeneral"] == list(range(manifest.n_voxels))


def test_val_split_is_disjoint_by_image(prepared):
    _, _, samples = prepared
    train = {s.stim_id for s in samples["train"]}
    val = {s.stim_id for s in samples["val"]}
    test = {s.stim_id for s in samples["test"]}
    assert len(val) == 2 and len(train) == 8
    assert not train & val and not train & test and not val & test


def test_manifest_round_trip_and_checksums(prepared):
    out, manifest, _ = prepared
    assert Manifest.load(out / "manifest.json") == manifest
    verify_checksums(out, manifest)
    assert manifest.voxel_order.startswith("nsdgeneral > 0, C order over (x, y, z)")
    assert manifest.source["options"]["sessions"] is None
    assert manifest.stimulus_store["n_stimuli"] == 16


def test_fewer_sessions(fixture, tmp_path):
    manifest = prepare_nsd(fixture["root"], 2, tmp_path / "s2", sessions=2, **OPTIONS)
    assert manifest.split_name == "shared6@2sess"
    test = list(iter_split(tmp_path / "s2", manifest, "test"))
    assert all(s.n_repeats == 2 and s.session == 1 for s in test)
    assert all(s.stim_id in fx.TRAIN_IDS[2] for s in iter_split(tmp_path / "s2", manifest, "train"))


def test_rerun_and_overwrite(prepared, fixture):
    out, manifest, _ = prepared
    assert prepare_nsd(fixture["root"], 1, out, **OPTIONS) == manifest  # identical options: reused
    with pytest.raises(ConfigError, match="already holds a different prepared directory"):
        prepare_nsd(fixture["root"], 1, out, **(OPTIONS | {"seed": 1}))


def test_overwrite_replaces(fixture, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something.txt").write_text("x")
    with pytest.raises(ConfigError, match="overwrite"):
        prepare_nsd(fixture["root"], 1, out, **OPTIONS)
    prepare_nsd(fixture["root"], 1, out, overwrite=True, **OPTIONS)
    assert not (out / "something.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_unknown_subject_lists_found(fixture, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown subject 3: no folder .*subj03.*found.*subj01, subj02"):
        prepare_nsd(fixture["root"], 3, tmp_path / "out", **OPTIONS)


def test_missing_root(tmp_path):
    with pytest.raises(MissingFileError, match=r"nsddata/ppdata(.|\n)*--root"):
        prepare_nsd(tmp_path / "nowhere", 1, tmp_path / "out", **OPTIONS)


@pytest.mark.parametrize(
    "relative",
    [
        "nsddata/ppdata/subj01/behav/responses.tsv",
        "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
        "nsddata/ppdata/subj01/func1pt8mm/roi/nsdgeneral.nii.gz",
        "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5",
        "nsddata_stimuli/stimuli/nsd/annotations/captions_val2017.json",
    ],
)
def test_missing_raw_file_names_the_nsd_path(fixture, tmp_path, relative):
    root = copy_root(fixture, tmp_path)
    (root / relative).unlink()
    with pytest.raises(
        MissingFileError, match=rf"{relative}(.|\n)*NSD layout(.|\n)*brainbench world generate"
    ):
        prepare_nsd(root, 1, tmp_path / "out", **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_missing_session_betas(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    for suffix in (".nii.gz", ".hdf5"):
        (betas_dir(root) / f"betas_session03{suffix}").unlink()
    with pytest.raises(MissingFileError, match=r"betas_session03\.nii\.gz(.|\n)*--sessions"):
        prepare_nsd(root, 1, tmp_path / "out", **OPTIONS)
    prepare_nsd(root, 1, tmp_path / "out", sessions=2, **OPTIONS)


def test_nan_betas_fail_and_leave_nothing(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    vol = fixture["raw_betas"][1][1].astype(np.float32)
    vol[1, 1, 1, 0] = np.nan
    vol[2, 0, 0, 3] = np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), betas_dir(root) / "betas_session02.nii.gz")
    out = tmp_path / "out"
    with pytest.raises(DataFormatError, match=r"betas_session02\.nii\.gz: 2 NaN/inf values"):
        prepare_nsd(root, 1, out, **OPTIONS)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # no partial temp dir either


def test_grid_mismatch(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    betas = np.zeros((6, 5, 5, 12), dtype=np.int16)
    nib.save(nib.Nifti1Image(betas, np.eye(4)), betas_dir(root) / "betas_session01.nii.gz")
    with pytest.raises(
        DataFormatError, match=r"betas_session01\.nii\.gz: betas grid \(6, 5, 5\) does not match"
    ):
        prepare_nsd(root, 1, tmp_path / "out", **OPTIONS)
    roi = np.ones((6, 5, 5), dtype=np.int16)
    nib.save(nib.Nifti1Image(roi, np.eye(4)), root / "nsddata/ppdata/subj01/func1pt8mm/roi/streams.nii.gz")
    with pytest.raises(DataFormatError, match=r"streams\.nii\.gz: ROI grid \(6, 5, 5\) differs"):
        prepare_nsd(root, 1, tmp_path / "out", **OPTIONS)


def test_too_many_sessions(fixture, tmp_path):
    with pytest.raises(ConfigError, match=r"sessions=4 but .*responses\.tsv lists 3 sessions"):
        prepare_nsd(fixture["root"], 1, tmp_path / "out", sessions=4, **OPTIONS)


def test_off_by_one_in_responses_is_caught(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    path = root / "nsddata/ppdata/subj01/behav/responses.tsv"
    table = pd.read_csv(path, sep="\t")
    table["73KID"] += 1  # an off-by-one in the ids
    table.to_csv(path, sep="\t", index=False)
    with pytest.raises(DataFormatError, match="73KID disagrees with nsd_expdesign.mat"):
        prepare_nsd(root, 1, tmp_path / "out", **OPTIONS)
    table["73KID"] -= 2  # 0-based ids where 1-based belong
    table.to_csv(path, sep="\t", index=False)
    with pytest.raises(DataFormatError, match="73KID must be 1-based"):
        prepare_nsd(root, 1, tmp_path / "out", **OPTIONS)
