"""The embedded world's video-fMRI experiment in the real CC2017 raw layout (dataset ``world-cc2017``).

``generate_world_cc2017(root, "small", subjects=[1])`` renders the movies (:mod:`brainbench.world.video`),
simulates the subject watching them and writes it all where a real CC2017 copy keeps it
(:mod:`brainbench.world.cc2017_writer`), plus ``brainbench_world.json`` (preset, version, timing) and
``brainbench_truth/subjAA.npz`` (ground truth), which no real copy has. Finished files are kept: an
interrupted build resumes, and subjects can be added later.

Design (datasets.md §4.1): 3 subjects, TR 2 s; training movies seen twice, test movies 10 times, each
``2 * volumes_per_run`` s long. Runs have ``volumes_per_run + 5`` volumes (training, ``test1``) or ``+ 6``
(``test2``...); the movie starts at 0-based volume ``T - 4 - volumes_per_run`` (datasets.md §5.2 trap 3).

Encoding, after :mod:`brainbench.world.encoding` but on a surface: all subjects share one set of grayordinates
(:func:`build_template`); each subject's visual areas come from :func:`brainbench.world.anatomy.build_anatomy`
with its own seed, and its low/mid/high-level vertices from the NSD world's encoding functions, applied to
the features (:func:`brainbench.world.features.compute_features`) of each 2-s window's frames, averaged. The
per-window drive, z-scored over all windows, is convolved with a double-gamma HRF integrated over the
window and sampled mid-volume, so window ``t`` drives volume ``start + t + 2`` most: the raw files carry the
delay and the adapter removes it (datasets.md §5.2 trap 9). Scaled to unit sd times each vertex's SNR, it
is added to AR(1) noise (10 % shared), a cubic drift and a run offset, in percent of a per-grayordinate
baseline. Non-visual vertices and the subcortical voxels carry noise only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import signal, stats
from tqdm.auto import tqdm

from brainbench.backbones.openclip import ImageBackbone, load_backbone
from brainbench.errors import ConfigError, DataFormatError
from brainbench.world import cc2017_writer as writer
from brainbench.world.anatomy import build_anatomy
from brainbench.world.config import WorldConfig
from brainbench.world.encoding import _high_signal, _low_signal, _mid_signal, _zscore_columns
from brainbench.world.features import StimulusFeatures
from brainbench.world.video import Movie, render_movie, window_features

# Bump when what a preset generates changes (world v1 was the NSD still images; v2 added the movies).
CC2017_WORLD_VERSION = "v2"
DATASET = "world-cc2017"
WORLD_BACKBONE = "world-clip:v1"
WORLD_FILE = "brainbench_world.json"
TRUTH_DIR = "brainbench_truth"
_CORE_RADIUS = 0.35  # anatomy.py keeps visual cortex outside this deep core of the ellipsoid
_HRF_SECONDS = 32.0
SHARED_NOISE = 0.1  # share of the noise variance common to all grayordinates

log = logging.getLogger("brainbench")


@dataclass(frozen=True)
class Cc2017WorldConfig:
    """Everything that determines a ``world-cc2017`` preset; equal configs write identical raw data.

    Attributes:
        name: preset name, part of the version (``v2-small``).
        seed: master seed of movies and subjects.
        n_train: training movies ``seg1..`` (real: 18), each seen ``train_repeats`` times (real: 2).
        n_test: test movies ``test1..`` (real: 5), each seen ``test_repeats`` times (real: 10).
        volumes_per_run: TRs of movie per run (real: 240, 8 min); movies last ``2 * volumes_per_run`` s.
        n_subjects: subjects 1..n (real: 3).
        fps: movie frame rate (real: 30); frame_size: movie frame side in px.
        clip_frames_per_window: frames per 2-s window that the encoding model sees (averaged).
        grid: template grid whose brain voxels become the grayordinates.
        visual_fraction: posterior share of the brain that is visual cortex.
        n_subcortical: subcortical voxels after the cortex (noise only).
        snr_median: median TR-level SNR (signal sd / noise sd) of low, mid and high-level vertices.
        snr_scale: multiplies every SNR (the difficulty knob).
        hrf_peak_s: peak of the HRF's positive gamma.
    """

    name: str
    seed: int = 0
    n_train: int = 8
    n_test: int = 2
    train_repeats: int = 2
    test_repeats: int = 10
    volumes_per_run: int = 240
    n_subjects: int = 3
    fps: int = 8
    frame_size: int = 64
    clip_frames_per_window: int = 1
    grid: tuple[int, int, int] = (20, 24, 18)
    visual_fraction: float = 0.42
    n_subcortical: int = 40
    snr_median: tuple[float, float, float] = (1.2, 1.0, 0.9)
    snr_scale: float = 1.0
    hrf_peak_s: float = 4.5

    @property
    def version(self) -> str:
        """Dataset version recorded in manifests, e.g. ``v2-small``."""
        return f"{CC2017_WORLD_VERSION}-{self.name}"


CC2017_PRESETS: dict[str, Cc2017WorldConfig] = {
    "small": Cc2017WorldConfig(name="small"),
    "tiny": Cc2017WorldConfig(
        name="tiny",
        n_train=3,
        n_test=2,
        volumes_per_run=12,
        clip_frames_per_window=2,
        grid=(12, 14, 10),
        n_subcortical=12,
    ),
}


def get_cc2017_config(name: str) -> Cc2017WorldConfig:
    """The preset called ``name`` (``small``: the benchmark world, ``tiny``: the test world)."""
    try:
        return CC2017_PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown world-cc2017 preset {name!r}; choose one of {sorted(CC2017_PRESETS)}"
        ) from None


def cc2017_world_root(home: Path, preset: str) -> Path:
    """Where ``preset`` lives under a brainbench home: ``<home>/worlds/world-cc2017-<version>``."""
    return home / "worlds" / f"{DATASET}-{get_cc2017_config(preset).version}"


def movie_design(config: Cc2017WorldConfig) -> list[writer.MovieRun]:
    """Training movies then test movies, with their repeats and run lengths (datasets.md §4.1)."""
    if not 1 <= config.volumes_per_run < 1000 or config.n_train >= 100 or config.n_test >= 100:
        raise ConfigError("stim ids need volumes_per_run in 1..999 and fewer than 100 movies per kind")
    vpr = config.volumes_per_run
    train = [
        writer.MovieRun("seg", n, config.train_repeats, vpr + 5, vpr) for n in range(1, config.n_train + 1)
    ]
    test = [
        writer.MovieRun("test", n, config.test_repeats, vpr + (5 if n == 1 else 6), vpr)
        for n in range(1, config.n_test + 1)
    ]
    return train + test


def design_movie(config: Cc2017WorldConfig, run: writer.MovieRun) -> Movie:
    """The movie ``run`` shows, rendered (a pure function of the seed and the movie's name)."""
    key = (101 if run.kind == "seg" else 102, run.number)
    return render_movie(run.name, config.seed, key, 2.0 * run.volumes_per_run, config.fps, config.frame_size)


def build_template(config: Cc2017WorldConfig) -> writer.Grayordinates:
    """The grayordinates every subject shares: cortex vertices, then the deepest voxels as subcortex.

    Cortex vertices are the template grid's brain voxels outside the deep core (left hemisphere x < 0 first,
    each in C order), given sorted random vertex ids of a 32,492-vertex hemisphere.
    """
    grid = config.grid
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in grid), indexing="ij")
    radius = np.sqrt(x**2 + y**2 + z**2) / 0.95
    brain = np.argwhere(radius <= 1.0)
    r = radius[tuple(brain.T)]
    left = brain[:, 0] < grid[0] / 2
    cortex = r > _CORE_RADIUS
    rng = np.random.default_rng([config.seed, 40])
    hemis = [brain[cortex & left], brain[cortex & ~left]]
    vertices = [np.sort(rng.choice(writer.HEMISPHERE_VERTICES, len(h), replace=False)) for h in hemis]
    deepest = brain[np.argsort(r, kind="stable")[: config.n_subcortical]]
    subcortical = {}
    for name, side in (("thalamus_left", True), ("thalamus_right", False)):
        mask = np.zeros(grid, dtype=bool)
        chosen = deepest[(deepest[:, 0] < grid[0] / 2) == side]
        mask[tuple(chosen.T)] = True
        subcortical[name] = mask
    return writer.Grayordinates(np.concatenate(hemis), vertices[0], vertices[1], subcortical)


