"""Retrieval "reconstruction": the training stimulus whose embedding is nearest each prediction.

The bank is the training split's stimuli only (a test stimulus can never be returned), with their cached
backbone features as keys. Used as a reconstruction baseline by MindEye (Scotti et al. 2023, arXiv
2305.18274, §3.3 "retrieval" column of the LAION-5B comparison) and as the generator's ceiling in the world
decoder's card: with the true embedding of a stimulus as query, it returns the most similar bank image.

Similarity is cosine (``metric="cosine"``: both sides L2-normalised, so the scale of predictions does not
matter) or the plain dot product.

Example:
    >>> bank = torch.eye(3)
    >>> nearest_rows(torch.tensor([[0.1, 2.0, 0.0]]), bank).tolist()
    [1]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from brainbench.data.feature_cache import FeatureCache
from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import ConfigError
from brainbench.generators.base import GenerationContext, ImageGenerator

Similarity = Literal["cosine", "dot"]


def nearest_rows(
    queries: torch.Tensor, bank: torch.Tensor, metric: Similarity = "cosine", block: int = 4096
) -> torch.Tensor:
    """Index of the most similar ``bank`` row for each query row (flattened beyond the first dim).

    Args:
        queries: ``(N, ...)`` predictions.
        bank: ``(M, ...)`` keys of the same per-row shape.
        metric: ``cosine`` or ``dot``.
        block: queries scored at once (memory bound ``block * M`` floats).

    Returns:
        ``(N,)`` int64 row indices into ``bank``.
    """
    queries = queries.reshape(len(queries), -1).float()
    bank = bank.reshape(len(bank), -1).float()
    if queries.shape[1] != bank.shape[1]:
        raise ConfigError(f"predictions have {queries.shape[1]} values per row, the bank {bank.shape[1]}")
    if metric == "cosine":
        queries, bank = F.normalize(queries, dim=1), F.normalize(bank, dim=1)
    elif metric != "dot":
        raise ConfigError(f"retrieval metric must be cosine or dot, got {metric!r}")
    rows = [(queries[i : i + block] @ bank.T).argmax(dim=1) for i in range(0, len(queries), block)]
    return torch.cat(rows) if rows else torch.empty(0, dtype=torch.int64)


class RetrievalGenerator(ImageGenerator):
    """Returns, per prediction, the training image whose cached embedding is nearest (one input, any name)."""

    generator_id = "retrieval"
    description = "nearest training stimulus by cached backbone embedding"

    def __init__(
        self,
        inputs: dict[str, str],
        bank_images: np.ndarray,
        bank_embeddings: torch.Tensor,
        bank_stim_ids: np.ndarray,
        metric: Similarity = "cosine",
    ) -> None:
        super().__init__(inputs)
        if len(inputs) != 1:
            raise ConfigError(
                f"retrieval takes exactly one input (the embedding to match); got {sorted(inputs)}"
            )
        self.bank_images = bank_images
        self.bank_embeddings = bank_embeddings
        self.bank_stim_ids = bank_stim_ids
        self.metric = metric
        self.full_id = f"retrieval-{next(iter(inputs))}-{metric}"
        self.last_stim_ids: np.ndarray | None = None

    @classmethod
    def from_config(
        cls, inputs: dict[str, str], context: GenerationContext, metric: Similarity = "cosine"
    ) -> RetrievalGenerator:
        """Indexes the training stimuli: images from the stimulus store, keys from the feature cache.

        ``inputs`` is ``{<cached feature name>: <prediction name>}``, e.g. ``{clip_image: clip_image}``.
        Images larger than ``context.image_size`` are resized (bilinear, antialiased).
        """
        if len(inputs) != 1:
            raise ConfigError(
                f"retrieval takes exactly one input (the embedding to match); got {sorted(inputs)}"
            )
        feature = next(iter(inputs))
        cache = context.cache
        if feature not in cache.names:
            if feature not in cache.record["names"]:
                raise ConfigError(
                    f"retrieval by {feature!r}: the feature cache {cache.directory} holds "
                    f"{cache.record['names']}; add it to the config's data.targets so it is cached"
                )
            cache = FeatureCache(cache.directory, [feature])
        stim_ids = np.unique(np.asarray(context.train_stim_ids, dtype=np.int64))
        if len(stim_ids) == 0:
            raise ConfigError("retrieval needs training stimuli; the training split is empty")
        embeddings = cache.lookup(stim_ids)[feature]
        with StimulusStore(context.prepared / context.manifest.stimulus_store["path"]) as store:
            images = store.images(stim_ids)
        if images.shape[1] != context.image_size:
            from brainbench.backbones.world_decoder import to_uint8_images

            images = to_uint8_images(
                torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, context.image_size
            )
            images = images.numpy()
        return cls(inputs, images, embeddings, stim_ids, metric)

    def generate(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """The nearest bank images ``(N, H, W, 3)`` uint8 (their stim ids stay in ``last_stim_ids``)."""
        queries = next(iter(conditions.values()))
        rows = nearest_rows(torch.as_tensor(queries).cpu(), self.bank_embeddings, self.metric).numpy()
        self.last_stim_ids = self.bank_stim_ids[rows]
        return torch.from_numpy(np.ascontiguousarray(self.bank_images[rows]))
