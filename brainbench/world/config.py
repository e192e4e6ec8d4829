"""Named sizes of the embedded world. A variant is a new named preset, never a flag that edits one."""

from __future__ import annotations

from dataclasses import dataclass

from brainbench.errors import ConfigError

# Worlds and prepared shards are cached under ``<version>-<preset>``: changing what a preset generates (or the
# generator itself) must bump this, so no stale cache is ever reused.
WORLD_VERSION = "v1"


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a world; two equal configs write byte-identical raw data.

    Attributes:
        name: preset name, part of the dataset version (``world-nsd`` ``v1-small``).
        seed: master seed of stimuli, design and subjects.
        n_shared: images shown to every subject (the test set, NSD's shared1000).
        n_images_per_subject: images per subject including the shared ones (NSD: 10,000).
        repeats: showings of every image (NSD: 3).
        trials_per_session: trials per scan session (NSD: 750).
        n_subjects: subjects in the design, numbered 1..n like NSD.
        grid: functional grid ``(X, Y, Z)`` of subject 1; other subjects vary by up to +-2 voxels per axis.
        visual_fraction: share of the brain (from the back) that is visual cortex (``nsdgeneral``).
        snr_scale: multiplies every voxel's noise-ceiling SNR (the knob that sets difficulty).
    """

    name: str
    seed: int = 0
    n_shared: int = 500
    n_images_per_subject: int = 3000
    repeats: int = 3
    trials_per_session: int = 300
    n_subjects: int = 8
    grid: tuple[int, int, int] = (26, 30, 24)
    visual_fraction: float = 0.42
    snr_scale: float = 0.5

    @property
    def version(self) -> str:
        """Dataset version recorded in manifests and leaderboards, e.g. ``v1-small``."""
        return f"{WORLD_VERSION}-{self.name}"

    @property
    def n_stimuli(self) -> int:
        """All stimuli of the world: the shared ones plus every subject's own."""
        return self.n_shared + self.n_subjects * (self.n_images_per_subject - self.n_shared)


WORLD_PRESETS: dict[str, WorldConfig] = {
    "small": WorldConfig(name="small"),
    "tiny": WorldConfig(
        name="tiny",
        n_shared=60,
        n_images_per_subject=200,
        trials_per_session=100,
        grid=(14, 16, 12),
        visual_fraction=0.5,
        snr_scale=1.0,  # a test bed: clear signal from 400 training trials
    ),
}


def get_world_config(name: str) -> WorldConfig:
    """The preset called ``name`` (``small`` is the default benchmark world, ``tiny`` the test world)."""
    try:
        return WORLD_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown world preset {name!r}; choose one of {sorted(WORLD_PRESETS)}") from None
