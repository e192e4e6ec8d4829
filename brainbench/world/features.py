"""Stimulus features that drive the simulated voxels.

Low level (early visual cortex): eight image-computable maps on a 16x16 grid, per Kay et al. 2008/2013-style
pRF models: luminance, local contrast, oriented energy at 0/45/90/135 degrees, and two colour-opponent
channels (red-green, blue-yellow). Mid level: the world CLIP's intermediate-layer patch tokens. High level:
the world CLIP's final image embedding, the mean embedding of the image's captions, and how many objects
of each category domain (faces, places, bodies, words) the scene holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brainbench.backbones.openclip import ImageBackbone
from brainbench.world.shapes import DOMAINS, category_domain
from brainbench.world.types import StimulusSet

LOWLEVEL_GRID = 16
LOWLEVEL_CHANNELS = (
    "luminance",
    "contrast",
    "orient0",
    "orient45",
    "orient90",
    "orient135",
    "red-green",
    "blue-yellow",
)
MID_LAYER = 2


@torch.no_grad()
def lowlevel_maps(images: np.ndarray, grid: int = LOWLEVEL_GRID) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 -> ``(N, 8, grid, grid)`` float32 maps, channels ``LOWLEVEL_CHANNELS``."""
    rgb = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    lum = rgb.mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3) / 8
    gx = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kx)
    gy = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kx.transpose(2, 3))
    orient = [(gx * np.cos(a) + gy * np.sin(a)) ** 2 for a in np.deg2rad([0, 45, 90, 135])]
    pool = rgb.shape[-1] // grid
    lum_mean = F.avg_pool2d(lum, pool)
    contrast = (F.avg_pool2d(lum**2, pool) - lum_mean**2).clamp_min(0).sqrt()
    red_green = rgb[:, :1] - rgb[:, 1:2]
    blue_yellow = rgb[:, 2:3] - 0.5 * (rgb[:, :1] + rgb[:, 1:2])
    maps = [
        lum_mean,
        contrast,
        *(F.avg_pool2d(o, pool).sqrt() for o in orient),
        F.avg_pool2d(red_green, pool),
        F.avg_pool2d(blue_yellow, pool),
    ]
    return torch.cat(maps, dim=1).numpy()


@dataclass(frozen=True)
class StimulusFeatures:
    """Features of a list of stimuli, rows aligned with the stimulus ids they were computed for.

    Attributes:
        lowlevel: ``(N, 8, 16, 16)``.
        mid_tokens: ``(N, 8, 8, W)`` patch tokens of world-CLIP block ``MID_LAYER`` (CLS dropped), in a grid.
        image_embedding: ``(N, D)`` L2-normalised.
        caption_embedding: ``(N, D)`` L2-normalised mean of the captions' embeddings.
        domain_counts: ``(N, len(DOMAINS))`` objects per category domain.
    """

    lowlevel: np.ndarray
    mid_tokens: np.ndarray
    image_embedding: np.ndarray
    caption_embedding: np.ndarray
    domain_counts: np.ndarray


@torch.no_grad()
def compute_features(
    stimuli: StimulusSet, stim_ids: np.ndarray, backbone: ImageBackbone, batch_size: int = 256
) -> StimulusFeatures:
    """Computes every feature the encoding model uses, for ``stim_ids`` (0-based rows of ``stimuli``)."""
    images = stimuli.images[stim_ids]
    mids, embs = [], []
    for start in range(0, len(images), batch_size):
        out = backbone.forward_features(
            torch.from_numpy(images[start : start + batch_size]), layers=(MID_LAYER,)
        )
        tokens = out[f"layer:{MID_LAYER}"][:, 1:]
        side = int(round(tokens.shape[1] ** 0.5))
        mids.append(tokens.reshape(tokens.shape[0], side, side, -1).numpy())
        embs.append(F.normalize(out["clip_image"], dim=-1).numpy())
    captions = [stimuli.captions[i] for i in stim_ids]
    flat = [c for caps in captions for c in caps]
    text = F.normalize(backbone.encode_text(flat), dim=-1)
    owner = torch.repeat_interleave(torch.arange(len(captions)), torch.tensor([len(c) for c in captions]))
    caption_mean = torch.zeros(len(captions), text.shape[1]).index_add_(0, owner, text)
    domains = np.zeros((len(stim_ids), len(DOMAINS)), dtype=np.float32)
    for row, sid in enumerate(stim_ids):
        for category in stimuli.categories[sid]:
            domains[row, DOMAINS.index(category_domain(category))] += 1
    return StimulusFeatures(
        lowlevel=lowlevel_maps(images),
        mid_tokens=np.concatenate(mids),
        image_embedding=np.concatenate(embs),
        caption_embedding=F.normalize(caption_mean, dim=-1).numpy(),
        domain_counts=domains,
    )
