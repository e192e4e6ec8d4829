"""The generation stage of a benchmark run: test predictions -> images, with a PNG grid for the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.shards import iter_split
from brainbench.data.stimulus_store import StimulusStore
from brainbench.generators import GenerationContext, build_generator

GRID_FILE = "reconstructions.png"


def generate_images(
    config: dict[str, Any],
    predictions: dict[str, torch.Tensor],
    datamodule: FMRIDataModule,
    backbone: str,
    run_dir: Path,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> str:
    """Runs the config's generator on the test predictions (adds ``predictions["images"]``).

    Returns:
        The generator's id for the leaderboard's ``generator`` column (``none`` without a generator).
    """
    spec = config.get("generator")
    if not spec:
        return "none"
    assert datamodule.cache is not None
    store_path = datamodule.data_dir / datamodule.manifest.stimulus_store["path"]
    with StimulusStore(store_path) as store:
        image_size = int(store.images(store.stim_ids[:1]).shape[1])
    context = GenerationContext(
        prepared=datamodule.data_dir,
        manifest=datamodule.manifest,
        backbone_id=backbone,
        cache=datamodule.cache,
        train_stim_ids=training_stim_ids(datamodule),
        image_size=image_size,
        seed=seed,
    )
    generator = build_generator(spec, context)
    say(f"generating test images with {generator.generator_id}")
    predictions["images"] = generator.generate_from_predictions(predictions)
    save_image_grid(predictions["images"][:32], run_dir / GRID_FILE)
    return getattr(generator, "full_id", generator.generator_id)


def training_stim_ids(datamodule: FMRIDataModule) -> np.ndarray:
    """Distinct stimuli of the training split (what a retrieval bank may hold)."""
    ids = {sample.stim_id for sample in iter_split(datamodule.data_dir, datamodule.manifest, "train")}
    return np.array(sorted(ids), dtype=np.int64)


def save_image_grid(images: torch.Tensor, path: Path, columns: int = 8) -> None:
    """``(N, H, W, 3)`` uint8 images as one PNG grid (the run's first test reconstructions)."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images.numpy()):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
