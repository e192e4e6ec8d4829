"""Ground-truth image features by stimulus, cached on disk so reconstruction scoring computes them once.

Reconstruction metrics in a feature network (2-way identification, correlation distance, FID) need the
features of the test stimuli; they depend only on the stimulus and the network, never on the method. A
:class:`TruthFeatureCache` keeps them in a folder (``<prepared>/eval_features/`` for a prepared dataset), one
safetensors file per network and input chain::

    <folder>/<network id>-<sha256 of network, output, chain and weights, 12 hex>.safetensors
        stim_ids  (M,) int64
        features  (M, feature_dim) float32, rows in stim_ids order
        metadata  network, chain, weights, store_sha256, format

Files are written atomically (temporary file, then rename), so concurrent runs never see half a file; two
runs adding stimuli at once may each drop the other's additions, which are recomputed later. A file that
cannot be read, or that belongs to another stimulus store (``store_sha256``), is rebuilt with a warning.
Features are float32 exactly as the network gives them, so scores from cached and computed features are
the same numbers when the rows were computed in the same batches (the same test split); a cache filled by a
run over other stimuli may differ from a fresh pass by float32 round-off.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from brainbench.backbones.feature_networks import FeatureNetwork

FORMAT = "1"


class TruthFeatureCache:
    """Ground-truth features by (network, chain, stimulus id) in ``folder``.

    Args:
        folder: where the files live (created on first store).
        store_sha256: the stimulus store the ids refer to; files of another store are rebuilt.
    """

    def __init__(self, folder: str | Path, store_sha256: str = "") -> None:
        self.folder = Path(folder)
        self.store_sha256 = store_sha256

    def path(self, network: FeatureNetwork) -> Path:
        """The file of ``network`` (its id, output, chain and weights in the name's hash)."""
        key = json.dumps(
            {
                "network": network.network_id,
                "output": network.output,
                "shape": list(network.feature_shape),
                "chain": network.chain.params(),
                "weights": network.weights.description,
            },
            sort_keys=True,
        )
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", network.network_id)
        return self.folder / f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"

    def _read(self, network: FeatureNetwork) -> dict[str, Tensor] | None:
        path = self.path(network)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            warnings.warn(
                f"{path}: unreadable ground-truth feature cache ({error}); rebuilding it", stacklevel=3
            )
            return None
        stim_ids, features = tensors.get("stim_ids"), tensors.get("features")
        valid = (
            metadata.get("format") == FORMAT
            and metadata.get("store_sha256", "") == self.store_sha256
            and stim_ids is not None
            and features is not None
            and features.shape == (stim_ids.shape[0], network.feature_dim)
        )
        if not valid:
            warnings.warn(
                f"{path}: stale or malformed ground-truth feature cache; rebuilding it", stacklevel=3
            )
            return None
        return {"stim_ids": stim_ids, "features": features}

    def lookup(self, networks: Sequence[FeatureNetwork], stim_ids: np.ndarray) -> dict[str, Tensor] | None:
        """``{network id: (N, feature_dim) float32}`` rows of ``stim_ids``; ``None`` unless all are cached."""
        found = {}
        for network in networks:
            record = self._read(network)
            if record is None:
                return None
            row_of = {int(s): i for i, s in enumerate(record["stim_ids"].tolist())}
            rows = [row_of.get(int(s)) for s in np.asarray(stim_ids).tolist()]
            if any(row is None for row in rows):
                return None
            found[network.network_id] = record["features"][torch.tensor(rows, dtype=torch.int64)]
        return found

    def store(
        self, networks: Sequence[FeatureNetwork], stim_ids: np.ndarray, features: dict[str, Tensor]
    ) -> None:
        """Adds ``features[network id]`` rows (``stim_ids`` order) to each network's file, atomically.

        A folder that cannot be written (a read-only prepared dataset) only gives a warning.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._store(networks, stim_ids, features)
        except OSError as error:
            warnings.warn(f"{self.folder}: ground-truth features not cached ({error})", stacklevel=2)

    def _store(
        self, networks: Sequence[FeatureNetwork], stim_ids: np.ndarray, features: dict[str, Tensor]
    ) -> None:
        ids = torch.as_tensor(np.asarray(stim_ids), dtype=torch.int64)
        for network in networks:
            new = features[network.network_id].detach().to("cpu", torch.float32).contiguous()
            old = self._read(network)
            if old is not None:
                keep = ~torch.isin(old["stim_ids"], ids)
                ids_all = torch.cat([old["stim_ids"][keep], ids])
                new = torch.cat([old["features"][keep], new])
            else:
                ids_all = ids
            metadata = {
                "format": FORMAT,
                "network": network.network_id,
                "chain": json.dumps(network.chain.params()),
                "weights": network.weights.description,
                "store_sha256": self.store_sha256,
            }
            path = self.path(network)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            os.close(handle)
            try:
                save_file({"stim_ids": ids_all.contiguous(), "features": new}, temporary, metadata=metadata)
                os.replace(temporary, path)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
