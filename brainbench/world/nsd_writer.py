"""Write the embedded world in the real NSD raw layout, so it goes through the same adapter as real NSD.

The paths are those of the NSD bucket (datasets.md §1.1, see :mod:`brainbench.data.sources.nsd_layout`).
Every 0-based index of :mod:`brainbench.world.types` is converted to NSD's 1-based convention exactly once,
here: ``subjectim``, ``masterordering``, ``sharedix``, ``73KID``, ``10KID`` and ``subjectN_repK`` are 1-based;
``nsdId`` and ``imgBrick`` rows are 0-based. Betas are int16 = round(PSC × 300), zero outside the brain mask,
without ``scl_slope``.

Each file is written under a temporary name and renamed into place; a ``.complete`` marker is written last
for the design and for each subject, so :func:`is_complete` detects an interrupted write.

Example:
    >>> write_nsd_design(root, stimuli, design)  # doctest: +SKIP
    >>> for recording in recordings:  # doctest: +SKIP
    ...     write_nsd_subject(root, design, recording)
    >>> is_complete(root, subject=1)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from brainbench.data.sources.nsd_layout import NsdLayout, subject_dir_name
from brainbench.world.files import atomic_path, write_marker
from brainbench.world.types import StimulusSet, SubjectRecording, WorldDesign

RUNS_PER_SESSION = 12
COCO_ID_OFFSET = 100_000
COCO_SPLIT = "train2017"
_EPOCH_DATENUM = 737_791.0  # MATLAB datenum of 2020-01-01, first session of every world subject


def is_complete(root: str | Path, subject: int | None = None) -> bool:
    """Whether a world write finished.

    Args:
        root: the raw root.
        subject: 1-based subject; ``None`` checks only the design files.

    Returns:
        True when the design marker (and, for a subject, that subject's marker) exists.
    """
    layout = NsdLayout(Path(root))
    if not layout.design_marker.is_file():
        return False
    return subject is None or layout.subject_marker(subject).is_file()


def repeat_trials(trial_stim_ids: np.ndarray, n_stimuli: int, max_repeats: int = 3) -> np.ndarray:
    """1-based trial number of each stimulus' k-th showing (0 if not shown), as in ``subjectN_repK``.

    Args:
        trial_stim_ids: ``(n_trials,)`` 0-based stimulus id per trial.
        n_stimuli: number of stimuli (rows of the result).
        max_repeats: number of repeat columns.

    Returns:
        ``(n_stimuli, max_repeats)`` int64.
    """
    order = np.argsort(trial_stim_ids, kind="stable")
    sorted_ids = trial_stim_ids[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_ids, sorted_ids, side="left")
    keep = rank < max_repeats
    reps = np.zeros((n_stimuli, max_repeats), dtype=np.int64)
    reps[sorted_ids[keep], rank[keep]] = order[keep] + 1
    return reps


def write_nsd_design(root: str | Path, stimuli: StimulusSet, design: WorldDesign) -> None:
    """Write the subject-independent NSD files: design, stimulus info, images and COCO annotations.

    Writes ``nsd_expdesign.mat``, ``nsd_stim_info_merged.csv``, ``nsd_stimuli.hdf5`` and
    ``annotations/{captions,instances}_train2017.json``, then the design ``.complete`` marker. The ROI label
    tables (``*.mgz.ctab``) come from a :class:`SubjectRecording`; :func:`write_nsd_subject` writes them.

    Args:
        root: the raw root (created if needed).
        stimuli: every stimulus of the world; ``cocoId = 100000 + nsdId``, all in ``train2017``.
        design: the shared design; ``design.subjectim.shape[0]`` subjects.
    """
    layout = NsdLayout(Path(root))
    layout.design_marker.unlink(missing_ok=True)
    n_stim = len(stimuli)
    subjectim = np.asarray(design.subjectim, dtype=np.int64)
    masterordering = np.asarray(design.masterordering, dtype=np.int64)
    with atomic_path(layout.expdesign) as tmp:
        mat = {
            "subjectim": (subjectim + 1).astype(np.float64),
            "masterordering": (masterordering + 1).astype(np.float64)[None, :],
            "sharedix": (np.asarray(design.shared_ids, dtype=np.int64) + 1).astype(np.float64)[None, :],
        }
        scipy.io.savemat(tmp, mat, format="5", do_compression=True, oned_as="row")
        _fix_mat_header(tmp)
    _write_stim_info(layout, n_stim, design)
    with atomic_path(layout.stimuli_hdf5) as tmp, h5py.File(tmp, "w") as f:
        images = np.asarray(stimuli.images, dtype=np.uint8)
        chunks = (1, *images.shape[1:]) if n_stim else None
        f.create_dataset("imgBrick", data=images, chunks=chunks, compression="gzip", compression_opts=1)
    _write_coco(layout, stimuli)
    write_marker(layout.design_marker, {"n_stimuli": n_stim, "n_subjects": int(subjectim.shape[0])})


def _fix_mat_header(path: Path) -> None:
    """Overwrite the 116-byte text header of a v5 .mat (it holds a creation time): reproducible bytes."""
    with open(path, "r+b") as f:
        f.write(b"MATLAB 5.0 MAT-file, Platform: posix, written by brainbench.world.nsd_writer".ljust(116))


def _write_stim_info(layout: NsdLayout, n_stim: int, design: WorldDesign) -> None:
    nsd_id = np.arange(n_stim)
    shared = np.isin(nsd_id, design.shared_ids)
    table: dict[str, object] = {
        "cocoId": COCO_ID_OFFSET + nsd_id,
        "cocoSplit": [COCO_SPLIT] * n_stim,
        "cropBox": ["(0, 0, 0, 0)"] * n_stim,
        "loss": np.zeros(n_stim),
        "nsdId": nsd_id,
        "flagged": np.zeros(n_stim, dtype=bool),
        "BOLD5000": np.zeros(n_stim, dtype=bool),
        "shared1000": shared,
    }
    n_subjects = design.subjectim.shape[0]
    for s in range(1, n_subjects + 1):
        table[f"subject{s}"] = np.isin(nsd_id, design.subjectim[s - 1]).astype(np.int64)
    for s in range(1, n_subjects + 1):
        reps = repeat_trials(design.trial_stimulus_ids(s), n_stim)
        for k in range(reps.shape[1]):
            table[f"subject{s}_rep{k}"] = reps[:, k]
    with atomic_path(layout.stim_info) as tmp:
        pd.DataFrame(table).to_csv(tmp)


def _write_coco(layout: NsdLayout, stimuli: StimulusSet) -> None:
    height, width = (int(stimuli.images.shape[1]), int(stimuli.images.shape[2])) if len(stimuli) else (0, 0)
    images = [
        {
            "id": COCO_ID_OFFSET + i,
            "file_name": f"{COCO_ID_OFFSET + i:012d}.jpg",
            "height": height,
            "width": width,
        }
        for i in range(len(stimuli))
    ]
    captions = [
        {"id": 0, "image_id": COCO_ID_OFFSET + i, "caption": caption}
        for i, image_captions in enumerate(stimuli.captions)
        for caption in image_captions
    ]
    category_ids = {name: index + 1 for index, name in enumerate(stimuli.category_names)}
    instances = [
        # area decreases with position so "largest first" survives an area sort
        {"id": 0, "image_id": COCO_ID_OFFSET + i, "category_id": category_ids[name], "area": float(10 - rank)}
        for i, names in enumerate(stimuli.categories)
        for rank, name in enumerate(names)
    ]
    for numbered in (captions, instances):
        for annotation_id, annotation in enumerate(numbered, start=1):
            annotation["id"] = annotation_id
    info = {"description": "brainbench embedded world (COCO-format annotations)", "version": "1"}
    categories = [{"id": i, "name": name, "supercategory": "world"} for name, i in category_ids.items()]
    documents = {
        "captions": {"info": info, "images": images, "annotations": captions},
        "instances": {"info": info, "images": images, "annotations": instances, "categories": categories},
    }
    for kind, document in documents.items():
        with atomic_path(layout.coco(kind, COCO_SPLIT)) as tmp:
            tmp.write_text(json.dumps(document), encoding="utf-8")


def _responses_table(design: WorldDesign, subject: int) -> pd.DataFrame:
    """Plausible NSD ``responses.tsv`` rows; the behaviour columns are made up but self-consistent."""
    stim = design.trial_stimulus_ids(subject)
    n_trials, per_session = len(stim), design.trials_per_session
    t = np.arange(n_trials)
    session, pos = t // per_session + 1, t % per_session
    run, trial_in_run = np.zeros(n_trials, np.int64), np.zeros(n_trials, np.int64)
    for s in np.unique(session):
        in_session = np.flatnonzero(session == s)
        runs = np.array_split(np.arange(len(in_session)), min(RUNS_PER_SESSION, len(in_session)))
        for r, members in enumerate(runs, start=1):
            run[in_session[members]] = r
            trial_in_run[in_session[members]] = np.arange(1, len(members) + 1)
    order = np.argsort(stim, kind="stable")
    same = stim[order][1:] == stim[order][:-1]
    previous = np.full(n_trials, -1)
    previous[order[1:][same]] = order[:-1][same]
    first = order[np.searchsorted(stim[order], stim, side="left")]
    is_old = previous >= 0
    is_old_current = is_old & (session[np.maximum(previous, 0)] == session)
    rng = np.random.default_rng(10_000 + subject)
    said_old = rng.random(n_trials) < np.where(is_old, 0.8, 0.2)
    said_old_current = rng.random(n_trials) < np.where(is_old_current, 0.8, 0.2)
    return pd.DataFrame(
        {
            "SUBJECT": subject,
            "SESSION": session,
            "RUN": run,
            "TRIAL": trial_in_run,
            "73KID": stim + 1,
            "10KID": np.asarray(design.masterordering) + 1,
            "TIME": _EPOCH_DATENUM + (session - 1) * 7.0 + pos * 4.0 / 86_400.0,
            "ISOLD": is_old.astype(int),
            "ISCORRECT": (said_old == is_old).astype(int),
            "RT": np.round(rng.lognormal(np.log(800.0), 0.25, n_trials), 1),
            "CHANGEMIND": 0,
            "MEMORYRECENT": np.where(is_old, t - previous, np.nan),
            "MEMORYFIRST": np.where(is_old, t - first, np.nan),
            "ISOLDCURRENT": is_old_current.astype(int),
            "ISCORRECTCURRENT": (said_old_current == is_old_current).astype(int),
            "TOTAL1": 1,
            "TOTAL2": 0,
            "BUTTON": np.where(said_old, 1, 2),
            "MISSINGDATA": 0,
        }
    )


def _save_nifti(path: Path, volume: np.ndarray, affine: np.ndarray, compresslevel: int) -> None:
    """Save int16 data as ``.nii.gz`` with no scaling, gzip level ``compresslevel``, reproducible bytes."""
    image = nib.Nifti1Image(volume, affine)
    image.header.set_data_dtype(volume.dtype)
    image.header.set_xyzt_units("mm", "sec")
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0) as gz,
    ):
        gz.write(image.to_bytes())


def psc_to_int16(betas_psc: np.ndarray) -> np.ndarray:
    """NSD's storage convention: ``round(PSC × 300)`` clipped to the int16 range.

    Args:
        betas_psc: percent signal change, any shape, finite.

    Returns:
        int16 array of the same shape.
    """
    if not np.all(np.isfinite(betas_psc)):
        raise ValueError("betas_psc holds NaN or inf")
    return np.clip(np.rint(np.asarray(betas_psc, dtype=np.float64) * 300.0), -32768, 32767).astype(np.int16)


def write_nsd_subject(
    root: str | Path,
    design: WorldDesign,
    recording: SubjectRecording,
    *,
    write_hdf5: bool = False,
    compresslevel: int = 1,
) -> None:
    """Write one subject: behaviour table, brain mask, ROI volumes and label tables, per-session betas.

    Args:
        root: the raw root.
        design: the shared design (trial order, trials per session).
        recording: the subject's brain and single-trial betas (trials in ``masterordering`` order).
        write_hdf5: also write each session's ``betas_sessionXX.hdf5`` twin, ``/betas`` ``(T, Z, Y, X)``
            int16 with chunks ``(T, 1, 1, 1)`` like the MATLAB-written originals.
        compresslevel: gzip level of the ``.nii.gz`` files (1 is fastest).

    Raises:
        ValueError: if the recording does not match the design or its own brain mask.
    """
    layout = NsdLayout(Path(root))
    subject = recording.subject
    mask = np.asarray(recording.brain_mask, dtype=bool)
    n_trials = len(design.masterordering)
    if recording.betas_psc.shape != (n_trials, int(mask.sum())):
        raise ValueError(
            f"{subject_dir_name(subject)}: betas_psc {recording.betas_psc.shape} != "
            f"(n_trials={n_trials}, n_brain_voxels={int(mask.sum())})"
        )
    for atlas, volume in recording.roi_volumes.items():
        if volume.shape != mask.shape:
            raise ValueError(f"{subject_dir_name(subject)}: ROI {atlas} {volume.shape} != grid {mask.shape}")
    layout.subject_marker(subject).unlink(missing_ok=True)
    affine = np.asarray(recording.affine, dtype=np.float64)

    responses = layout.responses(subject)
    with atomic_path(responses) as tmp:
        _responses_table(design, subject).to_csv(tmp, sep="\t", index=False)
    _save_nifti(layout.brainmask(subject), mask.astype(np.int16), affine, compresslevel)
    for atlas, volume in recording.roi_volumes.items():
        _save_nifti(layout.roi(subject, atlas), np.asarray(volume, dtype=np.int16), affine, compresslevel)
    for atlas, labels in recording.roi_labels.items():
        table = "".join(f"{index} {name}\n" for index, name in sorted({0: "Unknown", **labels}.items()))
        for who in (subject, None):
            with atomic_path(layout.ctab(atlas, who)) as tmp:
                tmp.write_text(table)

    per_session = design.trials_per_session
    for session in range(1, design.n_sessions + 1):
        trials = slice((session - 1) * per_session, min(session * per_session, n_trials))
        values = psc_to_int16(recording.betas_psc[trials])  # (T, V)
        volume = np.zeros((*mask.shape, values.shape[0]), dtype=np.int16)
        volume[mask] = values.T
        _save_nifti(layout.betas_nifti(subject, session), volume, affine, compresslevel)
        if write_hdf5:
            with atomic_path(layout.betas_hdf5(subject, session)) as tmp, h5py.File(tmp, "w") as f:
                f.create_dataset(
                    "betas", data=volume.transpose(3, 2, 1, 0), chunks=(values.shape[0], 1, 1, 1)
                )
    write_marker(layout.subject_marker(subject), {"subject": subject, "n_sessions": design.n_sessions})
