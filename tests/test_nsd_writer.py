import shutil

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from brainbench.data.shards import iter_split, verify_checksums
from brainbench.data.sources.nsd import prepare_nsd
from brainbench.data.sources.nsd_layout import NsdLayout
from brainbench.data.stimulus_store import StimulusStore
from brainbench.world.nsd_writer import is_complete, write_nsd_design, write_nsd_subject
from brainbench.world.types import StimulusSet, SubjectRecording, WorldDesign

N_STIM, N_SHARED, PER_SUBJECT, TRIALS_PER_SESSION = 30, 4, 12, 12
GRID = (5, 6, 4)
CATEGORY_NAMES = ["circle", "square", "triangle", "star"]
SHARED_PSC_OFFSET = 3.0
OPTIONS = {"val_fraction": 0.25, "samples_per_shard": 8, "progress": False, "dataset": "world-nsd"}


def make_world(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N_STIM, 10, 12, 3), dtype=np.uint8)
    captions = [[f"shape {i} caption {k}" for k in range(1 + i % 3)] for i in range(N_STIM)]
    categories = [[CATEGORY_NAMES[i % 4], CATEGORY_NAMES[(i + 1) % 4]] for i in range(N_STIM)]
    categories[3] = ["star", "star", "circle"]  # two objects of one category
    stimuli = StimulusSet(images, captions, categories, CATEGORY_NAMES)
    shared = np.arange(N_STIM - N_SHARED, N_STIM)
    subjectim = np.stack(
        [
            np.concatenate([shared, rng.choice(N_STIM - N_SHARED, PER_SUBJECT - N_SHARED, replace=False)])
            for _ in range(8)
        ]
    )
    # shared columns 3x, the 8 others 2x, plus 2 extra showings: 30 trials, sessions of 12, 12, 6
    cols = np.concatenate(
        [np.repeat(np.arange(N_SHARED), 3), np.repeat(np.arange(N_SHARED, PER_SUBJECT), 2), [4, 5]]
    )
    masterordering = rng.permutation(cols)
    design = WorldDesign(subjectim, masterordering, N_SHARED, TRIALS_PER_SESSION)
    recordings = {}
    for subject in (1, 2):
        brain = rng.random(GRID) < 0.7
        nsdgeneral = np.where(brain, (rng.random(GRID) < 0.6).astype(np.int16), -1).astype(np.int16)
        prf = np.where(nsdgeneral == 1, rng.integers(0, 4, GRID), np.where(brain, 0, -1)).astype(np.int16)
        is_shared = np.isin(design.trial_stimulus_ids(subject), shared)
        psc = (
            rng.normal(0, 2, size=(len(masterordering), int(brain.sum())))
            + SHARED_PSC_OFFSET * is_shared[:, None]
        )
        recordings[subject] = SubjectRecording(
            subject=subject,
            affine=np.diag([1.8, 1.8, 1.8, 1.0]),
            brain_mask=brain,
            roi_volumes={"nsdgeneral": nsdgeneral, "prf-visualrois": prf},
            roi_labels={"nsdgeneral": {1: "nsdgeneral"}, "prf-visualrois": {1: "V1v", 2: "V1d", 3: "V2v"}},
            betas_psc=psc.astype(np.float32),
        )
    return stimuli, design, recordings


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "root"
    stimuli, design, recordings = make_world()
    assert not is_complete(root)
    write_nsd_design(root, stimuli, design)
    assert is_complete(root) and not is_complete(root, subject=1)
    for recording in recordings.values():
        write_nsd_subject(root, design, recording, write_hdf5=True)
    assert is_complete(root, subject=1) and is_complete(root, subject=2)
    return root, stimuli, design, recordings


