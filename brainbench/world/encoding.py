"""The known encoding model that turns stimulus features into a simulated subject's single-trial betas.

For voxel ``v`` and image ``i`` the noise-free signal ``s[i, v]`` depends on where the voxel sits
(:mod:`brainbench.world.anatomy`):

* early areas (V1, V2, V3, hV4): a compressive spatial summation pRF (Kay et al. 2013, J Neurophysiol),
  ``s = sign(d)|d|^n`` with ``d = sum_c t_vc sum_p G_v(p) F_c(p)`` over the low-level maps ``F`` of
  :func:`brainbench.world.features.lowlevel_maps`, Gaussian pRF ``G_v`` (size grows with eccentricity and
  along the hierarchy), exponent ``n`` from 1.0 (V1) to 0.55 (hV4);
* mid-level streams: ``s = sum_p G_v(p) relu(x_p . u_v)`` over world-CLIP block-2 patch tokens ``x_p``;
* high-level streams: ``s = softplus(2 (a_v . e_img + b_v . e_caption))`` plus, in floc regions, a
  selectivity term ``k_v * count(objects of the region's domain)``.

Tuning vectors are mixtures of a few smooth prototypes so that neighbouring voxels are alike. Each voxel's
signal is z-scored over the subject's images and scaled by its noise-ceiling SNR ``ncsnr_v`` (signal std over
noise std, Allen et al. 2022); a trial is ``y = ncsnr_v s + e``, with noise ``e`` (unit variance, 15 % shared
across voxels), plus per-session offsets and gains. Betas are ``1.5 * y`` percent signal change. Voxels
outside ``nsdgeneral`` carry noise only. All of it is seeded by ``(world seed, subject)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from brainbench.world.anatomy import FLOC_DOMAIN, ROI_LABELS, Anatomy, build_anatomy
from brainbench.world.config import WorldConfig
from brainbench.world.features import StimulusFeatures
from brainbench.world.shapes import DOMAINS
from brainbench.world.types import SubjectRecording, WorldDesign

PSC_SCALE = 1.5
SHARED_NOISE = 0.15
NCSNR_MEDIAN = {"low": 0.55, "mid": 0.45, "high": 0.4}


@dataclass(frozen=True)
class GroundTruth:
    """What the simulator knows and no real dataset offers, per ``nsdgeneral`` voxel (C order)."""

    ncsnr: np.ndarray
    level: np.ndarray  # 0 low, 1 mid, 2 high
    signal: np.ndarray  # (n_images_of_subject, n_voxels) z-scored noise-free signal, subjectim column order


def _gaussian_prfs(centres: np.ndarray, sizes: np.ndarray, grid: int) -> np.ndarray:
    """``(V, grid*grid)`` Gaussian weights, each summing to 1; centres/sizes in image units."""
    coords = (np.arange(grid) + 0.5) / grid
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    d2 = (xx.reshape(1, -1) - centres[:, :1]) ** 2 + (yy.reshape(1, -1) - centres[:, 1:]) ** 2
    weights = np.exp(-d2 / (2 * sizes[:, None] ** 2))
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_tuning(
    rng: np.random.Generator, coords: np.ndarray, dim: int, n_prototypes: int = 12, noise: float = 0.5
) -> np.ndarray:
    """Unit tuning vectors that vary smoothly over voxel coordinates ``(V, 3)``."""
    prototypes = rng.normal(size=(n_prototypes, dim))
    anchors = coords[rng.choice(len(coords), size=n_prototypes, replace=len(coords) < n_prototypes)]
    d2 = ((coords[:, None, :] - anchors[None]) ** 2).sum(-1)
    mix = np.exp(-d2 / (2 * 3.0**2))
    mix /= mix.sum(axis=1, keepdims=True)
    tuning = mix @ prototypes + noise * rng.normal(size=(len(coords), dim))
    return (tuning / np.linalg.norm(tuning, axis=1, keepdims=True)).astype(np.float32)


def _zscore_columns(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    return ((x - x.mean(axis=0)) / np.where(std > 0, std, 1)).astype(np.float32)


def _low_signal(
    rng: np.random.Generator, anatomy: Anatomy, ijk: np.ndarray, feats: StimulusFeatures
) -> np.ndarray:
    area = anatomy.area[tuple(ijk.T)]
    centres = anatomy.prf_centre[tuple(ijk.T)]
    ecc = np.linalg.norm(centres - 0.5, axis=1)
    sizes = (0.03 + 0.12 * ecc) * np.array([1.0, 1.5, 2.1, 2.8])[area] * rng.uniform(0.85, 1.15, len(ijk))
    prfs = _gaussian_prfs(centres, sizes, feats.lowlevel.shape[-1])
    maps = feats.lowlevel.reshape(len(feats.lowlevel), feats.lowlevel.shape[1], -1)
    maps = (maps - maps.mean(axis=(0, 2), keepdims=True)) / maps.std(axis=(0, 2), keepdims=True)
    channel_drive = np.einsum("ncp,vp->ncv", maps, prfs, optimize=True)  # (N, C, V)
    tuning = _smooth_tuning(rng, ijk.astype(np.float32), maps.shape[1], noise=0.8)
    tuning[:, 1] = np.abs(tuning[:, 1]) + 0.5  # every early voxel likes contrast
    drive = np.einsum("ncv,vc->nv", channel_drive, tuning)
    exponent = np.array([1.0, 0.85, 0.7, 0.55])[area]
    drive = _zscore_columns(drive)
    return np.sign(drive) * np.abs(drive) ** exponent


def _mid_signal(rng: np.random.Generator, ijk: np.ndarray, feats: StimulusFeatures) -> np.ndarray:
    n, side, _, width = feats.mid_tokens.shape
    centres = rng.uniform(0.15, 0.85, size=(len(ijk), 2))
    prfs = _gaussian_prfs(centres, rng.uniform(0.15, 0.35, len(ijk)), side)  # (V, side*side)
    projections = _smooth_tuning(rng, ijk.astype(np.float32), width, noise=0.7)  # (V, W)
    tokens = feats.mid_tokens.reshape(n, side * side, width)
    tokens = (tokens - tokens.mean(axis=(0, 1))) / tokens.std(axis=(0, 1))
    signal = np.empty((n, len(ijk)), dtype=np.float32)
    for start in range(0, n, 128):
        response = np.maximum(tokens[start : start + 128] @ projections.T, 0)  # (b, P, V)
        signal[start : start + 128] = np.einsum("bpv,vp->bv", response, prfs)
    return signal


def _high_signal(
    rng: np.random.Generator, anatomy: Anatomy, ijk: np.ndarray, feats: StimulusFeatures
) -> np.ndarray:
    dim = feats.image_embedding.shape[1]
    to_image = _smooth_tuning(rng, ijk.astype(np.float32), dim)
    to_caption = _smooth_tuning(rng, ijk.astype(np.float32), dim)
    drive = 2.0 * (feats.image_embedding @ to_image.T + 0.7 * feats.caption_embedding @ to_caption.T)
    signal = _zscore_columns(np.logaddexp(0, drive))
    domains = (feats.domain_counts - feats.domain_counts.mean(0)) / feats.domain_counts.std(0).clip(1e-6)
    for atlas, domain in FLOC_DOMAIN.items():
        selective = anatomy.rois[atlas][tuple(ijk.T)] > 0
        strength = rng.uniform(0.8, 1.6, size=selective.sum())
        signal[:, selective] += strength * domains[:, DOMAINS.index(domain), None]
    return signal


def simulate_subject(
    config: WorldConfig, subject: int, design: WorldDesign, features: StimulusFeatures, progress: bool = True
) -> tuple[SubjectRecording, GroundTruth]:
    """Single-trial betas of ``subject``; ``features`` rows follow ``design.subjectim[subject - 1]``."""
    rng = np.random.default_rng([config.seed, 4, subject])
    anatomy = build_anatomy(config, subject)
    brain_ijk = np.argwhere(anatomy.brain_mask)
    visual = anatomy.rois["nsdgeneral"][tuple(brain_ijk.T)] == 1
    area = anatomy.area[tuple(brain_ijk.T)]
    vis_ijk = brain_ijk[visual]
    vis_area = area[visual]
    levels = np.select([vis_area <= 3, vis_area == 4], [0, 1], 2)

    n_images = features.image_embedding.shape[0]
    signal = np.zeros((n_images, len(vis_ijk)), dtype=np.float32)
    steps = [
        (0, lambda m: _low_signal(rng, anatomy, vis_ijk[m], features)),
        (1, lambda m: _mid_signal(rng, vis_ijk[m], features)),
        (2, lambda m: _high_signal(rng, anatomy, vis_ijk[m], features)),
    ]
    for level, fn in tqdm(steps, desc=f"subj{subject:02d} encoding model", disable=not progress):
        mask = levels == level
        if mask.any():
            signal[:, mask] = fn(mask)
    signal = _zscore_columns(signal)

    medians = np.array([NCSNR_MEDIAN["low"], NCSNR_MEDIAN["mid"], NCSNR_MEDIAN["high"]])[levels]
    ncsnr = medians * config.snr_scale * np.exp(rng.normal(0, 0.6, len(vis_ijk)))
    ncsnr[rng.random(len(vis_ijk)) < 0.12] = 0.0  # unresponsive voxels
    ncsnr = np.clip(ncsnr, 0, 1.6).astype(np.float32)

    n_trials = len(design.masterordering)
    n_brain = len(brain_ijk)
    betas = np.empty((n_trials, n_brain), dtype=np.float32)
    session_of_trial = np.arange(n_trials) // design.trials_per_session
    loading = rng.normal(1.0, 0.3, n_brain).astype(np.float32)
    for session in tqdm(range(design.n_sessions), desc=f"subj{subject:02d} trials", disable=not progress):
        trials = np.flatnonzero(session_of_trial == session)
        noise = rng.standard_normal((len(trials), n_brain), dtype=np.float32) * np.sqrt(1 - SHARED_NOISE)
        noise += np.sqrt(SHARED_NOISE) * rng.standard_normal((len(trials), 1), dtype=np.float32) * loading
        response = noise
        response[:, visual] += ncsnr * signal[design.masterordering[trials]]
        offset = rng.normal(0, 0.4, n_brain).astype(np.float32)
        gain = np.float32(rng.uniform(0.9, 1.1))
        betas[trials] = PSC_SCALE * (gain * response + offset)

    recording = SubjectRecording(
        subject=subject,
        affine=np.diag([1.8, 1.8, 1.8, 1.0]),
        brain_mask=anatomy.brain_mask,
        roi_volumes=anatomy.rois,
        roi_labels=ROI_LABELS,
        betas_psc=betas,
    )
    return recording, GroundTruth(ncsnr=ncsnr, level=levels.astype(np.int8), signal=signal)
