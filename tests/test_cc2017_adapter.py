import importlib.util
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import cifti2

from brainbench.data.manifest import Manifest
from brainbench.data.shards import iter_split, verify_checksums
from brainbench.data.sources import cc2017_readers as readers
from brainbench.data.sources.cc2017 import (
    detrend_zscore,
    prepare_cc2017,
    repeat_correlation,
    select_reproducible,
)
from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import ConfigError, DataFormatError, MissingFileError

_spec = importlib.util.spec_from_file_location(
    "cc2017_make_fixture", Path(__file__).parent / "data/cc2017/make_fixture.py"
)
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

V = 30
OPTIONS = {"volumes_per_run": V, "val_fraction": 0.25, "samples_per_shard": 50, "progress": False}
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    info = fx.write_cc2017_fixture(
        tmp_path_factory.mktemp("cc2017") / "root", n_train=4, n_test=2, volumes_per_run=V
    )
    fx.write_wen_mat(info)
    return info


def prepare(root, out, **options):
    manifest = prepare_cc2017(root, 1, out, **(OPTIONS | options))
    return out, manifest, {split: list(iter_split(out, manifest, split)) for split in SPLITS}


@pytest.fixture(scope="module")
def prepared(fixture, tmp_path_factory):
    return prepare(fixture["root"], tmp_path_factory.mktemp("prepared") / "cc2017.subj01")


@pytest.fixture(scope="module")
def prepared_lag0(fixture, tmp_path_factory):
    return prepare(fixture["root"], tmp_path_factory.mktemp("lag0") / "out", lag_trs=0)


