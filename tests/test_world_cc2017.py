"""The embedded world's CC2017 video-fMRI experiment, written in the real CC2017 raw layout (tiny preset).

Pins the contract the CC2017 adapter reads (datasets.md §4.1, §5.2 traps 3, 8, 9): file layout and counts,
run lengths (+5 / +6), CIFTI axes, mp4 rate and length, captions.tsv, determinism, resumability, and a
planted hemodynamic lag that the written test runs carry.
"""

import filecmp
import json

import av
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel import cifti2

from brainbench.errors import ConfigError, DataFormatError
from brainbench.world import cc2017_writer as writer
from brainbench.world.cc2017 import (
    CC2017_PRESETS,
    build_template,
    design_movie,
    generate_world_cc2017,
    get_cc2017_config,
    hrf_kernel,
    movie_design,
)
from brainbench.world.stimuli import Scene, SceneObject, render_scene
from brainbench.world.video import _sprite, render_movie

TINY = get_cc2017_config("tiny")
VPR = TINY.volumes_per_run
EXPECTED_MOVIES = [f"seg{n}" for n in range(1, TINY.n_train + 1)] + [
    f"test{n}" for n in range(1, TINY.n_test + 1)
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world_cc2017(tmp_path_factory.mktemp("cc") / "world", "tiny", progress=False)


def _runs(root, subject=1):
    base = root / writer.DATASET_DIR / f"subject{subject}" / "fmri"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def _load(root, movie, repeat, subject=1):
    return nib.load(writer.Cc2017Layout(root).dtseries(subject, movie, repeat))


def _raw_files(root):
    """Every file of the raw tree and the truth, markers excepted (they hold a timestamp)."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != writer.COMPLETE_MARKER
    )


# --- design ---------------------------------------------------------------------------------------------
def test_presets_and_errors(tmp_path):
    assert {"small", "tiny"} <= set(CC2017_PRESETS)
    small = get_cc2017_config("small")
    assert small.version == "v2-small" and TINY.version == "v2-tiny"
    assert small.volumes_per_run == 240 and small.n_subjects == 3
    assert (small.train_repeats, small.test_repeats) == (2, 10)
    with pytest.raises(ConfigError, match=r"unknown world-cc2017 preset 'huge'.*small.*tiny"):
        get_cc2017_config("huge")
    with pytest.raises(ConfigError, match=r"subjects 1\.\.3; got \[4\]"):
        generate_world_cc2017(tmp_path / "w", "tiny", subjects=[4], progress=False)


def test_run_lengths_and_stim_ids():
    design = {run.name: run for run in movie_design(get_cc2017_config("small"))}
    assert design["seg1"].n_volumes == 245 and design["seg1"].start == 1
    assert design["test1"].n_volumes == 245 and design["test1"].start == 1
    assert design["test2"].n_volumes == 246 and design["test2"].start == 2
    assert design["seg3"].stim_ids[42] == 3042
    assert design["test2"].stim_ids[42] == 102_042
    assert [run.n_repeats for run in design.values()] == [2] * 8 + [10] * 2


def test_hrf_peaks_two_trs_after_the_window():
    kernel = hrf_kernel(TINY.hrf_peak_s)
    assert int(np.argmax(kernel)) == 2
    assert abs(kernel[0]) < 0.05 and kernel[3] < 0.95 and kernel[1] < 0.5
    assert kernel[6:].min() < 0  # undershoot


# --- files ----------------------------------------------------------------------------------------------
def test_layout_and_counts(world):
    expected = sorted(
        f"{m}/cifti/{m}_{r}_Atlas.dtseries.nii"
        for m in EXPECTED_MOVIES
        for r in range(1, (TINY.train_repeats if m.startswith("seg") else TINY.test_repeats) + 1)
    )
    assert _runs(world) == expected
    assert len(expected) == TINY.n_train * 2 + TINY.n_test * 10
    stimuli = sorted(p.name for p in (world / writer.DATASET_DIR / "stimuli").iterdir())
    assert stimuli == sorted([".complete", "captions.tsv", *(f"{m}.mp4" for m in EXPECTED_MOVIES)])
    record = json.loads((world / "brainbench_world.json").read_text())
    assert record["dataset"] == "world-cc2017" and record["version"] == "v2-tiny"
    assert record["timing"] == {"tr_s": 2.0, "volumes_per_run": VPR, "lag_trs": 2}
    assert writer.is_complete(world, 1) and not writer.is_complete(world, 2)
    assert not list(world.rglob(".partial-*"))


def test_runs_have_the_real_lengths(world):
    for movie in EXPECTED_MOVIES:
        extra = 6 if movie.startswith("test") and movie != "test1" else 5
        image = _load(world, movie, 1)
        assert image.shape[0] == VPR + extra, movie
        assert image.header.get_axis(0).size == VPR + extra


def test_cifti_axes(world):
    template = build_template(TINY)
    image = _load(world, "test2", 3)
    series, models = (image.header.get_axis(i) for i in range(2))
    assert isinstance(series, cifti2.SeriesAxis) and isinstance(models, cifti2.BrainModelAxis)
    assert series.step == 2.0 and series.start == 0.0 and series.unit == "SECOND"
    assert image.nifti_header.get_intent()[0] == "ConnDenseSeries"
    assert image.get_data_dtype() == np.float32
    structures = [(name, sl) for name, sl, _ in models.iter_structures()]
    assert [name for name, _ in structures[:2]] == [
        "CIFTI_STRUCTURE_CORTEX_LEFT",
        "CIFTI_STRUCTURE_CORTEX_RIGHT",
    ]
    assert all("CORTEX" not in name for name, _ in structures[2:]) and len(structures) > 2
    n_cortex = int(models.surface_mask.sum())
    assert n_cortex == len(template.cortex_ijk) and models.surface_mask[:n_cortex].all()
    assert int(models.volume_mask.sum()) == TINY.n_subcortical
    assert models.nvertices == {"CIFTI_STRUCTURE_CORTEX_LEFT": 32492, "CIFTI_STRUCTURE_CORTEX_RIGHT": 32492}
    values = np.asarray(image.dataobj)
    assert values.shape == (VPR + 6, len(models)) and np.isfinite(values).all()
    assert _load(world, "seg1", 2).header.get_axis(1) == models  # every run, the same grayordinates


def test_mp4s_decode_at_8_fps_and_last_the_movie(world):
    for movie in EXPECTED_MOVIES:
        with av.open(str(writer.Cc2017Layout(world).movie(movie))) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == 8
            frames = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)]
            duration = float(stream.duration * stream.time_base)
        assert len(frames) == 2 * VPR * 8 and duration >= 2 * VPR
        assert frames[-1][0] == pytest.approx(2 * VPR - 1 / 8)
        assert frames[0][1].shape == (TINY.frame_size, TINY.frame_size, 3)
    rendered = design_movie(TINY, movie_design(TINY)[-1]).frames
    decoded = np.stack([f for _, f in frames])
    assert np.abs(decoded.astype(float) - rendered).mean() < 6  # lossy H.264, the same pictures


def test_captions_tsv(world):
    table = pd.read_csv(writer.Cc2017Layout(world).captions, sep="\t")
    assert list(table.columns) == ["movie", "start_s", "end_s", "caption"]
    assert sorted(table["movie"].unique()) == sorted(EXPECTED_MOVIES)
    for movie, rows in table.groupby("movie"):
        shots = rows.drop_duplicates(["start_s", "end_s"]).sort_values("start_s")
        assert shots["start_s"].iloc[0] == 0 and shots["end_s"].iloc[-1] == 2 * VPR, movie
        assert (shots["start_s"].to_numpy()[1:] == shots["end_s"].to_numpy()[:-1]).all()
    assert table["caption"].str.len().min() > 5
    assert table["caption"].str.contains(" moves ").any()


# --- determinism and resuming ----------------------------------------------------------------------------
def test_deterministic_and_resumable(world, tmp_path):
    again = generate_world_cc2017(tmp_path / "again", "tiny", progress=False)
    files = _raw_files(world)
    assert files == _raw_files(again)
    _, mismatch, errors = filecmp.cmpfiles(world, again, files, shallow=False)
    assert mismatch == [] and errors == []

    layout = writer.Cc2017Layout(again)
    kept = layout.dtseries(1, "seg1", 1)
    kept_mtime = kept.stat().st_mtime_ns
    for lost in (layout.dtseries(1, "test2", 7), layout.movie("seg2"), layout.stimuli_marker):
        lost.unlink()
    layout.subject_marker(1).unlink()
    assert not writer.is_complete(again) and not writer.is_complete(again, 1)
    generate_world_cc2017(again, "tiny", progress=False)
    assert writer.is_complete(again, 1)
    assert kept.stat().st_mtime_ns == kept_mtime  # finished files are kept, not rewritten
    _, mismatch, errors = filecmp.cmpfiles(world, again, files, shallow=False)
    assert mismatch == [] and errors == []

    generate_world_cc2017(again, "tiny", subjects=[2], progress=False)  # a subject added later
    assert writer.is_complete(again, 2) and _runs(again, 2) == _runs(again, 1)
    assert _load(again, "seg1", 1, subject=2).header.get_axis(1) == _load(again, "seg1", 1).header.get_axis(1)
    truths = [np.load(again / "brainbench_truth" / f"subj0{s}.npz", allow_pickle=False) for s in (1, 2)]
    assert truths[0]["signal"].shape[0] == truths[1]["signal"].shape[0]  # same movies, own tuning and SNR
    assert not np.array_equal(truths[0]["snr"], truths[1]["snr"])


def test_another_world_or_preset_in_the_same_root_is_refused(world, tmp_path):
    with pytest.raises(DataFormatError, match="world-cc2017 v2-tiny, not world-cc2017 v2-small"):
        generate_world_cc2017(world, "small", progress=False)
    other = tmp_path / "nsd-world"
    other.mkdir()
    (other / "brainbench_world.json").write_text(json.dumps({"dataset": "world-nsd", "version": "v1-tiny"}))
    with pytest.raises(DataFormatError, match="holds world-nsd v1-tiny"):
        generate_world_cc2017(other, "tiny", progress=False)
    assert not (other / writer.DATASET_DIR).exists()


# --- the signal -----------------------------------------------------------------------------------------
def _test_average(world, movie):
    runs = [np.asarray(_load(world, movie, r).dataobj, dtype=np.float64) for r in range(1, 11)]
    return np.mean(runs, axis=0)


def _columnwise_r(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0))


def test_the_planted_lag_is_in_the_test_runs(world):
    truth = np.load(world / "brainbench_truth" / "subj01.npz", allow_pickle=False)
    assert int(truth["lag_trs"]) == 2
    responsive = truth["snr"] > 0
    by_lag = {0: [], 2: []}
    for run in movie_design(TINY)[TINY.n_train :]:
        average = _test_average(world, run.name)[:, truth["visual"]]
        drive = truth["signal"][np.isin(truth["stim_ids"], run.stim_ids)]
        for lag in by_lag:
            window = average[run.start + lag : run.start + lag + VPR]
            by_lag[lag].append(_columnwise_r(window, drive)[responsive])
    r_lag2, r_lag0 = (np.median(np.concatenate(by_lag[k])) for k in (2, 0))
    assert r_lag2 > 0.5
    assert r_lag2 > r_lag0 + 0.2


def test_visual_vertices_repeat_and_the_rest_is_noise(world):
    truth = np.load(world / "brainbench_truth" / "subj01.npz", allow_pickle=False)
    halves = [[], []]
    for run in movie_design(TINY)[TINY.n_train :]:
        runs = np.stack([np.asarray(_load(world, run.name, r).dataobj, np.float64) for r in range(1, 11)])
        runs -= runs.mean(axis=1, keepdims=True)  # each run's offset
        halves[0].append(runs[:5].mean(0))
        halves[1].append(runs[5:].mean(0))
    split_half = _columnwise_r(np.concatenate(halves[0]), np.concatenate(halves[1]))
    visual = np.zeros(split_half.shape, dtype=bool)
    visual[truth["visual"][truth["snr"] > 0.5]] = True
    others = np.ones(split_half.shape, dtype=bool)
    others[truth["visual"]] = False
    assert np.median(split_half[visual]) > 0.45
    assert abs(np.median(split_half[others])) < 0.1


# --- movies ---------------------------------------------------------------------------------------------
def test_movies_are_pure_functions_of_their_key():
    a = render_movie("seg1", seed=0, key=(101, 1), duration_s=6.0, frame_size=32)
    b = render_movie("seg1", seed=0, key=(101, 1), duration_s=6.0, frame_size=32)
    c = render_movie("seg2", seed=0, key=(101, 2), duration_s=6.0, frame_size=32)
    assert a.frames.shape == (48, 32, 32, 3) and a.frames.dtype == np.uint8
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert np.abs(a.frames[-1].astype(int) - a.frames[0]).mean() > 0.5  # things move
    shot = a.shots[0]
    first = shot.objects[0]
    assert first.obj.colour in shot.captions[0] or first.obj.category in shot.captions[0]
    assert all(cap for cap in shot.captions) and 1 <= len(shot.captions) <= 3


def test_sprite_matte_reproduces_the_still_render():
    obj = SceneObject("star", "red", "striped", "large", "center")
    still = render_scene(Scene("grey", (obj,)), 32, np.random.default_rng([7, 1])).astype(np.float32)
    background = render_scene(Scene("grey", ()), 32, np.random.default_rng([7, 1])).astype(np.float32)
    sprite = _sprite(obj, 32, [7, 1]).permute(1, 2, 0).numpy()
    composite = background * (1 - sprite[..., 3:]) + sprite[..., :3]
    assert np.abs(composite - still).max() <= 2.0
    alpha = sprite[..., 3]
    assert 0.05 < alpha.mean() < 0.6 and alpha.min() == 0.0 and alpha.max() == pytest.approx(1.0, abs=0.01)


# --- read back by the real adapter --------------------------------------------------------------------------


def test_the_cc2017_adapter_reads_the_world(world, tmp_path):
    """The world's raw CC2017 layout through ``prepare_cc2017``, options only from the world's timing record.

    The tiny world has 3 training movies, too few for a Bonferroni t-test at p < 0.05 (2 degrees of freedom),
    so this test loosens ``p_value``; the small preset (8 movies) passes with the adapter's defaults.
    """
    from brainbench.data.registry import _adapter_options
    from brainbench.data.shards import iter_split
    from brainbench.data.sources.cc2017 import prepare_cc2017

    record = json.loads((world / "brainbench_world.json").read_text())
    options = _adapter_options(record)
    assert options == {"volumes_per_run": 12, "lag_trs": 2}
    manifest = prepare_cc2017(
        world, 1, tmp_path / "prepared", p_value=1.0, val_fraction=0.34, progress=False, **options
    )
    assert manifest.timing["lag_trs"] == 2 and manifest.timing["volumes_per_run"] == 12
    assert manifest.split_name == "cc2017-test24x10"
    counts = {split: info["n_samples"] for split, info in manifest.splits.items()}
    assert counts == {"train": 2 * 12 * 2, "val": 1 * 12 * 2, "test": 2 * 12}  # movies x windows x repeats
    for sample in iter_split(tmp_path / "prepared", manifest, "test"):
        assert sample.repeats.shape == (10, manifest.n_voxels)
        np.testing.assert_allclose(
            sample.voxels.astype(np.float32), sample.repeats.astype(np.float32).mean(axis=0), atol=2e-3
        )
