"""The one result type of every evaluation: numbers by column id, their specs, chance levels, absences.

Embedding metrics (:func:`brainbench.eval.evaluator.evaluate`), reconstructed images
(:func:`brainbench.eval.reconstruction.score_images`) and videos
(:func:`brainbench.eval.video_metrics.evaluate_video`) all return an :class:`EvalResult`; the scoring of a
test split merges them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from brainbench.metrics.base import SpecMetric
from brainbench.metrics.specs import MetricSpec


@dataclass
class EvalResult:
    """Numbers of one evaluation, keyed by metric spec id.

    Attributes:
        values: spec id → value.
        specs: spec id → :class:`MetricSpec` (parameters, direction of improvement, description).
        chance: spec id → chance level (``top_k / pool`` for pooled retrieval, ``1 / N`` for full-set top-1,
            0.5 for 2-way identification; NaN where none is defined), so reports can state "× chance".
        absent: spec id → why the column could not be computed here (a network's weights are absent).
        per_item: spec id → the per-item scores behind the value (images, frames, videos, predictions), for
            confidence intervals; only for metrics that have them.
    """

    values: dict[str, float] = field(default_factory=dict)
    specs: dict[str, MetricSpec] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    per_item: dict[str, np.ndarray] = field(default_factory=dict)

    def times_chance(self, metric_id: str) -> float:
        """``values[metric_id] / chance[metric_id]``."""
        return self.values[metric_id] / self.chance[metric_id]

    def add(
        self, spec: MetricSpec, value: float, chance: float = math.nan, per_item: np.ndarray | None = None
    ) -> None:
        """Records one number with its spec and chance level (NaN where none is defined)."""
        self.values[spec.id], self.specs[spec.id], self.chance[spec.id] = float(value), spec, float(chance)
        if per_item is not None:
            self.per_item[spec.id] = per_item

    def add_metric(self, metric: SpecMetric, *, keep_per_item: bool = True) -> None:
        """Computes ``metric`` and records its value, spec, chance (and per-item scores)."""
        value = float(metric.compute())
        per_item = metric.computed_per_item if keep_per_item else None
        items = None if per_item is None else per_item.detach().cpu().numpy()
        self.add(metric.spec, value, metric.chance, items)

    def merge(self, other: EvalResult) -> None:
        """Adds every column (and absence) of ``other``."""
        for name in ("values", "specs", "chance", "absent", "per_item"):
            getattr(self, name).update(getattr(other, name))
