"""Builds the embedded world on disk, in the real NSD raw layout, one subject at a time.

``generate_world(root, "small", subjects=[1])`` writes the design, all stimuli and subject 1's betas and ROIs
under ``root`` exactly where a real NSD copy keeps them, plus two files no real copy has:
``brainbench_world.json`` (the preset and version) and ``brainbench_truth/subjAA.npz`` (the encoding model's
ground truth: per-voxel noise-ceiling SNR, level and noise-free signal). Parts already complete are kept, so
an interrupted build resumes where it stopped, and other subjects are added later on demand.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from brainbench.backbones.openclip import load_backbone
from brainbench.errors import ConfigError, DataFormatError
from brainbench.world.config import WorldConfig, get_world_config
from brainbench.world.design import make_design
from brainbench.world.encoding import simulate_subject
from brainbench.world.features import compute_features
from brainbench.world.nsd_writer import is_complete, write_nsd_design, write_nsd_subject
from brainbench.world.stimuli import generate_stimuli
from brainbench.world.templates import write_world_transforms
from brainbench.world.types import StimulusSet

WORLD_BACKBONE = "world-clip:v1"
WORLD_FILE = "brainbench_world.json"

log = logging.getLogger("brainbench")


def world_root(home: Path, preset: str) -> Path:
    """Where ``preset`` lives under a brainbench home folder: ``<home>/worlds/world-nsd-<version>``."""
    return home / "worlds" / f"world-nsd-{get_world_config(preset).version}"


def _check_or_write_world_file(root: Path, config: WorldConfig) -> None:
    path = root / WORLD_FILE
    record = {
        "dataset": "world-nsd",
        "version": config.version,
        "config": asdict(config),
        "encoding_backbone": WORLD_BACKBONE,
    }
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing.get("config") != json.loads(json.dumps(record["config"])):
            raise DataFormatError(
                path,
                f"this folder holds world {existing.get('version')}, not {config.version}",
                "use another --root for a different preset, or delete the folder",
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def load_world_record(root: Path) -> dict:
    """The ``brainbench_world.json`` of a generated world (preset, version, backbone)."""
    return json.loads((root / WORLD_FILE).read_text())


def generate_world(
    root: Path,
    preset: str = "small",
    subjects: list[int] | None = None,
    progress: bool = True,
    workers: int = 2,
) -> Path:
    """Writes (or completes) the world ``preset`` under ``root`` for ``subjects`` (default: subject 1).

    Returns:
        ``root``, ready for ``brainbench prepare nsd --root``.
    """
    config = get_world_config(preset)
    subjects = subjects or [1]
    unknown = [s for s in subjects if not 1 <= s <= config.n_subjects]
    if unknown:
        raise ConfigError(f"world {config.version} has subjects 1..{config.n_subjects}; got {unknown}")
    _check_or_write_world_file(root, config)
    write_world_transforms(root, config, subjects)  # cheap (anatomy only); added to v1 worlds in place
    design = make_design(config)
    todo = [s for s in subjects if not is_complete(root, s)]
    if is_complete(root) and not todo:
        return root
    t0 = time.time()
    stimuli = generate_stimuli(config.n_stimuli, seed=config.seed, progress=progress, workers=workers)
    if not is_complete(root):
        write_nsd_design(root, stimuli, design)
    if todo:
        backbone = load_backbone(WORLD_BACKBONE)
        for subject in todo:
            _write_subject(root, config, subject, design, stimuli, backbone, progress)
    if progress:
        log.info(f"world {config.version} subjects {subjects} ready at {root} ({time.time() - t0:.0f}s)")
    return root


def _write_subject(
    root: Path,
    config: WorldConfig,
    subject: int,
    design: object,
    stimuli: StimulusSet,
    backbone: object,
    progress: bool,
) -> None:
    ids = design.subjectim[subject - 1]
    features = compute_features(stimuli, ids, backbone)
    recording, truth = simulate_subject(config, subject, design, features, progress=progress)
    truth_dir = root / "brainbench_truth"
    truth_dir.mkdir(exist_ok=True)
    np.savez(
        truth_dir / f"subj{subject:02d}.npz",
        ncsnr=truth.ncsnr,
        level=truth.level,
        signal=truth.signal,
        stim_ids=ids,
    )
    write_nsd_subject(root, design, recording)
