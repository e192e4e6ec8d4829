r"""Image metrics computed in a feature network: 2-way identification, correlation distance, FID, LPIPS.

Reconstructions and ground-truth images go through a network of the registry
(:mod:`brainbench.eval.networks`) batch by batch; the metric is computed on the features. Column ids carry
the network, so a number computed in another network is another column (metrics.md §1.3, §6.1)::

    identification_2way/<network id>@v1   exhaustive 2-way (metrics.md §1.2), higher is better, chance 0.5
    corrdist/<network id>@v1              mean correlation distance (§1.3 EffNet-B / SwAV), lower is better
    fid/<network id>@v1                   Fréchet distance of the feature Gaussians (§4.1), lower is better
    fid_inception@v1                      the standard FID: TF-Inception 2015-12-05, 2048-d (§4.1)
    lpips/<alex|vgg|squeeze>:v0.1@v1      LPIPS v0.1 of the ``lpips`` package (§4.4), lower is better

e.g. ``identification_2way/alexnet:2@v1``, ``corrdist/effnet_lite0@v1``, ``fid/world-clip:v1/clip_image@v1``.
Networks built with random weights (tests) give ``random:<id>`` and are never leaderboard columns.

Definitions, with :math:`f` the flattened features, :math:`g_i` ground truth and :math:`r_i` reconstruction:

.. math::

    \mathrm{corrdist} = \frac{1}{N}\sum_i \left(1 - \rho(f(g_i), f(r_i))\right), \qquad
    \mathrm{FID} = \lVert\mu_g - \mu_r\rVert^2 + \mathrm{tr}\left(\Sigma_g + \Sigma_r
        - 2 (\Sigma_g \Sigma_r)^{1/2}\right)

:math:`\rho` is Pearson's r (``scipy.spatial.distance.correlation``; a constant vector gives r = 0 here,
NaN in scipy). FID uses torchmetrics ``FrechetInceptionDistance(feature=<extractor>)``: float64 sums and
unbiased covariances, :math:`\mathrm{tr}(\cdot)^{1/2}` from the eigenvalues of :math:`\Sigma_g\Sigma_r`;
with N below the feature dimension the covariances are rank-deficient and the value noisy (§4.1).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

import torch
import torchvision.transforms.functional as TF
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance

from brainbench.errors import ConfigError, MissingFileError
from brainbench.eval.networks import (
    WORLD_CLIP_LAYERS,
    FeatureExtractor,
    FeatureNetwork,
    as_float_images,
    get_network,
    torchvision_weights,
    verify_hash_in_name,
)
from brainbench.metrics.identification import (
    IDENTIFICATION_CHANCE,
    TwoWayIdentification,
    identification_spec,
    two_way_identification,
)
from brainbench.metrics.specs import MetricSpec

FeatureMetric = Literal["identification_2way", "corrdist", "fid"]
LpipsNet = Literal["alex", "vgg", "squeeze"]
FID_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
_LPIPS_BACKBONES = {
    "alex": ("alexnet", "IMAGENET1K_V1", "alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16", "IMAGENET1K_V1", "vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1", "IMAGENET1K_V1", "squeezenet1_1-b8a52dc0.pth"),
}


def extract_features(
    extractor: FeatureExtractor, images: Tensor, *, batch_size: int = 64, device: torch.device | str = "cpu"
) -> Tensor:
    """Flattened features ``(N, feature_dim)`` float32 on ``device``, ``batch_size`` images at a time."""
    out = torch.empty(images.shape[0], extractor.num_features, device=device)
    for start in range(0, images.shape[0], batch_size):
        out[start : start + batch_size] = extractor(images[start : start + batch_size]).to(device)
    return out


# ---- specs -----------------------------------------------------------------------------------------------


def feature_metric_spec(
    metric: FeatureMetric, network: FeatureExtractor | FeatureNetwork | str, *, n_items: int | None = None
) -> MetricSpec:
    """The spec of ``metric`` computed in ``network`` (a registry id, entry or built extractor).

    Example:
        >>> feature_metric_spec("corrdist", "effnet_lite0").id
        'corrdist/effnet_lite0@v1'
    """
    if isinstance(network, FeatureExtractor):
        net, name, weights = (
            network.network,
            network.metric_network,
            "random" if network.random_weights else "",
        )
    else:
        net = get_network(network) if isinstance(network, str) else network
        name, weights = net.network_id, ""
    params: dict[str, object] = {
        "network_output": net.output,
        "feature_dim": net.feature_dim,
        "weights": weights or net.weights.description,
        **net.chain.params(),
    }
    if n_items is not None:
        params["n_items"] = n_items
    if metric == "identification_2way":
        base = identification_spec(network=name)
        return replace(
            base, params={**base.params, **params}, description=base.description + " (image features)"
        )
    if metric == "corrdist":
        description = "mean over items of 1 - Pearson r between GT and reconstruction features"
        return MetricSpec("corrdist", name, 1, False, {"distance": "1 - pearson", **params}, description)
    if metric == "fid":
        params.update(backend="torchmetrics FrechetInceptionDistance(feature=module)", dtype="float64")
        return MetricSpec("fid", name, 1, False, params, "Fréchet distance of GT vs reconstruction features")
    raise ConfigError(f"unknown feature metric {metric!r}\n  fix: use identification_2way, corrdist or fid")


def fid_inception_spec(*, antialias: bool = True) -> MetricSpec:
    """The standard FID column (torchmetrics default extractor, TF-Inception 2015-12-05, 2048-d)."""
    params = {"feature": 2048, "weights": FID_INCEPTION_FILE, "antialias": antialias, "dtype": "float64"}
    return MetricSpec("fid_inception", "", 1, False, params, "FID with the TF-Inception 2015-12-05 pool3")


def lpips_spec(net: LpipsNet = "alex", *, random_backbone: bool = False) -> MetricSpec:
    """``lpips/<net>:v0.1@v1`` (``random:<net>:v0.1`` with a random backbone)."""
    network = f"{'random:' if random_backbone else ''}{net}:v0.1"
    params = {"package": "lpips 0.1.4", "version": "0.1", "resize": "reconstruction to GT size, bilinear+aa"}
    return MetricSpec("lpips", network, 1, False, params, f"LPIPS v0.1 ({net} backbone), mean over pairs")


# ---- 2-way identification and correlation distance ---------------------------------------------------------


def two_way_identification_on_network(
    recons: Tensor, gts: Tensor, extractor: FeatureExtractor, *, batch_size: int = 64, block_size: int = 1024
) -> Tensor:
    """2-way identification of the reconstructions' features against the ground truths'; 0-d float64.

    Features come from ``extractor`` batch by batch; scoring is the block-wise exhaustive
    :func:`~brainbench.metrics.identification.two_way_identification` (metrics.md §1.2).
    """
    pred = extract_features(extractor, recons, batch_size=batch_size)
    target = extract_features(extractor, gts, batch_size=batch_size)
    return two_way_identification(pred, target, block_size=block_size)


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


def _maybe_features(
    extractor: FeatureExtractor | None, x: Tensor, batch_size: int, device: torch.device
) -> Tensor:
    """Features of images ``x`` through ``extractor``, or ``x`` itself (already features) without one."""
    return x if extractor is None else extract_features(extractor, x, batch_size=batch_size, device=device)


class CorrelationDistance(Metric):
    """Torchmetrics form of :func:`correlation_distance`; decomposable, so states are a sum and a count.

    With ``extractor``, ``update(recons, gts)`` takes images; without, features (spec network ``network``).

    Example:
        >>> metric = CorrelationDistance(network="demo")
        >>> metric.update(torch.eye(3), torch.eye(3))
        >>> float(metric.compute()), metric.spec.id
        (0.0, 'corrdist/demo@v1')
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    distance_sum: Tensor
    n_items: Tensor

    def __init__(
        self, extractor: FeatureExtractor | None = None, *, network: str = "", batch_size: int = 64
    ) -> None:
        super().__init__()
        self.extractor, self.batch_size = extractor, batch_size
        self.spec = (
            feature_metric_spec("corrdist", extractor)
            if extractor is not None
            else MetricSpec("corrdist", network, 1, False, {"distance": "1 - pearson"})
        )
        self.add_state("distance_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_items", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of reconstructions (``pred``) and their ground truths."""
        pred, target = (
            _maybe_features(self.extractor, x, self.batch_size, self.device) for x in (pred, target)
        )
        distances = correlation_distance_per_item(pred, target)
        self.distance_sum += distances.sum().to(self.distance_sum.device)
        self.n_items += distances.numel()

    def compute(self) -> Tensor:
        """The mean distance."""
        return self.distance_sum / self.n_items


class FeatureTwoWayIdentification(TwoWayIdentification):
    """:class:`~brainbench.metrics.identification.TwoWayIdentification` on images through ``extractor``.

    Only features are kept (``N × feature_dim`` per side), scored exhaustively at ``compute``.
    """

    def __init__(self, extractor: FeatureExtractor, *, batch_size: int = 64, block_size: int = 1024) -> None:
        super().__init__(network=extractor.metric_network, block_size=block_size)
        self.extractor, self.batch_size = extractor, batch_size
        self.spec = feature_metric_spec("identification_2way", extractor)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of reconstructions (``pred``) and their ground-truth images."""
        pred, target = (
            _maybe_features(self.extractor, x, self.batch_size, self.device) for x in (pred, target)
        )
        super().update(pred, target)


# ---- FID -------------------------------------------------------------------------------------------------


class _Float64Features(nn.Module):
    """Casts features to float64, so torchmetrics' FID returns float64 (it casts to the feature dtype)."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        self.extractor, self.num_features = extractor, extractor.num_features

    def forward(self, images: Tensor) -> Tensor:
        """``extractor(images)`` in float64."""
        return self.extractor(images).double()


class NetworkFID(FrechetInceptionDistance):
    """torchmetrics FID with a registry network as the custom extractor (metrics.md §4.1).

    ``update(images, real=...)`` takes float ``(B, 3, H, W)`` in [0, 1] or uint8 ``(B, H, W, 3)``; the
    network's own chain resizes and normalises them. States are float64 sums of features and outer products.

    Raises:
        ConfigError: when the features are wider than ``max_features`` (two d×d float64 covariances).
    """

    def __init__(
        self, extractor: FeatureExtractor, *, reset_real_features: bool = True, max_features: int = 4096
    ) -> None:
        if extractor.num_features > max_features:
            raise ConfigError(
                f"FID on {extractor.network.network_id} needs two {extractor.num_features}² float64 "
                "covariances\n  fix: use a pooled output (world-clip:v1/clip_image) or raise max_features"
            )
        super().__init__(
            feature=_Float64Features(extractor), reset_real_features=reset_real_features, normalize=True
        )
        self.spec = feature_metric_spec("fid", extractor)


def frechet_distance(
    recons: Tensor, gts: Tensor, extractor: FeatureExtractor, *, batch_size: int = 64
) -> Tensor:
    """FID between the ground truths (real) and reconstructions (fake) in ``extractor``'s space; 0-d float64.

    Raises:
        RuntimeError: (torchmetrics) when either set has fewer than 2 images.
    """
    metric = NetworkFID(extractor)
    for images, real in ((gts, True), (recons, False)):
        for start in range(0, images.shape[0], batch_size):
            metric.update(images[start : start + batch_size], real=real)
    return metric.compute()


def fid_inception_availability() -> tuple[bool, str]:
    """Whether the standard FID can run: ``torch-fidelity`` installed and the TF-Inception weights cached."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / FID_INCEPTION_FILE
    missing = [] if importlib.util.find_spec("torch_fidelity") else ["the torch-fidelity package"]
    missing += [] if path.is_file() else [f"the weights file {path}"]
    if not missing:
        return True, f"fid_inception: torch-fidelity and {path}"
    return False, (
        f"fid_inception: absent: {' and '.join(missing)}\n  fix: pip install torch-fidelity, and on a "
        f"machine with internet run torchmetrics' FrechetInceptionDistance() once, then copy "
        f"<TORCH_HOME>/hub/checkpoints/{FID_INCEPTION_FILE} to {path}"
    )


def fid_inception_metric(*, antialias: bool = True) -> FrechetInceptionDistance:
    """The standard FID metric (inputs float [0, 1]); ``antialias`` changed default in torchmetrics 1.8.

    Raises:
        MissingFileError: when :func:`fid_inception_availability` is False.
    """
    available, reason = fid_inception_availability()
    path = Path(torch.hub.get_dir()) / "checkpoints" / FID_INCEPTION_FILE
    if not available:
        raise MissingFileError(path, reason.split("fix: ", 1)[-1])
    return FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=str(path), antialias=antialias
    )


