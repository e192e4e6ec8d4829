"""``brainbench describe``: a method built at a config's scale without data, and its size.

No data and no weights are needed: the voxel count comes from the scale (:data:`SCALE_VOXELS`, the real
datasets' subject 1) and every target shape from the open_clip architecture config of the config's backbone
(:func:`backbone_target_shapes`), so ``describe litemind --scale nsd`` counts the parameters of the model that
would be trained on NSD with ViT-L/14.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
import torch

from brainbench.backbones.frame_autoencoder import latent_target_shape
from brainbench.data.pixel_features import feature_size
from brainbench.errors import ConfigError
from brainbench.methods import build_method, load_method_config

#: voxels of subject 1 at each scale: NSD nsdgeneral (subj01), GOD VC (Horikawa & Kamitani 2017 sub-01),
#: CC2017 (Wen et al. 2018, the visual-cortex selection used by NeuroClips), the small world's nsdgeneral.
SCALE_VOXELS: dict[str, int] = {"nsd": 15724, "god": 4466, "cc2017": 13447, "world": 2520}
#: voxels of the group template mask for configs with ``data.space: template`` (NSD transforms): the small
#: world's, and for NSD an estimate (subj01's nsdgeneral volume, 15724 x 1.8^3 mm^3, on the 1 mm MNI grid)
TEMPLATE_VOXELS: dict[str, int] = {"nsd": 91_703, "world": 2908}

#: captions per stimulus assumed for ``clip_captions`` (NSD/COCO: 5; the world: up to 5)
N_CAPTIONS = 5
#: frames per fMRI sample assumed for ``frames:<px>`` (NeuroClips: 2 s at 3 fps = 6)
N_FRAMES = 6

#: ROI proportions of the small world's subject 1 within its nsdgeneral voxels, used to give ROI-split methods
#: synthetic ROIs at other scales (the real ROI sizes are read from the data when a method is trained)
WORLD_ROI_FRACTIONS: dict[str, float] = {
    "prf-visualrois/V1v": 106 / 2520,
    "prf-visualrois/V1d": 106 / 2520,
    "prf-visualrois/V2v": 88 / 2520,
    "prf-visualrois/V2d": 88 / 2520,
    "prf-visualrois/V3v": 108 / 2520,
    "prf-visualrois/V3d": 108 / 2520,
    "prf-visualrois/hV4": 126 / 2520,
    "floc-bodies/EBA": 21 / 2520,
    "floc-bodies/FBA-1": 29 / 2520,
    "floc-faces/OFA": 47 / 2520,
    "floc-faces/FFA-1": 62 / 2520,
    "floc-faces/FFA-2": 11 / 2520,
    "floc-places/OPA": 17 / 2520,
    "floc-places/PPA": 73 / 2520,
    "floc-places/RSC": 73 / 2520,
    "floc-words/OWFA": 21 / 2520,
    "floc-words/VWFA-1": 18 / 2520,
}


def backbone_target_shapes(backbone_id: str, targets: list[str]) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of ``targets`` for a backbone, from its open_clip architecture config.

    ``clip_tokens`` ``(T, D)`` with ``T = (image / patch)^2 + 1``; ``clip_image``, ``clip_text`` and
    ``clip_class_text`` ``(D,)``; ``clip_captions`` ``(N_CAPTIONS, D)``; ``layer:<k>`` ``(T, width)``;
    ``pixels:<px>`` ``(3, px, px)``; ``frames:<px>`` ``(N_FRAMES, 3, px, px)``; ``latents:<px>:<autoencoder>``
    ``(N_FRAMES, C, px/8, px/8)``.
    """
    arch = backbone_id.split(":", 1)[0]
    if arch == "world-clip":
        from brainbench.backbones.world_clip import register_world_clip

        register_world_clip()
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ConfigError(f"no open_clip architecture config for {backbone_id!r}")
    vision = config["vision_cfg"]
    n_tokens = (int(vision["image_size"]) // int(vision["patch_size"])) ** 2 + 1
    dim, width = int(config["embed_dim"]), int(vision["width"])
    shapes: dict[str, tuple[int, ...]] = {}
    for name in targets:
        if name == "clip_tokens":
            shapes[name] = (n_tokens, dim)
        elif name in ("clip_image", "clip_text", "clip_class_text"):
            shapes[name] = (dim,)
        elif name == "clip_captions":
            shapes[name] = (N_CAPTIONS, dim)
        elif name.startswith("layer:"):
            shapes[name] = (n_tokens, width)
        elif name.startswith("pixels:"):
            shapes[name] = (3, feature_size(name), feature_size(name))
        elif name.startswith("frames:"):
            shapes[name] = (N_FRAMES, 3, feature_size(name), feature_size(name))
        elif name.startswith("latents:"):
            shapes[name] = latent_target_shape(name, N_FRAMES)
        else:
            raise ConfigError(f"no shape rule for target {name!r}")
    return shapes


def synthetic_rois(n_voxels: int) -> dict[str, list[int]]:
    """ROIs with the small world's proportions over ``n_voxels`` (consecutive blocks), plus ``nsdgeneral``."""
    rois: dict[str, list[int]] = {"nsdgeneral/nsdgeneral": list(range(n_voxels))}
    start = 0
    for name, fraction in WORLD_ROI_FRACTIONS.items():
        size = max(1, round(fraction * n_voxels))
        rois[name] = list(range(start, start + size))
        start += size
    return rois


def scale_shapes(config: dict[str, Any]) -> dict[str, Any]:
    """Voxel count and target shapes of a config's scale (its file stem: ``nsd``, ``god``, ``world``, ...)."""
    scale = Path(config["path"]).stem.split("-")[0]
    if scale not in SCALE_VOXELS:
        raise ConfigError(f"no reference voxel count for scale {scale!r}; known: {sorted(SCALE_VOXELS)}")
    data = config.get("data") or {}
    targets = list(data.get("targets") or ["clip_tokens"])
    voxels = TEMPLATE_VOXELS if data.get("space") == "template" else SCALE_VOXELS
    if scale not in voxels:
        raise ConfigError(f"no template voxel count for scale {scale!r}; known: {sorted(voxels)}")
    return {
        "n_voxels": voxels[scale],
        "target_shapes": backbone_target_shapes(str(data["backbone"]), targets),
    }


def describe(method: str, scale: str) -> dict[str, Any]:
    """Builds a method at a config's scale without data and reports its size."""
    config = load_method_config(method, scale)
    info = scale_shapes(config)
    args = (config, info["n_voxels"], info["target_shapes"])
    rois = synthetic_rois(info["n_voxels"])
    try:
        with torch.device("meta"):  # shapes only: a 2-billion-parameter model costs no memory or init time
            model = build_method(*args, rois=rois)
    except NotImplementedError:  # an initialiser that reads values (not possible on meta tensors)
        model = build_method(*args, rois=rois)
    return {
        "method": method,
        "scale": scale,
        "class": config["model"]["class_path"],
        "n_voxels": info["n_voxels"],
        "target_shapes": info["target_shapes"],
        "n_params": model.n_parameters(),
        "paper": model.paper,
        "fidelity": model.fidelity,
    }
