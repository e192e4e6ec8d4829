"""A fixed, cached pool of world image-caption pairs for training world CLIPs (v2 and the MLIP ablations).

v1 trained on an endless stream of fresh scenes; a fixed pool lets runs use 25 / 50 / 100 % of the same
pairs, renders each scene once for every run that shares it, and keeps rendering off the training clock.

Scenes come in **groups** of ``group_size``: one base scene (background, colours, textures, sizes,
positions) whose objects get a fresh category in each member. A batch of whole groups holds pairs that
differ only by their objects' shapes, so colour, position and size words no longer separate them and the
contrastive loss must learn the categories (the v1 diagnosis: a linear probe on v1's image embedding reads
the category of a single object at 7.6 %, about its zero-shot 6.8 %, so the image tower barely encodes
shape). ``group_size=1`` gives independent scenes, like v1's stream. Every member keeps all of its captions
(up to five templates, :func:`brainbench.world.stimuli.write_captions`); a training step draws one.

Seeds: member ``j`` of group ``g`` uses ``default_rng([seed, g, j])``; the seeds of the held-out evaluation
and of the subjects' stimuli are never used here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from brainbench.world.shapes import CATEGORY_NAMES
from brainbench.world.stimuli import render_scene, sample_scene, write_captions


@dataclasses.dataclass(frozen=True)
class PairPool:
    """Images ``(N, 3, H, W)`` uint8 and all captions of each; groups are consecutive ``group_size`` runs."""

    images: torch.Tensor
    captions: list[list[str]]
    group_size: int

    @property
    def n_groups(self) -> int:
        """How many groups the pool holds."""
        return len(self.captions) // self.group_size

    def subset(self, fraction: float) -> PairPool:
        """The first ``fraction`` of the groups (the same pairs for every run that asks for that fraction)."""
        n = max(1, int(round(self.n_groups * fraction))) * self.group_size
        return PairPool(self.images[:n], self.captions[:n], self.group_size)

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, list[str]]:
        """``batch_size // group_size`` whole groups drawn without replacement, one random caption each."""
        groups = rng.choice(self.n_groups, size=max(1, batch_size // self.group_size), replace=False)
        index = (groups[:, None] * self.group_size + np.arange(self.group_size)[None]).ravel()
        captions = [self.captions[i][int(rng.integers(len(self.captions[i])))] for i in index]
        return self.images[torch.from_numpy(index)], captions


def render_group(
    seed: int, group: int, group_size: int, image_size: int
) -> list[tuple[np.ndarray, list[str]]]:
    """The ``group_size`` members of group ``group``: same scene layout, fresh categories in each member."""
    base = sample_scene(np.random.default_rng([seed, group]))
    members = []
    for j in range(group_size):
        rng = np.random.default_rng([seed, group, j])
        objects = base.objects
        if group_size > 1:
            objects = tuple(dataclasses.replace(o, category=str(rng.choice(CATEGORY_NAMES))) for o in objects)
        scene = dataclasses.replace(base, objects=objects)
        members.append((render_scene(scene, image_size, rng), write_captions(scene, rng, 5)))
    return members


def load_pair_pool(cache_dir: Path, seed: int, n_pairs: int, group_size: int, image_size: int) -> PairPool:
    """The pool of ``n_pairs`` pairs (rounded down to whole groups), rendered once and cached as ``.npz``."""
    n_groups = max(1, n_pairs // group_size)
    stem = cache_dir / f"pairs-s{seed}-g{n_groups}x{group_size}-{image_size}px"
    images_path, captions_path = stem.with_suffix(".npz"), stem.with_suffix(".json")
    if images_path.is_file() and captions_path.is_file():
        with np.load(images_path, allow_pickle=False) as data:
            images = data["images"]
        captions = json.loads(captions_path.read_text())
    else:
        rendered = [m for g in range(n_groups) for m in render_group(seed, g, group_size, image_size)]
        images = np.stack([m[0] for m in rendered])
        captions = [m[1] for m in rendered]
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = stem.with_name(stem.name + ".tmp.npz")
        np.savez(tmp, images=images)
        tmp.replace(images_path)
        captions_path.write_text(json.dumps(captions))
    return PairPool(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), captions, group_size)