# ---- LPIPS -----------------------------------------------------------------------------------------------


def lpips_availability(net: LpipsNet = "alex") -> tuple[bool, str]:
    """The ``lpips`` package ships the linear heads; the torchvision backbone must be in the hub cache."""
    weights = torchvision_weights(*_LPIPS_BACKBONES[net])
    found = weights.find()
    if found is not None:
        return True, f"lpips/{net}: backbone at {found}"
    return False, f"lpips/{net}: backbone absent; expected {weights.expected()}\n  fix: {weights.fix}"


def build_lpips(net: LpipsNet = "alex", *, random_backbone: bool = False) -> nn.Module:
    """``lpips.LPIPS(net, version='0.1')`` frozen; its backbone random with ``random_backbone`` (tests).

    Raises:
        MissingFileError: when the pretrained backbone is not cached (it is never downloaded).
    """
    import lpips

    if not random_backbone:
        weights = torchvision_weights(*_LPIPS_BACKBONES[net])
        path = weights.find()
        if path is None:
            raise MissingFileError(weights.expected(), weights.fix)
        verify_hash_in_name(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=random_backbone, verbose=False)
    return model.eval().requires_grad_(False)


def lpips_distance_per_item(recons: Tensor, gts: Tensor, model: nn.Module, *, batch_size: int = 32) -> Tensor:
    """``(N,)`` float64 LPIPS of each pair; images in [0, 1], reconstructions resized to the GT size.

    Raises:
        ValueError: when N differs or values leave [0, 1].
    """
    if recons.shape[0] != gts.shape[0]:
        raise ValueError(f"{recons.shape[0]} reconstructions for {gts.shape[0]} ground-truth images")
    device = next(iter(model.parameters())).device
    out = torch.empty(recons.shape[0], dtype=torch.float64)
    for start in range(0, recons.shape[0], batch_size):
        rec, gt = (as_float_images(x[start : start + batch_size]).to(device) for x in (recons, gts))
        if rec.min() < 0 or gt.min() < 0 or rec.max() > 1 or gt.max() > 1:
            raise ValueError("LPIPS inputs must lie in [0, 1]\n  fix: clamp the reconstructions")
        if rec.shape[-2:] != gt.shape[-2:]:
            rec = TF.resize(rec, list(gt.shape[-2:]), antialias=True).clamp(0, 1)
        with torch.no_grad():
            out[start : start + rec.shape[0]] = model(rec, gt, normalize=True).reshape(-1).double().cpu()
    return out