def hrf_kernel(peak_s: float, tr_s: float = writer.TR_S) -> np.ndarray:
    """Response of volume ``t + k`` to a unit 2-s window ``t`` (HRF integrated over the window, mid-volume).

    Returns:
        ``(ceil(32 s / tr),)`` float64, peak normalised to 1.
    """
    dt = 0.01
    tau = np.arange(0.0, _HRF_SECONDS + tr_s, dt)
    shape = peak_s + 1.0
    hrf = stats.gamma.pdf(tau, shape) - stats.gamma.pdf(tau, shape + 10.0) / 6.0
    cumulative = np.concatenate([[0.0], np.cumsum(hrf) * dt])
    times = np.concatenate([tau, [tau[-1] + dt]])
    k = np.arange(int(np.ceil(_HRF_SECONDS / tr_s)))
    kernel = np.interp((k + 0.5) * tr_s, times, cumulative) - np.interp((k - 0.5) * tr_s, times, cumulative)
    return kernel / np.abs(kernel).max()


@dataclass(frozen=True)
class SubjectModel:
    """A subject's encoding model over its visual cortex vertices.

    Attributes:
        visual: ``(V,)`` int64 grayordinate index of each visual vertex.
        level: ``(V,)`` int8, 0 low (V1-hV4), 1 mid, 2 high.
        snr: ``(V,)`` float32 TR-level SNR (noise-free BOLD sd / noise sd); 0 for unresponsive vertices.
        signal: ``(n_windows, V)`` float32 drive of every 2-s window of every movie (design order), z-scored,
            before the HRF.
    """

    visual: np.ndarray
    level: np.ndarray
    snr: np.ndarray
    signal: np.ndarray


