import importlib.util
import io
import logging
import shutil
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from brainbench.data.manifest import Manifest
from brainbench.data.shards import iter_split, verify_checksums
from brainbench.data.sources.mindeye import VOXEL_ORDER, detect_version, prepare_mindeye
from brainbench.data.sources.mindeye_readers import iter_tar_samples, load_npy, read_rows
from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import ConfigError, DataFormatError, MissingFileError

_spec = importlib.util.spec_from_file_location(
    "mindeye_make_fixture", Path(__file__).parent / "data/mindeye/make_fixture.py"
)
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

OPTIONS = {"samples_per_shard": 5, "progress": False}


def load(out):
    manifest = Manifest.load(out)
    samples = {split: list(iter_split(out, manifest, split)) for split in ("train", "val", "test")}
    return manifest, samples


@pytest.fixture(scope="module")
def me1(tmp_path_factory):
    root = tmp_path_factory.mktemp("me1") / "naturalscenesdataset"
    fixture = fx.write_me1_fixture(root)
    out = tmp_path_factory.mktemp("prepared") / "me1.subj01"
    prepare_mindeye(root, 1, out, **OPTIONS)
    return fixture, out, *load(out)


@pytest.fixture(scope="module")
def me2(tmp_path_factory):
    root = tmp_path_factory.mktemp("me2") / "mindeyev2"
    fixture = fx.write_me2_fixture(root)
    out = tmp_path_factory.mktemp("prepared") / "me2.subj01"
    prepare_mindeye(root, 1, out, val_fraction=0.2, **OPTIONS)
    return fixture, out, *load(out)