def copy_root(fixture, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(fixture["root"], root)
    return root


def run_path(root, movie, repeat):
    return root / f"video_fmri_dataset/subject1/fmri/{movie}/cifti/{movie}_{repeat}_Atlas.dtseries.nii"


def by_key(samples):
    return {s.key: s for split in SPLITS for s in samples[split]}


def signal_correlation(test_samples, fixture, movie):
    """Correlation of the planted per-window signal with the test averages (mean over kept vertices)."""
    samples = sorted((s for s in test_samples if s.key.split("_")[1] == movie), key=lambda s: s.trial)
    mean = np.array([s.voxels.astype(np.float32).mean() for s in samples])
    return np.corrcoef(mean, fixture["signals"][movie][: len(mean)])[0, 1]


def test_counts_per_split(prepared):
    out, manifest, samples = prepared
    assert {split: len(samples[split]) for split in SPLITS} == {
        "train": 3 * 2 * V,
        "val": 2 * V,
        "test": 2 * V,
    }
    assert {k: v["n_samples"] for k, v in manifest.splits.items()} == {k: len(v) for k, v in samples.items()}
    assert [s["n_samples"] for s in manifest.splits["train"]["shards"]] == [50, 50, 50, 30]
    assert manifest.split_name == "cc2017-test60x3"
    assert len(manifest.source["movies"]["val"]) == 1 and len(manifest.source["movies"]["train"]) == 3
    assert manifest.source["movies"]["test"] == ["test1", "test2"]
    assert len(by_key(samples)) == 5 * 2 * V
    assert all(s.voxels.shape == (manifest.n_voxels,) for split in samples.values() for s in split)


def test_train_samples_are_single_trials_of_every_repeat(prepared):
    _, _, samples = prepared
    keys = by_key(samples)
    for sample in samples["train"] + samples["val"]:
        movie, repeat, window = sample.key.split("_")[1:]
        assert sample.key == f"subj01_{movie}_{repeat}_{window}" and movie.startswith("seg")
        assert (
            sample.stim_id == int(movie[3:]) * 1000 + int(window[1:]) == int(movie[3:]) * 1000 + sample.trial
        )
        assert sample.session == int(repeat[1:]) and sample.n_repeats == 1 and sample.repeats is None
    one, two = keys["subj01_seg01_r1_t0007"], keys["subj01_seg01_r2_t0007"]
    assert one.stim_id == two.stim_id == 1007 and not np.array_equal(one.voxels, two.voxels)


def test_test_average_is_mean_of_repeats(prepared):
    _, manifest, samples = prepared
    for sample in samples["test"]:
        assert sample.n_repeats == 3 and sample.repeats.shape == (3, manifest.n_voxels)
        np.testing.assert_allclose(
            sample.voxels, sample.repeats.astype(np.float32).mean(0), atol=4e-3, rtol=2e-3
        )
        number = int(sample.key.split("_")[1][4:])
        assert sample.stim_id == 100_000 + number * 1000 + sample.trial
        assert sample.key == f"subj01_test{number}_t{sample.trial:04d}"


def test_both_trims_keep_volumes_per_run(fixture, prepared):
    root = fixture["root"]
    for movie, n_volumes in (("seg1", V + 5), ("test2", V + 6)):
        raw_run = fixture["runs"][movie, 1]
        assert raw_run.shape[0] == n_volumes == fx.run_length(movie, V)
        data, axis, step = readers.read_run(run_path(root, movie, 1), V, 2)
        start = n_volumes - 4 - V  # 1 for 245 volumes, 2 for 246 (datasets.md §5.2 trap 3)
        assert data.shape == (V, fx.N_CORTEX) and step == 2.0
        np.testing.assert_array_equal(data, raw_run[start + 2 : start + 2 + V, : fx.N_CORTEX])
    _, _, samples = prepared
    for movie in ("test1", "test2"):  # +5 and +6 runs both line up with the movie
        assert signal_correlation(samples["test"], fixture, movie) > 0.9


def test_cortex_cut_drops_subcortical_voxels(fixture, prepared):
    _, manifest, _ = prepared
    assert manifest.source["n_grayordinates"] == fx.N_CORTEX + fx.N_SUBCORTICAL
    assert manifest.source["n_cortex"] == manifest.source["voxel_selection"]["n_cortex"] == fx.N_CORTEX
    axis = nib.load(run_path(fixture["root"], "seg1", 1)).header.get_axis(1)
    np.testing.assert_array_equal(readers.cortex_columns(Path("x"), axis), np.arange(fx.N_CORTEX))
    # the subcortical voxels carry the strongest planted signal: they would be selected if they were kept
    assert max(manifest.source["voxel_selection"]["indices"]) < fx.N_CORTEX


def test_voxel_selection_keeps_reproducible_and_drops_noise(prepared):
    _, manifest, _ = prepared
    selection = manifest.source["voxel_selection"]
    assert selection["indices"] == fx.REPRODUCIBLE.tolist()
    assert selection["n_selected"] == manifest.n_voxels == len(fx.REPRODUCIBLE)
    assert selection["n_movies"] == 4 and selection["p_value"] == 0.05  # val movies count, test movies never
    assert manifest.rois == {"cc2017/selected": list(range(manifest.n_voxels))}
    assert manifest.voxel_order == "cortex grayordinates in CIFTI order, reproducible subset"
    assert manifest.voxel_ijk == []
    zero_std = manifest.normalisation["zero_std_vertices"]
    assert len(zero_std) == 4 * 2 + 2 * 3 and set(zero_std.values()) == {1}  # the constant vertex, every run


def test_planted_lag_is_recovered_only_with_the_right_lag(fixture, prepared, prepared_lag0, tmp_path):
    _, _, right = prepared
    _, _, early = prepared_lag0
    _, late_manifest, late = prepare(fixture["root"], tmp_path / "lag3", lag_trs=3)
    assert late_manifest.timing["lag_trs"] == 3 and late_manifest.timing["lag_s"] == 6.0
    for movie in ("test1", "test2"):
        assert signal_correlation(right["test"], fixture, movie) > 0.9
        assert abs(signal_correlation(early["test"], fixture, movie)) < 0.4
        assert abs(signal_correlation(late["test"], fixture, movie)) < 0.4


def test_detrending_stops_a_shared_drift_looking_reproducible(fixture):
    noise = np.setdiff1d(np.arange(fx.N_CORTEX), np.append(fx.REPRODUCIBLE, fx.ZERO_STD_VERTEX))
    one, _, _ = readers.read_run(run_path(fixture["root"], "seg2", 1), V, 2)
    two, _, _ = readers.read_run(run_path(fixture["root"], "seg2", 2), V, 2)
    assert repeat_correlation(one, two)[noise].min() > 0.9
    detrended = repeat_correlation(detrend_zscore(one)[0], detrend_zscore(two)[0])
    assert np.abs(detrended[noise]).max() < 0.6 and detrended[fx.REPRODUCIBLE].min() > 0.6


def test_detrend_zscore_unit():
    t = np.linspace(0, 1, 40)
    rng = np.random.default_rng(0)
    wiggle = rng.normal(size=40)
    legendre = np.polynomial.legendre.legvander(np.linspace(-1, 1, 40), 4)
    wiggle -= legendre @ np.linalg.lstsq(legendre, wiggle, rcond=None)[0]  # orthogonal to the trend
    run = np.stack([100 + 5 * t - 3 * t**4 + wiggle, np.full(40, 7.0), 3 * wiggle], axis=1)
    z, zero = detrend_zscore(run)
    expected = (wiggle - wiggle.mean()) / wiggle.std(ddof=1)
    np.testing.assert_allclose(z[:, 0], expected, atol=1e-5)
    np.testing.assert_allclose(z[:, 2], expected, atol=1e-5)
    assert zero.tolist() == [False, True, False] and not z[:, 1].any()
    assert z.dtype == np.float32


def test_select_reproducible_unit():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.1, size=(6, 50))
    r[:, :5] += 0.6  # reliably positive
    r[:, 5] -= 0.6  # reliably negative: not reproducible
    r[:, 6] = 0.0  # constant
    keep, info = select_reproducible(r, 0.05)
    assert keep.tolist() == [0, 1, 2, 3, 4]
    assert info["n_cortex"] == 50 and info["n_movies"] == 6 and info["n_selected"] == 5
    assert select_reproducible(r[:, :5], 1e-12)[0].tolist() == []


