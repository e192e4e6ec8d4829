r"""Write the embedded world in the real CC2017 raw layout, so the CC2017 adapter reads it like real data.

Layout under ``<root>/video_fmri_dataset/`` (Wen et al. 2018; datasets.md §4.1, §4.4, §5.1)::

    subject{s}/fmri/seg{N}/cifti/seg{N}_{r}_Atlas.dtseries.nii     training movie N, repeats r = 1..2
    subject{s}/fmri/test{N}/cifti/test{N}_{r}_Atlas.dtseries.nii   test movie N, repeats r = 1..10
    stimuli/seg{N}.mp4, stimuli/test{N}.mp4                        the movies (H.264; the world uses 8 fps)
    stimuli/captions.tsv                                           brainbench extension, one row per caption

* **Runs** (:class:`MovieRun`): ``volumes_per_run + 5`` volumes for training movies and ``test1``, ``+ 6``
  for the other test movies; the movie starts at 0-based volume ``T - 4 - volumes_per_run`` and the last 4
  volumes follow it (MATLAB ``st:end-4``, datasets.md §5.2 trap 3). Window ``t`` of movie ``segN`` is sample
  ``N * 1000 + t`` (``100_000 + N * 1000 + t`` for ``testN``).
* **dtseries**: CIFTI-2 dense time series (NIfTI-2 + XML, intent ``ConnDenseSeries``), float32, written with
  :mod:`nibabel.cifti2`. nibabel shows ``(time, grayordinates)`` (datasets.md §5.2 trap 8): axis 0 is a
  ``SeriesAxis`` (start 0, step 2.0 s), axis 1 a ``BrainModelAxis`` (:class:`Grayordinates`) with the
  ``CortexLeft`` and ``CortexRight`` vertices first (ids into 32,492-vertex hemispheres, as HCP's
  32k_fs_LR) and subcortical voxels after them.
* **mp4**: H.264 (libx264, yuv420p, one thread so the bytes are reproducible), one frame per ``1/fps`` s,
  exactly ``2 * volumes_per_run`` s long; PyAV reads it back by timestamps.
* **captions.tsv**: tab-separated with header ``movie\tstart_s\tend_s\tcaption`` (seconds, 3 decimals).

Every file is written under a hidden temporary name and renamed into place, so a file that exists is
complete. ``.complete`` markers are written last for the stimuli folder and for each subject, so
:func:`is_complete` tells a finished write from an interrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel import cifti2

from brainbench.errors import require_extra
from brainbench.world.files import atomic_path, write_marker

DATASET_DIR = "video_fmri_dataset"
COMPLETE_MARKER = ".complete"
HEMISPHERE_VERTICES = 32_492  # vertices per hemisphere of HCP's 32k_fs_LR mesh
CAPTION_COLUMNS = ("movie", "start_s", "end_s", "caption")
TR_S = 2.0
VOLUMES_AFTER_MOVIE = 4  # MATLAB st:end-4 (datasets.md §5.2 trap 3)
TEST_STIM_ID_OFFSET = 100_000


@dataclass(frozen=True)
class MovieRun:
    """A movie of the design and its runs: name, repeats, run length, movie onset and sample ids.

    Attributes:
        kind: ``"seg"`` (training) or ``"test"``.
        number: 1-based movie number.
        n_repeats: runs showing it.
        n_volumes: volumes per run ``T`` (``volumes_per_run + 5`` or ``+ 6``).
        volumes_per_run: 2-s windows of movie.
    """

    kind: Literal["seg", "test"]
    number: int
    n_repeats: int
    n_volumes: int
    volumes_per_run: int

    @property
    def name(self) -> str:
        """``seg3``, ``test1``: the folder and mp4 name."""
        return f"{self.kind}{self.number}"

    @property
    def start(self) -> int:
        """0-based volume at which the movie starts."""
        return self.n_volumes - VOLUMES_AFTER_MOVIE - self.volumes_per_run

    @property
    def stim_ids(self) -> np.ndarray:
        """``(volumes_per_run,)`` int64: ``N * 1000 + t`` (training) or ``100_000 + N * 1000 + t`` (test)."""
        base = (TEST_STIM_ID_OFFSET if self.kind == "test" else 0) + 1000 * self.number
        return base + np.arange(self.volumes_per_run, dtype=np.int64)


class Cc2017Layout:
    """Paths of the CC2017 raw layout under a root (the folder that holds ``video_fmri_dataset/``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.base = self.root / DATASET_DIR

    def subject_dir(self, subject: int) -> Path:
        """``subject{s}/`` (1-based, no zero padding, as in the release)."""
        return self.base / f"subject{subject}"

    def dtseries(self, subject: int, movie: str, repeat: int) -> Path:
        """``subject{s}/fmri/{movie}/cifti/{movie}_{repeat}_Atlas.dtseries.nii`` (repeat 1-based)."""
        return self.subject_dir(subject) / "fmri" / movie / "cifti" / f"{movie}_{repeat}_Atlas.dtseries.nii"

    @property
    def stimuli(self) -> Path:
        """``stimuli/``: the movies and captions."""
        return self.base / "stimuli"

    def movie(self, movie: str) -> Path:
        """``stimuli/{movie}.mp4``."""
        return self.stimuli / f"{movie}.mp4"

    @property
    def captions(self) -> Path:
        """``stimuli/captions.tsv`` (a brainbench extension; real data has none)."""
        return self.stimuli / "captions.tsv"

    @property
    def stimuli_marker(self) -> Path:
        """Written last by :func:`write_stimuli_marker`."""
        return self.stimuli / COMPLETE_MARKER

    def subject_marker(self, subject: int) -> Path:
        """Written last by :func:`write_subject_marker`."""
        return self.subject_dir(subject) / COMPLETE_MARKER


def is_complete(root: str | Path, subject: int | None = None) -> bool:
    """Whether the stimuli (and, for a subject, that subject's runs) were written to the end."""
    layout = Cc2017Layout(Path(root))
    if not layout.stimuli_marker.is_file():
        return False
    return subject is None or layout.subject_marker(subject).is_file()


def write_stimuli_marker(root: Path, movies: list[str]) -> None:
    """Mark the stimuli folder complete (call after every mp4 and the captions are written)."""
    write_marker(Cc2017Layout(root).stimuli_marker, {"movies": movies})


def write_subject_marker(root: Path, subject: int, n_runs: int) -> None:
    """Mark a subject complete (call after all of its runs are written)."""
    write_marker(Cc2017Layout(root).subject_marker(subject), {"subject": subject, "n_runs": n_runs})


@dataclass(frozen=True)
class Grayordinates:
    """The grayordinates of every run: cortex surface vertices (left, then right), then subcortical voxels.

    Attributes:
        cortex_ijk: ``(n_cortex, 3)`` position of each cortex vertex on the simulator's grid, in CIFTI order.
        left_vertices: sorted ``CortexLeft`` vertex ids (0..32491); the first ``len(left_vertices)`` rows.
        right_vertices: sorted ``CortexRight`` vertex ids.
        subcortical: CIFTI structure name (``"thalamus_left"`` ...) -> bool volume of its voxels, in order.
    """

    cortex_ijk: np.ndarray
    left_vertices: np.ndarray
    right_vertices: np.ndarray
    subcortical: dict[str, np.ndarray]

    @property
    def n_grayordinates(self) -> int:
        """Cortex vertices plus subcortical voxels."""
        return len(self.cortex_ijk) + sum(int(mask.sum()) for mask in self.subcortical.values())

    def brain_models(self, voxel_mm: float = 2.0) -> cifti2.BrainModelAxis:
        """The CIFTI ``BrainModelAxis`` (subcortical voxels on a ``voxel_mm`` grid, as HCP's 2 mm)."""
        axis = cifti2.BrainModelAxis.from_surface(
            np.asarray(self.left_vertices), HEMISPHERE_VERTICES, "CortexLeft"
        ) + cifti2.BrainModelAxis.from_surface(
            np.asarray(self.right_vertices), HEMISPHERE_VERTICES, "CortexRight"
        )
        affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
        for name, mask in self.subcortical.items():
            axis = axis + cifti2.BrainModelAxis.from_mask(np.asarray(mask, dtype=bool), name, affine=affine)
        return axis


def write_dtseries(path: Path, values: np.ndarray, brain_models: cifti2.BrainModelAxis) -> None:
    """Write one run: ``values`` ``(n_volumes, n_grayordinates)`` float32, TR 2 s.

    Raises:
        ValueError: if ``values`` is not finite or does not match ``brain_models``.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != len(brain_models):
        raise ValueError(f"{path}: values {values.shape} do not match {len(brain_models)} grayordinates")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: values hold NaN or inf")
    series = cifti2.SeriesAxis(start=0.0, step=TR_S, size=values.shape[0], unit="SECOND")
    image = cifti2.Cifti2Image(values, header=(series, brain_models))
    image.nifti_header.set_intent("ConnDenseSeries")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)


def write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int = 18) -> None:
    """Encode ``frames`` ``(n, H, W, 3)`` uint8 (H, W even) as H.264 at ``fps``, reproducibly."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"{path}: frames must be (n, H, W, 3) with even H and W, got {frames.shape}")
    av = require_extra("av", "video", "writing the world-cc2017 movies")
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_captions(path: Path, rows: Iterable[tuple[str, float, float, str]]) -> None:
    """Write ``captions.tsv``; ``rows`` are ``(movie, start_s, end_s, caption)``."""
    lines = ["\t".join(CAPTION_COLUMNS)]
    for movie, start_s, end_s, caption in rows:
        if "\t" in caption or "\n" in caption:
            raise ValueError(f"{path}: caption {caption!r} holds a tab or newline")
        lines.append(f"{movie}\t{start_s:.3f}\t{end_s:.3f}\t{caption}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
