r"""Fréchet distance between the feature Gaussians of ground truth and reconstructions (FID, metrics.md §4.1).

.. math::

    \mathrm{FID} = \lVert\mu_g - \mu_r\rVert^2 + \mathrm{tr}\left(\Sigma_g + \Sigma_r
        - 2 (\Sigma_g \Sigma_r)^{1/2}\right)

Computed by torchmetrics' ``FrechetInceptionDistance`` on features already extracted by a network of
:mod:`brainbench.backbones.networks` (the evaluator runs the network): float64 sums of features and of
their outer products per batch, unbiased covariances, :math:`\mathrm{tr}(\cdot)^{1/2}` from the eigenvalues
of :math:`\Sigma_g\Sigma_r`. With N below the feature dimension the covariances are rank-deficient and the
value noisy. Lower is better; no chance level. The states are sums, so batches and processes add up.
"""

from __future__ import annotations

import torch  # noqa: F401  (doctest)
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from brainbench.errors import ConfigError
from brainbench.metrics.base import SpecMetric, check_round_trip, option
from brainbench.metrics.specs import MetricSpec, parse_metric_id

MAX_FEATURES = 4096


class _AsFloat64(nn.Module):
    """Identity on features, cast to float64 (torchmetrics' FID returns the features' dtype)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        """``features`` in float64."""
        return features.double()


def fid_spec(network: str, params: dict[str, object] | None = None) -> MetricSpec:
    """``fid/<network>@v1``; ``params`` adds the network's chain and weights."""
    params = {**(params or {}), "backend": "torchmetrics FrechetInceptionDistance(feature=module)"}
    params["dtype"] = "float64"
    return MetricSpec("fid", network, 1, False, params, "Fréchet distance of GT vs reconstruction features")


class FeatureFID(FrechetInceptionDistance, SpecMetric):
    """FID of feature rows: ``update(pred, target)`` adds reconstruction (fake) and ground-truth (real) rows.

    Raises:
        ConfigError: when the features are wider than ``max_features`` (two d×d float64 covariances).
    """

    def __init__(
        self,
        num_features: int,
        *,
        network: str = "",
        spec: MetricSpec | None = None,
        max_features: int = MAX_FEATURES,
    ) -> None:
        if num_features > max_features:
            raise ConfigError(
                f"FID on {network or 'these features'} needs two {num_features}² float64 covariances"
                "\n  fix: use a pooled output (world-clip:v1/clip_image) or raise max_features"
            )
        super().__init__(feature=_AsFloat64(num_features), reset_real_features=True, normalize=True)
        self.set_spec(spec or fid_spec(network))

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> FeatureFID:
        """From ``fid/<network>@v1``; ``context``: ``num_features`` (required), ``spec``, ``max_features``."""
        name, network, _ = parse_metric_id(metric_id)
        if name != "fid" or "num_features" not in context:
            raise ConfigError(
                f"{metric_id!r}: an fid/<network> column and context['num_features'] are needed"
            )
        metric = cls(
            int(context["num_features"]),  # type: ignore[call-overload]
            network=network,
            spec=context.get("spec"),  # type: ignore[arg-type]
            max_features=int(option(context, "max_features", MAX_FEATURES)),  # type: ignore[call-overload]
        )
        return check_round_trip(metric, metric_id)  # type: ignore[return-value]

    def update(self, pred: Tensor, target: Tensor) -> None:  # type: ignore[override]
        """Add a batch of reconstruction features (fake) and ground-truth features (real)."""
        super().update(target, real=True)
        super().update(pred, real=False)


def feature_frechet_distance(pred: Tensor, target: Tensor, *, batch_size: int = 64) -> Tensor:
    """FID of reconstruction features ``pred`` against ground-truth features ``target`` (0-d float64).

    Both are ``(N, D)``; ``batch_size`` rows are summed at a time (the states' float64 sums accumulate in that
    order, as when a network feeds the metric batch by batch).

    Example:
        >>> x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
        >>> abs(float(feature_frechet_distance(x, x))) < 1e-9
        True
    """
    metric = FeatureFID(int(pred.shape[1]))
    for start in range(0, int(pred.shape[0]), batch_size):
        metric.update(pred[start : start + batch_size], target[start : start + batch_size])
    return metric.compute()
