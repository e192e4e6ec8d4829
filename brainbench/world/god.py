"""The embedded world as a GOD-like experiment (``world-god``), written in the real GOD raw layout.

A scaled-down Generic Object Decoding design (Horikawa & Kamitani 2017, Nat Commun 8:15037; datasets.md
§3.1-§3.2; numbers for ``small``): the 57 world categories are split, seeded and stratified over the 6
domains, into 42 training and 15 held-out test categories, each with a fake but well-formed numeric WordNet id
``90_000_000 + world category index``. Training perception (DataType 1): 24 single-object scenes per training
category, each shown once, in runs of 24 blocks. Test perception (DataType 2): 3 scenes per test category,
each shown 35 times, one showing per test run. Imagery (DataType 3): 10 blocks per test category, one per
imagery run. Image ``n`` of a category has float id ``wnid + n / 1e6``; its pixels depend only on
``(seed, wnid * 1e6 + n)``.

Voxels come from the world's own encoding model for the same subject (``build_anatomy``,
``compute_features``, ``simulate_subject``), one "trial" per block; ``small`` reuses the ``world-nsd``
``small`` subjects (same seed, grid, visual fraction) with ``snr_scale`` 1.0 instead of 0.5, since a GOD
sample is a 9-s block average (datasets.md §3.1). An imagery block is driven by the category's text embedding
(world CLIP, ``"a photo of a {category}."``) in place of the image and caption embeddings, with the images'
average low- and mid-level features: only the high-level part of the model tells imagined categories apart.
Columns are the ``nsdgeneral`` voxels in C order with coordinates in mm; ROI flags follow :data:`ROI_MAP`,
then LVC = V1|V2|V3, HVC = LOC|FFA|PPA, VC = every column. Values are raw block responses (percent signal
change, no z-scoring). The files are written by :mod:`brainbench.world.god_writer`; beside them go
``brainbench_world.json`` and ``brainbench_truth/Subject{N}.npz`` (noise-free signal, per-voxel SNR and
level), which no adapter reads. See ``data_cards/world-god.md``.

Example:
    >>> generate_world_god(Path("worlds/world-god-v2-tiny"), "tiny", subjects=[1])  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from brainbench.backbones.openclip import ImageBackbone, load_backbone
from brainbench.errors import ConfigError, DataFormatError
from brainbench.world.anatomy import ROI_LABELS
from brainbench.world.build import WORLD_BACKBONE, WORLD_FILE
from brainbench.world.config import WorldConfig
from brainbench.world.encoding import GroundTruth, simulate_subject
from brainbench.world.features import StimulusFeatures, compute_features
from brainbench.world.god_writer import (
    IMAGERY,
    TEST,
    TRAINING,
    GodBlocks,
    GodCategory,
    GodImage,
    GodStimuli,
    GodVoxels,
    is_complete,
    write_god_stimuli,
    write_god_subject,
)
from brainbench.world.shapes import CATEGORY_NAMES, DOMAINS, category_domain
from brainbench.world.stimuli import generate_scene
from brainbench.world.types import StimulusSet, WorldDesign

# Cached under ``world-god-<version>``: changing what a preset generates (or the generator) must bump this.
GOD_WORLD_VERSION = "v2"
GOD_DATASET = "world-god"
WNID_OFFSET = 90_000_000
IMAGERY_PROMPT = "a photo of a {}."
BLANK_GREY = 128
# GOD ROI -> (world atlas, label names); LVC, HVC and VC are unions (see the module docstring).
ROI_MAP: dict[str, tuple[str, tuple[str, ...]]] = {
    "V1": ("prf-visualrois", ("V1v", "V1d")),
    "V2": ("prf-visualrois", ("V2v", "V2d")),
    "V3": ("prf-visualrois", ("V3v", "V3d")),
    "V4": ("prf-visualrois", ("hV4",)),
    "LOC": ("streams", ("midlateral", "lateral")),
    "FFA": ("floc-faces", ("OFA", "FFA-1", "FFA-2")),
    "PPA": ("floc-places", ("OPA", "PPA", "RSC")),
}

log = logging.getLogger("brainbench")


@dataclass(frozen=True)
class GodConfig:
    """Everything that determines a world-god; two equal configs write byte-identical GOD files.

    Attributes:
        name: preset name, part of the version (``v2-small``).
        seed: master seed of categories, images, design and subjects.
        n_test_categories: held-out test categories (of 57; the rest are training categories).
        train_images_per_category: training images per training category, each shown once.
        test_images_per_category: test images per test category.
        test_repeats: showings of every test image (GOD: 35), one per test run.
        imagery_repeats: imagery blocks per test category (GOD: 10), one per imagery run.
        train_run_blocks: blocks per training run.
        n_subjects: subjects, numbered 1..n like GOD's ``Subject1..5``.
        grid: functional grid ``(X, Y, Z)`` of subject 1 (see :class:`WorldConfig`).
        visual_fraction: share of the brain that is visual cortex.
        snr_scale: multiplies every voxel's noise-ceiling SNR (per block).
        image_size: image side in pixels.
    """

    name: str
    seed: int = 0
    n_test_categories: int = 15
    train_images_per_category: int = 24
    test_images_per_category: int = 3
    test_repeats: int = 35
    imagery_repeats: int = 10
    train_run_blocks: int = 24
    n_subjects: int = 5
    grid: tuple[int, int, int] = (26, 30, 24)
    visual_fraction: float = 0.42
    snr_scale: float = 1.0
    image_size: int = 64

    @property
    def version(self) -> str:
        """Dataset version recorded in the world file, e.g. ``v2-small``."""
        return f"{GOD_WORLD_VERSION}-{self.name}"

    def world_config(self) -> WorldConfig:
        """The :class:`WorldConfig` whose anatomy and encoding model the subjects use."""
        return WorldConfig(
            name=f"god-{self.name}",
            seed=self.seed,
            n_subjects=self.n_subjects,
            grid=self.grid,
            visual_fraction=self.visual_fraction,
            snr_scale=self.snr_scale,
        )


GOD_PRESETS: dict[str, GodConfig] = {
    "small": GodConfig(name="small"),
    "tiny": GodConfig(
        name="tiny",
        train_images_per_category=10,  # image number 10 exercises the float-id trailing-zero trap
        test_images_per_category=2,
        train_run_blocks=20,
        grid=(18, 20, 16),  # world-nsd tiny's grid leaves V4 and FFA empty; this one fills every GOD ROI
        visual_fraction=0.5,
        snr_scale=1.5,  # a test bed: clear signal from 420 training blocks
    ),
}


def get_god_config(name: str) -> GodConfig:
    """The world-god preset called ``name`` (``small`` is the benchmark world, ``tiny`` the test world)."""
    try:
        return GOD_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown world-god preset {name!r}; choose one of {sorted(GOD_PRESETS)}") from None


def god_root(home: Path, preset: str) -> Path:
    """Where ``preset`` lives under a brainbench home: ``<home>/worlds/world-god-<version>``."""
    return home / "worlds" / f"{GOD_DATASET}-{get_god_config(preset).version}"


def world_category(name: str) -> GodCategory:
    """The GOD-style category of a world category: wnid ``90_000_000 + index``, word and gloss."""
    if name not in CATEGORY_NAMES:
        raise ConfigError(f"unknown world category {name!r}")
    return GodCategory(
        wnid=WNID_OFFSET + CATEGORY_NAMES.index(name),
        name=name,
        word=name,
        gloss=f"{category_domain(name)} category of the brainbench embedded world, drawn as a {name}",
    )


def split_categories(seed: int, n_test: int) -> tuple[list[str], list[str]]:
    """Training and test category names, each in world order; the test share is stratified over domains.

    Each domain gets ``n_test * domain size / 57`` test categories, rounded by largest remainder, drawn
    without replacement by a generator seeded with ``(seed, 20)``.
    """
    if not 1 <= n_test < len(CATEGORY_NAMES):
        raise ConfigError(f"n_test_categories must be 1..{len(CATEGORY_NAMES) - 1}, got {n_test}")
    by_domain = {d: [n for n in CATEGORY_NAMES if category_domain(n) == d] for d in DOMAINS}
    quota = {d: n_test * len(names) / len(CATEGORY_NAMES) for d, names in by_domain.items()}
    counts = {d: int(q) for d, q in quota.items()}
    by_remainder = sorted(DOMAINS, key=lambda d: (counts[d] - quota[d], DOMAINS.index(d)))
    for domain in by_remainder[: n_test - sum(counts.values())]:
        counts[domain] += 1
    rng = np.random.default_rng([seed, 20])
    test = {str(n) for d in DOMAINS for n in rng.choice(by_domain[d], size=counts[d], replace=False)}
    return [n for n in CATEGORY_NAMES if n not in test], [n for n in CATEGORY_NAMES if n in test]


@dataclass(frozen=True)
class GodDesign:
    """Categories, images and the block sequence shared by every subject (as in GOD).

    The simulated stimulus *rows* are the training images, then the test images, then one imagery row per
    test category; ``block_rows`` says which row each block shows.

    Attributes:
        train_categories: in training ``category_index`` order.
        test_categories: in test ``category_index`` order (the xlsx rows).
        train_images: training images in tsv order.
        test_images: test images in tsv order.
        blocks: the label columns of every block, in time order.
        block_rows: ``(n_blocks,)`` int64 0-based row of each block.
    """

    train_categories: tuple[GodCategory, ...]
    test_categories: tuple[GodCategory, ...]
    train_images: tuple[GodImage, ...]
    test_images: tuple[GodImage, ...]
    blocks: GodBlocks
    block_rows: np.ndarray

    @property
    def n_rows(self) -> int:
        """Simulated stimulus rows: images plus one imagery row per test category."""
        return len(self.train_images) + len(self.test_images) + len(self.test_categories)

    def row_stim_ids(self) -> np.ndarray:
        """``(n_rows,)`` int64 ids: images' ``wnid * 1e6 + number``; imagery rows ``wnid * 1e6``."""
        ids = [im.stim_id for im in self.train_images + self.test_images]
        ids += [c.wnid * 1_000_000 for c in self.test_categories]
        return np.asarray(ids, dtype=np.int64)


