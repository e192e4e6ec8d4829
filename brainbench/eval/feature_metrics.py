r"""Image metrics computed in a feature network: 2-way identification, correlation distance, FID, LPIPS.

Reconstructions and ground-truth images go through networks of the registry
(:mod:`brainbench.backbones.networks`) batch by batch; the metrics (:mod:`brainbench.metrics`) are computed on
the features. Column ids carry the network, so a number computed in another network is another column
(metrics.md §1.3, §6.1)::

    identification_2way/<network id>@v1   exhaustive 2-way (metrics.md §1.2), higher is better, chance 0.5
    corrdist/<network id>@v1              mean correlation distance (§1.3 EffNet-B / SwAV), lower is better
    fid/<network id>@v1                   Fréchet distance of the feature Gaussians (§4.1), lower is better
    fid_inception@v1                      the standard FID: TF-Inception 2015-12-05, 2048-d (§4.1)
    lpips/<alex|vgg|squeeze>:v0.1@v1      LPIPS v0.1 of the ``lpips`` package (§4.4), lower is better

e.g. ``identification_2way/alexnet:2@v1``, ``corrdist/effnet_lite0@v1``, ``fid/world-clip:v1/clip_image@v1``.
Networks built with random weights (tests) give ``random:<id>`` and are never leaderboard columns.

:func:`score_reconstructions` runs a plan of such ids. Networks reading one model through one chain (the world
CLIP's pooled output and its four layers) are read in **one** forward pass per batch, and the ground-truth
features can come from a :class:`~brainbench.eval.truth_features.TruthFeatureCache` keyed by stimulus, so a
second run only passes the reconstructions through the networks. Batches of ``batch_size`` images feed every
metric, so the FID sums accumulate exactly as one network pass per metric did.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from brainbench.backbones.feature_networks import (
    FeatureExtractor,
    FeatureNetwork,
    as_float_images,
    build_shared_pass,
    group_by_model,
)
from brainbench.backbones.networks import feature_network
from brainbench.backbones.weights import torchvision_weights, verify_hash_in_name
from brainbench.errors import ConfigError, MissingFileError
from brainbench.eval.result import EvalResult
from brainbench.eval.truth_features import TruthFeatureCache
from brainbench.metrics.base import PerItemMean, SpecMetric, check_round_trip
from brainbench.metrics.correlation import correlation_distance_spec
from brainbench.metrics.fid import FeatureFID, fid_spec
from brainbench.metrics.identification import identification_spec, two_way_identification
from brainbench.metrics.registry import METRICS, build_metric, metric_family
from brainbench.metrics.specs import MetricSpec, parse_metric_id

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
        net, name = network.network, network.metric_network
        weights = "random" if network.random_weights else net.weights.description
    else:
        net = feature_network(network) if isinstance(network, str) else network
        name, weights = net.network_id, net.weights.description
    params: dict[str, object] = {
        "network_output": net.output,
        "feature_dim": net.feature_dim,
        "weights": weights,
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
        return correlation_distance_spec(name, params)
    if metric == "fid":
        return fid_spec(name, params)
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


# ---- image-level helpers (one network, one metric) ---------------------------------------------------------


def two_way_identification_on_network(
    recons: Tensor, gts: Tensor, extractor: FeatureExtractor, *, batch_size: int = 64, block_size: int = 1024
) -> Tensor:
    """2-way identification of the reconstructions' features against the ground truths'; 0-d float64."""
    pred = extract_features(extractor, recons, batch_size=batch_size)
    target = extract_features(extractor, gts, batch_size=batch_size)
    return two_way_identification(pred, target, block_size=block_size)


def frechet_distance(
    recons: Tensor, gts: Tensor, extractor: FeatureExtractor, *, batch_size: int = 64
) -> Tensor:
    """FID between the ground truths (real) and reconstructions (fake) in ``extractor``'s space; 0-d float64.

    Raises:
        RuntimeError: (torchmetrics) when either set has fewer than 2 images.
    """
    metric = FeatureFID(extractor.num_features, spec=feature_metric_spec("fid", extractor))
    for start in range(0, gts.shape[0], batch_size):
        batch = slice(start, start + batch_size)
        metric.update(extractor(recons[batch]), extractor(gts[batch]))
    return metric.compute()


# ---- metrics that run their own network ------------------------------------------------------------------


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


class InceptionFID(FrechetInceptionDistance, SpecMetric):
    """The standard FID (``fid_inception@v1``): ``update(recons, gts)`` images; float64 states.

    ``antialias`` changed default in torchmetrics 1.8 and is pinned in the spec.

    Raises:
        MissingFileError: when :func:`fid_inception_availability` is False.
    """

    def __init__(self, *, antialias: bool = True) -> None:
        available, reason = fid_inception_availability()
        path = Path(torch.hub.get_dir()) / "checkpoints" / FID_INCEPTION_FILE
        if not available:
            raise MissingFileError(path, reason.split("fix: ", 1)[-1])
        super().__init__(
            feature=2048, normalize=True, feature_extractor_weights_path=str(path), antialias=antialias
        )
        self.set_dtype(torch.float64)
        self.set_spec(fid_inception_spec(antialias=antialias))

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> InceptionFID:
        """From ``fid_inception@v1``."""
        return check_round_trip(cls(), metric_id)  # type: ignore[return-value]

    def update(self, pred: Tensor, target: Tensor) -> None:  # type: ignore[override]
        """Add ground-truth (real) and reconstructed (fake) images, uint8 HWC or float CHW in [0, 1]."""
        super().update(as_float_images(target), real=True)
        super().update(as_float_images(pred), real=False)


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


class LPIPSDistance(PerItemMean):
    """Mean LPIPS over pairs (lower is better): ``update(recons, gts)`` images, per-pair distances kept."""

    higher_is_better = False

    def __init__(
        self, net: LpipsNet = "alex", *, random_backbone: bool = False, batch_size: int = 32
    ) -> None:
        super().__init__()
        self.model, self.batch_size = build_lpips(net, random_backbone=random_backbone), batch_size
        self.set_spec(lpips_spec(net, random_backbone=random_backbone))

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> LPIPSDistance:
        """From ``lpips/<alex|vgg|squeeze>:v0.1@v1``."""
        net = parse_metric_id(metric_id)[1].removesuffix(":v0.1")
        if net not in _LPIPS_BACKBONES:
            raise ConfigError(f"unknown LPIPS backbone {net!r}\n  fix: use one of {list(_LPIPS_BACKBONES)}")
        return check_round_trip(cls(net), metric_id)  # type: ignore[arg-type,return-value]

    def score_items(self, pred: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        """LPIPS of each pair."""
        return lpips_distance_per_item(pred, target, self.model, batch_size=self.batch_size)


METRICS.register("lpips", LPIPSDistance)
METRICS.register("fid_inception", InceptionFID)


def _network_bound_availability(metric_id: str) -> tuple[bool, str]:
    name, network, _ = parse_metric_id(metric_id)
    if name == "fid_inception":
        return fid_inception_availability()
    net = network.removesuffix(":v0.1")
    if net not in _LPIPS_BACKBONES:
        raise ConfigError(f"unknown LPIPS backbone {net!r}\n  fix: use one of {list(_LPIPS_BACKBONES)}")
    return lpips_availability(net)  # type: ignore[arg-type]


# ---- every column at once --------------------------------------------------------------------------------

WORLD_CLIP_OUTPUTS = ("clip_image", "layer:1", "layer:2", "layer:3", "layer:4")
MINDEYE_PLAN: tuple[str, ...] = (
    *(f"identification_2way/{net}@v1" for net in ("alexnet:2", "alexnet:5", "inception_v3", "clip_vit_l14")),
    "corrdist/effnet_b1@v1",
    "corrdist/swav@v1",
)
WORLD_PLAN: tuple[str, ...] = (
    "identification_2way/effnet_lite0@v1",
    "corrdist/effnet_lite0@v1",
    *(f"identification_2way/world-clip:v1/{output}@v1" for output in WORLD_CLIP_OUTPUTS),
    "fid/world-clip:v1/clip_image@v1",
    "fid_inception@v1",
    "lpips/alex:v0.1@v1",
)
DEFAULT_PLAN = MINDEYE_PLAN + WORLD_PLAN
_FEATURE_FAMILIES = ("identification_2way", "corrdist", "fid")


def score_reconstructions(
    recons: Tensor,
    gts: Tensor,
    plan: Sequence[str] = DEFAULT_PLAN,
    *,
    batch_size: int = 64,
    block_size: int = 1024,
    stim_ids: np.ndarray | None = None,
    cache: TruthFeatureCache | None = None,
) -> EvalResult:
    """Every column of ``plan`` that can run here; the others go to ``absent`` with the reason.

    Args:
        recons: reconstructions, uint8 ``(N, H, W, 3)`` or float ``(N, 3, H, W)`` in [0, 1].
        gts: ground-truth images, same N.
        plan: column ids: ``identification_2way|corrdist|fid/<feature network>@v1``, ``fid_inception@v1``,
            ``lpips/<net>:v0.1@v1``.
        batch_size: images per network batch.
        block_size: rows per block of the 2-way identification.
        stim_ids: ``(N,)`` stimulus ids of the ground truths, the keys of ``cache``.
        cache: ground-truth features by stimulus; read when it holds every row, else filled.

    Raises:
        ConfigError: for an id that is not a feature metric, or an unknown network.
    """
    result, n = EvalResult(), int(gts.shape[0])
    by_network: dict[str, list[str]] = {}
    for metric_id in plan:
        name, network, _ = parse_metric_id(metric_id)
        family = metric_family(name)
        if family in ("fid_inception", "lpips"):
            available, reason = _network_bound_availability(metric_id)
            if not available:
                result.absent[metric_id] = reason
                continue
            metric = build_metric(metric_id, sync_on_compute=False)
            for start in range(0, n, batch_size):
                metric.update(recons[start : start + batch_size], gts[start : start + batch_size])
            result.add_metric(metric)
        elif family in _FEATURE_FAMILIES:
            by_network.setdefault(network, []).append(metric_id)
        else:
            raise ConfigError(
                f"{metric_id!r} is not a feature metric\n  fix: use {_FEATURE_FAMILIES} or lpips"
            )
    networks = []
    for network_id, ids in by_network.items():
        net = feature_network(network_id)
        available, reason = net.availability()
        if available:
            networks.append(net)
        else:
            result.absent.update(dict.fromkeys(ids, reason))
    for group in group_by_model(networks):
        metrics = {
            net.network_id: [
                build_metric(
                    metric_id,
                    sync_on_compute=False,
                    spec=feature_metric_spec(metric_family(parse_metric_id(metric_id)[0]), net, n_items=n),  # type: ignore[arg-type]
                    num_features=net.feature_dim,
                    block_size=block_size,
                )
                for metric_id in by_network[net.network_id]
            ]
            for net in group
        }
        _score_group(group, metrics, recons, gts, batch_size, stim_ids, cache)
        for group_metrics in metrics.values():
            for metric in group_metrics:
                result.add_metric(metric)
    return result


def _score_group(
    group: list[FeatureNetwork],
    metrics: dict[str, list[SpecMetric]],
    recons: Tensor,
    gts: Tensor,
    batch_size: int,
    stim_ids: np.ndarray | None,
    cache: TruthFeatureCache | None,
) -> None:
    """One forward pass of the group's model per batch; every metric of its networks updated per batch."""
    extractor = build_shared_pass(group)
    use_cache = cache is not None and stim_ids is not None
    truth = cache.lookup(group, stim_ids) if use_cache else None  # type: ignore[union-attr,arg-type]
    computed: dict[str, list[Tensor]] = {net.network_id: [] for net in group}
    for start in range(0, int(gts.shape[0]), batch_size):
        batch = slice(start, start + batch_size)
        predicted = extractor(recons[batch])
        if truth is None:
            true = extractor(gts[batch])
            if use_cache:  # kept for the cache (the metrics hold views of the same tensors)
                for network_id, features in true.items():
                    computed[network_id].append(features)
        else:
            true = {network_id: features[batch] for network_id, features in truth.items()}
        for network_id, network_metrics in metrics.items():
            for metric in network_metrics:
                metric.update(predicted[network_id], true[network_id])
    if truth is None and use_cache:
        cache.store(group, stim_ids, {k: torch.cat(v) for k, v in computed.items()})  # type: ignore[union-attr,arg-type]
