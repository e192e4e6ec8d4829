"""The embedded world's subjects: presets, design, anatomy, low-level features and the encoding model.

The encoding model is checked against its own ground truth: trial-averaged betas of the shared images must
track the noise-free signal where the noise-ceiling SNR is high and carry nothing where it is zero.
"""

import dataclasses

import numpy as np
import open_clip
import pytest
import torch

from brainbench.backbones.openclip import ImageBackbone
from brainbench.backbones.world_clip import create_world_clip
from brainbench.errors import ConfigError
from brainbench.world.anatomy import ROI_LABELS, build_anatomy, subject_grid
from brainbench.world.config import WORLD_PRESETS, get_world_config
from brainbench.world.design import make_design
from brainbench.world.encoding import simulate_subject
from brainbench.world.features import LOWLEVEL_CHANNELS, LOWLEVEL_GRID, compute_features, lowlevel_maps
from brainbench.world.shapes import DOMAINS
from brainbench.world.stimuli import generate_stimuli

# The NSD label tables (shared/reference/datasets.md §1.4); the world may use a prefix of each.
NSD_LABELS = {
    "nsdgeneral": {1: "nsdgeneral"},
    "prf-visualrois": {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "streams": {
        1: "early",
        2: "midventral",
        3: "midlateral",
        4: "midparietal",
        5: "ventral",
        6: "lateral",
        7: "parietal",
    },
    "floc-faces": {1: "OFA", 2: "FFA-1", 3: "FFA-2", 4: "mTL-faces", 5: "aTL-faces"},
    "floc-places": {1: "OPA", 2: "PPA", 3: "RSC"},
    "floc-bodies": {1: "EBA", 2: "FBA-1", 3: "FBA-2", 4: "mTL-bodies"},
    "floc-words": {1: "OWFA", 2: "VWFA-1", 3: "VWFA-2", 4: "mfs-words", 5: "mTL-words"},
}
SMALL = get_world_config("small")
TINY = get_world_config("tiny")


# --- config ---------------------------------------------------------------------------------------------
def test_presets():
    assert {"small", "tiny"} <= set(WORLD_PRESETS)
    assert get_world_config("small") is WORLD_PRESETS["small"]
    assert SMALL.version == "v1-small" and TINY.version == "v1-tiny"
    assert SMALL.n_stimuli == 500 + 8 * 2500
    assert TINY.n_images_per_subject < SMALL.n_images_per_subject
    with pytest.raises(dataclasses.FrozenInstanceError):
        SMALL.seed = 1  # type: ignore[misc]


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match=r"unknown world preset 'huge'.*small.*tiny"):
        get_world_config("huge")