def _image_list(categories: tuple[GodCategory, ...], per_category: int) -> tuple[GodImage, ...]:
    return tuple(
        GodImage(wnid=c.wnid, image_number=k, category_index=ci, image_index=(ci - 1) * per_category + k)
        for ci, c in enumerate(categories, start=1)
        for k in range(1, per_category + 1)
    )


def make_god_design(config: GodConfig) -> GodDesign:
    """The GOD-style design of ``config``: category split, image ids, runs and blocks (seeded)."""
    train_names, test_names = split_categories(config.seed, config.n_test_categories)
    train_categories = tuple(world_category(n) for n in train_names)
    test_categories = tuple(world_category(n) for n in test_names)
    train_images = _image_list(train_categories, config.train_images_per_category)
    test_images = _image_list(test_categories, config.test_images_per_category)
    n_train, n_test, n_imagery = len(train_images), len(test_images), len(test_categories)

    rng = np.random.default_rng([config.seed, 21])
    per_run = config.train_run_blocks
    order = rng.permutation(n_train)
    runs = [(TRAINING, order[i : i + per_run]) for i in range(0, n_train, per_run)]
    runs += [(TEST, n_train + rng.permutation(n_test)) for _ in range(config.test_repeats)]
    runs += [(IMAGERY, n_train + n_test + rng.permutation(n_imagery)) for _ in range(config.imagery_repeats)]
    images = train_images + test_images
    row_float_id = np.array([im.float_id for im in images] + [float(c.wnid) for c in test_categories])
    row_image_index = np.array([im.image_index for im in images] + [0] * n_imagery, dtype=np.int64)
    block_rows = np.concatenate([rows for _, rows in runs]).astype(np.int64)
    sizes = [len(rows) for _, rows in runs]
    blocks = GodBlocks(
        data_type=np.repeat(np.array([code for code, _ in runs], dtype=np.int64), sizes),
        run=np.repeat(np.arange(1, len(runs) + 1, dtype=np.int64), sizes),
        block=np.concatenate([np.arange(1, n + 1, dtype=np.int64) for n in sizes]),
        stimulus_id=row_float_id[block_rows],
        image_index=row_image_index[block_rows],
    )
    return GodDesign(train_categories, test_categories, train_images, test_images, blocks, block_rows)


