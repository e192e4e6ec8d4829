"""Write a seeded, kilobyte-sized copy of the CC2017 raw layout (datasets.md §4.1, §5.1).

Written with nibabel.cifti2, PyAV, pandas, scipy.io and hdf5storage directly, independently of brainbench.

- CIFTI-2 dtseries ``(time, grayordinates)``: a ``SeriesAxis`` (step 2 s) and a ``BrainModelAxis`` of
  10 CortexLeft + 10 CortexRight vertices (32-vertex meshes), then 3 subcortical voxels (``from_mask``);
- runs of ``volumes_per_run + 5`` volumes (training movies and test1) and ``+ 6`` (test2...), the movie
  starting at volume ``T - 4 - volumes_per_run``;
- a planted signal: each movie has one white-noise value per 2-s window, and volume ``start + t + lag_trs``
  of the REPRODUCIBLE cortex vertices (and of every subcortical voxel, which the cortex cut must drop)
  carries ``weight * signal[t]``; the other vertices carry noise only, one vertex is constant (zero std);
- every run adds an offset and a cubic drift shared by both repeats of a movie (only detrending stops the
  drift from looking reproducible);
- mp4 movies (libx264, ``size`` px, ``fps`` fps, ``2 * volumes_per_run + 1`` s): frame ``i`` is flat with red
  ``(37 i) % 256`` and a green level per movie, so a decoded frame tells its index;
- ``stimuli/captions.tsv``: one caption per 3-s shot.

:func:`write_wen_mat` adds Wen's preprocessed ``training_fmri.mat`` (v5) and ``testing_fmri.mat`` (v7.3),
computed here with numpy (trim ``[start, start + V)``, order-4 polynomial detrend, z-score with ddof 1;
a constant vertex becomes NaN as in MATLAB).

The defaults (2 + 1 movies, 6 volumes per run) are a smoke-test size: an order-4 detrend of 6 volumes leaves
one degree of freedom, so selection and lag tests use ``n_train >= 4`` and ``volumes_per_run`` of about 30.

Run ``python tests/data/cc2017/make_fixture.py OUT`` to write it and print its checksums.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import av
import hdf5storage
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io
from nibabel import cifti2

MESH_VERTICES = 32
LEFT_VERTICES = np.array([0, 2, 3, 5, 8, 11, 13, 17, 21, 30])
RIGHT_VERTICES = np.array([1, 4, 6, 7, 9, 15, 19, 22, 26, 31])
N_CORTEX = len(LEFT_VERTICES) + len(RIGHT_VERTICES)
N_SUBCORTICAL = 3
REPRODUCIBLE = np.array([0, 3, 4, 9, 10, 13, 16])  # indices into the cortex grayordinates
ZERO_STD_VERTEX = 19
SIGNAL_WEIGHT = 2.0
SUBCORTICAL_WEIGHT = 4.0
SHOT_SECONDS = 3.0


def run_length(movie: str, volumes_per_run: int) -> int:
    """245 / 246 volumes for real data: ``+ 5`` for training movies and test1, ``+ 6`` for other tests."""
    return volumes_per_run + (5 if movie.startswith("seg") or movie == "test1" else 6)


def _brain_models() -> cifti2.BrainModelAxis:
    left = cifti2.BrainModelAxis.from_surface(LEFT_VERTICES, MESH_VERTICES, "CortexLeft")
    right = cifti2.BrainModelAxis.from_surface(RIGHT_VERTICES, MESH_VERTICES, "CortexRight")
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[1, 1, 0] = mask[1, 1, 1] = mask[2, 0, 1] = True
    return left + right + cifti2.BrainModelAxis.from_mask(mask, name="ThalamusLeft", affine=np.eye(4))


def _run(rng, signal, drift, n_volumes, volumes_per_run, lag_trs) -> np.ndarray:
    """One run ``(T, grayordinates)`` float32."""
    n_gray = N_CORTEX + N_SUBCORTICAL
    values = rng.normal(size=(n_volumes, n_gray)) + 1000.0 + rng.normal(0, 50, n_gray)
    values += drift[:n_volumes, None]
    first = n_volumes - 4 - volumes_per_run + lag_trs
    window = slice(first, first + volumes_per_run)
    values[window, REPRODUCIBLE] += SIGNAL_WEIGHT * signal[:, None]
    values[window, N_CORTEX:] += SUBCORTICAL_WEIGHT * signal[:, None]
    values[:, ZERO_STD_VERTEX] = 500.0
    return values.astype(np.float32)


def _write_dtseries(path: Path, values: np.ndarray, models: cifti2.BrainModelAxis) -> None:
    series = cifti2.SeriesAxis(start=0.0, step=2.0, size=len(values), unit="SECOND")
    img = cifti2.Cifti2Image(values, header=cifti2.Cifti2Header.from_axes((series, models)))
    img.nifti_header.set_intent("ConnDenseSeries")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def frame_red(index: int) -> int:
    """Red level of movie frame ``index``."""
    return (37 * index) % 256


def write_movie(path: Path, seconds: float, fps: int, size: int, green: int) -> int:
    """An mp4 whose frame ``i`` is flat ``(frame_red(i), green, 60)``; returns the frame count."""
    n_frames = int(round(seconds * fps))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(n_frames):
            frame = np.empty((size, size, 3), dtype=np.uint8)
            frame[...] = (frame_red(index), green, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n_frames


def write_cc2017_fixture(
    root: Path,
    subject: int = 1,
    *,
    n_train: int = 2,
    n_test: int = 1,
    volumes_per_run: int = 6,
    train_repeats: int = 2,
    test_repeats: int = 3,
    lag_trs: int = 2,
    fps: int = 8,
    size: int = 32,
    movie_seconds: float | None = None,
    captions: bool = True,
    seed: int = 0,
) -> dict:
    """Write the layout under ``root/video_fmri_dataset``; return what the tests compare against."""
    rng = np.random.default_rng(seed + subject)
    dataset = Path(root) / "video_fmri_dataset"
    models = _brain_models()
    movies = [f"seg{n}" for n in range(1, n_train + 1)] + [f"test{n}" for n in range(1, n_test + 1)]
    seconds = 2.0 * volumes_per_run + 1.0 if movie_seconds is None else movie_seconds
    info: dict = {
        "root": Path(root),
        "subject": subject,
        "volumes_per_run": volumes_per_run,
        "lag_trs": lag_trs,
    }
    info |= {
        "movies": movies,
        "signals": {},
        "runs": {},
        "n_frames": {},
        "green": {},
        "fps": fps,
        "size": size,
    }
    for index, movie in enumerate(movies):
        signal = rng.normal(size=volumes_per_run)
        n_volumes = run_length(movie, volumes_per_run)
        x = np.linspace(-1.0, 1.0, n_volumes)
        drift = 20.0 * (x - 0.5 * x**2 + 0.8 * x**3)  # shared by every repeat of this movie
        repeats = train_repeats if movie.startswith("seg") else test_repeats
        for repeat in range(1, repeats + 1):
            values = _run(rng, signal, drift, n_volumes, volumes_per_run, lag_trs)
            path = dataset / f"subject{subject}/fmri/{movie}/cifti/{movie}_{repeat}_Atlas.dtseries.nii"
            _write_dtseries(path, values, models)
            info["runs"][movie, repeat] = values
        info["signals"][movie] = signal
        info["green"][movie] = 30 + 40 * index
        mp4 = dataset / "stimuli" / f"{movie}.mp4"
        info["n_frames"][movie] = write_movie(mp4, seconds, fps, size, info["green"][movie])
    if captions:
        rows = [
            (movie, SHOT_SECONDS * j, SHOT_SECONDS * (j + 1), f"{movie} shot {j}")
            for movie in movies
            for j in range(int(np.ceil(seconds / SHOT_SECONDS)))
        ]
        table = pd.DataFrame(rows, columns=["movie", "start_s", "end_s", "caption"])
        table.to_csv(dataset / "stimuli" / "captions.tsv", sep="\t", index=False)
    return info


def wen_preprocess(values: np.ndarray, volumes_per_run: int) -> np.ndarray:
    """Wen's MATLAB on one run: cortex, ``st:end-4``, order-4 detrend, z-score (ddof 1): ``(n_cortex, V)``."""
    start = len(values) - 4 - volumes_per_run
    data = values[start : start + volumes_per_run, :N_CORTEX].astype(np.float64)
    t = np.arange(1, volumes_per_run + 1, dtype=np.float64)
    basis = np.stack([(t / volumes_per_run) ** k for k in range(5)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, data, rcond=None)
    data = data - basis @ coef
    data = data - data.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = data / data.std(axis=0, ddof=1)
    z[:, ZERO_STD_VERTEX] = np.nan  # MATLAB's 0/0 for the constant vertex
    return z.T.astype(np.float32)


def write_wen_mat(info: dict) -> tuple[Path, Path]:
    """Wen's ``training_fmri.mat`` (v5: ``fmri.data1``, ``fmri.data2``, each ``(n, V, n_train)``) and
    ``testing_fmri.mat`` (v7.3: ``fmritest.testN``, each ``(n, V, repeats)``) for the fixture's runs."""
    subject_dir = info["root"] / "video_fmri_dataset" / f"subject{info['subject']}"
    volumes = info["volumes_per_run"]
    train = [m for m in info["movies"] if m.startswith("seg")]
    test = [m for m in info["movies"] if m.startswith("test")]
    fmri = {}
    for repeat in (1, 2):
        fmri[f"data{repeat}"] = np.stack(
            [wen_preprocess(info["runs"][m, repeat], volumes) for m in train], axis=2
        )
    scipy.io.savemat(subject_dir / "training_fmri.mat", {"fmri": fmri})
    fmritest = {}
    for movie in test:
        repeats = sorted(r for m, r in info["runs"] if m == movie)
        fmritest[movie] = np.stack([wen_preprocess(info["runs"][movie, r], volumes) for r in repeats], axis=2)
    hdf5storage.savemat(
        str(subject_dir / "testing_fmri.mat"), {"fmritest": fmritest}, format="7.3", matlab_compatible=True
    )
    return subject_dir / "training_fmri.mat", subject_dir / "testing_fmri.mat"


def main(out: str) -> None:
    info = write_cc2017_fixture(Path(out), n_train=4, n_test=2, volumes_per_run=30)
    write_wen_mat(info)
    for path in sorted(Path(out).rglob("*")):
        if path.is_file():
            print(hashlib.sha256(path.read_bytes()).hexdigest()[:16], path.relative_to(out))


if __name__ == "__main__":
    main(sys.argv[1])
