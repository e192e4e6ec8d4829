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

#: test reconstructions saved per run for the report's gallery (``runs/<run_id>/recons/``)
GALLERY_IMAGES = 8


def generate_images(
    config: dict[str, Any],
    predictions: dict[str, torch.Tensor],
    stim_ids: np.ndarray,
    datamodule: FMRIDataModule,
    backbone: str,
    run_dir: Path,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> str:
    """Runs the config's generator on the test predictions (adds ``predictions["images"]`` or ``["frames"]``).

    The first :data:`GALLERY_IMAGES` test stimuli (by ``stim_id``) are saved with their ground truth as
    ``run_dir/recons/<stim_id>.png`` and ``gt_<stim_id>.png`` (a video as one strip of its frames), which the
    HTML report shows side by side.

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
    output = generator.generate_from_predictions(predictions)
    predictions[generator.output] = output
    with StimulusStore(store_path) as store:
        save_gallery(output, store, stim_ids, run_dir / "recons")
    return getattr(generator, "full_id", generator.generator_id)


def training_stim_ids(datamodule: FMRIDataModule) -> np.ndarray:
    """Distinct stimuli of the training split (what a retrieval bank may hold)."""
    ids = {sample.stim_id for sample in iter_split(datamodule.data_dir, datamodule.manifest, "train")}
    return np.array(sorted(ids), dtype=np.int64)


def save_gallery(outputs: torch.Tensor, store: StimulusStore, stim_ids: np.ndarray, folder: Path) -> None:
    """Saves :data:`GALLERY_IMAGES` generated images or clips (rows follow ``stim_ids``) beside their stimuli.

    They are spread evenly over the test stimuli in id order, first and last included (consecutive ids are
    often windows of one movie). A clip ``(F, H, W, 3)`` is saved as one ``(H, F * W, 3)`` strip of its
    frames, as is its ground truth.
    """
    folder.mkdir(parents=True, exist_ok=True)
    in_order = np.argsort(stim_ids, kind="stable")
    chosen = in_order[np.unique(np.linspace(0, len(in_order) - 1, GALLERY_IMAGES).round().astype(int))]
    video = outputs.ndim == 5
    truth = store.frames(stim_ids[chosen]) if video else store.images(stim_ids[chosen])
    for row, stim_truth in zip(chosen, truth, strict=True):
        key = f"{int(stim_ids[row]):06d}"
        generated = outputs[row].numpy()
        if video:
            generated, stim_truth = (np.concatenate(list(clip), axis=1) for clip in (generated, stim_truth))
        Image.fromarray(generated).save(folder / f"{key}.png")
        Image.fromarray(stim_truth).save(folder / f"gt_{key}.png")
