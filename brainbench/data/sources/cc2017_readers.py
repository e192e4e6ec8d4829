"""Readers for the CC2017 raw files (datasets.md §4.1, §4.4): CIFTI runs, Wen's ``.mat`` files, mp4 movies.

The layout under ``<root>/video_fmri_dataset/``::

    subject{s}/fmri/seg{N}/cifti/seg{N}_{r}_Atlas.dtseries.nii     training movie N, repeat r (real: 18 x 2)
    subject{s}/fmri/test{N}/cifti/test{N}_{r}_Atlas.dtseries.nii   test movie N, repeat r (real: 5 x 10)
    subject{s}/training_fmri.mat    optional, Wen's preprocessed runs (v5: struct fmri.data1, fmri.data2)
    subject{s}/testing_fmri.mat     optional, Wen's preprocessed runs (v7.3: struct fmritest.test1..testK)
    stimuli/seg{N}.mp4, stimuli/test{N}.mp4, stimuli/captions.tsv (optional)

A dtseries is ``(time, grayordinates)`` in nibabel (datasets.md §5.2 trap 8): axis 0 a ``SeriesAxis``
(TR 2 s), axis 1 a ``BrainModelAxis`` whose CortexLeft/CortexRight vertices come first (real: 59412 of
91282). The movie starts at volume ``T - 4 - volumes_per_run`` (MATLAB ``st:end-4``, trap 3) and volume
``start + t + lag`` responds to the 2-s window ``t`` (trap 9). Every reader names the file it read in its
errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
from nibabel import cifti2

from brainbench.data.sources.matfile import load_v5, mat_format, read_v73_array
from brainbench.errors import ConfigError, DataFormatError, MissingFileError, reading, require_extra

if TYPE_CHECKING:
    import av

TR_S = 2.0
TAIL_VOLUMES = 4
TEST_ID_OFFSET = 100_000
CORTEX_STRUCTURES = ("CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT")
CAPTION_COLUMNS = ("movie", "start_s", "end_s", "caption")
_FIX = "re-download the CC2017 release (Purdue PURR doi 10.4231/R7SF2TCW) or regenerate the world"


@dataclass(frozen=True, order=True)
class Movie:
    """One movie: a training segment (``seg``) or a test movie (``test``), 1-based number."""

    kind: Literal["seg", "test"]
    number: int

    @property
    def name(self) -> str:
        """``seg3`` / ``test2``, as in file names."""
        return f"{self.kind}{self.number}"

    @property
    def is_test(self) -> bool:
        """Whether this is a test movie."""
        return self.kind == "test"

    def stim_id(self, window: int) -> int:
        """``N * 1000 + t`` for ``segN``, ``100_000 + N * 1000 + t`` for ``testN``."""
        return (TEST_ID_OFFSET if self.is_test else 0) + self.number * 1000 + window


@dataclass(frozen=True)
class Cc2017Layout:
    """Every CC2017 raw path, under one root (the folder holding ``video_fmri_dataset/``)."""

    root: Path

    @property
    def dataset_dir(self) -> Path:
        """``video_fmri_dataset``."""
        return self.root / "video_fmri_dataset"

    def subject_dir(self, subject: int) -> Path:
        """``video_fmri_dataset/subject{s}``."""
        return self.dataset_dir / f"subject{subject}"

    def fmri_dir(self, subject: int) -> Path:
        """``subject{s}/fmri`` holding one folder per movie."""
        return self.subject_dir(subject) / "fmri"

    def run(self, subject: int, movie: Movie, repeat: int) -> Path:
        """``fmri/segN/cifti/segN_r_Atlas.dtseries.nii``."""
        return self.fmri_dir(subject) / movie.name / "cifti" / f"{movie.name}_{repeat}_Atlas.dtseries.nii"

    def training_mat(self, subject: int) -> Path:
        """Wen's ``training_fmri.mat``."""
        return self.subject_dir(subject) / "training_fmri.mat"

    def testing_mat(self, subject: int) -> Path:
        """Wen's ``testing_fmri.mat``."""
        return self.subject_dir(subject) / "testing_fmri.mat"

    @property
    def stimuli_dir(self) -> Path:
        """``video_fmri_dataset/stimuli``."""
        return self.dataset_dir / "stimuli"

    def movie_file(self, movie: Movie) -> Path:
        """``stimuli/segN.mp4`` / ``stimuli/testN.mp4``."""
        return self.stimuli_dir / f"{movie.name}.mp4"

    @property
    def captions(self) -> Path:
        """``stimuli/captions.tsv`` (optional brainbench extension)."""
        return self.stimuli_dir / "captions.tsv"

    def subjects_found(self) -> list[int]:
        """Subjects with a ``subject{s}`` folder."""
        if not self.dataset_dir.is_dir():
            return []
        found = [re.fullmatch(r"subject(\d+)", p.name) for p in self.dataset_dir.iterdir() if p.is_dir()]
        return sorted(int(m.group(1)) for m in found if m)


