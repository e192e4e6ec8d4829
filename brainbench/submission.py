"""Score predictions made outside brainbench with the evaluator and metric specs that ``bench`` uses.

``brainbench evaluate --prepared PATH --predictions FILE|DIR --method NAME`` reads

- embeddings: a ``.safetensors`` file keyed by target name (``clip_image``, ``clip_tokens``, ...), a ``.npy``
  file named by its target (``clip_image.npy``), or a folder of such files; rows are in test-split order
  (ascending ``stim_id``), or in any order when a ``stim_id`` entry (``stim_id.npy`` or a ``stim_id`` key)
  gives each row's stimulus;
- reconstructions: image files named by ``stim_id`` (``123.png``) in the predictions folder or its
  ``images/`` subfolder, all of one size,

checks them against the prepared test split (ids, counts, shapes, value ranges, image sizes: one clear
error each), scores them with :func:`brainbench.eval.scoring.evaluate_test_split`, and appends a row whose
``source`` is ``external`` and whose ``method`` is the submitter's name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.manifest import Manifest
from brainbench.data.registry import leaderboard_task
from brainbench.data.shards import iter_split
from brainbench.errors import ConfigError, DataFormatError, reading
from brainbench.eval.result import EvalResult
from brainbench.eval.scoring import evaluate_test_split
from brainbench.leaderboard.store import EXTERNAL_SOURCE, RunRecord, append_row, check_leaderboard

log = logging.getLogger(__name__)

STIM_ID = "stim_id"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_FIX = "write one row per test stimulus, in ascending stim_id order or with a stim_id entry"


def scored_stim_ids(prepared: Path, manifest: Manifest) -> np.ndarray:
    """The test split's stimulus ids in the order ``bench`` scores them (ascending)."""
    return np.sort(np.array([sample.stim_id for sample in iter_split(prepared, manifest, "test")], np.int64))