class LPIPSDistance(Metric):
    """Mean LPIPS over pairs (lower is better); sum and count states."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    distance_sum: Tensor
    n_items: Tensor

    def __init__(
        self, net: LpipsNet = "alex", *, random_backbone: bool = False, batch_size: int = 32
    ) -> None:
        super().__init__()
        self.model, self.batch_size = build_lpips(net, random_backbone=random_backbone), batch_size
        self.spec = lpips_spec(net, random_backbone=random_backbone)
        self.add_state("distance_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_items", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add reconstructions (``pred``) and their ground truths."""
        distances = lpips_distance_per_item(pred, target, self.model, batch_size=self.batch_size)
        self.distance_sum += distances.sum().to(self.distance_sum.device)
        self.n_items += distances.numel()

    def compute(self) -> Tensor:
        """The mean distance."""
        return self.distance_sum / self.n_items


# ---- every column at once --------------------------------------------------------------------------------

MINDEYE_PLAN: tuple[tuple[str, str], ...] = (
    *(("identification_2way", net) for net in ("alexnet:2", "alexnet:5", "inception_v3", "clip_vit_l14")),
    ("corrdist", "effnet_b1"),
    ("corrdist", "swav"),
)
WORLD_PLAN: tuple[tuple[str, str], ...] = (
    ("identification_2way", "effnet_lite0"),
    ("corrdist", "effnet_lite0"),
    ("identification_2way", "world-clip:v1/clip_image"),
    *(("identification_2way", f"world-clip:v1/layer:{k}") for k in range(1, WORLD_CLIP_LAYERS + 1)),
    ("fid", "world-clip:v1/clip_image"),
    ("fid_inception", ""),
    ("lpips", "alex"),
)
DEFAULT_PLAN = MINDEYE_PLAN + WORLD_PLAN