# --- design ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [TINY, SMALL], ids=["tiny", "small"])
def test_design(config):
    design = make_design(config)
    n_own = config.n_images_per_subject - config.n_shared
    assert design.subjectim.shape == (config.n_subjects, config.n_images_per_subject)
    assert design.subjectim.dtype == np.int64 and design.masterordering.dtype == np.int64
    shared = design.subjectim[:, : config.n_shared]
    assert (shared == shared[0]).all()
    np.testing.assert_array_equal(design.shared_ids, np.arange(config.n_shared))
    own = [set(row[config.n_shared :].tolist()) for row in design.subjectim]
    assert all(len(o) == n_own for o in own)
    for a in range(config.n_subjects):
        assert not own[a] & set(design.shared_ids.tolist())
        for b in range(a + 1, config.n_subjects):
            assert not own[a] & own[b]
    assert design.subjectim.max() == config.n_stimuli - 1
    counts = np.bincount(design.masterordering, minlength=config.n_images_per_subject)
    assert (counts == config.repeats).all()
    assert len(design.masterordering) == config.n_images_per_subject * config.repeats
    assert design.n_sessions == -(-len(design.masterordering) // config.trials_per_session)
    for subject in (1, config.n_subjects):
        ids = design.trial_stimulus_ids(subject)
        np.testing.assert_array_equal(ids, design.subjectim[subject - 1][design.masterordering])
        assert set(ids.tolist()) == set(design.subjectim[subject - 1].tolist())
    # the repeats of an image are spread over the experiment, not back to back
    first, last = (
        np.array([np.flatnonzero(design.masterordering == c)[k] for c in range(50)]) for k in (0, -1)
    )
    assert np.median(last - first) > len(design.masterordering) / 4


def test_design_is_deterministic_and_seeded():
    a, b = make_design(TINY), make_design(TINY)
    np.testing.assert_array_equal(a.masterordering, b.masterordering)
    other = make_design(dataclasses.replace(TINY, seed=1))
    assert not np.array_equal(a.masterordering, other.masterordering)


# --- anatomy --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_anatomies():
    return {s: build_anatomy(SMALL, s) for s in range(1, SMALL.n_subjects + 1)}


def test_roi_volumes_and_labels(small_anatomies):
    for subject, anatomy in small_anatomies.items():
        assert anatomy.grid == subject_grid(SMALL, subject)
        assert anatomy.brain_mask.shape == anatomy.grid and anatomy.brain_mask.dtype == bool
        assert set(anatomy.rois) == set(ROI_LABELS)
        for atlas, volume in anatomy.rois.items():
            assert volume.shape == anatomy.grid and volume.dtype == np.int16
            np.testing.assert_array_equal(volume == -1, ~anatomy.brain_mask)
            labels = set(np.unique(volume[volume > 0]).tolist())
            assert labels <= set(ROI_LABELS[atlas]) - {0}
            assert ROI_LABELS[atlas][0] == "Unknown"
            assert {k: v for k, v in ROI_LABELS[atlas].items() if k} == {
                k: NSD_LABELS[atlas][k] for k in ROI_LABELS[atlas] if k
            }


def test_nsdgeneral_covers_every_visual_roi(small_anatomies):
    for anatomy in small_anatomies.values():
        visual = anatomy.rois["nsdgeneral"] == 1
        assert 0 < visual.sum() < anatomy.brain_mask.sum()
        for atlas, volume in anatomy.rois.items():
            assert not (volume > 0)[~visual].any(), atlas
        # streams partition nsdgeneral: every visual voxel has exactly one stream label
        np.testing.assert_array_equal(anatomy.rois["streams"] > 0, visual)
        assert (anatomy.area[visual] >= 0).all() and (anatomy.area[~visual] == -1).all()


def test_every_prf_label_and_stream_is_nonempty_on_small(small_anatomies):
    for subject, anatomy in small_anatomies.items():
        for atlas in ("prf-visualrois", "streams"):
            counts = {
                name: int((anatomy.rois[atlas] == k).sum()) for k, name in ROI_LABELS[atlas].items() if k
            }
            assert min(counts.values()) > 0, (subject, atlas, counts)
        for atlas in ("floc-faces", "floc-places", "floc-bodies", "floc-words"):
            assert (anatomy.rois[atlas] > 0).any(), (subject, atlas)
        assert ((anatomy.prf_centre >= 0) & (anatomy.prf_centre <= 1)).all()


def test_subjects_differ_and_anatomy_is_deterministic(small_anatomies):
    grids = {a.grid for a in small_anatomies.values()}
    assert len(grids) > 1
    one, two = small_anatomies[1], build_anatomy(SMALL, 1)
    np.testing.assert_array_equal(one.brain_mask, two.brain_mask)
    for atlas in ROI_LABELS:
        np.testing.assert_array_equal(one.rois[atlas], two.rois[atlas])
    np.testing.assert_array_equal(one.prf_centre, two.prf_centre)
    same_grid = [s for s, a in small_anatomies.items() if a.grid == one.grid and s != 1]
    for s in same_grid:  # even on an identical grid the labels differ
        assert not np.array_equal(small_anatomies[s].rois["prf-visualrois"], one.rois["prf-visualrois"])
    assert not np.array_equal(build_anatomy(dataclasses.replace(SMALL, seed=5), 1).prf_centre, one.prf_centre)


# --- low-level features ---------------------------------------------------------------------------------
def _channel(name: str) -> int:
    return LOWLEVEL_CHANNELS.index(name)


def test_lowlevel_shapes():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    maps = lowlevel_maps(images)
    assert maps.shape == (3, len(LOWLEVEL_CHANNELS), LOWLEVEL_GRID, LOWLEVEL_GRID) == (3, 8, 16, 16)
    assert maps.dtype == np.float32
    assert lowlevel_maps(images[:, :32, :32], grid=8).shape == (3, 8, 8, 8)


def test_grating_orientation_energy():
    # orient0 is the energy of gx, the horizontal derivative: strongest for a vertical grating (bars that
    # are vertical, luminance varying along x); orient90 is gy's.
    x = np.arange(64)
    profile = (127.5 + 127.5 * np.sin(2 * np.pi * x / 8)).astype(np.uint8)
    vertical = np.broadcast_to(profile[None, :, None], (64, 64, 3)).copy()
    horizontal = vertical.transpose(1, 0, 2).copy()
    maps = lowlevel_maps(np.stack([vertical, horizontal])).mean(axis=(2, 3))
    o0, o45, o90, o135 = (_channel(f"orient{a}") for a in (0, 45, 90, 135))
    assert maps[0, o0] > 5 * maps[0, o90]
    assert maps[1, o90] > 5 * maps[1, o0]
    assert maps[0, o45] == pytest.approx(maps[0, o135], rel=1e-4)  # symmetric around the gradient
    assert maps[0, _channel("contrast")] > 0.1


def test_colour_opponent_signs_and_luminance():
    red = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    blue = np.zeros_like(red)
    blue[..., 2] = 255
    grey = np.full_like(red, 128)
    maps = lowlevel_maps(np.concatenate([red, blue, grey]), grid=8)
    rg, by = _channel("red-green"), _channel("blue-yellow")
    np.testing.assert_allclose(maps[0, rg], 1.0)
    np.testing.assert_allclose(maps[0, by], -0.5)
    assert (maps[1, by] > 0).all() and np.allclose(maps[1, rg], 0)
    np.testing.assert_allclose(maps[2, [rg, by]], 0, atol=1e-6)
    np.testing.assert_allclose(maps[0, _channel("luminance")], 1 / 3, rtol=1e-5)
    np.testing.assert_allclose(maps[:, _channel("contrast")], 0, atol=1e-3)  # uniform images
    np.testing.assert_allclose(maps[:, _channel("orient0") : _channel("orient135") + 1], 0, atol=1e-6)


# --- encoding model -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_world():
    torch.manual_seed(0)
    backbone = ImageBackbone(
        create_world_clip(None), "world-clip:random", open_clip.get_tokenizer("world-clip")
    )
    design = make_design(TINY)
    ids = design.subjectim[0]
    stimuli = generate_stimuli(int(ids.max()) + 1, seed=TINY.seed)
    features = compute_features(stimuli, ids, backbone)
    recording, truth = simulate_subject(TINY, 1, design, features, progress=False)
    return {
        "design": design,
        "ids": ids,
        "stimuli": stimuli,
        "features": features,
        "recording": recording,
        "truth": truth,
    }


def test_feature_shapes(tiny_world):
    features, stimuli, ids = tiny_world["features"], tiny_world["stimuli"], tiny_world["ids"]
    n = len(ids)
    assert features.lowlevel.shape == (n, 8, 16, 16)
    assert features.mid_tokens.shape == (n, 8, 8, 192)  # 64 px / 8 px patches, width 192
    assert features.image_embedding.shape == features.caption_embedding.shape == (n, 128)
    np.testing.assert_allclose(np.linalg.norm(features.image_embedding, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(features.caption_embedding, axis=1), 1, atol=1e-5)
    assert features.domain_counts.shape == (n, len(DOMAINS))
    np.testing.assert_array_equal(features.domain_counts.sum(1), [len(stimuli.categories[i]) for i in ids])


def test_recording_shapes_match_the_types_docs(tiny_world):
    recording, truth, design = tiny_world["recording"], tiny_world["truth"], tiny_world["design"]
    grid = subject_grid(TINY, 1)
    assert recording.subject == 1
    assert recording.affine.shape == (4, 4)
    assert recording.brain_mask.shape == grid and recording.brain_mask.dtype == bool
    n_brain = int(recording.brain_mask.sum())
    assert recording.betas_psc.shape == (len(design.masterordering), n_brain)
    assert recording.betas_psc.dtype == np.float32 and np.isfinite(recording.betas_psc).all()
    assert set(recording.roi_volumes) == set(recording.roi_labels) == set(ROI_LABELS)
    for atlas, volume in recording.roi_volumes.items():
        assert volume.shape == grid and volume.dtype == np.int16
        assert volume.min() >= -1 and recording.roi_labels[atlas][0] == "Unknown"
    n_visual = int((recording.roi_volumes["nsdgeneral"] == 1).sum())
    assert truth.ncsnr.shape == truth.level.shape == (n_visual,)
    assert truth.signal.shape == (TINY.n_images_per_subject, n_visual)
    assert set(np.unique(truth.level).tolist()) == {0, 1, 2}


def test_ground_truth_ncsnr_range(tiny_world):
    ncsnr = tiny_world["truth"].ncsnr
    assert ncsnr.min() >= 0 and ncsnr.max() <= 1.6
    assert 0.03 < (ncsnr == 0).mean() < 0.25  # ~12 % unresponsive voxels
    assert (ncsnr > 1.0).sum() >= 10
    np.testing.assert_allclose(tiny_world["truth"].signal.std(0), 1, atol=1e-3)  # z-scored signal


def _columns_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0)


def test_averaged_betas_track_the_ground_truth_signal(tiny_world):
    recording, truth, design = tiny_world["recording"], tiny_world["truth"], tiny_world["design"]
    brain_ijk = np.argwhere(recording.brain_mask)
    visual = recording.roi_volumes["nsdgeneral"][tuple(brain_ijk.T)] == 1
    betas = recording.betas_psc[:, visual]
    n_shared = design.n_shared
    averaged = np.stack([betas[design.masterordering == col].mean(0) for col in range(n_shared)])
    r = _columns_corr(averaged, truth.signal[:n_shared])
    high, dead = truth.ncsnr > 1.0, truth.ncsnr == 0
    assert r[high].mean() > 0.75 and r[high].min() > 0.5
    assert abs(r[dead].mean()) < 0.1
    assert np.corrcoef(truth.ncsnr, r)[0, 1] > 0.5
    for level in (0, 1, 2):  # low-, mid- and high-level voxels all carry their signal
        assert r[high & (truth.level == level)].mean() > 0.7


def test_only_visual_voxels_are_reliable(tiny_world):
    # split-half reliability over the shared images: repeat 1 vs repeat 2 of each image
    recording, truth, design = tiny_world["recording"], tiny_world["truth"], tiny_world["design"]
    brain_ijk = np.argwhere(recording.brain_mask)
    visual = recording.roi_volumes["nsdgeneral"][tuple(brain_ijk.T)] == 1
    trials = [np.flatnonzero(design.masterordering == col) for col in range(design.n_shared)]
    first = recording.betas_psc[[t[0] for t in trials]]
    second = recording.betas_psc[[t[1] for t in trials]]
    reliability = _columns_corr(first, second)
    assert abs(reliability[~visual].mean()) < 0.05  # voxels outside nsdgeneral carry noise only
    assert reliability[visual][truth.ncsnr > 1.0].mean() > 0.4
    assert abs(reliability[visual][truth.ncsnr == 0].mean()) < 0.05


def test_simulation_is_deterministic_given_the_seed(tiny_world):
    design, features = tiny_world["design"], tiny_world["features"]
    again, truth = simulate_subject(TINY, 1, design, features, progress=False)
    np.testing.assert_array_equal(again.betas_psc, tiny_world["recording"].betas_psc)
    np.testing.assert_array_equal(truth.ncsnr, tiny_world["truth"].ncsnr)
    other, _ = simulate_subject(dataclasses.replace(TINY, seed=9), 1, design, features, progress=False)
    assert other.betas_psc.shape == again.betas_psc.shape
    assert not np.allclose(other.betas_psc, again.betas_psc)