def load_predictions(path: Path, stim_ids: np.ndarray) -> dict[str, torch.Tensor]:
    """Named predictions, one row per test stimulus in ``stim_ids`` order.

    Raises:
        DataFormatError: unreadable files, wrong ids or counts, images of mixed sizes, NaN/inf values.
        ConfigError: nothing to score at ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--predictions {path} does not exist")
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    arrays: dict[str, torch.Tensor] = {}
    sources: dict[str, Path] = {}
    for file in files:
        for name, value in _read_embeddings(file).items():
            if name in arrays:
                raise DataFormatError(file, f"'{name}' is also in {sources[name]}", "give each target once")
            arrays[name], sources[name] = value, file
    row_ids = arrays.pop(STIM_ID, None)
    predictions = {name: _in_order(value, row_ids, stim_ids, sources[name]) for name, value in arrays.items()}
    if path.is_dir():
        image_dir = path / "images" if (path / "images").is_dir() else path
        images = _read_images(image_dir, stim_ids)
        if images is not None:
            predictions["images"] = images
    if not predictions:
        raise ConfigError(
            f"--predictions {path}: no embeddings (.safetensors, <target>.npy) or images (<stim_id>.png) "
            "found"
        )
    return predictions


def _read_embeddings(file: Path) -> dict[str, torch.Tensor]:
    fix = "save tensors with safetensors.torch.save_file or numpy.save (no pickles)"
    if file.suffix == ".safetensors":
        with reading(file, fix):
            return dict(load_file(file))
    if file.suffix == ".npy":
        with reading(file, fix):
            return {file.stem: torch.from_numpy(np.load(file, allow_pickle=False))}
    return {}


def _in_order(
    value: torch.Tensor, row_ids: torch.Tensor | None, stim_ids: np.ndarray, file: Path
) -> torch.Tensor:
    if len(value) != len(stim_ids):
        raise DataFormatError(file, f"{len(value)} rows, the test split has {len(stim_ids)} stimuli", _FIX)
    if not value.is_floating_point() or not torch.isfinite(value).all():
        raise DataFormatError(file, "predictions must be finite floating-point values", _FIX)
    if row_ids is None:
        return value.float()
    ids = row_ids.numpy().astype(np.int64)
    if sorted(ids.tolist()) != stim_ids.tolist():
        extra, missing = (
            sorted(set(ids.tolist()) - set(stim_ids.tolist())),
            sorted(set(stim_ids.tolist()) - set(ids.tolist())),
        )
        raise DataFormatError(
            file,
            f"stim_id does not match the test split (not in it: {extra[:5]}, missing: {missing[:5]})",
            _FIX,
        )
    return value[torch.from_numpy(np.argsort(ids, kind="stable"))].float()


def _read_images(folder: Path, stim_ids: np.ndarray) -> torch.Tensor | None:
    found = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    if not found:
        return None
    missing = [int(s) for s in stim_ids if str(int(s)) not in found]
    extra = sorted(set(found) - {str(int(s)) for s in stim_ids})
    if missing or extra:
        raise DataFormatError(
            folder,
            f"images must be named by the test stim_ids: missing {missing[:5]}, not in the test split "
            f"{extra[:5]}",
            "name each reconstruction <stim_id>.png, one per test stimulus",
        )
    images = []
    for stim_id in stim_ids:
        file = found[str(int(stim_id))]
        with reading(file, "write the reconstruction again as an 8-bit RGB PNG or JPEG"):
            with Image.open(file) as opened:
                images.append(np.asarray(opened.convert("RGB")))
        if images[-1].shape != images[0].shape:
            raise DataFormatError(
                file,
                f"size {images[-1].shape[:2]}, the first image is {images[0].shape[:2]}",
                "give every image one size",
            )
    return torch.from_numpy(np.stack(images))


def evaluate_predictions(
    prepared: Path,
    predictions_path: Path,
    *,
    method: str,
    backbone: str,
    leaderboards: Path,
    label: str = "",
    progress: bool = True,
) -> tuple[dict[str, Any], EvalResult]:
    """Score external predictions on a prepared folder's test split and append the row (``source=external``).

    Args:
        prepared: a prepared folder (``brainbench prepare`` output or a folder written to the contract).
        predictions_path: a predictions file or folder (module docstring).
        method: the submitter's method name, the row's ``method``.
        backbone: the embedding space of the predictions (its targets are computed with it).
        leaderboards: folder of the leaderboard CSVs.
        label: free text recorded as the row's ``method_version`` (e.g. a paper or commit).
        progress: progress bars while the feature cache is built.

    Returns:
        ``(row, result)``.
    """
    manifest = Manifest.load(prepared)
    csv_path = Path(leaderboards) / manifest.dataset / f"{leaderboard_task(manifest)}.csv"
    check_leaderboard(csv_path)
    stim_ids = scored_stim_ids(prepared, manifest)
    predictions = load_predictions(predictions_path, stim_ids)
    embedding_names = [n for n in predictions if n not in ("images", "frames")]
    targets: dict[str, torch.Tensor] = {}
    if embedding_names:
        datamodule = FMRIDataModule(prepared, backbone=backbone, targets=embedding_names)
        datamodule.prepare_data(progress=progress)
        datamodule.setup()
        assert datamodule.cache is not None
        targets = datamodule.cache.lookup(stim_ids)
        for name in embedding_names:
            if tuple(predictions[name].shape[1:]) != tuple(targets[name].shape[1:]):
                raise DataFormatError(
                    predictions_path,
                    f"'{name}' rows have shape {tuple(predictions[name].shape[1:])}; {backbone} gives "
                    f"{tuple(targets[name].shape[1:])}",
                    f"predict {name} in the {backbone} space, or pass the --backbone the predictions are in",
                )
    result, absent = evaluate_test_split(predictions, targets, manifest, prepared, stim_ids, backbone)
    record = replace(
        RunRecord.new(
            method=method,
            method_version=label or "external",
            dataset=manifest.dataset,
            dataset_version=manifest.dataset_version,
            split=f"{manifest.split_name}/test",
            subject=f"subj{manifest.subject:02d}",
            backbone=backbone,
            seed=0,
            n_train_samples=0,
            n_params=0,
            train_seconds=0.0,
            peak_memory_mb=0.0,
        ),
        source=EXTERNAL_SOURCE,
    )
    row = {**record.to_row(result.values), "config": "", "generator": "", "distributed": ""}
    append_row(csv_path, row)
    log.info("scored %s (%d test stimuli); row appended to %s", predictions_path, len(stim_ids), csv_path)
    if absent:
        log.info("not scored here: %s", json.dumps(absent))
    return row, result
