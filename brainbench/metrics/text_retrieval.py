"""fMRI->text retrieval: the predicted image embedding ranks the test stimuli's captions (and back).

MindTuner and BrainCLIP report fMRI->text matching (methods.md §3, §6): in a joint CLIP space, the brain's
predicted image embedding is compared by cosine with the caption embeddings of the test stimuli. Here each
stimulus's candidate is the L2-normalised mean of its captions' text embeddings, and the protocol is the
MindEye shared-subset one of :mod:`brainbench.metrics.retrieval` (``pool`` candidates, ``draws`` subsets,
``seed``), in both directions: ``b2t`` ranks captions for a brain prediction, ``t2b`` ranks brain
predictions for a caption. Ties count as wrong. Chance is ``1 / pool``.

Example:
    >>> brain = torch.eye(4)
    >>> float(text_retrieval_accuracy(brain, torch.eye(4), direction="brain2text", pool=4, draws=1))
    1.0
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from torch import Tensor

from brainbench.errors import ConfigError
from brainbench.metrics.base import check_round_trip, option
from brainbench.metrics.retrieval import shared_subset_accuracy
from brainbench.metrics.similarity import PairedRowsMetric, SharedSimilarity, cosine_similarity_matrix
from brainbench.metrics.specs import MetricSpec, parse_metric_id

TextDirection = Literal["brain2text", "text2brain"]
TEXT_DIRECTIONS: tuple[TextDirection, ...] = ("brain2text", "text2brain")
_TAG = {"brain2text": "b2t", "text2brain": "t2b"}


def caption_embeddings(text: Tensor, owners: Tensor, n_stimuli: int) -> Tensor:
    """Per-stimulus mean of its captions' embeddings ``(n_stimuli, D)``, L2-normalised.

    Args:
        text: ``(n_captions, D)`` text embeddings.
        owners: ``(n_captions,)`` stimulus row of each caption.
        n_stimuli: number of stimuli (every one must own at least one caption).
    """
    text = torch.nn.functional.normalize(text.float(), dim=-1)
    summed = torch.zeros(n_stimuli, text.shape[1]).index_add_(0, owners, text)
    return torch.nn.functional.normalize(summed, dim=-1)


def text_retrieval_accuracy(
    pred: Tensor,
    captions: Tensor,
    *,
    direction: TextDirection,
    pool: int = 300,
    draws: int = 30,
    seed: int = 42,
) -> Tensor:
    """Top-1 in shared subsets of ``pool`` stimuli between brain predictions and caption embeddings.

    Args:
        pred: ``(N, D)`` predicted image embeddings, row ``i`` for stimulus ``i``.
        captions: ``(N, D)`` caption embeddings of the same stimuli.
        direction: ``brain2text`` or ``text2brain``.
        pool: candidates per subset.
        draws: subsets averaged over.
        seed: seed of the subsets.
    """
    similarity = cosine_similarity_matrix(pred, captions)  # brain rows, captions columns
    oriented = "brain2image" if direction == "brain2text" else "image2brain"
    return shared_subset_accuracy(similarity, direction=oriented, pool=pool, draws=draws, seed=seed)


def text_retrieval_spec(
    *, direction: TextDirection, network: str, pool: int, draws: int, seed: int
) -> MetricSpec:
    """The spec of one column, e.g. ``retrieval_b2t_top1_subset300/<network>@v1``."""
    params = {
        "direction": direction,
        "pool": pool,
        "draws": draws,
        "seed": seed,
        "captions": "mean per stimulus",
    }
    description = (
        f"{direction} {pool}-way top-1 (shared subsets) against the mean caption embedding per stimulus"
    )
    return MetricSpec(f"retrieval_{_TAG[direction]}_top1_subset{pool}", network, 1, True, params, description)


_NAME_RE = re.compile(r"^retrieval_(?P<dir>b2t|t2b)_top1_subset(?P<pool>[0-9]+)$")


class TextRetrieval(PairedRowsMetric):
    """Torchmetrics form of :func:`text_retrieval_accuracy`: ``update(pred, captions)``, scored at the end.

    Example:
        >>> metric = TextRetrieval(direction="text2brain", network="demo", pool=3, draws=2)
        >>> metric.update(torch.eye(3), torch.eye(3))
        >>> float(metric.compute()), metric.spec.id, round(metric.chance, 3)
        (1.0, 'retrieval_t2b_top1_subset3/demo@v1', 0.333)
    """

    pred: list[Tensor]
    target: list[Tensor]

    def __init__(
        self,
        *,
        direction: TextDirection,
        network: str = "",
        pool: int = 300,
        draws: int = 30,
        seed: int = 42,
        shared: SharedSimilarity | None = None,
    ) -> None:
        super().__init__()
        self.direction, self.pool, self.draws, self.seed, self.shared = direction, pool, draws, seed, shared
        spec = text_retrieval_spec(direction=direction, network=network, pool=pool, draws=draws, seed=seed)
        self.set_spec(spec, 1 / pool)

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> TextRetrieval:
        """From ``retrieval_<b2t|t2b>_top1_subset<pool>/<network>@v1``; ``context``: ``draws``, ``seed``."""
        name, network, _ = parse_metric_id(metric_id)
        match = _NAME_RE.match(name)
        if match is None:
            raise ConfigError(f"{metric_id!r} is not a brain<->text retrieval column")
        metric = cls(
            direction="brain2text" if match["dir"] == "b2t" else "text2brain",
            network=network,
            pool=int(match["pool"]),
            draws=int(option(context, "draws", 30)),  # type: ignore[call-overload]
            seed=int(option(context, "seed", 42)),  # type: ignore[call-overload]
            shared=context.get("shared"),  # type: ignore[arg-type]
        )
        return check_round_trip(metric, metric_id)  # type: ignore[return-value]

    def compute(self) -> Tensor:
        """Shared-subset top-1 over every accumulated row."""
        oriented = "brain2image" if self.direction == "brain2text" else "image2brain"
        similarity = self.cosine_similarity(self.shared, 1024)
        return shared_subset_accuracy(
            similarity, direction=oriented, pool=self.pool, draws=self.draws, seed=self.seed
        )
