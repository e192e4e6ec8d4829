"""The NSD-style experimental design of the world: which subject sees which image on which trial."""

from __future__ import annotations

import numpy as np

from brainbench.world.config import WorldConfig
from brainbench.world.types import WorldDesign


def make_design(config: WorldConfig) -> WorldDesign:
    """Builds ``subjectim`` and ``masterordering`` as NSD does (Allen et al. 2022, "Technical notes").

    Stimulus ids ``0..n_shared-1`` are the shared test images, seen by every subject; subject ``s`` then
    sees its own block of ``n_images_per_subject - n_shared`` images. Every image is shown ``repeats``
    times; one trial order (``masterordering``) is shared by all subjects, exactly as in NSD, and the
    repeats of an image are spread over the experiment.
    """
    rng = np.random.default_rng([config.seed, 1])
    n_own = config.n_images_per_subject - config.n_shared
    shared = np.arange(config.n_shared)
    subjectim = np.stack(
        [
            np.concatenate([shared, config.n_shared + s * n_own + np.arange(n_own)])
            for s in range(config.n_subjects)
        ]
    ).astype(np.int64)
    masterordering = rng.permutation(np.repeat(np.arange(config.n_images_per_subject), config.repeats))
    return WorldDesign(
        subjectim=subjectim,
        masterordering=masterordering.astype(np.int64),
        n_shared=config.n_shared,
        trials_per_session=config.trials_per_session,
    )
