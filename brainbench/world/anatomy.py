"""Simulated brains: a functional grid, a brain mask and ROI volumes labelled like NSD's.

The brain is an ellipsoid in a ``(X, Y, Z)`` grid (x: left-right, y: posterior->anterior, z: ventral->dorsal).
Visual cortex (``nsdgeneral``) is the posterior ``visual_fraction`` of the brain minus a deep core. Along y it
is divided into the ``streams`` atlas: early (V1-V3 and hV4, ``prf-visualrois``), then mid-level
(midventral / midlateral / midparietal) and high-level (ventral / lateral / parietal) streams. The floc
category regions (faces, places, bodies, words) are small blobs in the high-level streams. Label numbers and
names follow the NSD data manual's ROI tables (Allen et al. 2022). Each subject's grid, boundaries and blob
positions differ a little, seeded by ``(world seed, subject)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainbench.world.config import WorldConfig

ROI_LABELS: dict[str, dict[int, str]] = {
    "nsdgeneral": {0: "Unknown", 1: "nsdgeneral"},
    "prf-visualrois": {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "streams": {
        0: "Unknown",
        1: "early",
        2: "midventral",
        3: "midlateral",
        4: "midparietal",
        5: "ventral",
        6: "lateral",
        7: "parietal",
    },
    "floc-faces": {0: "Unknown", 1: "OFA", 2: "FFA-1", 3: "FFA-2"},
    "floc-places": {0: "Unknown", 1: "OPA", 2: "PPA", 3: "RSC"},
    "floc-bodies": {0: "Unknown", 1: "EBA", 2: "FBA-1"},
    "floc-words": {0: "Unknown", 1: "OWFA", 2: "VWFA-1"},
}
FLOC_DOMAIN = {"floc-faces": "face", "floc-places": "place", "floc-bodies": "body", "floc-words": "word"}
# Blob centres per floc label in (lateral offset from midline 0..1, position along y within the
# high-level band 0..1, height z 0..1); mirrored to both hemispheres except the word regions (left only).
_FLOC_CENTRES: dict[str, dict[int, tuple[float, float, float]]] = {
    "floc-faces": {1: (0.8, 0.05, 0.45), 2: (0.55, 0.35, 0.2), 3: (0.55, 0.6, 0.2)},
    "floc-places": {1: (0.7, 0.2, 0.8), 2: (0.25, 0.35, 0.2), 3: (0.15, 0.3, 0.75)},
    "floc-bodies": {1: (0.85, 0.2, 0.5), 2: (0.65, 0.5, 0.25)},
    "floc-words": {1: (0.7, 0.1, 0.3), 2: (0.6, 0.45, 0.25)},
}


@dataclass(frozen=True)
class Anatomy:
    """One subject's grid and labels.

    Attributes:
        grid: ``(X, Y, Z)``.
        brain_mask: bool volume.
        rois: atlas -> int16 volume (-1 outside the brain, 0 cortex outside the ROI, >=1 label).
        area: int8 volume, -1 non-visual, 0..3 = V1, V2, V3, hV4 (low level), 4 = mid-level, 5 = high-level.
        prf_centre: float32 ``(X, Y, Z, 2)`` pRF centre (x, y in image units 0..1) for early-area voxels.
    """

    grid: tuple[int, int, int]
    brain_mask: np.ndarray
    rois: dict[str, np.ndarray]
    area: np.ndarray
    prf_centre: np.ndarray


def subject_grid(config: WorldConfig, subject: int) -> tuple[int, int, int]:
    """Subject 1 has ``config.grid``; others differ by up to 2 voxels per axis, like NSD's grids."""
    if subject == 1:
        return config.grid
    rng = np.random.default_rng([config.seed, 2, subject])
    return tuple(int(g + rng.integers(-2, 3)) for g in config.grid)  # type: ignore[return-value]


