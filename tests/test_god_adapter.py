import importlib.util
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from brainbench.data.manifest import Manifest
from brainbench.data.shards import iter_split, verify_checksums
from brainbench.data.sources import god_readers
from brainbench.data.sources.god import prepare_god
from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import ConfigError, DataFormatError, MissingFileError

_spec = importlib.util.spec_from_file_location(
    "god_make_fixture", Path(__file__).parent / "data/god/make_fixture.py"
)
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

OPTIONS = {"val_fraction": 0.2, "samples_per_shard": 4, "progress": False}
SPLITS = ("train", "val", "test", "imagery")
N_TRAIN_ROWS = 6 * 4


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return fx.write_god_fixture(tmp_path_factory.mktemp("god") / "root")


@pytest.fixture(scope="module")
def prepared(fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "god.subj01"
    manifest = prepare_god(fixture["root"], 1, out, **OPTIONS)
    return out, manifest, read_splits(out, manifest)


def read_splits(out, manifest):
    return {split: list(iter_split(out, manifest, split)) for split in SPLITS}


def prepare_variant(tmp_path, **fixture_options):
    fixture = fx.write_god_fixture(tmp_path / "root", **fixture_options)
    out = tmp_path / "out"
    manifest = prepare_god(fixture["root"], 1, out, **OPTIONS)
    return manifest, read_splits(out, manifest)


def copy_root(fixture, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(fixture["root"], root)
    return root


def vc_voxels(fixture):
    """Raw (N, V) values of the VC voxels, in column order."""
    return fixture["dataset"][:, fixture["voxel_columns"][fixture["rois"]["VC"]]]


def assert_same_samples(a, b):
    for split in SPLITS:
        assert [s.key for s in a[split]] == [s.key for s in b[split]]
        for x, y in zip(a[split], b[split], strict=True):
            assert x.stim_id == y.stim_id and x.trial == y.trial and x.session == y.session
            np.testing.assert_array_equal(x.voxels, y.voxels)


def test_counts_per_split(prepared, fixture):
    out, manifest, samples = prepared
    assert len(samples["train"]) + len(samples["val"]) == N_TRAIN_ROWS
    assert len(samples["val"]) == 4  # round(0.2 * 6) = 1 category, all 4 of its images
    assert len(samples["test"]) == 3 and len(samples["imagery"]) == 3
    assert manifest.split_name == "god-test3x5"
    assert {k: v["n_samples"] for k, v in manifest.splits.items()} == {k: len(v) for k, v in samples.items()}
    assert [s["n_samples"] for s in manifest.splits["train"]["shards"]] == [4, 4, 4, 4, 4]
    assert manifest.n_voxels == len(fixture["rois"]["VC"]) == 28
    assert all(s.voxels.shape == (28,) and s.voxels.dtype == np.float16 for v in samples.values() for s in v)
    keys = [s.key for v in samples.values() for s in v]
    assert len(set(keys)) == len(keys) == N_TRAIN_ROWS + 3 + 3
    assert all(s.n_repeats == 1 and s.repeats is None for s in samples["train"] + samples["val"])


def test_splits_follow_datatype_not_position(prepared, fixture):
    _, _, samples = prepared
    data_type, run = fixture["data_type"], fixture["run"]
    assert not np.all(np.diff(data_type) >= 0)  # the fixture interleaves the DataTypes
    for sample in samples["train"] + samples["val"]:
        assert data_type[sample.trial] == 1
        assert sample.key == f"subj01_row{sample.trial:06d}"
        assert sample.stim_id == fixture["stim_id"][sample.trial] and sample.session == run[sample.trial]
    assert (
        sorted(s.trial for s in samples["train"] + samples["val"]) == np.flatnonzero(data_type == 1).tolist()
    )


def test_test_average_is_mean_of_repeats(prepared, fixture):
    _, _, samples = prepared
    for sample in samples["test"]:
        shown = np.flatnonzero((fixture["stim_id"] == sample.stim_id) & (fixture["data_type"] == 2))
        assert sample.key == f"subj01_stim{sample.stim_id}"
        assert sample.n_repeats == len(shown) == 5 and sample.repeats.shape == (5, 28)
        assert sample.trial == shown[0] and sample.session == fixture["run"][shown[0]]
        np.testing.assert_allclose(
            sample.voxels, sample.repeats.astype(np.float32).mean(0), atol=1e-2, rtol=2e-3
        )
    assert [s.stim_id for s in samples["test"]] == sorted(s.stim_id for s in samples["test"])


def test_imagery_is_one_sample_per_category(prepared, fixture):
    out, manifest, samples = prepared
    store = StimulusStore(out / manifest.stimulus_store["path"])
    assert [s.stim_id for s in samples["imagery"]] == [c * 1_000_000 for c in sorted(fx.TEST_CATEGORIES)]
    for sample in samples["imagery"]:
        category = sample.stim_id // 1_000_000
        shown = np.flatnonzero((fixture["stim_id"] == sample.stim_id) & (fixture["data_type"] == 3))
        assert sample.key == f"subj01_imag{category}" and sample.n_repeats == len(shown) == 2
        assert sample.trial == shown[0] and sample.repeats.shape == (2, 28)
        assert sample.stim_id not in store  # a category-level id, documented as not in the store
    assert "not in this store" in manifest.stimulus_store["imagery_ids"]


def test_zscore_uses_training_rows_only(prepared, fixture):
    out, manifest, samples = prepared
    raw = vc_voxels(fixture)
    train_rows = fixture["data_type"] == 1
    mean, std = raw[train_rows].mean(0), raw[train_rows].std(0)
    zero_std = std < 1e-6
    std[zero_std] = 1.0
    assert zero_std.sum() == 1 and manifest.normalisation["zero_std_voxels"] == 1
    expected = (raw - mean) / std
    for sample in samples["train"] + samples["val"]:
        np.testing.assert_allclose(sample.voxels, expected[sample.trial], atol=5e-3, rtol=2e-3)
    for sample in samples["test"] + samples["imagery"]:
        rows = np.flatnonzero((fixture["stim_id"] == sample.stim_id) & (fixture["data_type"] > 1))
        np.testing.assert_allclose(sample.repeats, expected[rows], atol=2e-2, rtol=2e-3)
    train = np.stack([s.voxels for s in samples["train"] + samples["val"]]).astype(np.float32)
    np.testing.assert_allclose(train.mean(0), 0.0, atol=5e-3)
    np.testing.assert_allclose(train.std(0)[~zero_std], 1.0, atol=5e-3)
    # the +20 offset of test/imagery rows stays visible: it never entered the statistics
    assert np.median(np.concatenate([s.repeats for s in samples["test"]]).astype(np.float32)) > 3
    stats = np.load(out / manifest.normalisation["stats"]["path"], allow_pickle=False)
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-6)
    assert "DataType 1" in manifest.normalisation["zscore"]
    assert "val categories included" in manifest.normalisation["zscore"]


def test_categories_are_disjoint(prepared):
    _, _, samples = prepared
    cats = {split: {s.stim_id // 1_000_000 for s in samples[split]} for split in SPLITS}
    assert len(cats["val"]) == 1 and len(cats["train"]) == 5
    assert not cats["train"] & cats["val"] and not (cats["train"] | cats["val"]) & cats["test"]
    assert cats["imagery"] == cats["test"]


def test_overlapping_categories_fail(tmp_path):
    fixture = fx.write_god_fixture(
        tmp_path / "root", test_categories=(fx.TRAIN_CATEGORIES[0], *fx.TEST_CATEGORIES[1:])
    )
    with pytest.raises(DataFormatError, match=r"training and test categories overlap \(\['n01518878'\]\)"):
        prepare_god(fixture["root"], 1, tmp_path / "out", **OPTIONS)
    assert not (tmp_path / "out").exists()


def test_zero_shot_block(prepared):
    _, manifest, _ = prepared
    assert manifest.zero_shot == {
        "split": "test",
        "names": ["goldfish", "owl", "common iguana"],
        "ids": [1443537, 1621127, 1677366],
        "wnids": ["n01443537", "n01621127", "n01677366"],
        "prompt": "a photo of a {}.",
    }


def test_float_id_trap(prepared, fixture):
    out, manifest, samples = prepared
    tsv = (fixture["root"] / "stimulus_ImageNetTraining.tsv").read_text()
    assert "\t1518878.01491\t" in tsv  # the trailing zero is gone, as in the real file
    naive = int("1518878.01491".split(".")[1])
    assert naive == 1491 != fx.TRAP_IMAGE
    trap = 1518878 * 1_000_000 + fx.TRAP_IMAGE
    assert god_readers.stim_ids_from_float([1518878.01491, 1518878.010042]).tolist() == [trap, 1518878010042]
    trap_samples = [s for s in samples["train"] + samples["val"] if s.stim_id == trap]
    assert len(trap_samples) == 1
    store = StimulusStore(out / manifest.stimulus_store["path"])
    np.testing.assert_array_equal(store.images([trap])[0], fixture["images"][trap])


def test_stimulus_store(prepared, fixture):
    out, manifest, _ = prepared
    store = StimulusStore(out / manifest.stimulus_store["path"])
    assert sorted(store.stim_ids.tolist()) == sorted(fixture["images"])
    assert manifest.stimulus_store["n_stimuli"] == 27 and manifest.stimulus_store["has_images"] is True
    assert manifest.stimulus_store["image_hw"] == [9, 12]
    for stim_id, image in fixture["images"].items():
        np.testing.assert_array_equal(store.images([stim_id])[0], image)
        assert store.captions(stim_id) == []
    names = dict(zip(fx.TEST_CATEGORIES, fx.TEST_NAMES, strict=True))
    for category, number in fixture["test_images"]:
        assert store.categories(category * 1_000_000 + number) == [names[category]]
    for category, number in fixture["train_images"]:
        assert store.categories(category * 1_000_000 + number) == [f"n{category:08d}"]


def test_manifest_voxels_rois_and_checksums(prepared, fixture):
    out, manifest, _ = prepared
    assert Manifest.load(out / "manifest.json") == manifest
    verify_checksums(out, manifest)
    vc = fixture["rois"]["VC"]
    assert manifest.voxel_order.startswith("VoxelData == 1 and ROI_VC == 1 columns")
    assert manifest.voxel_ijk == fixture["xyz"][vc].astype(int).tolist()
    assert set(manifest.rois) == {f"god/{name}" for name in fx.ROIS}
    for name in fx.ROIS:
        assert manifest.rois[f"god/{name}"] == np.flatnonzero(np.isin(vc, fixture["rois"][name])).tolist()
    assert manifest.rois["god/VC"] == list(range(28))
    assert manifest.source["bdata_format"] == "hdf5" and manifest.source["ids"] == "stimulus_id"


def test_other_roi(fixture, tmp_path):
    manifest = prepare_god(fixture["root"], 1, tmp_path / "out", roi="V1", **OPTIONS)
    assert manifest.n_voxels == len(fixture["rois"]["V1"])
    assert manifest.rois["god/V1"] == list(range(manifest.n_voxels)) and manifest.rois["god/FFA"] == []


def test_bytes_metadata_is_decoded(fixture):
    with h5py.File(fixture["path"]) as f:
        assert f["metadata/key"].dtype.kind == "S" and f["metadata/description"].dtype.kind == "S"
    bdata = god_readers.read_bdata(fixture["path"])
    assert bdata.keys == fixture["keys"] and all(isinstance(k, str) for k in bdata.keys)
    np.testing.assert_array_equal(bdata.dataset, fixture["dataset"])
    np.testing.assert_array_equal(bdata.values, fixture["values"])


def test_v5_char_matrix_keys(fixture, tmp_path):
    path = tmp_path / "Subject1.mat"  # scipy turns a list of strings into a space-padded char matrix
    meta = {"key": fixture["keys"], "description": ["", *fixture["keys"][1:]], "value": fixture["values"]}
    scipy.io.savemat(path, {"dataSet": fixture["dataset"], "metaData": meta})
    bdata = god_readers.read_bdata(path)
    assert bdata.format == "v5" and bdata.keys == fixture["keys"]
    np.testing.assert_array_equal(bdata.dataset, fixture["dataset"])


@pytest.mark.parametrize(
    ("options", "fmt"),
    [
        ({"old_names": True}, "hdf5"),
        ({"container": "mat-hdf5"}, "hdf5"),
        ({"container": "mat-hdf5", "old_names": True}, "hdf5"),
        ({"container": "mat-v5"}, "v5"),
        ({"container": "mat-v73"}, "v7.3"),
    ],
)
def test_other_containers_give_identical_samples(prepared, tmp_path, options, fmt):
    manifest, samples = prepare_variant(tmp_path, **options)
    assert manifest.source["bdata_format"] == fmt
    assert manifest.source["bdata_file"] == ("Subject1.h5" if "container" not in options else "Subject1.mat")
    assert_same_samples(prepared[2], samples)
    assert manifest.rois == prepared[1].rois and manifest.voxel_ijk == prepared[1].voxel_ijk


def test_image_index_without_stimulus_id(prepared, tmp_path):
    manifest, samples = prepare_variant(tmp_path, stimulus_id=False)
    assert manifest.source["ids"] == "image_index"
    assert_same_samples(prepared[2], samples)


def test_v1_file_without_image_index(prepared, tmp_path):
    _, samples = prepare_variant(tmp_path, image_index=False)
    assert_same_samples(prepared[2], samples)


def test_wrong_datatype_code_fails_and_writes_nothing(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    column = fixture["keys"].index("DataType")
    dt_column = int(np.flatnonzero(fixture["values"][column] == 1)[0])
    with h5py.File(root / "Subject1.h5", "r+") as f:
        f["dataset"][5, dt_column] = 4.0
    out = tmp_path / "out"
    with pytest.raises(
        DataFormatError, match=r"Subject1\.h5: DataType holds codes \['1', '2', '3', '4'\]; expected 1"
    ):
        prepare_god(root, 1, out, **OPTIONS)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # no partial temp dir either


def test_missing_datatype_key(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    with h5py.File(root / "Subject1.h5", "r+") as f:
        keys = f["metadata/key"][()]
        keys[keys == b"DataType"] = b"DataKind"
        f["metadata/key"][...] = keys
    with pytest.raises(DataFormatError, match="metadata key 'DataType' is missing"):
        prepare_god(root, 1, tmp_path / "out", **OPTIONS)
    assert not (tmp_path / "out").exists()


def test_missing_roi_flag(fixture):
    with pytest.raises(
        DataFormatError, match=r"ROI flag 'ROI_IT' is missing; ROI keys present: ROI_V1, ROI_V2"
    ):
        prepare_god(fixture["root"], 1, fixture["root"].parent / "never", roi="IT", **OPTIONS)
    assert not (fixture["root"].parent / "never").exists()


def test_stim_id_not_in_tsv(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    tsv = root / "stimulus_ImageNetTraining.tsv"
    tsv.write_text("".join(tsv.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(
        DataFormatError, match=r"1 stimulus ids of DataType 1 rows are not in .*\['1518878\.010042'\]"
    ):
        prepare_god(root, 1, tmp_path / "out", **OPTIONS)


def test_missing_image_file(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    (root / "images" / fixture["file_names"][1518878010042]).unlink()
    with pytest.raises(MissingFileError, match=r"n01518878_10042\.png(.|\n)*1 of 27 images missing"):
        prepare_god(root, 1, tmp_path / "out", **OPTIONS)
    assert not (tmp_path / "out").exists()


def test_no_image_folder(fixture, tmp_path, caplog):
    root = copy_root(fixture, tmp_path)
    shutil.rmtree(root / "images")
    with caplog.at_level(logging.WARNING):
        manifest = prepare_god(root, 1, tmp_path / "out", **OPTIONS)
    assert manifest.stimulus_store["has_images"] is False and manifest.stimulus_store["image_hw"] is None
    assert "released on request" in caplog.text and "need the images" in caplog.text
    store = StimulusStore(tmp_path / "out" / manifest.stimulus_store["path"])
    assert len(store) == 27 and store.categories(1518878010042) == ["n01518878"]
    with h5py.File(store.path) as f:
        assert f["images"].size == 0


def test_given_image_folder_must_exist(fixture, tmp_path):
    with pytest.raises(MissingFileError, match="--images"):
        prepare_god(fixture["root"], 1, tmp_path / "out", images=tmp_path / "nowhere", **OPTIONS)


def test_image_sizes_must_agree_or_be_resized(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    odd = root / "images" / fixture["file_names"][1518878010042]
    Image.fromarray(np.zeros((20, 10, 3), np.uint8)).save(odd, format="PNG")
    with pytest.raises(ConfigError, match=r"differ in size(.|\n)*--image-size"):
        prepare_god(root, 1, tmp_path / "out", **OPTIONS)
    assert not (tmp_path / "out").exists()
    manifest = prepare_god(root, 1, tmp_path / "out", image_size=6, images=root / "images", **OPTIONS)
    assert manifest.stimulus_store["image_hw"] == [6, 6]
    store = StimulusStore(tmp_path / "out" / manifest.stimulus_store["path"])
    trap = 1518878 * 1_000_000 + fx.TRAP_IMAGE
    crop = Image.fromarray(fixture["images"][trap]).crop((1, 0, 10, 9))  # 12x9 -> centred 9x9
    expected = np.asarray(crop.resize((6, 6), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(store.images([trap])[0], expected)


def test_rerun_reuses_and_other_options_need_overwrite(prepared, fixture):
    out, manifest, _ = prepared
    assert prepare_god(fixture["root"], 1, out, **OPTIONS) == manifest
    with pytest.raises(ConfigError, match="already holds a different prepared directory"):
        prepare_god(fixture["root"], 1, out, **(OPTIONS | {"roi": "V1"}))
    assert Manifest.load(out) == manifest


def test_overwrite_replaces(fixture, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something.txt").write_text("x")
    with pytest.raises(ConfigError, match="overwrite"):
        prepare_god(fixture["root"], 1, out, **OPTIONS)
    prepare_god(fixture["root"], 1, out, overwrite=True, seed=3, **OPTIONS)
    assert not (out / "something.txt").exists() and (out / "manifest.json").is_file()


def test_unknown_subject_and_missing_root(fixture, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown subject 2: no Subject2\.h5 .*subjects found: 1"):
        prepare_god(fixture["root"], 2, tmp_path / "out", **OPTIONS)
    with pytest.raises(MissingFileError, match=r"Subject1\.h5(.|\n)*--root"):
        prepare_god(tmp_path / "nowhere", 1, tmp_path / "out", **OPTIONS)


def test_missing_synset_xlsx(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    (root / "ImageNetTest_synset.xlsx").unlink()
    with pytest.raises(MissingFileError, match=r"ImageNetTest_synset\.xlsx"):
        prepare_god(root, 1, tmp_path / "out", **OPTIONS)


def test_float16_overflow_and_nan(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    column = int(fixture["voxel_columns"][0])
    with h5py.File(root / "Subject1.h5", "r+") as f:
        f["dataset"][int(np.flatnonzero(fixture["data_type"] == 2)[0]), column] = 1e12
    with pytest.raises(DataFormatError, match="float16 range"):
        prepare_god(root, 1, tmp_path / "out", **OPTIONS)
    with h5py.File(root / "Subject1.h5", "r+") as f:
        f["dataset"][0, column] = np.nan
    with pytest.raises(DataFormatError, match="NaN/inf values in the chosen voxel columns"):
        prepare_god(root, 1, tmp_path / "out", **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_fixture_tables_match_the_contract(fixture):
    train = pd.read_csv(fixture["root"] / "stimulus_ImageNetTraining.tsv", sep="\t", header=None)
    assert train.shape == (N_TRAIN_ROWS, 4) and train[0].iloc[0] == "n01518878_10042.png"
    sheet = pd.read_excel(fixture["root"] / "ImageNetTest_synset.xlsx")
    assert list(sheet.columns[:4]) == ["synset_id", "category", "word", "gloss"]
