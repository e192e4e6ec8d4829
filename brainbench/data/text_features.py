"""Text targets per stimulus, from its captions or its category, in the backbone's text space.

Three names can be cached next to the image features (:mod:`brainbench.data.feature_cache`):

================== ================ =====================================================================
name               shape            content
================== ================ =====================================================================
``clip_text``      ``(D,)``         mean of the L2-normalised caption embeddings, L2-normalised (the
                                    brain->text retrieval target of the evaluator)
``clip_captions``  ``(K, D)``       every caption embedding (not normalised), ``K`` = most captions of any
                                    stimulus; stimuli with fewer captions are padded with **zero rows**
``clip_class_text`` ``(D,)``         the class prompt ``"a photo of a {category}."`` of the stimulus's
                                    first (largest) category, not normalised (BrainCLIP's GOD text target)
================== ================ =====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from brainbench.backbones.openclip import ImageBackbone
from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import DataFormatError
from brainbench.metrics.text_retrieval import caption_embeddings

TEXT_FEATURES = ("clip_text", "clip_captions", "clip_class_text")
CLASS_PROMPT = "a photo of a {}."


def text_features(
    store: StimulusStore, stim_ids: np.ndarray, backbone: ImageBackbone, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The requested :data:`TEXT_FEATURES` of ``stim_ids`` (rows in that order), float32.

    Raises:
        DataFormatError: a stimulus without captions (caption features) or without a category (class text).
    """
    out: dict[str, np.ndarray] = {}
    if {"clip_text", "clip_captions"} & set(names):
        captions = [store.captions(int(s)) for s in stim_ids]
        empty = [int(s) for s, caps in zip(stim_ids, captions, strict=True) if not caps]
        if empty:
            raise DataFormatError(
                store.path,
                f"stimuli {empty[:5]} have no captions, so caption targets cannot be computed",
                "use a method config whose targets need no captions, or add captions to the raw data",
            )
        counts = torch.tensor([len(c) for c in captions])
        owners = torch.repeat_interleave(torch.arange(len(captions)), counts)
        embedded = backbone.encode_text([c for caps in captions for c in caps]).float()
        if "clip_text" in names:
            out["clip_text"] = caption_embeddings(embedded, owners, len(captions)).numpy()
        if "clip_captions" in names:
            padded = torch.zeros(len(captions), int(counts.max()), embedded.shape[1])
            slot = torch.arange(len(owners)) - torch.repeat_interleave(
                torch.cumsum(counts, 0) - counts, counts
            )
            padded[owners, slot] = embedded
            out["clip_captions"] = padded.numpy()
    if "clip_class_text" in names:
        categories = [store.categories(int(s)) for s in stim_ids]
        missing = [int(s) for s, cats in zip(stim_ids, categories, strict=True) if not cats]
        if missing:
            raise DataFormatError(
                store.path,
                f"stimuli {missing[:5]} have no category, so class-prompt targets cannot be computed",
                "use clip_text (captions) as the text target for this dataset",
            )
        names_unique = sorted({cats[0] for cats in categories})
        prompts = backbone.encode_text([CLASS_PROMPT.format(n) for n in names_unique]).float()
        index = {n: i for i, n in enumerate(names_unique)}
        out["clip_class_text"] = prompts[[index[cats[0]] for cats in categories]].numpy()
    return out