def test_frames_per_sample_and_keyframe(fixture, prepared):
    out, manifest, samples = prepared
    store = StimulusStore(out / manifest.stimulus_store["path"])
    assert store.has_frames and len(store) == manifest.stimulus_store["n_stimuli"] == 6 * V
    assert {s.stim_id for split in samples.values() for s in split} == set(store.stim_ids.tolist())
    assert manifest.timing == manifest.timing | {"tr_s": 2.0, "fps": 3, "frames_per_sample": 6, "keyframe": 2}
    ids = [1000, 1029, 2005, 100_000 + 2000 + 13]
    frames = store.frames(ids)
    assert frames.shape == (4, 6, 32, 32, 3)
    np.testing.assert_array_equal(store.images(ids), frames[:, 2])
    for row, stim_id in enumerate(ids):
        movie = f"test{(stim_id - 100_000) // 1000}" if stim_id >= 100_000 else f"seg{stim_id // 1000}"
        window = stim_id % 1000
        for k in range(6):
            nearest = int(np.rint((2 * window + (k + 0.5) / 3) * fixture["fps"]))
            mean = frames[row, k].reshape(-1, 3).astype(float).mean(0)
            assert abs(mean[0] - fx.frame_red(nearest)) < 8 and abs(mean[1] - fixture["green"][movie]) < 8


def test_frames_are_streamed_in_window_batches(fixture):
    mp4 = fixture["root"] / "video_fmri_dataset/stimuli/test1.mp4"
    batches = list(readers.iter_window_frames(mp4, V, 3, 8, windows_per_batch=7))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2] and batches[0].shape[1:] == (6, 8, 8, 3)
    np.testing.assert_array_equal(np.concatenate(batches), readers.sample_frames(mp4, V, 3, 8))


def test_frame_size_and_fps(fixture, tmp_path):
    out, manifest, _ = prepare(fixture["root"], tmp_path / "out", fps=2, frame_size=16, keyframe=0)
    store = StimulusStore(out / "stimuli.hdf5")
    frames = store.frames([3004])
    assert frames.shape == (1, 4, 16, 16, 3)
    np.testing.assert_array_equal(store.images([3004])[0], frames[0, 0])
    assert manifest.timing["frames_per_sample"] == 4