def subject_model(
    config: Cc2017WorldConfig, subject: int, template: writer.Grayordinates, features: StimulusFeatures
) -> SubjectModel:
    """Which cortex vertices are visual, at which level, with which SNR, and their noise-free drive.

    The areas are drawn by :func:`build_anatomy` on the shared template grid, as subject 1 of a seed of the
    subject's own, since the anatomy's other subjects get grids of other sizes.
    """
    anatomy_config = WorldConfig(
        name=f"cc2017-{config.name}",
        seed=1000 * config.seed + 100 + subject,
        grid=config.grid,
        visual_fraction=config.visual_fraction,
    )
    anatomy = build_anatomy(anatomy_config, 1)
    ijk = template.cortex_ijk
    visual = np.flatnonzero(anatomy.rois["nsdgeneral"][tuple(ijk.T)] == 1)
    vis_ijk = ijk[visual]
    area = anatomy.area[tuple(vis_ijk.T)]
    levels = np.select([area <= 3, area == 4], [0, 1], 2).astype(np.int8)
    rng = np.random.default_rng([config.seed, 60, subject])
    steps = (
        lambda m: _low_signal(rng, anatomy, vis_ijk[m], features),
        lambda m: _mid_signal(rng, vis_ijk[m], features),
        lambda m: _high_signal(rng, anatomy, vis_ijk[m], features),
    )
    drive = np.zeros((features.image_embedding.shape[0], len(visual)), dtype=np.float32)
    for level, step in enumerate(steps):
        if (mask := levels == level).any():
            drive[:, mask] = step(mask)
    snr = np.asarray(config.snr_median)[levels] * config.snr_scale * np.exp(rng.normal(0, 0.5, len(visual)))
    snr[rng.random(len(visual)) < 0.08] = 0.0  # unresponsive vertices
    return SubjectModel(visual, levels, snr.astype(np.float32), _zscore_columns(drive))


def noise_free_responses(
    config: Cc2017WorldConfig, design: list[writer.MovieRun], model: SubjectModel
) -> dict[str, np.ndarray]:
    """Per movie, ``(n_volumes, V)`` float32: the HRF-convolved drive, times SNR over its in-movie sd.

    The sd is taken over the in-movie volumes of all movies, so ``snr`` is each vertex's TR-level SNR.
    """
    kernel = hrf_kernel(config.hrf_peak_s)
    vpr = config.volumes_per_run
    convolved = {}
    for index, run in enumerate(design):
        drive = np.zeros((run.n_volumes, len(model.visual)), dtype=np.float64)
        drive[run.start : run.start + vpr] = model.signal[index * vpr : (index + 1) * vpr]
        convolved[run.name] = signal.lfilter(kernel, [1.0], drive, axis=0)
    in_movie = np.concatenate([convolved[run.name][run.start : run.start + vpr] for run in design])
    scale = model.snr / in_movie.std(axis=0).clip(1e-8)
    return {name: (response * scale).astype(np.float32) for name, response in convolved.items()}


