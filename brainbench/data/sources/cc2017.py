"""CC2017 adapter: Wen et al. video-fMRI raw layout -> webdataset shards, a clip store and a manifest.

CC2017 (Wen, Shi, Zhang, Lu, Cao & Liu 2018, "Neural encoding and decoding with deep learning for dynamic
natural vision", Cerebral Cortex, doi:10.1093/cercor/bhx268; data: Purdue PURR
doi:10.4231/R7SF2TCW): 3 subjects watched 18 training movies of 8 min twice and 5 test movies 10 times at
TR 2 s; CIFTI dense time series on the HCP 32k_fs_LR surface.

What :func:`prepare_cc2017` does (datasets.md §4.1, §4.4; the traps of §5.2 in brackets):

- per run, keep the CortexLeft/CortexRight grayordinates of the ``BrainModelAxis`` [8] and the volumes
  ``[start + lag, start + lag + V)`` with ``start = T - 4 - V`` [3]: the hemodynamic lag (default 2 TRs = 4 s)
  is applied here, once [9]; then remove a 4th-order polynomial trend and z-score per vertex (std with
  ddof 1, as Wen's MATLAB);
- select reproducible vertices on the training movies only (all of them, val movies included, as NeuroClips;
  never test movies): per movie Pearson r between repeats 1 and 2, Fisher z, a one-sided one-sample t-test
  across movies, Bonferroni over vertices at ``p_value`` (NeuroClips: 0.05 -> 13447 / 14828 / 9114 vertices);
- train/val samples are single trials (every repeat of every window); val is a seeded ``val_fraction`` of the
  training movies (none with fewer than 3 movies); test samples keep all repeats and their mean [10];
- frames: each mp4 is decoded once; window ``t`` gets ``2 * fps`` frames at ``2t + (k + 0.5) / fps`` s
  (nearest frame), optionally resized to a square ``frame_size`` [17]; the store keeps each window once, with
  ``images`` = its ``keyframe``.

Wen's preprocessed ``training_fmri.mat`` / ``testing_fmri.mat`` (already trimmed, detrended and z-scored)
are an alternative source (``source="mat"``): the lag is then applied by shifting, window ``t`` pairs with
trimmed volume ``t + lag``, and the last ``lag`` windows of every movie are dropped.

Example:
    >>> manifest = prepare_cc2017(Path("/data/cc2017"), 1, Path("out/cc2017.subj01"))  # doctest: +SKIP
    >>> manifest.split_name, manifest.n_voxels  # doctest: +SKIP
    ('cc2017-test1200x10', 13447)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
from tqdm.auto import tqdm

from brainbench.data.manifest import MANIFEST_NAME, Manifest
from brainbench.data.shards import Sample, SplitWriter, sha256_file
from brainbench.data.sources import cc2017_readers as raw
from brainbench.data.sources.cc2017_readers import Cc2017Layout, Movie
from brainbench.data.sources.common import (
    adapter_source,
    atomic_output,
    choose_val_ids,
    close_writers,
    existing_manifest,
    split_writers,
)
from brainbench.data.stimulus_store import write_stimulus_store
from brainbench.errors import ConfigError, DataFormatError, MissingFileError

ADAPTER_VERSION = "1"
VOXEL_ORDER = "cortex grayordinates in CIFTI order, reproducible subset"
STIMULUS_STORE_NAME = "stimuli.hdf5"
DETREND_ORDER = 4
MIN_MOVIES_FOR_VAL = 3
_ZERO_STD_REL = 1e-6
_ONE_SUBJECT = "use the runs of one subject, from one release"
_ORIGINAL = "use Wen's original training_fmri.mat / testing_fmri.mat"
log = logging.getLogger(__name__)

__all__ = ["prepare_cc2017", "detrend_zscore", "repeat_correlation", "select_reproducible"]


def detrend_zscore(run: np.ndarray, order: int = DETREND_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """Remove a polynomial trend per vertex (least squares, as Wen's ``amri_sig_detrend``), then z-score.

    Args:
        run: ``(T, n)`` one run's kept volumes.
        order: polynomial order (Wen: 4).

    Returns:
        ``(z (T, n) float32, zero_std (n,) bool)``; vertices with (numerically) zero std are set to 0.
    """
    values = run.astype(np.float64)
    basis = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, len(values)), order)
    q, _ = np.linalg.qr(basis)
    residual = values - q @ (q.T @ values)
    residual -= residual.mean(axis=0)
    std = residual.std(axis=0, ddof=1)
    zero = std <= _ZERO_STD_REL * np.abs(values).max(axis=0, initial=0.0)
    z = np.divide(residual, std, out=np.zeros_like(residual), where=~zero)
    return z.astype(np.float32), zero


def repeat_correlation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pearson r per vertex between two ``(T, n)`` repeats; 0 where either is constant."""
    a = first - first.mean(axis=0, dtype=np.float64)
    b = second - second.mean(axis=0, dtype=np.float64)
    scale = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    return np.divide((a * b).sum(axis=0), scale, out=np.zeros(a.shape[1]), where=scale > 0)


def select_reproducible(r_per_movie: np.ndarray, p_value: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Vertices whose repeat correlation is reliably positive across training movies (Wen 2018; NeuroClips).

    Fisher z of ``r``, then ``scipy.stats.ttest_1samp(z, 0, alternative="greater")`` across movies, kept
    where ``p * n_vertices < p_value`` (Bonferroni).

    Args:
        r_per_movie: ``(n_movies, n_vertices)`` Pearson r between repeats 1 and 2.
        p_value: family-wise error rate.

    Returns:
        ``(indices of kept vertices, the manifest's voxel_selection block without the indices)``.
    """
    n_movies, n_vertices = r_per_movie.shape
    fisher = np.arctanh(np.clip(r_per_movie, -1.0 + 1e-7, 1.0 - 1e-7))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant vertices give NaN, never kept
        p = scipy.stats.ttest_1samp(fisher, 0.0, axis=0, alternative="greater").pvalue
    keep = np.flatnonzero(np.nan_to_num(p, nan=1.0) * n_vertices < p_value)
    info = {
        "test": "Pearson r(repeat 1, repeat 2) per vertex and training movie, Fisher z, one-sample t-test "
        "across movies (alternative 'greater'), Bonferroni over vertices",
        "p_value": p_value,
        "n_movies": n_movies,
        "n_cortex": n_vertices,
        "n_selected": len(keep),
    }
    return keep, info


@dataclass
class _Responses:
    """What either fMRI source hands to the writers: selected vertices only."""

    train: dict[Movie, np.ndarray]  # (R, W, k) float16
    test: dict[Movie, np.ndarray]  # (R, W, k) float32
    n_windows: int
    selection: dict[str, Any]
    zero_std: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def prepare_cc2017(
    root: Path,
    subject: int,
    out: Path,
    *,
    lag_trs: int = 2,
    volumes_per_run: int = 240,
    fps: int = 3,
    frame_size: int | None = None,
    keyframe: int = 2,
    p_value: float = 0.05,
    val_fraction: float = 0.05,
    samples_per_shard: int = 1000,
    source: str = "auto",
    dataset: str = "cc2017",
    dataset_version: str = "cc2017-wen2018",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Turn one CC2017 subject (real or embedded-world) into shards, a clip store and a manifest.

    The result is written into a temporary sibling of ``out`` and renamed into place at the end, so a failed
    run leaves no ``out``. Re-running with identical options returns the existing manifest.

    Args:
        root: the folder holding ``video_fmri_dataset/``.
        subject: 1-based subject number.
        out: output directory.
        lag_trs: hemodynamic lag in TRs (2 = 4 s): volume ``start + t + lag`` pairs with window ``t``.
        volumes_per_run: movie volumes per run (real data: 240 = 8 min).
        fps: frames per second sampled from the movies (``2 * fps`` frames per sample).
        frame_size: resize frames to ``frame_size`` x ``frame_size`` (default: the movie's size).
        keyframe: the frame of each window stored as its ``images`` row (NeuroClips: 2).
        p_value: Bonferroni-corrected threshold of the voxel selection.
        val_fraction: fraction of training movies whose samples form the val split.
        samples_per_shard: maximum samples per tar shard.
        source: ``"cifti"`` (the dtseries runs), ``"mat"`` (Wen's preprocessed ``.mat`` files) or
            ``"auto"`` (cifti when ``subject{s}/fmri`` exists).
        dataset: dataset id written to the manifest (``"cc2017"``, ``"world-cc2017"``).
        dataset_version: version string written to the manifest.
        seed: seed of the val movie choice.
        progress: show progress bars over movies.
        overwrite: replace an existing, different ``out``.

    Returns:
        The manifest (also saved as ``out/manifest.json``).

    Raises:
        MissingFileError: a raw file is missing (names the expected path).
        ConfigError: unknown subject, bad options, too few training movies or repeats, an existing
            different ``out``.
        DataFormatError: malformed raw data (missing run, short run or movie, differing grayordinates, ...).
    """
    root, out = Path(root), Path(out)
    options = {"subject": subject, "lag_trs": lag_trs, "volumes_per_run": volumes_per_run, "fps": fps}
    options |= {"frame_size": frame_size, "keyframe": keyframe, "p_value": p_value, "source": source}
    options |= {"val_fraction": val_fraction, "seed": seed, "samples_per_shard": samples_per_shard}
    options |= {"dataset": dataset, "dataset_version": dataset_version}
    _check_options(options)
    adapter = adapter_source(root, "brainbench.data.sources.cc2017", ADAPTER_VERSION, options)
    existing = existing_manifest(out, adapter, overwrite)
    if existing is not None:
        return existing
    layout = Cc2017Layout(root)
    raw.check_subject(layout, subject)
    kind = _resolve_source(layout, subject, source)
    if kind == "cifti":
        responses = _cifti_responses(layout, subject, options, progress)
    else:
        responses = _mat_responses(layout, subject, options, progress)
    with atomic_output(out) as tmp:
        manifest = _write_output(tmp, layout, responses, adapter, progress)
    return manifest


def _check_options(options: dict[str, Any]) -> None:
    """Raise ConfigError on an option outside its range."""
    fps, volumes, frame_size = options["fps"], options["volumes_per_run"], options["frame_size"]
    rules = [
        ("subject", options["subject"] >= 1, ">= 1"),
        ("source", options["source"] in ("auto", "cifti", "mat"), "'auto', 'cifti' or 'mat'"),
        ("volumes_per_run", DETREND_ORDER + 1 < volumes < 1000, f"in [{DETREND_ORDER + 2}, 999]"),
        ("lag_trs", 0 <= options["lag_trs"] < volumes, "in [0, volumes_per_run)"),
        ("fps", fps >= 1, ">= 1"),
        ("keyframe", 0 <= options["keyframe"] < 2 * fps, f"in [0, {2 * fps}) (2 * fps frames per sample)"),
        ("frame_size", frame_size is None or frame_size >= 1, "None or >= 1"),
        ("p_value", 0.0 < options["p_value"] <= 1.0, "in (0, 1]"),
        ("val_fraction", 0.0 <= options["val_fraction"] < 1.0, "in [0, 1)"),
    ]
    for name, ok, allowed in rules:
        if not ok:
            raise ConfigError(f"{name} must be {allowed}, got {options[name]!r}")


def _resolve_source(layout: Cc2017Layout, subject: int, source: str) -> str:
    """``"cifti"`` or ``"mat"``; raise MissingFileError when the chosen source's files are absent."""
    has_cifti = layout.fmri_dir(subject).is_dir()
    kind = ("cifti" if has_cifti else "mat") if source == "auto" else source
    if kind == "cifti" and not has_cifti:
        raise MissingFileError(
            layout.fmri_dir(subject),
            "the CIFTI runs live in subject{s}/fmri/<movie>/cifti/ (datasets.md §4.1); or pass source='mat'",
        )
    for path in (layout.training_mat(subject), layout.testing_mat(subject)) if kind == "mat" else ():
        if not path.is_file():
            raise MissingFileError(
                path, "source 'mat' reads Wen's training_fmri.mat and testing_fmri.mat; or use the CIFTI runs"
            )
    return kind


def _check_movies(layout: Cc2017Layout, movies: list[Movie], volumes_per_run: int) -> None:
    for movie in movies:
        raw.check_movie(layout.movie_file(movie), movie, volumes_per_run)


def _cifti_responses(
    layout: Cc2017Layout, subject: int, options: dict[str, Any], progress: bool
) -> _Responses:
    """Read, trim (with the lag), detrend and z-score every run; select vertices on the training runs."""
    runs = raw.discover_runs(layout, subject)
    train_movies = [m for m in runs if not m.is_test]
    test_movies = [m for m in runs if m.is_test]
    where = layout.fmri_dir(subject)
    _require_design(where, len(train_movies), len(runs[train_movies[0]]) if train_movies else 0)
    if not test_movies or not runs[test_movies[0]]:
        raise DataFormatError(where, "no test{N}/ movie runs", "check --root and the subject")
    _check_movies(layout, train_movies + test_movies, options["volumes_per_run"])
    first: dict[str, Any] = {}
    zero_std: dict[str, int] = {}
    steps: set[float] = set()

    def load(movie: Movie, repeat: int, path: Path) -> np.ndarray:
        data, axis, step = raw.read_run(path, options["volumes_per_run"], options["lag_trs"])
        if not first:
            first.update(path=path, axis=axis)
        elif axis != first["axis"]:
            raise DataFormatError(path, f"grayordinate axis differs from {first['path']}'s", _ONE_SUBJECT)
        steps.add(step)
        z, zero = detrend_zscore(data)
        if zero.any():
            zero_std[f"{movie.name}_r{repeat}"] = int(zero.sum())
        return z

    full: dict[Movie, np.ndarray] = {}
    r_rows = []
    for movie in tqdm(train_movies, desc=f"cc2017 subject{subject} train", disable=not progress):
        repeats = [load(movie, r, path) for r, path in enumerate(runs[movie], start=1)]
        r_rows.append(repeat_correlation(repeats[0], repeats[1]))
        full[movie] = np.stack(repeats).astype(np.float16)  # what the shards store
    keep, selection = select_reproducible(np.stack(r_rows), options["p_value"])
    _require_selection(keep, options["p_value"], where)
    train = {movie: np.ascontiguousarray(values[:, :, keep]) for movie, values in full.items()}
    del full
    test = {}
    for movie in tqdm(test_movies, desc=f"cc2017 subject{subject} test", disable=not progress):
        test[movie] = np.stack([load(movie, r, path)[:, keep] for r, path in enumerate(runs[movie], start=1)])
    if steps != {raw.TR_S}:
        log.warning("CIFTI SeriesAxis steps %s differ from the 2-s TR the windows assume", sorted(steps))
    details = {
        "fmri_source": "cifti",
        "n_grayordinates": len(first["axis"]),
        "n_cortex": selection["n_cortex"],
    }
    details |= {"series_step_s": sorted(steps)}
    selection["indices"] = keep.tolist()
    return _Responses(train, test, options["volumes_per_run"], selection, zero_std, details)


def _require_design(where: Path, n_train: int, n_repeats: int) -> None:
    if n_train < 2 or n_repeats < 2:
        raise ConfigError(
            f"{where}: voxel selection needs >= 2 training movies with >= 2 repeats, found {n_train} movies "
            f"with {n_repeats} repeats"
        )


def _require_selection(keep: np.ndarray, p_value: float, where: Path) -> None:
    if len(keep) == 0:
        raise ConfigError(f"{where}: no vertex is reproducible at Bonferroni p < {p_value}; raise p_value")


def _mat_responses(layout: Cc2017Layout, subject: int, options: dict[str, Any], progress: bool) -> _Responses:
    """Wen's preprocessed runs: select on all ``V`` volumes, then shift by the lag (``lag`` windows lost)."""
    volumes, lag = options["volumes_per_run"], options["lag_trs"]
    train_path, test_path = layout.training_mat(subject), layout.testing_mat(subject)
    repeats = [values for _, values in raw.read_mat_fields(train_path, "fmri", "data")]
    shape = repeats[0].shape if repeats else (0, 0, 0)
    if any(values.shape != shape for values in repeats):
        raise DataFormatError(
            train_path, f"fmri.dataR shapes differ: {[v.shape for v in repeats]}", _ORIGINAL
        )
    n_cortex, n_volumes, n_movies = shape
    if n_volumes != volumes:
        raise DataFormatError(
            train_path, f"runs hold {n_volumes} volumes", f"pass volumes_per_run={n_volumes}"
        )
    _require_design(train_path, n_movies, len(repeats))
    train_movies = [Movie("seg", n) for n in range(1, n_movies + 1)]
    _check_movies(layout, train_movies, volumes)
    zero_std: dict[str, int] = {}
    full, r_rows = {}, []
    for m, movie in enumerate(train_movies):
        values = raw.clean_wen_zscores(np.stack([rep[:, :, m].T for rep in repeats]), movie.name, zero_std)
        r_rows.append(repeat_correlation(values[0], values[1]))
        full[movie] = values.astype(np.float16)
    del repeats
    keep, selection = select_reproducible(np.stack(r_rows), options["p_value"])
    _require_selection(keep, options["p_value"], train_path)
    train = {movie: np.ascontiguousarray(values[:, lag:, keep]) for movie, values in full.items()}
    del full
    test = {}
    fields = raw.read_mat_fields(test_path, "fmritest", "test")
    for number, values in tqdm(fields, desc=f"cc2017 subject{subject} test", disable=not progress):
        movie = Movie("test", number)
        if values.shape[:2] != (n_cortex, volumes):
            raise DataFormatError(test_path, f"fmritest.{movie.name} is {values.shape}", _ONE_SUBJECT)
        test[movie] = raw.clean_wen_zscores(values.transpose(2, 1, 0), movie.name, zero_std)[:, lag:, keep]
    if not test or len({values.shape[0] for values in test.values()}) != 1:
        raise DataFormatError(test_path, "needs test movies with equal repeat counts", _ORIGINAL)
    _check_movies(layout, list(test), volumes)
    details = {"fmri_source": "mat", "n_cortex": n_cortex, "files": [train_path.name, test_path.name]}
    selection["indices"] = keep.tolist()
    return _Responses(train, test, volumes - lag, selection, zero_std, details)


def _val_movies(movies: list[Movie], val_fraction: float, seed: int) -> set[Movie]:
    """A seeded ``val_fraction`` of the training movies (at least one when positive), none below 3 movies."""
    if len(movies) < MIN_MOVIES_FOR_VAL or val_fraction == 0:
        return set()
    chosen = choose_val_ids([m.number for m in movies], val_fraction, seed)
    if len(chosen) >= len(movies):
        raise ConfigError(f"val_fraction={val_fraction} leaves no training movie of {len(movies)}")
    return {m for m in movies if m.number in chosen}


def _write_samples(
    writers: dict[str, SplitWriter], subject: int, responses: _Responses, val: set[Movie]
) -> None:
    """Train/val: every repeat of every window (single trials). Test: one sample per window, all repeats."""
    prefix = f"subj{subject:02d}"
    for movie, values in responses.train.items():
        split = "val" if movie in val else "train"
        for r, run in enumerate(values, start=1):
            for t, voxels in enumerate(run):
                key = f"{prefix}_seg{movie.number:02d}_r{r}_t{t:04d}"
                writers[split].add(Sample(key, subject, split, movie.stim_id(t), voxels, None, r, t, 1))
    for movie, values in responses.test.items():
        for t in range(values.shape[1]):
            stack = values[:, t]  # (R, k) float32
            mean, key = stack.mean(axis=0).astype(np.float16), f"{prefix}_{movie.name}_t{t:04d}"
            sample = Sample(
                key, subject, "test", movie.stim_id(t), mean, stack.astype(np.float16), 1, t, len(stack)
            )
            writers["test"].add(sample)


def _write_store(
    path: Path, layout: Cc2017Layout, movies: list[Movie], n_windows: int, options: dict, progress: bool
) -> None:
    """The clip store: every window once, its ``2 * fps`` frames, keyframe images and captions."""
    table = raw.read_captions(layout)
    stim_ids = np.asarray([movie.stim_id(t) for movie in movies for t in range(n_windows)], dtype=np.int64)
    captions = [c for movie in movies for c in raw.window_captions(table, movie, n_windows)]

    def batches() -> Iterator[np.ndarray]:
        shape = None
        for movie in tqdm(movies, desc="cc2017 movies", unit="movie", disable=not progress):
            mp4 = layout.movie_file(movie)
            for frames in raw.iter_window_frames(mp4, n_windows, options["fps"], options["frame_size"]):
                if shape is not None and frames.shape[2:] != shape:
                    problem = f"frames are {frames.shape[2:4]}, the first movie's {shape[:2]}"
                    raise DataFormatError(mp4, problem, "pass frame_size to resize every movie alike")
                shape = frames.shape[2:]
                yield frames

    categories: list[list[str]] = [[] for _ in stim_ids]
    write_stimulus_store(
        path, stim_ids, None, captions, categories, frames=batches(), keyframe=options["keyframe"]
    )


def _write_output(
    tmp: Path, layout: Cc2017Layout, responses: _Responses, adapter: dict[str, Any], progress: bool
) -> Manifest:
    options = adapter["options"]
    train_movies, test_movies = sorted(responses.train), sorted(responses.test)
    val = _val_movies(train_movies, options["val_fraction"], options["seed"])
    with split_writers(tmp, ("train", "val", "test"), options["samples_per_shard"]) as writers:
        _write_samples(writers, options["subject"], responses, val)
        splits = close_writers(writers)
    store_path = tmp / STIMULUS_STORE_NAME
    movies = train_movies + test_movies
    _write_store(store_path, layout, movies, responses.n_windows, options, progress)
    n_voxels = int(responses.selection["n_selected"])
    n_test_repeats = next(iter(responses.test.values())).shape[0]
    lag, fps = options["lag_trs"], options["fps"]
    shifted = responses.details["fmri_source"] == "mat"
    manifest = Manifest(
        dataset=options["dataset"],
        dataset_version=options["dataset_version"],
        subject=options["subject"],
        n_voxels=n_voxels,
        voxel_order=VOXEL_ORDER,
        voxel_ijk=[],
        rois={"cc2017/selected": list(range(n_voxels))},
        normalisation={
            "detrend": f"order-{DETREND_ORDER} polynomial per vertex per run, least squares (Wen)",
            "zscore": "per vertex per run over the kept volumes, std with ddof 1 (MATLAB std); zero-std -> 0",
            "computed_by": "Wen's MATLAB (training_fmri.mat, testing_fmri.mat)"
            if shifted
            else "this adapter",
            "test": "each repeat detrended and z-scored on its own, then averaged; all repeats kept",
            "dtype": "float16",
            "zero_std_vertices": responses.zero_std,
        },
        split_name=f"cc2017-test{len(test_movies) * responses.n_windows}x{n_test_repeats}",
        splits=splits,
        stimulus_store={
            "path": STIMULUS_STORE_NAME,
            "sha256": sha256_file(store_path),
            "n_stimuli": len(movies) * responses.n_windows,
            "has_categories": False,
            "has_frames": True,
        },
        source={
            **adapter,
            **responses.details,
            "voxel_selection": responses.selection,
            "movies": {
                "train": [m.name for m in train_movies if m not in val],
                "val": [m.name for m in sorted(val)],
                "test": [m.name for m in test_movies],
            },
            "sample_meta": "session = repeat number (1 for test samples), trial = window index t",
        },
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        timing={
            "tr_s": raw.TR_S,
            "lag_trs": lag,
            "lag_s": raw.TR_S * lag,
            "fps": fps,
            "frames_per_sample": 2 * fps,
            "volumes_per_run": options["volumes_per_run"],
            "keyframe": options["keyframe"],
            "windows_per_movie": responses.n_windows,
            "frame_times_s": "2t + (k + 0.5) / fps for k < 2 * fps, nearest decoded frame",
            "lag_applied": (
                "shift: window t pairs with volume t + lag of Wen's trimmed runs; the last lag windows of "
                "each movie are dropped"
                if shifted
                else "trim: window t pairs with volume start + lag + t, start = T - 4 - volumes_per_run"
            ),
        },
    )
    manifest.save(tmp / MANIFEST_NAME)
    return manifest
