r"""Exhaustive two-way identification, the definition MindEye1/2 and Brain-Diffuser share.

Source: ``metrics.md`` §1.2 (MindEye1 ``two_way_identification``, MindEye2 same
function, Brain-Diffuser ``pairwise_corr_all``). With ``R[i, j] = Pearson(GT_i, PRED_j)`` over flattened
features,

.. math::

    \mathrm{2way} = \frac{1}{N} \sum_j \frac{1}{N-1} \sum_{i \ne j} \mathbb{1}\left[R_{ij} < R_{jj}\right]

i.e. for each prediction, the fraction of other ground truths it correlates with less than with its own.
Exhaustive over all ``N - 1`` alternatives (no sampling); chance 0.5; ties count as losses (strict ``<``,
as in the reference code). Not to be confused with Mind-Video's / MinD-Vis's N-way *classifier* test.

Unlike the reference ``np.corrcoef([GT; PRED])`` (a ``2N × D`` float64 copy, ~2.9 GB for AlexNet
``features.4`` at N=982), rows are centred and normalised in blocks and ``R`` is produced one column block
at a time. A constant row has zero variance; its correlations are taken as 0 (``np.corrcoef`` would give NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from brainbench.errors import ConfigError
from brainbench.metrics.base import cat_rows, check_round_trip, option
from brainbench.metrics.similarity import PairedRowsMetric, similarity_blocks
from brainbench.metrics.specs import MetricSpec, parse_metric_id

IDENTIFICATION_CHANCE = 0.5


def two_way_identification_per_item(pred: Tensor, target: Tensor, *, block_size: int = 1024) -> Tensor:
    """Per-prediction 2-way scores ``(N,)`` float64: for each ``j``, the share of ``i ≠ j`` with R_ij < R_jj.

    Args:
        pred: ``(N, ...)`` predicted features (reconstruction features or predicted embeddings).
        target: ``(N, ...)`` ground-truth features, row ``i`` the same stimulus as ``pred[i]``.
        block_size: rows processed at once.

    Raises:
        ValueError: when shapes differ or ``N < 2``.
    """
    if pred.shape[0] < 2:
        raise ValueError(f"2-way identification needs N >= 2 items, got {pred.shape[0]}")
    n = pred.shape[0]
    wins = torch.zeros(n, dtype=torch.int64)
    # Blocks of PRED rows j against all GT rows i: block[a, i] = R[i, r0 + a] = Pearson(GT_i, PRED_{r0+a}).
    for r0, block in similarity_blocks(pred, target, centre=True, block_size=block_size):
        local = torch.arange(block.shape[0])
        own = block[local, local + r0]
        wins[r0 : r0 + block.shape[0]] = (block < own[:, None]).sum(dim=1)  # i == j never counts (strict <)
    return wins.double() / (n - 1)


def two_way_identification(pred: Tensor, target: Tensor, *, block_size: int = 1024) -> Tensor:
    """Mean over predictions of :func:`two_way_identification_per_item`; 0-d float64 tensor in ``[0, 1]``.

    Example:
        >>> gt = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0], [1.0, 2.0, 0.0]])
        >>> float(two_way_identification(gt, gt)), float(two_way_identification(-gt, gt))
        (1.0, 0.0)
    """
    return two_way_identification_per_item(pred, target, block_size=block_size).mean()


def identification_spec(*, network: str, n_items: int | None = None) -> MetricSpec:
    """The spec of the 2-way identification column, ``identification_2way/<network>@v1``."""
    params: dict[str, object] = {"correlation": "pearson", "alternatives": "exhaustive", "ties": "loss"}
    if n_items is not None:
        params["n_items"] = n_items
    description = "exhaustive 2-way identification: P(r(own GT, pred) > r(other GT, pred)), chance 0.5"
    return MetricSpec("identification_2way", network, 1, True, params, description)


class TwoWayIdentification(PairedRowsMetric):
    """Torchmetrics form of :func:`two_way_identification`; rows accumulate, scored at ``compute``.

    Example:
        >>> metric = TwoWayIdentification(network="demo")
        >>> metric.update(torch.eye(3)[:2], torch.eye(3)[:2])
        >>> metric.update(torch.eye(3)[2:], torch.eye(3)[2:])
        >>> float(metric.compute()), metric.spec.id, metric.chance
        (1.0, 'identification_2way/demo@v1', 0.5)
    """

    pred: list[Tensor]
    target: list[Tensor]

    def __init__(
        self,
        *,
        network: str = "",
        block_size: int = 1024,
        n_items: int | None = None,
        spec: MetricSpec | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.set_spec(spec or identification_spec(network=network, n_items=n_items), IDENTIFICATION_CHANCE)

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> TwoWayIdentification:
        """From ``identification_2way/<network>@v1``.

        ``context`` may give ``block_size``, ``n_items`` and ``spec`` (the spec with more parameters, e.g.
        a feature network's input chain; its id must be ``metric_id``).
        """
        name, network, _ = parse_metric_id(metric_id)
        if name != "identification_2way":
            raise ConfigError(f"{metric_id!r} is not a 2-way identification column")
        metric = cls(
            network=network,
            block_size=int(option(context, "block_size", 1024)),  # type: ignore[call-overload]
            n_items=context.get("n_items"),  # type: ignore[arg-type]
            spec=context.get("spec"),  # type: ignore[arg-type]
        )
        return check_round_trip(metric, metric_id)  # type: ignore[return-value]

    def compute(self) -> Tensor:
        """Score every accumulated row (per-prediction scores in ``computed_per_item``)."""
        self.computed_per_item = two_way_identification_per_item(
            cat_rows(self.pred), cat_rows(self.target), block_size=self.block_size
        )
        return self.computed_per_item.mean()
