"""Backbone features of every stimulus in a prepared dataset, computed once and memory-mapped.

A cache lives in ``<prepared dir>/features/<backbone id>/``: one ``<name>.npy`` per feature (float16, rows in
``stim_ids.npy`` order) plus ``cache.json`` recording the backbone id, the sha256 of the stimulus store it
was computed from and, where the backbone's weights have a known checksum (the shipped world CLIPs), that
checksum. A cache whose store or weights checksum no longer matches is rebuilt, never silently reused.
Besides image features (``clip_tokens``, ``clip_image``, ``layer:<k>``) it holds text targets computed from
the store's captions and categories (:data:`brainbench.data.text_features.TEXT_FEATURES`), resized pixels
or video frames (``pixels:<px>``, ``frames:<px>``; :mod:`brainbench.data.pixel_features`) and the latents of
those frames under a frozen frame autoencoder (``latents:<px>:<autoencoder>``, ``(F, C, px/8, px/8)``, kept
float32: the perception reconstructor's targets, NeuroClips Eq. 1; ids in
:func:`brainbench.backbones.frame_autoencoder.load_frame_encoder`), each computed once per stimulus.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from brainbench.backbones.frame_autoencoder import (
    encode_clips,
    is_latent_target,
    load_frame_encoder,
    parse_latent_target,
)
from brainbench.backbones.openclip import ImageBackbone
from brainbench.data.pixel_features import is_pixel_feature, pixel_features
from brainbench.data.stimulus_store import StimulusStore
from brainbench.data.text_features import TEXT_FEATURES, text_features
from brainbench.errors import ConfigError, DataFormatError


def _file_name(feature: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", feature) + ".npy"


def latent_features(
    stim_ids: np.ndarray, names: Sequence[str], frames: dict[str, np.ndarray], store: StimulusStore
) -> dict[str, np.ndarray]:
    """``latents:<px>:<autoencoder>`` of ``stim_ids`` (rows in that order), float32.

    The clips are the ``frames:<px>`` features (float16, as cached), taken from ``frames`` when computed
    already, else from the store.
    """
    out: dict[str, np.ndarray] = {}
    for name in names:
        size, autoencoder = parse_latent_target(name)
        clips = frames.get(f"frames:{size}")
        if clips is None:
            clips = pixel_features(store, stim_ids, [f"frames:{size}"])[f"frames:{size}"]
        out[name] = encode_clips(load_frame_encoder(autoencoder, size), clips).numpy()
    return out


def cache_dir_for(prepared_dir: Path, backbone_id: str) -> Path:
    """Where the features of ``backbone_id`` for a prepared dataset live."""
    return prepared_dir / "features" / re.sub(r"[^A-Za-z0-9._-]+", "_", backbone_id)


def _same_sources(record: dict, store_sha256: str, weights_sha256: str | None) -> bool:
    """Whether a cache record was computed from this store and (when known) these weights."""
    if record.get("store_sha256") != store_sha256:
        return False
    return weights_sha256 is None or record.get("weights_sha256") == weights_sha256


class FeatureCache:
    """Read side: ``lookup(stim_ids)`` returns ``{name: float32 tensor}`` rows for those stimuli."""

    def __init__(self, directory: Path, names: Sequence[str]) -> None:
        record_path = directory / "cache.json"
        if not record_path.is_file():
            raise DataFormatError(directory, "no feature cache here", "call FeatureCache.build first")
        self.record = json.loads(record_path.read_text())
        missing = [n for n in names if n not in self.record["names"]]
        if missing:
            raise ConfigError(f"feature cache {directory} has {self.record['names']}, not {missing}")
        self.directory = directory
        self.names = tuple(names)
        self.stim_ids = np.load(directory / "stim_ids.npy", allow_pickle=False)
        self.arrays = {
            n: np.load(directory / _file_name(n), mmap_mode="r", allow_pickle=False) for n in names
        }

    @property
    def backbone_id(self) -> str:
        """The backbone the cached features come from."""
        return self.record["backbone"]

    def shape(self, name: str) -> tuple[int, ...]:
        """Per-stimulus shape of feature ``name``."""
        return tuple(self.arrays[name].shape[1:])

    def rows(self, stim_ids: np.ndarray) -> np.ndarray:
        """Row index of each stim id (raises on ids the cache does not hold)."""
        rows = np.searchsorted(self.stim_ids, stim_ids)
        rows = np.clip(rows, 0, len(self.stim_ids) - 1)
        bad = self.stim_ids[rows] != stim_ids
        if bad.any():
            raise DataFormatError(
                self.directory,
                f"stim ids {np.asarray(stim_ids)[bad][:5]} not in the cache",
                "delete the cache folder so it is rebuilt from the stimulus store",
            )
        return rows

    def lookup(self, stim_ids: np.ndarray) -> dict[str, torch.Tensor]:
        """Features of ``stim_ids`` as float32 tensors, by name."""
        rows = self.rows(np.asarray(stim_ids, dtype=np.int64))
        return {n: torch.from_numpy(np.asarray(self.arrays[n][rows], dtype=np.float32)) for n in self.names}

    @staticmethod
    def is_current(
        directory: Path, store_sha256: str, names: Sequence[str], weights_sha256: str | None = None
    ) -> bool:
        """Whether ``directory`` holds ``names`` computed from the stimulus store with ``store_sha256``.

        With ``weights_sha256`` the cache must also come from backbone weights with that checksum.
        """
        record_path = directory / "cache.json"
        if not record_path.is_file():
            return False
        record = json.loads(record_path.read_text())
        return _same_sources(record, store_sha256, weights_sha256) and set(names) <= set(record["names"])

    @classmethod
    def build(
        cls,
        prepared_dir: Path,
        store_path: Path,
        store_sha256: str,
        backbone: ImageBackbone,
        names: Sequence[str] = ("clip_tokens", "clip_image"),
        batch_size: int = 256,
        progress: bool = True,
        weights_sha256: str | None = None,
    ) -> FeatureCache:
        """Computes (or reuses) the cache of ``backbone`` for the stimulus store at ``store_path``.

        ``weights_sha256`` (the backbone weights' checksum, when known) is recorded, so that weights
        replaced under the same backbone id rebuild the cache.
        """
        directory = cache_dir_for(prepared_dir, backbone.backbone_id)
        if cls.is_current(directory, store_sha256, names, weights_sha256):
            return cls(directory, names)
        requested = tuple(names)
        if (
            directory / "cache.json"
        ).is_file():  # keep what other methods asked for, so caches never ping-pong
            record = json.loads((directory / "cache.json").read_text())
            if _same_sources(record, store_sha256, weights_sha256):
                names = tuple(dict.fromkeys([*record["names"], *names]))
        store = StimulusStore(store_path)
        stim_ids = np.asarray(store.stim_ids, dtype=np.int64)
        layers = tuple(int(n.split(":")[1]) for n in names if n.startswith("layer:"))
        image_names = [
            n for n in names if n not in TEXT_FEATURES and not is_pixel_feature(n) and not is_latent_target(n)
        ]
        chunks: dict[str, list[np.ndarray]] = {n: [] for n in image_names}
        for start in tqdm(
            range(0, len(stim_ids), batch_size),
            desc=f"features {backbone.backbone_id}",
            disable=not progress,
            unit="batch",
        ):
            images = torch.from_numpy(store.images(stim_ids[start : start + batch_size]))
            out = backbone.forward_features(images, layers=layers)
            for n in image_names:
                chunks[n].append(out[n].to(torch.float16).numpy())
        arrays = {n: np.concatenate(chunks[n]) for n in image_names}
        text = text_features(store, stim_ids, backbone, [n for n in names if n in TEXT_FEATURES])
        arrays.update({n: a.astype(np.float16) for n, a in text.items()})
        arrays.update(pixel_features(store, stim_ids, [n for n in names if is_pixel_feature(n)]))
        arrays.update(latent_features(stim_ids, [n for n in names if is_latent_target(n)], arrays, store))
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "stim_ids.npy", stim_ids)
        for n in names:
            np.save(tmp / _file_name(n), arrays[n])
        (tmp / "cache.json").write_text(
            json.dumps(
                {
                    "backbone": backbone.backbone_id,
                    "store_sha256": store_sha256,
                    "weights_sha256": weights_sha256,
                    "names": list(names),
                    "n_stimuli": int(len(stim_ids)),
                    "dtype": "float16",
                    "float32": [n for n in names if arrays[n].dtype == np.float32],
                },
                indent=2,
            )
        )
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
        return cls(directory, requested)
