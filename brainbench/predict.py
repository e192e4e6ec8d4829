"""Use a saved model: ``brainbench predict --model runs/<id>/model --prepared PATH | --voxels x.npy``.

The model folder is what ``bench`` saves: ``decoder.json`` (a registered class and its arguments; any other
class path is refused without importing it), ``decoder.safetensors`` and ``inference.json`` (the backbone and
the voxels it expects). Predictions are written as one ``.safetensors`` file keyed by name (plus ``stim_id``
for a prepared split): the format ``brainbench evaluate`` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from brainbench.data.manifest import Manifest
from brainbench.data.shards import iter_split
from brainbench.errors import ConfigError, DataFormatError, MissingFileError, reading
from brainbench.methods.base import DecoderModule
from brainbench.model_card import INFERENCE_FILE


def load_model(directory: Path) -> tuple[DecoderModule, dict[str, Any]]:
    """The decoder saved in ``directory`` and its ``inference.json`` (empty for models saved before it)."""
    directory = Path(directory)
    model = DecoderModule.load_pretrained(directory)
    inference_path = directory / INFERENCE_FILE
    inference: dict[str, Any] = {}
    if inference_path.is_file():
        with reading(inference_path, "save the model again with `brainbench bench`"):
            inference = json.loads(inference_path.read_text())
    return model, inference


@torch.no_grad()
def predict_voxels(
    model: DecoderModule, voxels: np.ndarray, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Named predictions for ``(N, V)`` voxels (float32), in batches."""
    if voxels.ndim != 2 or voxels.shape[1] != model.n_voxels:
        raise ConfigError(f"voxels have shape {voxels.shape}; this model reads (N, {model.n_voxels})")
    if not np.isfinite(voxels).all():
        raise ConfigError("voxels hold NaN or inf values")
    batches = [
        model(torch.from_numpy(np.ascontiguousarray(voxels[i : i + batch_size], dtype=np.float32)))
        for i in range(0, len(voxels), batch_size)
    ]
    return {name: torch.cat([b[name].float() for b in batches]) for name in batches[0]}


def prepared_voxels(prepared: Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """A prepared split's voxels (test: repeat averages) and stimulus ids, by ``stim_id`` as bench scores."""
    manifest = Manifest.load(prepared)
    if split not in manifest.splits:
        raise ConfigError(f"{prepared} has no {split!r} split (splits: {sorted(manifest.splits)})")
    samples = sorted(iter_split(prepared, manifest, split), key=lambda s: s.stim_id)
    voxels = np.stack([s.voxels.astype(np.float32) for s in samples])
    return voxels, np.array([s.stim_id for s in samples], dtype=np.int64)


def predict(
    model_dir: Path,
    out: Path,
    *,
    prepared: Path | None = None,
    voxels: Path | None = None,
    split: str = "test",
) -> dict[str, torch.Tensor]:
    """Predict with a saved model on a prepared split or a ``.npy`` of voxels; write ``out`` (safetensors).

    Raises:
        ConfigError: neither or both inputs, or voxels the model cannot read.
        DataFormatError: an unreadable ``.npy``.
    """
    if (prepared is None) == (voxels is None):
        raise ConfigError("pass exactly one of --prepared PATH or --voxels FILE.npy")
    model, _ = load_model(model_dir)
    tensors: dict[str, torch.Tensor] = {}
    if prepared is not None:
        array, stim_ids = prepared_voxels(prepared, split)
        tensors["stim_id"] = torch.from_numpy(stim_ids)
    else:
        assert voxels is not None
        if not Path(voxels).is_file():
            raise MissingFileError(voxels, "pass a .npy of (N, V) voxels, preprocessed as in training")
        with reading(voxels, "save the voxels with numpy.save as a float (N, V) array, no pickles"):
            array = np.load(voxels, allow_pickle=False)
        if array.dtype.kind != "f":
            raise DataFormatError(voxels, f"dtype {array.dtype}, not floating point", "save float voxels")
    predictions = predict_voxels(model, array)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file({**{k: v.contiguous() for k, v in predictions.items()}, **tensors}, str(out))
    return predictions
