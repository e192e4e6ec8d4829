"""Use a saved model: ``brainbench predict --model runs/<id>/model --prepared PATH | --voxels x.npy``.

The model folder is what ``bench`` saves: ``decoder.json`` (a registered class and its arguments; any other
class path is refused without importing it), ``decoder.safetensors`` and ``inference.json`` (the backbone and
the voxels it expects). Predictions are written as one ``.safetensors`` file keyed by name (plus ``stim_id``
for a prepared split): the format ``brainbench evaluate`` reads. ``--generate`` also runs the generator the
model was scored with (or another kind) and writes one ``<stim_id>.png`` per stimulus beside the file.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.manifest import Manifest
from brainbench.data.shards import iter_split
from brainbench.errors import ConfigError, DataFormatError, MissingFileError, reading
from brainbench.methods.base import DecoderModule
from brainbench.model_card import INFERENCE_FILE

log = logging.getLogger(__name__)


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
    generate: str | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Predict with a saved model on a prepared split or a ``.npy`` of voxels; write ``out`` (safetensors).

    Args:
        model_dir: ``runs/<id>/model``.
        out: the ``.safetensors`` file to write.
        prepared: a prepared folder whose ``split`` is predicted.
        voxels: a ``.npy`` of ``(N, V)`` voxels preprocessed as in training.
        split: the split of ``prepared``.
        generate: ``saved`` runs the generator the model was scored with, a kind (``retrieval``,
            ``world-decoder``, ...) another one; images go to ``<out without suffix>_images/<stim_id>.png``.
            Needs ``prepared`` (generators read its stimuli and feature cache).
        seed: seed of the generator's sampling.

    Raises:
        ConfigError: neither or both inputs, voxels the model cannot read, or generation without a prepared
            folder or without a generator.
        DataFormatError: an unreadable ``.npy``.
    """
    if (prepared is None) == (voxels is None):
        raise ConfigError("pass exactly one of --prepared PATH or --voxels FILE.npy")
    if generate is not None and prepared is None:
        raise ConfigError("--generate needs --prepared: generators read the prepared stimuli and features")
    model, inference = load_model(model_dir)
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
    if generate is not None:
        assert prepared is not None
        spec = _generator_spec(inference, generate, model_dir)
        stim_ids = tensors["stim_id"].numpy()
        images = generate_images_for(prepared, spec, predictions, stim_ids, inference, seed)
        _write_images(images, stim_ids, Path(out).with_name(f"{Path(out).stem}_images"))
        predictions["images"] = images
    return predictions


def _generator_spec(inference: dict[str, Any], generate: str, model_dir: Path) -> dict[str, Any]:
    saved = inference.get("generator_spec")
    if generate == "saved":
        if not saved:
            raise ConfigError(
                f"{model_dir} was scored without a generator; pass --generate KIND (`brainbench list`)"
            )
        return dict(saved)
    if saved and saved.get("kind") == generate:
        return dict(saved)
    return {"kind": generate, "inputs": {name: name for name in inference.get("targets", {})}}


def generate_images_for(
    prepared: Path,
    spec: dict[str, Any],
    predictions: dict[str, torch.Tensor],
    stim_ids: np.ndarray,
    inference: dict[str, Any],
    seed: int,
) -> torch.Tensor:
    """Runs a generator on predictions of ``prepared``'s stimuli, as ``bench`` does after testing."""
    from brainbench.generators.run import generate_images

    if not inference.get("backbone"):
        raise ConfigError("the model has no inference.json naming its backbone; save it again with bench")
    datamodule = FMRIDataModule(prepared, backbone=inference["backbone"], targets=list(inference["targets"]))
    datamodule.prepare_data(progress=False)
    datamodule.setup()
    outputs = dict(predictions)
    with tempfile.TemporaryDirectory() as scratch:  # generate_images also saves a gallery; not wanted here
        backbone = inference["backbone"]
        generate_images(
            {"generator": spec}, outputs, stim_ids, datamodule, backbone, Path(scratch), seed, log.info
        )
    return outputs["frames" if "frames" in outputs else "images"]


def _write_images(images: torch.Tensor, stim_ids: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if images.dtype != torch.uint8:
        images = (images.clamp(0, 1) * 255).round().byte()
    array = images.numpy()
    if array.ndim == 4 and array.shape[1] == 3:  # float (N, 3, H, W)
        array = array.transpose(0, 2, 3, 1)
    for stim_id, image in zip(stim_ids.tolist(), array, strict=True):
        # a clip is saved as its frames side by side
        strip = image if image.ndim == 3 else np.concatenate(list(image), axis=1)
        Image.fromarray(strip).save(folder / f"{stim_id}.png")