def check_subject(layout: Cc2017Layout, subject: int) -> None:
    """Raise unless ``video_fmri_dataset/subject{s}`` exists (ConfigError lists the subjects found)."""
    if not layout.dataset_dir.is_dir():
        raise MissingFileError(
            layout.dataset_dir,
            f"--root {layout.root} does not look like a CC2017 root; point it at the folder holding "
            "video_fmri_dataset/ (datasets.md §4.1), or run `brainbench world generate`",
        )
    if not layout.subject_dir(subject).is_dir():
        found = ", ".join(f"subject{s}" for s in layout.subjects_found()) or "none"
        raise ConfigError(
            f"unknown subject {subject}: no folder {layout.subject_dir(subject)}; subjects found: {found}"
        )


def discover_runs(layout: Cc2017Layout, subject: int) -> dict[Movie, list[Path]]:
    """Every movie's runs, repeats ``1..R`` in order; movies numbered ``1..n`` per kind.

    Raises:
        DataFormatError: naming the missing movie folder or run, when a movie number is skipped or a movie
            has fewer repeats than the others of its kind.
    """
    fmri = layout.fmri_dir(subject)
    runs: dict[Movie, list[Path]] = {}
    for kind in ("seg", "test"):
        numbers = sorted(
            int(m.group(1))
            for p in fmri.iterdir()
            if p.is_dir() and (m := re.fullmatch(kind + r"(\d+)", p.name))
        )
        repeats: dict[Movie, set[int]] = {}
        for expected, number in enumerate(numbers, start=1):
            movie = Movie(kind, expected)
            if number != expected:
                raise DataFormatError(fmri / movie.name, "movie folder missing (numbers skip it)", _FIX)
            pattern = re.compile(rf"{movie.name}_(\d+)_Atlas\.dtseries\.nii")
            folder = layout.run(subject, movie, 1).parent
            found = [pattern.fullmatch(p.name) for p in folder.iterdir()] if folder.is_dir() else []
            repeats[movie] = {int(m.group(1)) for m in found if m}
        n_repeats = max((max(r, default=0) for r in repeats.values()), default=0)
        for movie, have in repeats.items():
            for repeat in range(1, n_repeats + 1):
                if repeat not in have:
                    raise DataFormatError(
                        layout.run(subject, movie, repeat),
                        f"missing run: every {kind} movie needs {n_repeats} repeats, {movie.name} has "
                        f"{sorted(have)}",
                        _FIX,
                    )
            runs[movie] = [layout.run(subject, movie, r) for r in range(1, n_repeats + 1)]
    return runs


def cortex_columns(path: Path, axis: cifti2.BrainModelAxis) -> np.ndarray:
    """Grayordinate indices of the CortexLeft/CortexRight surface vertices, in CIFTI order (trap 8)."""
    keep = np.isin(axis.name, CORTEX_STRUCTURES) & axis.surface_mask
    if not keep.any():
        raise DataFormatError(path, "no CortexLeft/CortexRight surface vertices in the BrainModelAxis", _FIX)
    return np.flatnonzero(keep)