def render_god_images(
    config: GodConfig, design: GodDesign, progress: bool = False
) -> tuple[np.ndarray, list[list[str]]]:
    """Pixels ``(n_train + n_test, H, W, 3)`` uint8 and captions of every image, training images first."""
    names = {c.wnid: c.name for c in design.train_categories + design.test_categories}
    images = design.train_images + design.test_images
    size = config.image_size
    pixels = np.empty((len(images), size, size, 3), dtype=np.uint8)
    captions = []
    for row, image in enumerate(tqdm(images, desc="world-god images", disable=not progress, unit="img")):
        pixels[row], image_captions, _ = generate_scene(
            config.seed, image.stim_id, size, category=names[image.wnid], n_objects=1
        )
        captions.append(image_captions)
    return pixels, captions


def god_features(
    design: GodDesign, pixels: np.ndarray, captions: list[list[str]], backbone: ImageBackbone
) -> StimulusFeatures:
    """Encoding-model features of every row: the images, then one imagery row per test category.

    An imagery row's image and caption embeddings are both the category's text embedding
    (``IMAGERY_PROMPT``); its low-level maps and mid-level tokens are the images' average.
    """
    names = {c.wnid: c.name for c in design.train_categories + design.test_categories}
    imagery = design.test_categories
    n_images = len(pixels)
    placeholders = np.full((len(imagery), *pixels.shape[1:]), BLANK_GREY, np.uint8)
    categories = [[names[im.wnid]] for im in design.train_images + design.test_images]
    stimuli = StimulusSet(
        images=np.concatenate([pixels, placeholders]),
        captions=captions + [[IMAGERY_PROMPT.format(c.name)] for c in imagery],
        categories=categories + [[c.name] for c in imagery],
        category_names=list(CATEGORY_NAMES),
    )
    features = compute_features(stimuli, np.arange(len(stimuli)), backbone)
    lowlevel, mid_tokens = features.lowlevel.copy(), features.mid_tokens.copy()
    lowlevel[n_images:] = features.lowlevel[:n_images].mean(axis=0)
    mid_tokens[n_images:] = features.mid_tokens[:n_images].mean(axis=0)
    image_embedding = features.image_embedding.copy()
    image_embedding[n_images:] = features.caption_embedding[n_images:]
    return replace(features, lowlevel=lowlevel, mid_tokens=mid_tokens, image_embedding=image_embedding)