def build_anatomy(config: WorldConfig, subject: int) -> Anatomy:
    """Grid, brain mask, ROI volumes and retinotopy of ``subject``."""
    rng = np.random.default_rng([config.seed, 3, subject])
    grid = subject_grid(config, subject)
    X, Y, Z = grid
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in grid), indexing="ij")
    radius = np.sqrt((x / 0.95) ** 2 + (y / 0.95) ** 2 + (z / 0.95) ** 2)
    brain = radius <= 1.0
    u = (y + 1) / 2  # 0 at the occipital pole, 1 at the frontal pole
    visual_fraction = config.visual_fraction * rng.uniform(0.95, 1.05)
    visual = brain & (u < visual_fraction) & (radius > 0.35)
    v = u / visual_fraction  # position along the visual hierarchy, 0..1
    lateral = np.abs(x)
    dorsal = z > 0

    rois = {name: np.where(brain, 0, -1).astype(np.int16) for name in ROI_LABELS}
    rois["nsdgeneral"][visual] = 1
    # Band edges are quantiles of the visual voxels' position, so every area gets a sensible share
    # (V1 12 %, V2 11 %, V3 10 %, hV4 band 7 %, mid-level to 68 %, high-level the rest).
    edges = np.quantile(v[visual], np.array([0.12, 0.23, 0.33, 0.40, 0.68]) * rng.uniform(0.97, 1.03))
    b1, b2, b3, b_early, b_mid = edges
    area = np.full(grid, -1, dtype=np.int8)
    for k, (lo, hi) in enumerate([(-1.0, b1), (b1, b2), (b2, b3)]):
        band = visual & (v >= lo) & (v < hi)
        rois["prf-visualrois"][band & ~dorsal] = 2 * k + 1
        rois["prf-visualrois"][band & dorsal] = 2 * k + 2
        area[band] = k
    hv4 = visual & (v >= b3) & (v < b_early) & ~dorsal
    rois["prf-visualrois"][hv4] = 7
    area[hv4] = 3
    early = visual & (v < b_early) & ((v < b3) | ~dorsal)
    rois["streams"][early] = 1
    for base, lo, hi, level in ((2, 0.0, b_mid, 4), (5, b_mid, 1.01, 5)):
        band = visual & ~early & (v >= lo) & (v < hi)
        is_lateral = lateral > 0.55
        rois["streams"][band & ~dorsal & ~is_lateral] = base
        rois["streams"][band & is_lateral] = base + 1
        rois["streams"][band & dorsal & ~is_lateral] = base + 2
        area[band] = level

    high = visual & (v >= b_mid)
    vh = (v - b_mid) / (1 - b_mid)
    for atlas, centres in _FLOC_CENTRES.items():
        for label, (lat, pos, height) in centres.items():
            hemis = (-1,) if atlas == "floc-words" else (-1, 1)
            for hemi in hemis:
                jitter = rng.normal(0, 0.05, size=3)
                d2 = (
                    ((x - hemi * (lat + jitter[0])) / 0.22) ** 2
                    + ((vh - pos - jitter[1]) / 0.2) ** 2
                    + (((z + 1) / 2 - height - jitter[2]) / 0.25) ** 2
                )
                rois[atlas][high & (d2 < 1.0)] = label

    # Retinotopy: left hemisphere -> right visual field, ventral -> upper field; eccentricity grows
    # with distance from the midline and from the horizontal meridian.
    half_x = np.clip(lateral / 0.95, 0, 1)
    half_z = np.clip(np.abs(z) / 0.95, 0, 1)
    centre_x = 0.5 + np.where(x < 0, 1, -1) * (0.03 + 0.45 * half_x)
    centre_y = 0.5 + np.where(dorsal, 1, -1) * (0.03 + 0.45 * half_z)
    prf_centre = np.stack([centre_x, centre_y], axis=-1).astype(np.float32)
    prf_centre += rng.normal(0, 0.03, size=prf_centre.shape).astype(np.float32)
    return Anatomy(grid=grid, brain_mask=brain, rois=rois, area=area, prf_centre=np.clip(prf_centre, 0, 1))