@dataclass(frozen=True)
class NoiseModel:
    """Per-grayordinate noise parameters of a subject, fixed across its runs.

    Attributes:
        baseline: ``(G,)`` intensity (median 10,000); a run's values are ``baseline * (1 + percent / 100)``.
        ar: ``(G,)`` AR(1) coefficient per TR, 0.2-0.5.
        loading: ``(G,)`` weight of the noise shared across grayordinates.
    """

    baseline: np.ndarray
    ar: np.ndarray
    loading: np.ndarray

    @classmethod
    def draw(cls, config: Cc2017WorldConfig, subject: int, n_grayordinates: int) -> NoiseModel:
        """The noise model of ``subject``."""
        rng = np.random.default_rng([config.seed, 61, subject])
        return cls(
            baseline=10_000.0 * np.exp(rng.normal(0, 0.15, n_grayordinates)),
            ar=rng.uniform(0.2, 0.5, n_grayordinates),
            loading=rng.normal(1.0, 0.3, n_grayordinates),
        )


def simulate_run(
    rng: np.random.Generator, response: np.ndarray, visual: np.ndarray, noise: NoiseModel
) -> np.ndarray:
    """One run ``(T, G)`` float32: ``baseline * (1 + (response + AR(1) noise + drift + offset) / 100)``.

    Args:
        rng: the run's own generator.
        response: ``(T, V)`` noise-free response of the visual vertices (noise-sd units).
        visual: ``(V,)`` their grayordinate indices.
        noise: the subject's noise model.
    """
    n_volumes, n_gray = response.shape[0], len(noise.baseline)
    innovations = rng.standard_normal((n_volumes, n_gray)) * np.sqrt(1 - SHARED_NOISE)
    innovations += np.sqrt(SHARED_NOISE) * rng.standard_normal((n_volumes, 1)) * noise.loading
    ar_noise = np.empty_like(innovations)
    ar_noise[0] = innovations[0]
    gain = np.sqrt(1 - noise.ar**2)
    for t in range(1, n_volumes):
        ar_noise[t] = noise.ar * ar_noise[t - 1] + gain * innovations[t]
    legendre = np.polynomial.legendre.legvander(np.linspace(-1, 1, n_volumes), 3)[:, 1:]  # (T, 3)
    drift = legendre @ (rng.normal(0, 1, (3, n_gray)) * np.array([[1.5], [0.8], [0.5]]))
    percent = ar_noise + drift + rng.normal(0, 2.0, n_gray)
    percent[:, visual] += response
    return (noise.baseline * (1.0 + percent / 100.0)).astype(np.float32)


def _check_or_write_world_file(root: Path, config: Cc2017WorldConfig, lag_trs: int) -> None:
    path = root / WORLD_FILE
    record = {
        "dataset": DATASET,
        "version": config.version,
        "config": asdict(config),
        "encoding_backbone": WORLD_BACKBONE,
        "timing": {"tr_s": writer.TR_S, "volumes_per_run": config.volumes_per_run, "lag_trs": lag_trs},
    }
    if path.is_file():
        existing = json.loads(path.read_text())
        same_config = existing.get("config") == json.loads(json.dumps(record["config"]))
        if existing.get("dataset") != DATASET or not same_config:
            raise DataFormatError(
                path,
                f"this folder holds {existing.get('dataset')} {existing.get('version')}, not {DATASET} "
                f"{config.version}",
                "use another root for a different world or preset, or delete the folder",
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    with writer.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


def _movies_pass(
    root: Path, config: Cc2017WorldConfig, backbone: ImageBackbone | None, progress: bool
) -> StimulusFeatures | None:
    """Renders each movie once: writes its mp4 (if missing) and computes its window features (if asked)."""
    layout = writer.Cc2017Layout(root)
    rows, parts = [], []
    for run in tqdm(movie_design(config), desc="movies", disable=not progress):
        movie = design_movie(config, run)
        if not layout.movie(run.name).is_file():
            writer.write_mp4(layout.movie(run.name), movie.frames, movie.fps)
        rows += movie.caption_rows()
        if backbone is not None:
            parts.append(window_features(movie, run.volumes_per_run, backbone, config.clip_frames_per_window))
    if not writer.is_complete(root):
        writer.write_captions(layout.captions, rows)
        writer.write_stimuli_marker(root, [run.name for run in movie_design(config)])
    if not parts:
        return None
    return StimulusFeatures(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(parts[0])))


