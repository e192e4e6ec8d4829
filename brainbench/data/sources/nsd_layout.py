"""Paths of the NSD raw layout (datasets.md §1.1), shared by the adapter and the world writer.

The layout mirrors the NSD bucket ``s3://natural-scenes-dataset/`` (Allen et al. 2022, Nature Neuroscience,
doi:10.1038/s41593-021-00962-x), plus the COCO 2017 annotations placed where ``nsd_access`` puts them::

    nsddata/experiments/nsd/nsd_expdesign.mat
    nsddata/experiments/nsd/nsd_stim_info_merged.csv
    nsddata/ppdata/subjAA/behav/responses.tsv
    nsddata/ppdata/subjAA/func1pt8mm/brainmask.nii.gz
    nsddata/ppdata/subjAA/func1pt8mm/roi/<atlas>.nii.gz
    nsddata/ppdata/subjAA/transforms/{func1pt8-to-MNI,MNI-to-func1pt8}.nii.gz
    nsddata/templates/nsdgeneral_group-MNI.nii.gz  (brainbench's group template mask, not in the NSD release)
    nsddata/freesurfer/{subjAA,fsaverage}/label/<atlas>.mgz.ctab
    nsddata_betas/ppdata/subjAA/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionXX.{nii.gz,hdf5}
    nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5
    nsddata_stimuli/stimuli/nsd/annotations/{captions,instances}_{train,val}2017.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BETA_TYPE = "betas_fithrf_GLMdenoise_RR"
SPACE = "func1pt8mm"
COMPLETE_MARKER = ".complete"


def subject_dir_name(subject: int) -> str:
    """``subjAA`` folder name of a 1-based subject number (``1 -> "subj01"``)."""
    return f"subj{subject:02d}"


@dataclass(frozen=True)
class NsdLayout:
    """Every NSD raw path the suite reads or writes, under one root.

    Attributes:
        root: the folder holding ``nsddata/``, ``nsddata_betas/`` and ``nsddata_stimuli/``.
    """

    root: Path

    @property
    def experiments(self) -> Path:
        """``nsddata/experiments/nsd``."""
        return self.root / "nsddata" / "experiments" / "nsd"

    @property
    def expdesign(self) -> Path:
        """``nsd_expdesign.mat`` (MATLAB v5; 1-based ``subjectim``, ``masterordering``, ``sharedix``)."""
        return self.experiments / "nsd_expdesign.mat"

    @property
    def stim_info(self) -> Path:
        """``nsd_stim_info_merged.csv`` (one row per 0-based ``nsdId``)."""
        return self.experiments / "nsd_stim_info_merged.csv"

    @property
    def stimuli_dir(self) -> Path:
        """``nsddata_stimuli/stimuli/nsd``."""
        return self.root / "nsddata_stimuli" / "stimuli" / "nsd"

    @property
    def stimuli_hdf5(self) -> Path:
        """``nsd_stimuli.hdf5`` with ``imgBrick`` ``(n, H, W, 3)`` uint8."""
        return self.stimuli_dir / "nsd_stimuli.hdf5"

    def coco(self, kind: str, coco_split: str) -> Path:
        """COCO annotation json, e.g. ``coco("captions", "train2017")``."""
        return self.stimuli_dir / "annotations" / f"{kind}_{coco_split}.json"

    @property
    def ppdata_root(self) -> Path:
        """``nsddata/ppdata``."""
        return self.root / "nsddata" / "ppdata"

    def ppdata(self, subject: int) -> Path:
        """``nsddata/ppdata/subjAA``."""
        return self.ppdata_root / subject_dir_name(subject)

    def responses(self, subject: int) -> Path:
        """``behav/responses.tsv``: one row per stimulus trial, all sessions, file order = betas order."""
        return self.ppdata(subject) / "behav" / "responses.tsv"

    def brainmask(self, subject: int) -> Path:
        """``func1pt8mm/brainmask.nii.gz``."""
        return self.ppdata(subject) / SPACE / "brainmask.nii.gz"

    def roi_dir(self, subject: int) -> Path:
        """``func1pt8mm/roi``."""
        return self.ppdata(subject) / SPACE / "roi"

    def roi(self, subject: int, atlas: str) -> Path:
        """``func1pt8mm/roi/<atlas>.nii.gz`` (int16: -1 outside cortex, 0 not in ROI, >= 1 label)."""
        return self.roi_dir(subject) / f"{atlas}.nii.gz"

    def ctab(self, atlas: str, subject: int | None = None) -> Path:
        """``freesurfer/<subjAA|fsaverage>/label/<atlas>.mgz.ctab`` label table."""
        who = "fsaverage" if subject is None else subject_dir_name(subject)
        return self.root / "nsddata" / "freesurfer" / who / "label" / f"{atlas}.mgz.ctab"

    def transform(self, subject: int, source: str, target: str) -> Path:
        """``ppdata/subjAA/transforms/{source}-to-{target}.nii.gz`` (e.g. ``func1pt8``, ``MNI``)."""
        return self.ppdata(subject) / "transforms" / f"{source}-to-{target}.nii.gz"

    @property
    def template_mask(self) -> Path:
        """The group ``nsdgeneral`` mask on the template (MNI) grid: the voxels of template space."""
        return self.root / "nsddata" / "templates" / "nsdgeneral_group-MNI.nii.gz"

    def betas_dir(self, subject: int) -> Path:
        """``nsddata_betas/ppdata/subjAA/func1pt8mm/betas_fithrf_GLMdenoise_RR``."""
        return self.root / "nsddata_betas" / "ppdata" / subject_dir_name(subject) / SPACE / BETA_TYPE

    def betas_nifti(self, subject: int, session: int) -> Path:
        """``betas_sessionXX.nii.gz``: int16 PSC×300, ``(X, Y, Z, T)``."""
        return self.betas_dir(subject) / f"betas_session{session:02d}.nii.gz"

    def betas_hdf5(self, subject: int, session: int) -> Path:
        """``betas_sessionXX.hdf5``: ``/betas`` int16 PSC×300, ``(T, Z, Y, X)`` as seen from h5py."""
        return self.betas_dir(subject) / f"betas_session{session:02d}.hdf5"

    @property
    def design_marker(self) -> Path:
        """Written last by the world writer's design step."""
        return self.experiments / COMPLETE_MARKER

    def subject_marker(self, subject: int) -> Path:
        """Written last by the world writer's subject step."""
        return self.ppdata(subject) / COMPLETE_MARKER

    def subjects_found(self) -> list[int]:
        """1-based subjects with a ``nsddata/ppdata/subjAA`` folder."""
        if not self.ppdata_root.is_dir():
            return []
        found = []
        for child in self.ppdata_root.iterdir():
            name = child.name
            if child.is_dir() and len(name) == 6 and name.startswith("subj") and name[4:].isdigit():
                found.append(int(name[4:]))
        return sorted(found)