def test_captions_overlap_the_window(prepared):
    out, manifest, _ = prepared
    store = StimulusStore(out / manifest.stimulus_store["path"])
    assert store.captions(1000) == ["seg1 shot 0"]  # [0, 2) s
    assert store.captions(1001) == ["seg1 shot 0", "seg1 shot 1"]  # [2, 4) s
    assert store.captions(1002) == ["seg1 shot 1"]  # [4, 6) s: shot 2 starts at 6
    assert store.captions(102_000) == ["test2 shot 0"]
    assert store.categories(1000) == []


def test_manifest_round_trip_checksums_and_rerun(fixture, prepared):
    out, manifest, _ = prepared
    assert Manifest.load(out / "manifest.json") == manifest
    verify_checksums(out, manifest)
    assert manifest.dataset == "cc2017" and manifest.source["fmri_source"] == "cifti"
    assert manifest.timing["volumes_per_run"] == V and manifest.timing["windows_per_movie"] == V
    assert manifest.timing["lag_trs"] == 2 and "start = T - 4" in manifest.timing["lag_applied"]
    assert prepare_cc2017(fixture["root"], 1, out, **OPTIONS) == manifest
    with pytest.raises(ConfigError, match="already holds a different prepared directory"):
        prepare_cc2017(fixture["root"], 1, out, **(OPTIONS | {"seed": 1}))


def test_mat_source_gives_the_cifti_values(fixture, prepared_lag0, tmp_path):
    _, cifti_manifest, cifti = prepared_lag0
    out, manifest, mat = prepare(fixture["root"], tmp_path / "mat0", lag_trs=0, source="mat")
    assert manifest.source["fmri_source"] == "mat" and manifest.source["files"][1] == "testing_fmri.mat"
    assert (
        manifest.source["voxel_selection"]["indices"] == cifti_manifest.source["voxel_selection"]["indices"]
    )
    assert manifest.normalisation["zero_std_vertices"] == cifti_manifest.normalisation["zero_std_vertices"]
    cifti_keys, mat_keys = by_key(cifti), by_key(mat)
    assert cifti_keys.keys() == mat_keys.keys()
    for key, sample in mat_keys.items():
        np.testing.assert_allclose(sample.voxels, cifti_keys[key].voxels, atol=1e-2)
    # with a lag, Wen's trimmed runs are shifted: window t pairs with volume t + lag, the last lag windows go
    out, shifted, mat2 = prepare(fixture["root"], tmp_path / "mat2", lag_trs=2, source="mat")
    assert shifted.split_name == "cc2017-test56x3" and shifted.timing["windows_per_movie"] == V - 2
    assert "shift" in shifted.timing["lag_applied"] and len(mat2["test"]) == 2 * (V - 2)
    for key, sample in by_key(mat2).items():
        later = f"{key[:-4]}{int(key[-4:]) + 2:04d}"
        np.testing.assert_allclose(sample.voxels, cifti_keys[later].voxels, atol=1e-2)
    assert StimulusStore(out / "stimuli.hdf5").stim_ids.max() == 102_000 + V - 3