def read_run(
    path: Path, volumes_per_run: int, lag_trs: int
) -> tuple[np.ndarray, cifti2.BrainModelAxis, float]:
    """The kept window of one CIFTI run: volumes ``[start + lag, start + lag + V)``, cortex only.

    ``start = T - 4 - V`` (0-based; 1 for the real 245-volume runs, 2 for 246). The lag is applied here, once.

    Returns:
        ``(data (V, n_cortex) float32, grayordinate axis, series step in seconds)``.

    Raises:
        MissingFileError: the run does not exist.
        DataFormatError: not a CIFTI-2 dtseries, too short a run, or NaN/inf values.
    """
    if not path.is_file():
        raise MissingFileError(path, "every run of the CC2017 layout must exist (datasets.md §4.1)")
    try:
        img = nib.load(path)
        series, axis = img.header.get_axis(0), img.header.get_axis(1)
    except Exception as exc:  # nibabel raises many kinds on a damaged file
        raise DataFormatError(path, f"not a readable CIFTI-2 dtseries ({exc})", _FIX) from exc
    if not isinstance(series, cifti2.SeriesAxis) or not isinstance(axis, cifti2.BrainModelAxis):
        raise DataFormatError(
            path,
            f"axes are ({type(series).__name__}, {type(axis).__name__}), not (SeriesAxis, BrainModelAxis)",
            _FIX,
        )
    n_volumes = img.shape[0]
    start = n_volumes - TAIL_VOLUMES - volumes_per_run
    if start < 0 or start + lag_trs + volumes_per_run > n_volumes:
        raise DataFormatError(
            path,
            f"run has {n_volumes} volumes, too few for volumes_per_run + {TAIL_VOLUMES} = "
            f"{volumes_per_run + TAIL_VOLUMES} with the movie's last volume lagged by {lag_trs} TRs",
            f"pass the runs' volumes_per_run (real data: 240) and lag_trs <= {TAIL_VOLUMES}",
        )
    with reading(path, _FIX):
        window = np.asarray(img.dataobj[start + lag_trs : start + lag_trs + volumes_per_run], np.float32)
    data = window[:, cortex_columns(path, axis)]
    if not np.isfinite(data).all():
        raise DataFormatError(path, f"{int((~np.isfinite(data)).sum())} NaN/inf values in the cortex", _FIX)
    return data, axis, float(series.step)


def read_mat_fields(path: Path, struct: str, prefix: str) -> Iterator[tuple[int, np.ndarray]]:
    """Fields ``{prefix}1..{prefix}K`` of a MATLAB struct, as 3-D float32 arrays in MATLAB axis order.

    v5 files are read with scipy, v7.3 (HDF5) with h5py, whose reversed dims are turned back
    (datasets.md §5.2 trap 4); v7.3 fields are read one at a time. A trailing singleton dimension that
    MATLAB dropped is restored.

    Raises:
        MissingFileError: the file does not exist.
        DataFormatError: no such struct, field numbers that skip, or non-numeric fields.
    """
    fmt = mat_format(path)
    if fmt == "v5":
        node = load_v5(path).get(struct)
        if not isinstance(node, np.ndarray) or node.size != 1 or not hasattr(node.flat[0], "_fieldnames"):
            raise DataFormatError(path, f"no MATLAB struct '{struct}'", _FIX)
        record = node.flat[0]
        for number, name in _numbered(path, record._fieldnames, prefix):
            yield number, _as_3d(path, name, np.asarray(getattr(record, name)))
        return
    if fmt != "v7.3":
        raise DataFormatError(
            path, "plain HDF5, not a MATLAB v5 or v7.3 file", "use Wen's original .mat file"
        )
    with h5py.File(path, "r") as f:
        group = f.get(struct)
        if not isinstance(group, h5py.Group):
            raise DataFormatError(path, f"no MATLAB struct '{struct}'", _FIX)
        for number, name in _numbered(path, list(group.keys()), prefix):
            yield number, _as_3d(path, name, read_v73_array(f, f"{struct}/{name}"))


