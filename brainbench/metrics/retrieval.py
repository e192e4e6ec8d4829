r"""Brain↔image retrieval: both directions, named explicitly, and both N-way variants, kept apart.

Similarity (MindEye1 ``src/Retrievals.py``, MindEye2 ``final_evaluations.ipynb``, Lite-Mind
``src/inference_litemind.py``; see ``metrics.md`` §1.6) is the cosine of the
L2-normalised, flattened embeddings. Row ``i`` of ``pred`` (brain side) and row ``i`` of ``target`` (image
side) are the same stimulus, and the similarity matrix always has **brain predictions on the rows, images on
the columns** (:func:`brainbench.metrics.similarity.cosine_similarity_matrix`):

.. math::

    S_{ij} = \frac{\langle b_i, v_j \rangle}{\lVert b_i \rVert \, \lVert v_j \rVert}

Directions (MindEye's ``batchwise_cosine_similarity`` returns the transpose, so its printed "fwd" is really
image→brain; here the names say what is ranked):

- ``brain2image`` ("image retrieval"): given brain prediction ``i``, rank the candidate images (row ``S_i·``).
- ``image2brain`` ("brain retrieval"): given image ``j``, rank the brain predictions (column ``S_·j``).

A query counts as correct at top-k when fewer than ``k`` other candidates score **greater than or equal to**
the true one: ties count as wrong, so a constant predictor scores 0, not a lucky 1.

Variants (separate leaderboard columns; same chance level ``k/pool``, different variance):

- ``shared-subset`` (MindEye): ``draws`` subsets of ``pool`` indices drawn without replacement from
  ``numpy.random.default_rng(seed)`` (one generator, ``rng.choice(N, pool, replace=False)`` per draw, so not
  bit-identical to MindEye2's legacy ``np.random.seed(42)``); within each subset every item is a query against
  the ``pool`` candidates of that subset, both directions share the subsets; mean over draws.
  If ``N == pool`` every draw is the full set.
- ``per-query`` (Lite-Mind): for draw ``j`` in ``range(draws)`` each query gets its own ``pool - 1`` random
  distractors out of its ``N - 1`` others, drawn with ``numpy.random.default_rng([seed, j])`` as the
  ``pool - 1`` smallest of i.i.d. uniform keys; mean over all ``N × draws`` query-draws. Never the best seed.
- ``full-set``: every query against all ``N`` candidates (Lite-Mind's printed "982-way"); chance ``k/N``.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from brainbench.errors import ConfigError
from brainbench.metrics.base import check_round_trip, option
from brainbench.metrics.similarity import PairedRowsMetric, SharedSimilarity, cosine_similarity_matrix
from brainbench.metrics.specs import MetricSpec, parse_metric_id

Direction = Literal["brain2image", "image2brain"]
Variant = Literal["shared-subset", "per-query", "full-set"]
DIRECTIONS: tuple[Direction, ...] = ("brain2image", "image2brain")
VARIANTS: tuple[Variant, ...] = ("shared-subset", "per-query", "full-set")
_DIRECTION_TAG = {"brain2image": "b2i", "image2brain": "i2b"}
_VARIANT_TAG = {"shared-subset": "subset", "per-query": "perquery", "full-set": "full"}


def _oriented(similarity: Tensor, direction: Direction) -> Tensor:
    """Queries on the rows, candidates on the columns."""
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N, N), got {tuple(similarity.shape)}")
    if direction == "brain2image":
        return similarity
    if direction == "image2brain":
        return similarity.T
    raise ConfigError(f"unknown retrieval direction {direction!r}\n  fix: use one of {DIRECTIONS}")


def _hits(scores: Tensor, true_idx: Tensor, top_k: int) -> Tensor:
    """Per row: fewer than ``top_k`` other candidates score >= the true one (ties count as wrong)."""
    true = scores.gather(1, true_idx[:, None])
    return (scores >= true).sum(dim=1) - 1 < top_k


def _check_pool(n: int, pool: int, top_k: int, draws: int) -> None:
    if n < pool:
        raise ConfigError(
            f"retrieval pool {pool} is larger than the {n} test items\n  fix: pass pool=min(300, N) "
            f"explicitly (here pool={n}); the spec records the pool used"
        )
    if pool < 2 or not 1 <= top_k <= pool or draws < 1:
        raise ConfigError(f"need pool >= 2, 1 <= top_k <= pool and draws >= 1 (pool={pool}, top_k={top_k})")


def full_set_accuracy(
    similarity: Tensor, *, direction: Direction, top_k: int = 1, block_size: int = 1024
) -> Tensor:
    """Top-k accuracy of every query against all ``N`` candidates (chance ``top_k / N``).

    Args:
        similarity: ``(N, N)``, brain on rows, images on columns (see :func:`cosine_similarity_matrix`).
        direction: ``brain2image`` ranks each row, ``image2brain`` each column.
        top_k: the true candidate must be among the ``top_k`` best (ties count as wrong).
        block_size: queries scored at once.

    Returns:
        0-d float64 tensor in ``[0, 1]``.
    """
    scores = _oriented(similarity, direction)
    n = scores.shape[0]
    correct = sum(
        int(_hits(scores[r0 : r0 + block_size], torch.arange(r0, min(n, r0 + block_size)), top_k).sum())
        for r0 in range(0, n, block_size)
    )
    return torch.tensor(correct / n, dtype=torch.float64)


def shared_subset_indices(n: int, *, pool: int = 300, draws: int = 30, seed: int = 42) -> list[np.ndarray]:
    """The MindEye subsets: ``draws`` arrays of ``pool`` distinct indices from ``default_rng(seed)``."""
    _check_pool(n, pool, 1, draws)
    if n == pool:
        return [np.arange(n) for _ in range(draws)]
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=pool, replace=False) for _ in range(draws)]


def shared_subset_accuracy(
    similarity: Tensor,
    *,
    direction: Direction,
    top_k: int = 1,
    pool: int = 300,
    draws: int = 30,
    seed: int = 42,
    per_draw: bool = False,
) -> Tensor:
    """MindEye's "top-1 among 300, 30 draws": top-k accuracy inside each shared subset, mean over draws.

    Returns:
        0-d float64 mean, or with ``per_draw`` the ``(draws,)`` accuracies (e.g. for a ``std/√draws`` CI).
    """
    scores = _oriented(similarity, direction)
    _check_pool(scores.shape[0], pool, top_k, draws)
    out = torch.empty(draws, dtype=torch.float64)
    for d, idx in enumerate(shared_subset_indices(scores.shape[0], pool=pool, draws=draws, seed=seed)):
        sub_idx = torch.from_numpy(idx)
        sub = scores.index_select(0, sub_idx).index_select(1, sub_idx)
        out[d] = _hits(sub, torch.arange(pool), top_k).double().mean()
    return out if per_draw else out.mean()


def per_query_accuracy(
    similarity: Tensor,
    *,
    direction: Direction,
    top_k: int = 1,
    pool: int = 300,
    draws: int = 30,
    seed: int = 42,
    block_size: int = 1024,
    per_draw: bool = False,
) -> Tensor:
    """Lite-Mind's "300-way": per-query random distractors, mean over all query-draws (never the best seed).

    For draw ``j`` and query ``i``, the distractors are the ``pool - 1`` others with the smallest keys among
    i.i.d. uniform keys from ``numpy.random.default_rng([seed, j])`` (a uniform ``(pool-1)``-subset of the
    ``N - 1`` others). The query is correct when fewer than ``top_k`` chosen distractors score >= the true
    candidate. Keys are drawn row-major, so the result does not depend on ``block_size``.

    Returns:
        0-d float64 mean, or with ``per_draw`` the ``(draws,)`` accuracies, each over all ``N`` queries.
    """
    scores = _oriented(similarity, direction)
    n = scores.shape[0]
    _check_pool(n, pool, top_k, draws)
    rngs = [np.random.default_rng([seed, j]) for j in range(draws)]
    correct = torch.zeros(draws, dtype=torch.float64)
    for r0 in range(0, n, block_size):
        block = scores[r0 : r0 + block_size]
        local, own = torch.arange(block.shape[0]), torch.arange(r0, r0 + block.shape[0])
        beats = block >= block[local, own][:, None]
        beats[local, own] = False
        beats_np = beats.numpy()
        for j, rng in enumerate(rngs):
            keys = rng.random((block.shape[0], n))
            keys[local.numpy(), own.numpy()] = np.inf
            # (pool-1)-th smallest key per row; np.partition is linear-time (and ~20x faster than kthvalue)
            threshold = np.partition(keys, pool - 2, axis=1)[:, pool - 2 : pool - 1]
            n_beating = (beats_np & (keys <= threshold)).sum(axis=1)
            correct[j] += int((n_beating < top_k).sum())
    return correct / n if per_draw else (correct / n).mean()


def retrieval_accuracy(
    pred: Tensor,
    target: Tensor,
    *,
    direction: Direction,
    variant: Variant,
    top_k: int = 1,
    pool: int = 300,
    draws: int = 30,
    seed: int = 42,
    block_size: int = 1024,
) -> Tensor:
    """Retrieval top-k accuracy from embeddings: similarity, then one variant in one direction.

    Args:
        pred: ``(N, ...)`` brain-predicted embeddings.
        target: ``(N, ...)`` image embeddings, row ``i`` the same stimulus as ``pred[i]``.
        direction: ``brain2image`` or ``image2brain`` (see module docstring).
        variant: ``shared-subset``, ``per-query`` or ``full-set``.
        top_k: rank threshold.
        pool: candidates per query (ignored by ``full-set``); must be <= N, never lowered silently.
        draws: subsets / seeds averaged over (ignored by ``full-set``).
        seed: base seed (ignored by ``full-set``).
        block_size: rows processed at once.

    Returns:
        0-d float64 tensor in ``[0, 1]``.

    Example:
        >>> emb = torch.eye(4)
        >>> float(retrieval_accuracy(emb, emb, direction="brain2image", variant="full-set"))
        1.0
    """
    similarity = cosine_similarity_matrix(pred, target, block_size=block_size)
    return similarity_accuracy(
        similarity,
        direction=direction,
        variant=variant,
        top_k=top_k,
        pool=pool,
        draws=draws,
        seed=seed,
        block_size=block_size,
    )


def similarity_accuracy(
    similarity: Tensor,
    *,
    direction: Direction,
    variant: Variant,
    top_k: int = 1,
    pool: int = 300,
    draws: int = 30,
    seed: int = 42,
    block_size: int = 1024,
) -> Tensor:
    """:func:`retrieval_accuracy` from the ``(N, N)`` similarity (brain rows, image columns)."""
    if variant == "full-set":
        return full_set_accuracy(similarity, direction=direction, top_k=top_k, block_size=block_size)
    if variant == "shared-subset":
        return shared_subset_accuracy(
            similarity, direction=direction, top_k=top_k, pool=pool, draws=draws, seed=seed
        )
    if variant == "per-query":
        return per_query_accuracy(
            similarity,
            direction=direction,
            top_k=top_k,
            pool=pool,
            draws=draws,
            seed=seed,
            block_size=block_size,
        )
    raise ConfigError(f"unknown retrieval variant {variant!r}\n  fix: use one of {VARIANTS}")


def retrieval_spec(
    *,
    direction: Direction,
    variant: Variant,
    top_k: int,
    network: str,
    pool: int = 300,
    draws: int = 30,
    seed: int = 42,
    n_items: int | None = None,
) -> MetricSpec:
    """The spec of one retrieval column, e.g. ``retrieval_b2i_top1_subset300/<network>@v1``.

    The pool size is part of the metric name (a 300-way and a 50-way top-1 are different numbers);
    ``full-set`` columns record ``n_items`` in ``params`` instead.
    """
    pooled = variant != "full-set"
    name = f"retrieval_{_DIRECTION_TAG[direction]}_top{top_k}_{_VARIANT_TAG[variant]}{pool if pooled else ''}"
    params: dict[str, object] = {"direction": direction, "variant": variant, "top_k": top_k, "ties": "wrong"}
    if pooled:
        params.update(pool=pool, draws=draws, seed=seed)
    if n_items is not None:
        params["n_items"] = n_items
    what = f"{pool}-way" if pooled else "all-items"
    description = (
        f"{direction} {what} top-{top_k} accuracy ({variant}), cosine of L2-normalised flattened embeddings"
    )
    return MetricSpec(name, network, 1, True, params, description)


def retrieval_chance(*, variant: Variant, top_k: int, pool: int, n_items: int) -> float:
    """Chance level of a retrieval column: ``top_k / pool``, or ``top_k / N`` for ``full-set``."""
    return min(1.0, top_k / (n_items if variant == "full-set" else pool))


_NAME_RE = re.compile(
    r"^retrieval_(?P<dir>b2i|i2b)_top(?P<k>[0-9]+)_(?P<variant>subset|perquery|full)(?P<pool>[0-9]*)$"
)


class BrainImageRetrieval(PairedRowsMetric):
    """Torchmetrics form of :func:`retrieval_accuracy`: accumulates rows, scores them all at ``compute``.

    Retrieval is not decomposable over batches (every query is ranked against every candidate), so the
    states are the embeddings themselves, concatenated across processes (``dist_reduce_fx="cat"``; rows and
    their targets stay paired because both are gathered in the same rank order). Metrics given the same
    :class:`~brainbench.metrics.similarity.SharedSimilarity` and the same rows share one similarity matrix.

    Example:
        >>> metric = BrainImageRetrieval(direction="image2brain", variant="full-set", network="demo")
        >>> metric.update(torch.eye(3), torch.eye(3))
        >>> float(metric.compute()), metric.spec.id, round(metric.chance, 3)
        (1.0, 'retrieval_i2b_top1_full/demo@v1', 0.333)
    """

    pred: list[Tensor]
    target: list[Tensor]

    def __init__(
        self,
        *,
        direction: Direction,
        variant: Variant,
        top_k: int = 1,
        pool: int = 300,
        draws: int = 30,
        seed: int = 42,
        network: str = "",
        block_size: int = 1024,
        n_items: int | None = None,
        shared: SharedSimilarity | None = None,
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS or variant not in VARIANTS:
            raise ConfigError(f"direction must be in {DIRECTIONS} and variant in {VARIANTS}")
        self.direction, self.variant, self.top_k = direction, variant, top_k
        self.pool, self.draws, self.seed, self.block_size = pool, draws, seed, block_size
        self.n_items, self.shared = n_items, shared
        spec = retrieval_spec(
            direction=direction,
            variant=variant,
            top_k=top_k,
            network=network,
            pool=pool,
            draws=draws,
            seed=seed,
            n_items=n_items,
        )
        self.set_spec(spec)

    @property
    def chance(self) -> float:
        """``top_k / pool``, or ``top_k / N`` for the full set (N from ``n_items`` or the rows seen)."""
        n_items = self.n_items if self.n_items is not None else self.n_rows()
        if self.variant == "full-set" and not n_items:
            return math.nan
        return retrieval_chance(variant=self.variant, top_k=self.top_k, pool=self.pool, n_items=n_items)

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> BrainImageRetrieval:
        """From ``retrieval_<b2i|i2b>_top<k>_<subset|perquery><pool>|full/<network>@v1``.

        ``context`` may give ``draws``, ``seed`` (defaults 30, 42), ``block_size``, ``n_items``, ``shared``.
        """
        name, network, _ = parse_metric_id(metric_id)
        match = _NAME_RE.match(name)
        if match is None:
            raise ConfigError(f"{metric_id!r} is not a brain<->image retrieval column")
        variant = {"subset": "shared-subset", "perquery": "per-query", "full": "full-set"}[match["variant"]]
        metric = cls(
            direction="brain2image" if match["dir"] == "b2i" else "image2brain",
            variant=variant,  # type: ignore[arg-type]
            top_k=int(match["k"]),
            pool=int(match["pool"] or 300),
            draws=int(option(context, "draws", 30)),  # type: ignore[call-overload]
            seed=int(option(context, "seed", 42)),  # type: ignore[call-overload]
            network=network,
            block_size=int(option(context, "block_size", 1024)),  # type: ignore[call-overload]
            n_items=context.get("n_items"),  # type: ignore[arg-type]
            shared=context.get("shared"),  # type: ignore[arg-type]
        )
        return check_round_trip(metric, metric_id)  # type: ignore[return-value]

    def compute(self) -> Tensor:
        """Score every accumulated row (see :func:`retrieval_accuracy`)."""
        return similarity_accuracy(
            self.cosine_similarity(self.shared, self.block_size),
            direction=self.direction,
            variant=self.variant,
            top_k=self.top_k,
            pool=self.pool,
            draws=self.draws,
            seed=self.seed,
            block_size=self.block_size,
        )
