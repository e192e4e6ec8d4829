"""What every leaderboard metric is: a torchmetrics ``Metric`` that knows its column.

A :class:`SpecMetric` carries its :class:`~brainbench.metrics.specs.MetricSpec` (``.spec``, whose id is the
leaderboard column), its chance level (``.chance``, NaN where none is defined) and its direction
(``.higher_is_better``, from the spec). States are declared with ``add_state`` and an explicit reduction, so
``update`` / ``compute`` give the same number in one process and under DDP. :meth:`SpecMetric.from_id`
builds a metric back from its column id (see :mod:`brainbench.metrics.registry`). Metrics with per-item
scores leave them in ``computed_per_item`` after ``compute``.

:class:`PerItemMean` is the common case of a score per item (image, frame, video) averaged at the end: the
per-item scores are the state (``dist_reduce_fx="cat"``), so the mean is taken over the full vector at
once, exactly as a single call of the functional form does, and the per-item array is kept for confidence
intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from brainbench.errors import ConfigError
from brainbench.metrics.specs import MetricSpec


class SpecMetric(Metric):
    """A torchmetrics ``Metric`` that is one leaderboard column: spec, chance level and direction.

    Subclasses call :meth:`set_spec` in ``__init__`` and implement :meth:`from_id` for their metric names.
    """

    is_differentiable = False
    full_state_update = False
    higher_is_better: bool | None = True  # torchmetrics keeps it a class constant; the spec must agree
    spec: MetricSpec
    _chance: float = math.nan
    computed_per_item: Tensor | None = None
    """Per-item scores behind the last ``compute`` (items, frames, videos), for metrics that have them."""

    def set_spec(self, spec: MetricSpec, chance: float = math.nan) -> None:
        """Record the column this metric computes and its chance level.

        Raises:
            ConfigError: when the spec's direction differs from the class's ``higher_is_better``.
        """
        if spec.higher_is_better != type(self).higher_is_better:
            raise ConfigError(f"{spec.id}: its direction differs from {type(self).__name__}.higher_is_better")
        self.spec, self._chance = spec, float(chance)

    @property
    def chance(self) -> float:
        """The value of a predictor that ignores its input (NaN where none is defined)."""
        return self._chance

    @property
    def metric_id(self) -> str:
        """The column id ``<metric>[/<network>]@v<N>``."""
        return self.spec.id

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> SpecMetric:
        """The metric computing column ``metric_id``; ``context`` supplies what the id does not say.

        Raises:
            ConfigError: when this class does not compute that column.
        """
        raise ConfigError(f"{cls.__name__} cannot be built from an id ({metric_id!r})")


def check_round_trip(metric: SpecMetric, metric_id: str) -> SpecMetric:
    """``metric`` if its spec id is ``metric_id``, else a :class:`ConfigError` (not a column it computes)."""
    if metric.spec.id != metric_id:
        raise ConfigError(
            f"{metric_id!r} is not a column {type(metric).__name__} computes (it gives {metric.spec.id!r})"
            "\n  fix: check the metric name, network and version"
        )
    return metric


def option(context: Mapping[str, object], name: str, default: object) -> object:
    """``context[name]`` when given and not ``None``, else ``default``."""
    value = context.get(name)
    return default if value is None else value


def cat_rows(state: list[Tensor] | Tensor) -> Tensor:
    """A list state as one tensor: ``dim_zero_cat`` without the copy when there is a single batch.

    The evaluator updates embedding metrics once with every row; copying 257x768-token predictions of
    1000 items would cost 0.8 GB per side for nothing.
    """
    if isinstance(state, Tensor):
        return state
    return state[0] if len(state) == 1 else dim_zero_cat(state)


class PerItemMean(SpecMetric):
    """Mean of a per-item score; the per-item scores are the state, concatenated across processes."""

    scores: list[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def score_items(self, *inputs: object) -> Tensor:
        """Scores ``(B, ...)`` float64 of one batch (rows are items)."""
        raise NotImplementedError

    def update(self, *inputs: object) -> None:
        """Score a batch and keep its per-item scores."""
        self.scores.append(self.score_items(*inputs).to(torch.float64))

    def compute(self) -> Tensor:
        """Mean over every item seen (0-d float64); the scores stay in ``computed_per_item``."""
        self.computed_per_item = dim_zero_cat(self.scores)
        return self.computed_per_item.mean()