def test_auto_source_falls_back_to_mat(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    shutil.rmtree(root / "video_fmri_dataset/subject1/fmri")
    manifest = prepare_cc2017(root, 1, tmp_path / "out", **(OPTIONS | {"lag_trs": 0}))
    assert manifest.source["fmri_source"] == "mat"
    with pytest.raises(MissingFileError, match=r"subject1/fmri(.|\n)*source='mat'"):
        prepare_cc2017(root, 1, tmp_path / "out2", source="cifti", **OPTIONS)


def test_short_movie_fails_and_writes_nothing(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    fx.write_movie(root / "video_fmri_dataset/stimuli/seg2.mp4", 2 * V - 3, 8, 32, 0)
    out = tmp_path / "out"
    with pytest.raises(
        DataFormatError,
        match=r"seg2\.mp4: mismatched frame/fMRI counts: the movie lasts 57\.00 s but 30 volumes of 2 s "
        r"need 60 s",
    ):
        prepare_cc2017(root, 1, out, **OPTIONS)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    with pytest.raises(
        DataFormatError, match=r"seg2\.mp4: mismatched frame/fMRI counts: .* 57\.00 s .* 60 s"
    ):
        readers.sample_frames(root / "video_fmri_dataset/stimuli/seg2.mp4", V, 3, None)


def test_missing_run_names_the_file(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    run_path(root, "seg3", 2).unlink()
    with pytest.raises(
        DataFormatError, match=r"seg3_2_Atlas\.dtseries\.nii: missing run: every seg movie needs 2"
    ):
        prepare_cc2017(root, 1, tmp_path / "out", **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_short_run_and_foreign_grayordinates(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    path = run_path(root, "test1", 3)
    img = nib.load(path, mmap=False)
    short = np.array(img.dataobj[: V + 3])
    series = cifti2.SeriesAxis(0.0, 2.0, len(short), unit="SECOND")
    nib.save(
        cifti2.Cifti2Image(short, header=cifti2.Cifti2Header.from_axes((series, img.header.get_axis(1)))),
        path,
    )
    with pytest.raises(
        DataFormatError, match=r"test1_3_Atlas\.dtseries\.nii: run has 33 volumes, too few for"
    ):
        prepare_cc2017(root, 1, tmp_path / "out", **OPTIONS)
    with pytest.raises(
        DataFormatError, match=r"seg1_1_Atlas\.dtseries\.nii: run has 35 volumes(.|\n)*lag_trs <= 4"
    ):
        readers.read_run(run_path(root, "seg1", 1), V, 5)  # the lagged window would run past the end
    values = fixture["runs"]["seg2", 1][:, : fx.N_CORTEX]
    models = cifti2.BrainModelAxis.from_surface(np.arange(fx.N_CORTEX), 64, "CortexLeft")
    series = cifti2.SeriesAxis(0.0, 2.0, len(values), unit="SECOND")
    nib.save(
        cifti2.Cifti2Image(values, header=cifti2.Cifti2Header.from_axes((series, models))),
        run_path(root, "seg2", 1),
    )
    with pytest.raises(DataFormatError, match=r"seg2_1_Atlas\.dtseries\.nii: grayordinate axis differs"):
        prepare_cc2017(root, 1, tmp_path / "out", **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_too_few_training_movies(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    for movie in ("seg2", "seg3", "seg4"):
        shutil.rmtree(root / f"video_fmri_dataset/subject1/fmri/{movie}")
    with pytest.raises(ConfigError, match=r"needs >= 2 training movies with >= 2 repeats, found 1 movies"):
        prepare_cc2017(root, 1, tmp_path / "out", **OPTIONS)


def test_skipped_movie_number(fixture, tmp_path):
    root = copy_root(fixture, tmp_path)
    shutil.rmtree(root / "video_fmri_dataset/subject1/fmri/seg2")
    with pytest.raises(DataFormatError, match=r"fmri/seg2: movie folder missing"):
        prepare_cc2017(root, 1, tmp_path / "out", **OPTIONS)


def test_unknown_subject_and_bad_options(fixture, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown subject 2: .*subjects found: subject1"):
        prepare_cc2017(fixture["root"], 2, tmp_path / "out", **OPTIONS)
    with pytest.raises(MissingFileError, match="video_fmri_dataset"):
        prepare_cc2017(tmp_path / "nowhere", 1, tmp_path / "out", **OPTIONS)
    with pytest.raises(ConfigError, match=r"keyframe must be in \[0, 6\)"):
        prepare_cc2017(fixture["root"], 1, tmp_path / "out", keyframe=6, **OPTIONS)
    with pytest.raises(ConfigError, match="source must be"):
        prepare_cc2017(fixture["root"], 1, tmp_path / "out", source="nifti", **OPTIONS)
    assert not (tmp_path / "out").exists()