def test_raw_files_follow_nsd_conventions(world):
    root, stimuli, design, recordings = world
    layout = NsdLayout(root)
    mat = scipy.io.loadmat(layout.expdesign)
    assert mat["subjectim"].shape == (8, PER_SUBJECT) and mat["subjectim"].dtype == np.float64
    np.testing.assert_array_equal(mat["subjectim"], design.subjectim + 1)
    np.testing.assert_array_equal(mat["masterordering"], design.masterordering[None, :] + 1)
    np.testing.assert_array_equal(mat["sharedix"], design.shared_ids[None, :] + 1)
    info = pd.read_csv(layout.stim_info, index_col=0)
    assert list(info.columns[:8]) == [
        "cocoId",
        "cocoSplit",
        "cropBox",
        "loss",
        "nsdId",
        "flagged",
        "BOLD5000",
        "shared1000",
    ]
    np.testing.assert_array_equal(info["nsdId"], np.arange(N_STIM))
    assert info["shared1000"].sum() == N_SHARED
    for subject in range(1, 9):
        ids = design.trial_stimulus_ids(subject)
        for k in range(3):
            col = info[f"subject{subject}_rep{k}"].to_numpy()
            for stim in range(N_STIM):
                shown = np.flatnonzero(ids == stim)
                assert col[stim] == (shown[k] + 1 if len(shown) > k else 0)
    responses = pd.read_csv(layout.responses(1), sep="\t")
    np.testing.assert_array_equal(responses["73KID"], design.trial_stimulus_ids(1) + 1)
    np.testing.assert_array_equal(responses["10KID"], design.masterordering + 1)
    np.testing.assert_array_equal(responses["SESSION"], np.arange(30) // 12 + 1)
    assert responses["RUN"].max() == 12 and responses.groupby(["SESSION", "RUN"])["TRIAL"].min().eq(1).all()
    assert responses["ISOLD"].sum() == 30 - len(np.unique(design.trial_stimulus_ids(1)))
    img = nib.load(layout.betas_nifti(1, 3))
    assert img.shape == (*GRID, 6) and img.get_data_dtype() == np.int16
    assert np.isnan(img.header["scl_slope"]) or img.header["scl_slope"] in (0, 1)
    vol = np.asarray(img.dataobj)
    assert vol.dtype == np.int16 and (vol[~recordings[1].brain_mask] == 0).all()
    with h5py.File(layout.betas_hdf5(1, 3)) as f:
        assert f["betas"].shape == (6, *GRID[::-1]) and f["betas"].chunks == (6, 1, 1, 1)
        np.testing.assert_array_equal(f["betas"][()], vol.transpose(3, 2, 1, 0))
    roi = np.asarray(nib.load(layout.roi(1, "prf-visualrois")).dataobj)
    assert roi.dtype == np.int16 and roi.min() == -1
    assert layout.ctab("prf-visualrois").read_text().splitlines()[:2] == ["0 Unknown", "1 V1v"]
    assert layout.ctab("prf-visualrois", 1).is_file()
    with h5py.File(layout.stimuli_hdf5) as f:
        np.testing.assert_array_equal(f["imgBrick"][()], stimuli.images)


def expected_zscores(design, recording, sessions):
    """Independent reference: quantise, divide, z-score with non-shared trials of each session."""
    nsdgeneral = recording.roi_volumes["nsdgeneral"]
    in_vector = np.flatnonzero(nsdgeneral[recording.brain_mask] == 1)
    q = np.clip(np.rint(recording.betas_psc.astype(np.float64) * 300), -32768, 32767)[:, in_vector]
    psc = q / 300
    shared = np.isin(design.trial_stimulus_ids(recording.subject), design.shared_ids)
    session = np.arange(len(q)) // TRIALS_PER_SESSION + 1
    z = np.zeros_like(psc)
    stats = {}
    for s in range(1, sessions + 1):
        rows = session == s
        train = rows & ~shared
        mean, std = psc[train].mean(0), psc[train].std(0)
        std[std == 0] = 1
        z[rows] = (psc[rows] - mean) / std
        stats[s] = (mean, std)
    return z, q, stats


def test_prepare_reads_back_the_world(world, tmp_path):
    root, stimuli, design, recordings = world
    out = tmp_path / "world.subj01"
    manifest = prepare_nsd(root, 1, out, **OPTIONS)
    verify_checksums(out, manifest)
    ids = design.trial_stimulus_ids(1)
    shared = np.isin(ids, design.shared_ids)
    assert manifest.split_name == "shared4@3sess" and manifest.dataset == "world-nsd"
    samples = {split: list(iter_split(out, manifest, split)) for split in ("train", "val", "test")}
    assert len(samples["train"]) + len(samples["val"]) == int((~shared).sum()) == 18
    assert len(samples["test"]) == N_SHARED and all(s.n_repeats == 3 for s in samples["test"])
    assert len({s.stim_id for s in samples["val"]}) == 2
    nsdgeneral = recordings[1].roi_volumes["nsdgeneral"]
    assert manifest.n_voxels == int((nsdgeneral == 1).sum())
    np.testing.assert_array_equal(manifest.voxel_ijk, np.argwhere(nsdgeneral == 1))

    z, q, stats = expected_zscores(design, recordings[1], sessions=3)
    for sample in samples["train"] + samples["val"]:
        assert sample.stim_id == ids[sample.trial]
        np.testing.assert_allclose(sample.voxels, z[sample.trial], atol=1e-2, rtol=2e-3)
        mean, std = stats[sample.session]
        undone = (sample.voxels.astype(np.float64) * std + mean) * 300  # back to the stored int16
        np.testing.assert_allclose(
            undone, q[sample.trial], atol=0.6 + 2e-3 * np.abs(z[sample.trial]).max() * 300
        )
    for sample in samples["test"]:
        shown = np.flatnonzero(ids == sample.stim_id)
        np.testing.assert_allclose(sample.repeats, z[shown], atol=1e-2, rtol=2e-3)
        np.testing.assert_allclose(sample.voxels, z[shown].mean(0), atol=1e-2, rtol=2e-3)

    store = StimulusStore(out / manifest.stimulus_store["path"])
    np.testing.assert_array_equal(store.stim_ids, np.unique(ids))
    np.testing.assert_array_equal(store.images(ids[:5]), stimuli.images[ids[:5]])
    for stim in store.stim_ids.tolist():
        assert store.captions(stim) == stimuli.captions[stim]
        assert store.categories(stim) == list(dict.fromkeys(stimuli.categories[stim]))
    assert manifest.rois.keys() <= {
        "nsdgeneral/nsdgeneral",
        "prf-visualrois/V1v",
        "prf-visualrois/V1d",
        "prf-visualrois/V2v",
    }
    prf = recordings[1].roi_volumes["prf-visualrois"]
    np.testing.assert_array_equal(
        manifest.rois["prf-visualrois/V1d"], np.flatnonzero(prf[nsdgeneral == 1] == 2)
    )


def test_hdf5_twin_reads_identically(world, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(world[0], root)
    for path in NsdLayout(root).betas_dir(2).glob("*.nii.gz"):
        path.unlink()
    from_h5 = prepare_nsd(root, 2, tmp_path / "h5", **OPTIONS)
    from_nii = prepare_nsd(world[0], 2, tmp_path / "nii", **OPTIONS)
    assert from_h5.source["betas_format"] == ["hdf5"]
    for split in ("train", "val", "test"):
        a = list(iter_split(tmp_path / "h5", from_h5, split))
        b = list(iter_split(tmp_path / "nii", from_nii, split))
        assert [s.key for s in a] == [s.key for s in b]
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.voxels, y.voxels)


def test_interrupted_subject_write_is_detected(world, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(world[0], root)
    NsdLayout(root).subject_marker(2).unlink()
    assert is_complete(root, subject=1) and not is_complete(root, subject=2)
    NsdLayout(root).design_marker.unlink()
    assert not is_complete(root) and not is_complete(root, subject=1)
    assert not list(root.rglob(".*partial*"))


def test_writer_rejects_mismatched_recording(world, tmp_path):
    _, _, design, recordings = world
    rec = recordings[1]
    bad = SubjectRecording(
        rec.subject, rec.affine, rec.brain_mask, rec.roi_volumes, rec.roi_labels, rec.betas_psc[:5]
    )
    with pytest.raises(ValueError, match="betas_psc"):
        write_nsd_subject(tmp_path, design, bad)