def _numbered(path: Path, names: list[str], prefix: str) -> list[tuple[int, str]]:
    """``(k, name)`` for fields ``{prefix}k``, checked to be ``1..K``."""
    found = sorted((int(m.group(1)), m.group(0)) for n in names if (m := re.fullmatch(rf"{prefix}(\d+)", n)))
    if [k for k, _ in found] != list(range(1, len(found) + 1)):
        raise DataFormatError(
            path, f"fields {prefix}1..{prefix}K expected, found {[n for _, n in found]}", _FIX
        )
    return found


def _as_3d(path: Path, name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "iuf" or array.ndim not in (2, 3):
        raise DataFormatError(
            path, f"field '{name}' is {array.dtype} {array.shape}, not a numeric 3-D array", _FIX
        )
    return (array[..., None] if array.ndim == 2 else array).astype(np.float32, copy=False)


def check_movie(path: Path, movie: Movie, volumes_per_run: int) -> None:
    """Raise unless the mp4 lasts ``2 * volumes_per_run`` s (container metadata; one frame of slack).

    Raises:
        MissingFileError: the mp4 does not exist.
        DataFormatError: too short (mismatched frame/fMRI counts), no video stream, or unreadable.
    """
    if not path.is_file():
        raise MissingFileError(path, "every movie needs stimuli/<name>.mp4 (datasets.md §4.1)")
    if movie.number >= 100:
        raise DataFormatError(path, "movie numbers >= 100 do not fit stim_id = N * 1000 + t", "renumber them")
    av = require_extra("av", "video", "reading CC2017 movies")
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            period = 1.0 / float(stream.average_rate or stream.guessed_rate or 30)
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (container.duration or 0) / av.time_base
    except av.error.FFmpegError as exc:
        raise DataFormatError(path, f"PyAV cannot read this movie ({exc})", _FIX) from exc
    need = TR_S * volumes_per_run
    if seconds and seconds + period < need:  # without metadata, sample_frames checks while decoding
        raise DataFormatError(
            path,
            f"mismatched frame/fMRI counts: the movie lasts {seconds:.2f} s but {volumes_per_run} volumes "
            f"of {TR_S:.0f} s need {need:.0f} s",
            "use the movie that belongs to these runs, or pass the right volumes_per_run",
        )


def _video_stream(path: Path, container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise DataFormatError(path, "no video stream", _FIX)
    return container.streams.video[0]


def iter_window_frames(
    path: Path, n_windows: int, fps: int, frame_size: int | None, windows_per_batch: int = 32
) -> Iterator[np.ndarray]:
    """Frames of 2-s windows: for window ``t``, the frames nearest to ``2t + (k + 0.5) / fps``, ``k < 2 fps``.

    The movie is decoded once, by timestamps (time 0 = the first frame), so any source frame rate works;
    only the chosen frames are converted (to RGB, square ``frame_size`` if given).

    Yields:
        ``(n_i, 2 * fps, H, W, 3)`` uint8 batches of at most ``windows_per_batch`` windows, in order.

    Raises:
        DataFormatError: the movie ends before the last window (mismatched frame/fMRI counts).
    """
    targets = (2.0 * np.arange(n_windows)[:, None] + (np.arange(2 * fps)[None, :] + 0.5) / fps).ravel()
    batch: list[np.ndarray] = []
    for frame in _nearest_frames(path, targets, frame_size):
        batch.append(frame)
        if len(batch) == windows_per_batch * 2 * fps:
            yield np.stack(batch).reshape(windows_per_batch, 2 * fps, *frame.shape)
            batch = []
    if batch:
        yield np.stack(batch).reshape(-1, 2 * fps, *batch[0].shape)


def sample_frames(path: Path, n_windows: int, fps: int, frame_size: int | None) -> np.ndarray:
    """All of :func:`iter_window_frames` as one ``(n_windows, 2 * fps, H, W, 3)`` uint8 array."""
    return np.concatenate(list(iter_window_frames(path, n_windows, fps, frame_size)))


def _nearest_frames(path: Path, targets: np.ndarray, frame_size: int | None) -> Iterator[np.ndarray]:
    """One RGB frame per target time (sorted, seconds): the decoded frame nearest to it."""
    size = {} if frame_size is None else {"width": frame_size, "height": frame_size, "interpolation": "AREA"}
    converted: tuple[av.VideoFrame | None, np.ndarray | None] = (None, None)

    def rgb(frame: av.VideoFrame) -> np.ndarray:
        nonlocal converted
        if converted[0] is not frame:  # a frame nearest to several targets is converted once
            converted = (frame, frame.to_ndarray(format="rgb24", **size))
        return converted[1]

    done, prev, period = 0, None, 0.0
    av = require_extra("av", "video", "decoding CC2017 movies")
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            stream.thread_type = "AUTO"
            period = 1.0 / float(stream.average_rate or stream.guessed_rate or 30)
            t0 = None
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.time is not None else index * period
                t0 = time if t0 is None else t0
                now = time - t0
                while done < len(targets) and targets[done] <= now:
                    use_prev = prev is not None and targets[done] - prev[0] <= now - targets[done]
                    yield rgb(prev[1] if use_prev else frame)
                    done += 1
                prev = (now, frame)
                if done == len(targets):
                    return
            while prev is not None and done < len(targets) and targets[done] < prev[0] + period:
                yield rgb(prev[1])  # the last frame lasts one period
                done += 1
    except av.error.FFmpegError as exc:
        raise DataFormatError(path, f"PyAV cannot decode this movie ({exc})", _FIX) from exc
    if done < len(targets):
        end = prev[0] + period if prev is not None else 0.0
        raise DataFormatError(
            path,
            f"mismatched frame/fMRI counts: the movie lasts {end:.2f} s but the last 2-s window ends at "
            f"{2.0 * np.ceil(targets[-1] / 2.0):.0f} s",
            "use the movie that belongs to these runs, or pass the right volumes_per_run",
        )


def clean_wen_zscores(values: np.ndarray, name: str, zero_std: dict[str, int]) -> np.ndarray:
    """Wen's ``(R, T, n)`` z-scores with NaN columns (a constant vertex: 0/0 in MATLAB) or all-zero ones -> 0.

    The count per repeat is added to ``zero_std`` under ``"{name}_r{r}"``.
    """
    bad = ~np.isfinite(values).all(axis=1) | (values == 0).all(axis=1)  # (R, n)
    for r, count in enumerate(bad.sum(axis=1), start=1):
        if count:
            zero_std[f"{name}_r{r}"] = int(count)
    return np.where(bad[:, None, :], np.float32(0.0), values)


def read_captions(layout: Cc2017Layout) -> pd.DataFrame | None:
    """``stimuli/captions.tsv`` (``movie, start_s, end_s, caption``), or ``None`` when there is none."""
    path = layout.captions
    if not path.is_file():
        return None
    with reading(path, _FIX):
        table = pd.read_csv(path, sep="\t", dtype={"movie": str, "caption": str}, keep_default_na=False)
    missing = [c for c in CAPTION_COLUMNS if c not in table.columns]
    if missing:
        raise DataFormatError(path, f"columns {missing} missing (has {list(table.columns)})", _FIX)
    try:
        table["start_s"] = table["start_s"].astype(float)
        table["end_s"] = table["end_s"].astype(float)
    except ValueError as exc:
        raise DataFormatError(path, f"start_s/end_s must be numbers ({exc})", _FIX) from exc
    return table


def window_captions(table: pd.DataFrame | None, movie: Movie, n_windows: int) -> list[list[str]]:
    """Per 2-s window ``[2t, 2t + 2)``, the captions whose ``[start_s, end_s)`` overlaps it (file order)."""
    if table is None:
        return [[] for _ in range(n_windows)]
    rows = table[table["movie"] == movie.name]
    starts, ends, texts = rows["start_s"].to_numpy(), rows["end_s"].to_numpy(), rows["caption"].tolist()
    captions = []
    for t in range(n_windows):
        hit = (starts < TR_S * (t + 1)) & (ends > TR_S * t)
        captions.append([texts[i] for i in np.flatnonzero(hit)])
    return captions
