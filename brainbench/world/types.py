"""In-memory types the embedded world hands to its raw-layout writers.

The world simulator produces these; ``brainbench.world.nsd_writer`` turns them into files in the real NSD
layout. Nothing downstream of the dataset adapters ever sees these types: it sees only the files.
All stimulus and trial indices here are **0-based**; the writers convert to the 1-based conventions of the
real files exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StimulusSet:
    """Every image of the world, indexed by a 0-based stimulus id (the analogue of NSD's ``nsdId``).

    Attributes:
        images: ``(n_stimuli, H, W, 3)`` uint8 RGB.
        captions: per stimulus, 1-5 English captions.
        categories: per stimulus, the category names of the 1-3 objects in the scene (first = largest object).
        category_names: every category of the world, in a fixed order (index = category id).
    """

    images: np.ndarray
    captions: list[list[str]]
    categories: list[list[str]]
    category_names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class WorldDesign:
    """The NSD-style experimental design shared by all subjects.

    Attributes:
        subjectim: ``(n_subjects, n_images_per_subject)`` int64, 0-based stimulus ids. Columns
            ``[:n_shared]`` are identical across subjects: the shared test images (NSD's shared1000).
        masterordering: ``(n_trials,)`` int64, 0-based column index into ``subjectim`` per trial, the same
            order for every subject as in NSD.
        n_shared: number of shared test images.
        trials_per_session: trials in one scan session (750 in NSD).
    """

    subjectim: np.ndarray
    masterordering: np.ndarray
    n_shared: int
    trials_per_session: int

    @property
    def n_sessions(self) -> int:
        """Scan sessions in the design."""
        return int(np.ceil(len(self.masterordering) / self.trials_per_session))

    @property
    def shared_ids(self) -> np.ndarray:
        """0-based stimulus ids of the shared test images."""
        return self.subjectim[0, : self.n_shared]

    def trial_stimulus_ids(self, subject: int) -> np.ndarray:
        """0-based stimulus id shown on each trial to ``subject`` (1-based subject number)."""
        return self.subjectim[subject - 1, self.masterordering]


@dataclass(frozen=True)
class SubjectRecording:
    """One simulated subject's brain and single-trial responses.

    Attributes:
        subject: 1-based subject number, as in NSD (``subj01``).
        affine: ``(4, 4)`` voxel-to-world affine of the functional grid.
        brain_mask: ``(X, Y, Z)`` bool, the voxels that carry betas (others are written as 0).
        roi_volumes: atlas name (``nsdgeneral``, ``prf-visualrois``, ``streams``, ``floc-faces`` ...) ->
            ``(X, Y, Z)`` int16 with -1 outside cortex, 0 cortex outside the ROI, >=1 the ROI label.
        roi_labels: atlas name -> {label index: label name}, index 0 is ``Unknown``.
        betas_psc: ``(n_trials, n_brain_voxels)`` float32 percent signal change, voxels in C order of
            ``np.argwhere(brain_mask)``, trials in ``WorldDesign.masterordering`` order.
    """

    subject: int
    affine: np.ndarray
    brain_mask: np.ndarray
    roi_volumes: dict[str, np.ndarray]
    roi_labels: dict[str, dict[int, str]]
    betas_psc: np.ndarray