def god_rois(labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GOD ROI flags from the world atlases' labels at the voxel columns (``ROI_MAP`` plus the unions)."""
    rois = {}
    for roi, (atlas, names) in ROI_MAP.items():
        ids = [k for k, name in ROI_LABELS[atlas].items() if name in names]
        rois[roi] = np.isin(labels[atlas], ids)
    rois["LVC"] = rois["V1"] | rois["V2"] | rois["V3"]
    rois["HVC"] = rois["LOC"] | rois["FFA"] | rois["PPA"]
    rois["VC"] = np.ones(len(labels["nsdgeneral"]), dtype=bool)
    return rois


def simulate_god_subject(
    config: GodConfig, subject: int, design: GodDesign, features: StimulusFeatures, progress: bool = False
) -> tuple[GodVoxels, GroundTruth, np.ndarray]:
    """One subject's voxel columns, the encoding model's ground truth and the columns' grid indices.

    The block sequence is one "session" of ``simulate_subject`` (one trial per block); the columns are the
    ``nsdgeneral`` voxels in C order; the grid indices are ``(V, 3)``.
    """
    sequence = WorldDesign(
        subjectim=np.tile(np.arange(design.n_rows, dtype=np.int64), (config.n_subjects, 1)),
        masterordering=design.block_rows,
        n_shared=0,
        trials_per_session=len(design.block_rows),
    )
    recording, truth = simulate_subject(config.world_config(), subject, sequence, features, progress=progress)
    brain_ijk = np.argwhere(recording.brain_mask)
    visual = recording.roi_volumes["nsdgeneral"][tuple(brain_ijk.T)] == 1
    ijk = brain_ijk[visual]
    xyz_mm = (np.c_[ijk, np.ones(len(ijk))] @ np.asarray(recording.affine, dtype=np.float64).T)[:, :3]
    labels = {atlas: volume[tuple(ijk.T)] for atlas, volume in recording.roi_volumes.items()}
    voxels = GodVoxels(responses=recording.betas_psc[:, visual], xyz_mm=xyz_mm, rois=god_rois(labels))
    return voxels, truth, ijk


@functools.cache
def _world_backbone() -> ImageBackbone:
    """The world CLIP, loaded once per process (generating several worlds reuses it)."""
    return load_backbone(WORLD_BACKBONE)


def _world_record(config: GodConfig, design: GodDesign) -> dict:
    def listing(categories: tuple[GodCategory, ...]) -> list[dict]:
        return [{"wnid": c.synset_id, "name": c.name} for c in categories]

    return {
        "dataset": GOD_DATASET,
        "version": config.version,
        "config": asdict(config),
        "encoding_backbone": WORLD_BACKBONE,
        "train_categories": listing(design.train_categories),
        "test_categories": listing(design.test_categories),
        "roi_map": {roi: {"atlas": atlas, "labels": list(names)} for roi, (atlas, names) in ROI_MAP.items()},
    }


def _check_or_write_world_file(root: Path, config: GodConfig, design: GodDesign) -> None:
    path = root / WORLD_FILE
    record = _world_record(config, design)
    if path.is_file():
        existing = json.loads(path.read_text())
        same = existing.get("dataset") == GOD_DATASET
        if not same or existing.get("config") != json.loads(json.dumps(record["config"])):
            raise DataFormatError(
                path,
                f"this folder holds {existing.get('dataset')} {existing.get('version')}, "
                f"not {GOD_DATASET} {config.version}",
                "use another --root for a different world or preset, or delete the folder",
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def _save_truth(root: Path, subject: int, design: GodDesign, truth: GroundTruth, ijk: np.ndarray) -> None:
    truth_dir = root / "brainbench_truth"
    truth_dir.mkdir(exist_ok=True)
    np.savez(
        truth_dir / f"Subject{subject}.npz",
        ncsnr=truth.ncsnr,
        level=truth.level,
        signal=truth.signal,
        row_stim_ids=design.row_stim_ids(),
        block_rows=design.block_rows,
        voxel_ijk=ijk,
    )


def generate_world_god(
    root: Path, preset: str = "small", subjects: list[int] | None = None, progress: bool = True
) -> Path:
    """Writes (or completes) the world-god ``preset`` under ``root`` for ``subjects`` (default: subject 1).

    Parts already complete (the stimulus files, each subject) are kept; an interrupted run resumes.

    Returns:
        ``root``, in the GOD raw layout.

    Raises:
        ConfigError: unknown preset or subject.
        DataFormatError: ``root`` holds another world or preset.
    """
    root = Path(root)
    config = get_god_config(preset)
    subjects = sorted(set(subjects or [1]))
    unknown = [s for s in subjects if not 1 <= s <= config.n_subjects]
    if unknown:
        raise ConfigError(f"world-god {config.version} has subjects 1..{config.n_subjects}; got {unknown}")
    design = make_god_design(config)
    _check_or_write_world_file(root, config, design)
    todo = [s for s in subjects if not is_complete(root, s)]
    if is_complete(root) and not todo:
        return root
    t0 = time.time()
    pixels, captions = render_god_images(config, design, progress)
    n_train = len(design.train_images)
    if not is_complete(root):
        train, test = (design.train_images, pixels[:n_train]), (design.test_images, pixels[n_train:])
        write_god_stimuli(root, GodStimuli(*train, *test, design.test_categories))
    if todo:
        features = god_features(design, pixels, captions, _world_backbone())
        for subject in todo:
            voxels, truth, ijk = simulate_god_subject(config, subject, design, features, progress)
            _save_truth(root, subject, design, truth, ijk)
            write_god_subject(root, subject, design.blocks, voxels)
    if progress:
        log.info(
            f"{GOD_DATASET} {config.version} subjects {subjects} ready at {root} ({time.time() - t0:.0f}s)"
        )
    return root