@dataclass(frozen=True)
class FeatureScores:
    """Numbers keyed by spec id, their specs, chance levels (2-way only), and absent columns with reasons."""

    values: dict[str, float] = field(default_factory=dict)
    specs: dict[str, MetricSpec] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)


def score_reconstructions(
    recons: Tensor,
    gts: Tensor,
    plan: Sequence[tuple[str, str]] = DEFAULT_PLAN,
    *,
    batch_size: int = 64,
    block_size: int = 1024,
) -> FeatureScores:
    """Every ``(metric, network)`` of ``plan`` that can run here; the others go to ``absent`` with the reason.

    Networks are built once and their features dropped after their last metric, so at most one network's
    ``2 × N × feature_dim`` features are held at a time. Metrics: ``identification_2way``, ``corrdist``,
    ``fid`` (registry network ids), ``fid_inception`` (network ``""``) and ``lpips`` (``alex|vgg|squeeze``).
    """
    scores, n = FeatureScores(), int(gts.shape[0])
    by_network: dict[tuple[str, str], list[str]] = {}
    for metric, network in plan:
        key = (metric, network) if metric in ("fid_inception", "lpips") else ("network", network)
        by_network.setdefault(key, []).append(metric)
    for (kind, network), metrics in by_network.items():
        if kind == "lpips":
            _score_lpips(scores, recons, gts, network, batch_size)
        elif kind == "fid_inception":
            _score_fid_inception(scores, recons, gts, batch_size)
        else:
            _score_network(scores, recons, gts, get_network(network), metrics, n, batch_size, block_size)
    return scores