def _write_subject(
    root: Path,
    config: Cc2017WorldConfig,
    subject: int,
    template: writer.Grayordinates,
    features: StimulusFeatures,
    progress: bool,
) -> None:
    layout = writer.Cc2017Layout(root)
    design = movie_design(config)
    model = subject_model(config, subject, template, features)
    truth = root / TRUTH_DIR / f"subj{subject:02d}.npz"
    truth.parent.mkdir(parents=True, exist_ok=True)
    with writer.atomic_path(truth) as tmp:
        np.savez(
            tmp,
            stim_ids=np.concatenate([run.stim_ids for run in design]),
            signal=model.signal,
            visual=model.visual,
            level=model.level,
            snr=model.snr,
            hrf=hrf_kernel(config.hrf_peak_s).astype(np.float32),
            lag_trs=np.int64(np.argmax(hrf_kernel(config.hrf_peak_s))),
        )
    responses = noise_free_responses(config, design, model)
    noise = NoiseModel.draw(config, subject, template.n_grayordinates)
    brain_models = template.brain_models()
    runs = [(movie, repeat) for movie in design for repeat in range(1, movie.n_repeats + 1)]
    for movie, repeat in tqdm(runs, desc=f"subject{subject} runs", disable=not progress):
        path = layout.dtseries(subject, movie.name, repeat)
        if path.is_file():
            continue
        kind = 1 if movie.kind == "seg" else 2
        rng = np.random.default_rng([config.seed, 70, subject, kind, movie.number, repeat])
        writer.write_dtseries(
            path, simulate_run(rng, responses[movie.name], model.visual, noise), brain_models
        )
    writer.write_subject_marker(root, subject, len(runs))


def generate_world_cc2017(
    root: Path, preset: str = "small", subjects: list[int] | None = None, progress: bool = True
) -> Path:
    """Writes (or completes) the ``world-cc2017`` preset under ``root`` for ``subjects`` (default: subject 1).

    Deterministic: the same preset writes the same files (markers excepted). Resumable: finished files are
    kept and only missing ones are written.

    Args:
        root: the raw root; ``video_fmri_dataset/`` is written inside it.
        preset: ``small`` or ``tiny`` (:data:`CC2017_PRESETS`).
        subjects: 1-based subjects to write.
        progress: show progress bars and a summary line.

    Returns:
        ``root``, ready for ``brainbench prepare cc2017 --root`` with the preset's ``volumes_per_run``
        (also in ``brainbench_world.json`` under ``timing``).

    Raises:
        ConfigError: unknown preset or subject.
        DataFormatError: ``root`` holds another world or preset.
    """
    config = get_cc2017_config(preset)
    subjects = subjects or [1]
    unknown = [s for s in subjects if not 1 <= s <= config.n_subjects]
    if unknown:
        raise ConfigError(f"{DATASET} {config.version} has subjects 1..{config.n_subjects}; got {unknown}")
    root = Path(root)
    _check_or_write_world_file(root, config, int(np.argmax(hrf_kernel(config.hrf_peak_s))))
    todo = [s for s in subjects if not writer.is_complete(root, s)]
    if writer.is_complete(root) and not todo:
        return root
    t0 = time.time()
    features = _movies_pass(root, config, load_backbone(WORLD_BACKBONE) if todo else None, progress)
    template = build_template(config)
    for subject in todo:
        _write_subject(root, config, subject, template, features, progress)
    if progress:
        log.info(f"{DATASET} {config.version} subjects {subjects} ready at {root} ({time.time() - t0:.0f}s)")
    return root