def assert_nothing_written(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


# ------------------------------------------------------------------------------------------- MindEye1


def test_me1_counts_and_manifest(me1):
    fixture, out, manifest, samples = me1
    reps = fx.ME1_REPEATS
    assert len(samples["train"]) == sum(reps["train"].values()) == 11  # one sample per real repeat
    assert len(samples["val"]) == sum(reps["val"].values()) == 4  # MindEye1's own val split
    assert len(samples["test"]) == len(reps["test"]) == 4
    assert {k: v["n_samples"] for k, v in manifest.splits.items()} == {k: len(v) for k, v in samples.items()}
    assert manifest.dataset == "nsd" and manifest.dataset_version == "mindeye1-webdataset_avg_split"
    assert manifest.split_name == "shared4@me1-webdataset_avg_split"
    assert manifest.n_voxels == fx.N_VOXELS and manifest.voxel_order == VOXEL_ORDER
    assert manifest.voxel_ijk == [] and manifest.rois == {}
    assert manifest.normalisation["values"] == "as shipped by MindEye1; no re-normalisation"
    assert manifest.normalisation["padding_unlike_medarc"] == 0
    assert manifest.source["mindeye_version"] == "1" and manifest.source["me1_metadata_totals"]["val"] == 2
    keys = [s.key for split in samples.values() for s in split]
    assert len(set(keys)) == len(keys) == 19 and not any("." in k for k in keys)
    verify_checksums(out, manifest)


def test_me1_keeps_only_real_repeats_and_their_mean(me1):
    fixture, _, _, samples = me1
    for sample in samples["test"]:
        real = fixture["repeats"][sample.stim_id]
        assert sample.n_repeats == len(real) == fx.ME1_REPEATS["test"][sample.stim_id]
        np.testing.assert_array_equal(sample.repeats, real)  # padding rows dropped, values as shipped
        np.testing.assert_allclose(sample.voxels, real.astype(np.float32).mean(0), atol=2e-3, rtol=2e-3)
    one_repeat = next(s for s in samples["test"] if s.stim_id == 31)
    assert one_repeat.repeats.shape == (1, fx.N_VOXELS)
    for split in ("train", "val"):
        for stim_id, n in fx.ME1_REPEATS[split].items():
            mine = sorted((s for s in samples[split] if s.stim_id == stim_id), key=lambda s: s.key)
            assert len(mine) == n
            np.testing.assert_array_equal(np.stack([s.voxels for s in mine]), fixture["repeats"][stim_id])
            assert all(s.n_repeats == 1 and s.repeats is None for s in mine)


def test_me1_stim_ids_trials_and_images(me1):
    fixture, out, manifest, samples = me1
    for split in ("train", "val", "test"):
        assert {s.stim_id for s in samples[split]} == set(fixture["splits"][split])
    for sample in [s for split in samples.values() for s in split]:
        first = fixture["first_trial"][sample.stim_id]
        assert sample.trial == first and sample.session == first // 750 + 1
    with StimulusStore(out / manifest.stimulus_store["path"]) as store:
        ids = sorted(fixture["colours"])
        assert store.stim_ids.tolist() == ids
        images = store.images(ids)
        assert images.shape == (len(ids), fx.IMAGE_PX, fx.IMAGE_PX, 3)
        for stim_id, image in zip(ids, images, strict=True):
            np.testing.assert_allclose(image.reshape(-1, 3).mean(0), fixture["colours"][stim_id], atol=3)
        assert store.captions(ids[0]) == []
    assert manifest.stimulus_store["captions"].startswith("none")


def test_me1_pickle_member_refused_with_nothing_written(tmp_path):
    fixture = fx.write_me1_fixture(tmp_path / "root", pickle_member=True)
    out = tmp_path / "prepared" / "me1"
    with pytest.raises(DataFormatError, match=r"extra\.pyd.*refusing to unpickle") as info:
        prepare_mindeye(tmp_path / "root", 1, out, **OPTIONS)
    assert info.value.path == fixture["tars"]["test"][-1]
    assert_nothing_written(out)


def test_me1_voxel_count_mismatch_between_tars(tmp_path):
    fx.write_me1_fixture(tmp_path / "root", mismatch_voxels=True)
    with pytest.raises(DataFormatError, match="voxel-count mismatch") as info:
        prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", **OPTIONS)
    assert info.value.path.name == "val_subj01_0.tar"
    assert_nothing_written(tmp_path / "out")


def test_me1_images_must_share_a_size_unless_resized(tmp_path):
    fx.write_me1_fixture(tmp_path / "root", odd_image_size=True)
    with pytest.raises(DataFormatError, match="image_size"):
        prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", **OPTIONS)
    manifest = prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", image_size=8, **OPTIONS)
    with StimulusStore(tmp_path / "out" / manifest.stimulus_store["path"]) as store:
        assert store.images(store.stim_ids).shape == (12, 8, 8, 3)


def test_me1_missing_tar_names_the_expected_path(tmp_path):
    fixture = fx.write_me1_fixture(tmp_path / "root")
    fixture["tars"]["train"][0].unlink()
    with pytest.raises(MissingFileError) as info:
        prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", **OPTIONS)
    assert info.value.path == fixture["tars"]["train"][0]
    shutil.rmtree(tmp_path / "root" / "webdataset_avg_split" / "val")
    fixture["tars"]["train"][0].touch()
    with pytest.raises(MissingFileError, match="val_subj01_0.tar"):
        prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", **OPTIONS)


# ------------------------------------------------------------------------------------------- MindEye2


def test_me2_counts_splits_and_manifest(me2):
    fixture, out, manifest, samples = me2
    nonshared = [t for t in fixture["trials"] if not t["shared"]]
    assert len(samples["train"]) + len(samples["val"]) == len(nonshared) == 15
    assert len(samples["test"]) == len(fx.ME2_SHARED) == 4
    val_ids = {s.stim_id for s in samples["val"]}
    assert len(val_ids) == 2  # round(0.2 * 9 training images)
    assert not val_ids & {s.stim_id for s in samples["train"]}
    assert {s.stim_id for s in samples["train"]} | val_ids == set(fixture["train_ids"])
    assert manifest.split_name == "shared4@me2-new_test"
    assert manifest.dataset_version == "mindeye2-wds" and manifest.source["test_set"] == "new_test"
    assert manifest.voxel_order == VOXEL_ORDER and manifest.voxel_ijk == [] and manifest.rois == {}
    assert manifest.normalisation["values"] == "as shipped by MindEye2; no re-normalisation"
    assert manifest.source["train_trials_dropped_in_test"] == 0
    verify_checksums(out, manifest)


def test_me2_voxels_come_from_the_global_trial_row(me2):
    fixture, _, _, samples = me2
    betas = fixture["betas"]
    coco_of = {t["global_trial"]: t["coco"] for t in fixture["trials"]}
    single = samples["train"] + samples["val"]
    assert {s.session for s in single} == {1, 2} and max(s.trial for s in single) >= 750
    for sample in single:
        assert sample.stim_id == coco_of[sample.trial] and sample.session == sample.trial // 750 + 1
        np.testing.assert_allclose(sample.voxels, betas[sample.trial], atol=5e-3, rtol=2e-3)
        others = np.delete(betas, sample.trial, axis=0)
        assert (
            np.abs(others - sample.voxels.astype(np.float32)).max(axis=1).min() > 0.5
        )  # rows differ strongly


def test_me2_test_keeps_every_trial_and_the_mean(me2):
    fixture, _, _, samples = me2
    for sample in samples["test"]:
        trials = sorted(t["global_trial"] for t in fixture["trials"] if t["coco"] == sample.stim_id)
        assert sample.n_repeats == len(trials) == sum(fx.ME2_SHARED[sample.stim_id])
        assert sample.trial == trials[0] and sample.session == trials[0] // 750 + 1
        np.testing.assert_allclose(sample.repeats, fixture["betas"][trials], atol=5e-3, rtol=2e-3)
        np.testing.assert_allclose(sample.voxels, fixture["betas"][trials].mean(0), atol=5e-3, rtol=2e-3)


def test_me2_images_are_uint8_hwc_and_captions_plain(me2):
    fixture, out, manifest, _ = me2
    with StimulusStore(out / manifest.stimulus_store["path"]) as store:
        ids = store.stim_ids
        assert sorted(ids.tolist()) == sorted(fixture["train_ids"] + fixture["shared_ids"])
        expected = np.rint(np.clip(fixture["images"][ids].astype(np.float32), 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(store.images(ids), expected.transpose(0, 2, 3, 1))
        for stim_id in ids.tolist():
            assert store.captions(stim_id) == fixture["captions"][stim_id]


def test_me2_old_test_set_is_named_and_used(tmp_path):
    fixture = fx.write_me2_fixture(tmp_path / "root", captions=None)
    manifest = prepare_mindeye(
        tmp_path / "root", 1, tmp_path / "out", test_set="test", image_size=8, **OPTIONS
    )
    _, samples = load(tmp_path / "out")
    assert manifest.split_name == "shared3@me2-test"
    assert sorted(s.stim_id for s in samples["test"]) == fixture["old_test_ids"] == [110, 117, 124]
    assert [s.n_repeats for s in sorted(samples["test"], key=lambda s: s.stim_id)] == [2, 2, 1]
    with StimulusStore(tmp_path / "out" / manifest.stimulus_store["path"]) as store:
        assert 131 not in store and store.images([110]).shape == (1, 8, 8, 3)
        assert store.captions(110) == []


def test_me2_object_captions_are_skipped_not_unpickled(tmp_path, caplog):
    fx.write_me2_fixture(tmp_path / "root", captions="object")
    with caplog.at_level(logging.WARNING):
        manifest = prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", **OPTIONS)
    assert manifest.stimulus_store["captions"].startswith("skipped")
    assert any("unpickl" in r.getMessage() for r in caplog.records)
    with StimulusStore(tmp_path / "out" / manifest.stimulus_store["path"]) as store:
        assert all(store.captions(i) == [] for i in store.stim_ids.tolist())


@pytest.mark.parametrize("side_file", ["betas_all_subj01_fp32_renorm.hdf5", "coco_images_224_float16.hdf5"])
def test_me2_missing_side_hdf5_is_named(tmp_path, side_file):
    fx.write_me2_fixture(tmp_path / "root")
    (tmp_path / "root" / side_file).unlink()
    with pytest.raises(MissingFileError, match="side file") as info:
        prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", **OPTIONS)
    assert info.value.path == tmp_path / "root" / side_file
    assert_nothing_written(tmp_path / "out")


def test_me2_pickle_member_refused_with_nothing_written(tmp_path):
    fx.write_me2_fixture(tmp_path / "root", pickle_member=True)
    with pytest.raises(DataFormatError, match=r"extra\.pth.*refusing to unpickle") as info:
        prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", **OPTIONS)
    assert info.value.path.name == "1.tar"
    assert_nothing_written(tmp_path / "out")


def test_me2_missing_test_tar_names_the_path(tmp_path):
    fx.write_me2_fixture(tmp_path / "root")
    test_tar = tmp_path / "root/wds/subj01/new_test/0.tar"
    test_tar.unlink()
    with pytest.raises(MissingFileError, match=r"\['test'\]") as info:
        prepare_mindeye(tmp_path / "root", 1, tmp_path / "out", **OPTIONS)
    assert info.value.path == test_tar


# ------------------------------------------------------------------------------------------- both


def test_read_rows_handles_unsorted_and_duplicate_indices(tmp_path):
    data = np.arange(200, dtype=np.float32).reshape(50, 4)
    with h5py.File(tmp_path / "rows.hdf5", "w") as f:
        f.create_dataset("x", data=data)
    with h5py.File(tmp_path / "rows.hdf5", "r") as f:
        for rows in ([7, 3, 7, 4, 5, 3], [49, 0, 20, 0], [3]):  # dense (one slice) and sparse (point) reads
            np.testing.assert_array_equal(read_rows(f["x"], rows), data[rows])
        with pytest.raises(TypeError):
            f["x"][[7, 3]]  # what read_rows exists for (trap 16)
        assert read_rows(f["x"], []).shape == (0, 4)


def write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def npy_bytes(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_tar_reader_refuses_object_npy_split_samples_and_pickles(tmp_path):
    ok = npy_bytes(np.zeros((1, 17)))
    write_tar(tmp_path / "object.tar", [("s0.behav.npy", npy_bytes(np.array([{"a": 1}]), allow_pickle=True))])
    (sample,) = iter_tar_samples(tmp_path / "object.tar", frozenset({"behav.npy"}))
    with pytest.raises(DataFormatError, match=r"s0\.behav\.npy.*not a plain numeric"):
        load_npy(sample, "behav.npy")
    write_tar(tmp_path / "split.tar", [("a.behav.npy", ok), ("b.behav.npy", ok), ("a.olds_behav.npy", ok)])
    with pytest.raises(DataFormatError, match="not contiguous"):
        list(iter_tar_samples(tmp_path / "split.tar", frozenset({"behav.npy"})))
    write_tar(tmp_path / "gz.tar", [("a.behav.npy", ok), ("a.meta.pyd.gz", b"x")])
    with pytest.raises(DataFormatError, match=r"a\.meta\.pyd\.gz"):
        list(iter_tar_samples(tmp_path / "gz.tar", frozenset({"behav.npy"})))
    (tmp_path / "cut.tar").write_bytes((tmp_path / "split.tar").read_bytes()[:700])
    with pytest.raises(DataFormatError, match="truncated"):
        list(iter_tar_samples(tmp_path / "cut.tar", frozenset({"behav.npy"})))


def test_version_detection(tmp_path):
    me1_root, me2_root = tmp_path / "me1", tmp_path / "me2"
    (me1_root / "webdataset_avg_split").mkdir(parents=True)
    (me2_root / "wds").mkdir(parents=True)
    assert detect_version(me1_root) == "1" and detect_version(me2_root) == "2"
    (me1_root / "wds").mkdir()
    with pytest.raises(ConfigError, match="both"):
        detect_version(me1_root)
    with pytest.raises(MissingFileError, match="neither"):
        detect_version(tmp_path / "empty")


def test_version_auto_and_explicit(me1, me2, tmp_path):
    assert me1[2].source["mindeye_version"] == "1" and me2[2].source["mindeye_version"] == "2"
    with pytest.raises(MissingFileError) as info:
        prepare_mindeye(me1[0]["root"], 1, tmp_path / "out", version="2", **OPTIONS)
    assert info.value.path == me1[0]["root"] / "wds" / "subj01"


def test_unknown_subject(me1, me2, tmp_path):
    with pytest.raises(ConfigError, match="subj01"):
        prepare_mindeye(me1[0]["root"], 2, tmp_path / "out", **OPTIONS)
    with pytest.raises(ConfigError, match="subj01"):
        prepare_mindeye(me2[0]["root"], 3, tmp_path / "out", **OPTIONS)
    with pytest.raises(ConfigError, match="1..8"):
        prepare_mindeye(me2[0]["root"], 9, tmp_path / "out", **OPTIONS)
    with pytest.raises(ConfigError, match="test_set"):
        prepare_mindeye(me2[0]["root"], 1, tmp_path / "out", test_set="old", **OPTIONS)


def test_identical_rerun_reuses_and_changes_need_overwrite(me2):
    fixture, out, manifest, _ = me2
    shard = out / manifest.splits["train"]["shards"][0]["path"]
    stamp = shard.stat().st_mtime_ns
    again = prepare_mindeye(fixture["root"], 1, out, val_fraction=0.2, **OPTIONS)
    assert again == manifest and shard.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="overwrite"):
        prepare_mindeye(fixture["root"], 1, out, val_fraction=0.3, **OPTIONS)
    assert Manifest.load(out) == manifest