def _score_network(
    scores: FeatureScores,
    recons: Tensor,
    gts: Tensor,
    network: FeatureNetwork,
    metrics: list[str],
    n: int,
    batch_size: int,
    block_size: int,
) -> None:
    specs = {
        metric: feature_metric_spec(cast(FeatureMetric, metric), network, n_items=n) for metric in metrics
    }
    available, reason = network.availability()
    if not available:
        scores.absent.update({spec.id: reason for spec in specs.values()})
        return
    extractor = network.build()
    features: list[Tensor] = []  # (reconstructions, ground truths), extracted once for 2-way and corrdist
    for metric, spec in specs.items():
        if metric == "fid":
            value = frechet_distance(recons, gts, extractor, batch_size=batch_size)
        else:
            features = features or [
                extract_features(extractor, x, batch_size=batch_size) for x in (recons, gts)
            ]
            if metric == "identification_2way":
                value = two_way_identification(features[0], features[1], block_size=block_size)
                scores.chance[spec.id] = IDENTIFICATION_CHANCE
            else:
                value = correlation_distance(features[0], features[1])
        scores.values[spec.id], scores.specs[spec.id] = float(value), spec


def _score_lpips(scores: FeatureScores, recons: Tensor, gts: Tensor, name: str, batch_size: int) -> None:
    if name not in _LPIPS_BACKBONES:
        raise ConfigError(f"unknown LPIPS backbone {name!r}\n  fix: use one of {list(_LPIPS_BACKBONES)}")
    net = cast(LpipsNet, name)
    spec = lpips_spec(net)
    available, reason = lpips_availability(net)
    if not available:
        scores.absent[spec.id] = reason
        return
    model = build_lpips(net)
    value = lpips_distance_per_item(recons, gts, model, batch_size=batch_size).mean()
    scores.values[spec.id], scores.specs[spec.id] = float(value), spec


def _score_fid_inception(scores: FeatureScores, recons: Tensor, gts: Tensor, batch_size: int) -> None:
    spec = fid_inception_spec()
    available, reason = fid_inception_availability()
    if not available:
        scores.absent[spec.id] = reason
        return
    metric = fid_inception_metric()
    metric.set_dtype(torch.float64)
    for images, real in ((gts, True), (recons, False)):
        for start in range(0, images.shape[0], batch_size):
            metric.update(as_float_images(images[start : start + batch_size]), real=real)
    scores.values[spec.id], scores.specs[spec.id] = float(metric.compute()), spec
