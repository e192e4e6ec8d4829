"""Low-resolution pixel targets per stimulus, for pathways that decode pixels or latents of them.

Cached next to the backbone features (:mod:`brainbench.data.feature_cache`), no network involved:

================ ==================== ===============================================================
name             shape                content
================ ==================== ===============================================================
``pixels:<px>``  ``(3, px, px)``      the stimulus image, resized (bilinear, antialiased), in [0, 1]
``frames:<px>``  ``(F, 3, px, px)``   every frame of a video stimulus (CC2017), resized alike
================ ==================== ===============================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import ConfigError


def is_pixel_feature(name: str) -> bool:
    """Whether ``name`` is a ``pixels:<px>`` or ``frames:<px>`` feature."""
    return name.split(":", 1)[0] in ("pixels", "frames")


def feature_size(name: str) -> int:
    """The side in pixels of a ``pixels:<px>`` / ``frames:<px>`` name."""
    kind, _, size = name.partition(":")
    if not size.isdigit() or int(size) < 1:
        raise ConfigError(f"feature {name!r} must look like {kind}:<pixels>, e.g. {kind}:32")
    return int(size)


def resize_uint8(images: np.ndarray, size: int) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, size, size)`` float in [0, 1] (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def pixel_features(
    store: StimulusStore, stim_ids: np.ndarray, names: Sequence[str], batch_size: int = 256
) -> dict[str, np.ndarray]:
    """The requested pixel features of ``stim_ids`` (rows in that order), float16."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        kind, size = name.split(":", 1)[0], feature_size(name)
        chunks = []
        for start in range(0, len(stim_ids), batch_size):
            ids = stim_ids[start : start + batch_size]
            if kind == "pixels":
                chunks.append(resize_uint8(store.images(ids), size).half().numpy())
            else:
                clips = store.frames(ids)  # (n, F, H, W, 3)
                n, f = clips.shape[:2]
                frames = resize_uint8(clips.reshape(n * f, *clips.shape[2:]), size)
                chunks.append(frames.view(n, f, 3, size, size).half().numpy())
        out[name] = np.concatenate(chunks)
    return out
