r"""Mean correlation distance between reconstruction and ground-truth features (MindEye's EffNet-B / SwAV).

Source: ``metrics.md`` §1.3. With :math:`f` the flattened features, :math:`g_i` ground truth and
:math:`r_i` reconstruction,

.. math::

    \mathrm{corrdist} = \frac{1}{N}\sum_i \left(1 - \rho(f(g_i), f(r_i))\right)

:math:`\rho` is Pearson's r (``scipy.spatial.distance.correlation``; a constant vector gives r = 0 here,
NaN in scipy). Lower is better; no chance level is defined. The features come from a network of
:mod:`brainbench.backbones.networks`, computed by the evaluator; this module only sees tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from brainbench.errors import ConfigError
from brainbench.metrics.base import PerItemMean, check_round_trip
from brainbench.metrics.specs import MetricSpec, parse_metric_id


def correlation_distance_per_item(pred: Tensor, target: Tensor, *, block_size: int = 256) -> Tensor:
    """``(N,)`` float64: ``1 - Pearson r(pred_i, target_i)`` over flattened rows, ``block_size`` rows at once.

    Raises:
        ValueError: when the shapes differ or N is 0.
    """
    if pred.shape != target.shape or pred.ndim < 1 or pred.shape[0] == 0:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal (N, ...)")
    pred, target = pred.reshape(pred.shape[0], -1), target.reshape(target.shape[0], -1)
    out = torch.empty(pred.shape[0], dtype=torch.float64)
    for start in range(0, pred.shape[0], block_size):
        a, b = (_centred_unit(x[start : start + block_size]) for x in (pred, target))
        out[start : start + a.shape[0]] = (1.0 - (a * b).sum(dim=1)).clamp(0.0, 2.0).cpu()  # as scipy clips
    return out


def _centred_unit(rows: Tensor) -> Tensor:
    rows = rows.double() - rows.double().mean(dim=1, keepdim=True)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)


def correlation_distance(pred: Tensor, target: Tensor, *, block_size: int = 256) -> Tensor:
    """Mean of :func:`correlation_distance_per_item`; 0-d float64 in ``[0, 2]``.

    Example:
        >>> x = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0]])
        >>> round(float(correlation_distance(x, x)), 9), round(float(correlation_distance(-x, x)), 9)
        (0.0, 2.0)
    """
    return correlation_distance_per_item(pred, target, block_size=block_size).mean()


def correlation_distance_spec(network: str, params: dict[str, object] | None = None) -> MetricSpec:
    """``corrdist/<network>@v1``; ``params`` adds the network's chain and weights."""
    description = "mean over items of 1 - Pearson r between GT and reconstruction features"
    return MetricSpec(
        "corrdist", network, 1, False, {"distance": "1 - pearson", **(params or {})}, description
    )


class CorrelationDistance(PerItemMean):
    """Torchmetrics form of :func:`correlation_distance` on features: ``update(pred, target)``.

    Example:
        >>> metric = CorrelationDistance(network="demo")
        >>> metric.update(torch.eye(3), torch.eye(3))
        >>> float(metric.compute()), metric.spec.id, metric.higher_is_better
        (0.0, 'corrdist/demo@v1', False)
    """

    higher_is_better = False

    def __init__(self, *, network: str = "", spec: MetricSpec | None = None) -> None:
        super().__init__()
        self.set_spec(spec or correlation_distance_spec(network))

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> CorrelationDistance:
        """From ``corrdist/<network>@v1``; ``context["spec"]`` may give the spec with the network's params."""
        name, network, _ = parse_metric_id(metric_id)
        if name != "corrdist":
            raise ConfigError(f"{metric_id!r} is not a correlation-distance column")
        metric = cls(network=network, spec=context.get("spec"))  # type: ignore[arg-type]
        return check_round_trip(metric, metric_id)  # type: ignore[return-value]

    def score_items(self, pred: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        """Distances of a batch of (reconstruction, ground truth) feature rows."""
        return correlation_distance_per_item(pred, target)
