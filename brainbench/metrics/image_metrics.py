r"""Pixel-level image metrics: PixCorr, SSIM and PSNR, each under a pinned resolution chain.

Protocol: ``metrics.md`` §1.3 (per-metric preprocessing of MindEye1/2 and
Brain-Diffuser), §1.4 (the scikit-image SSIM trap), §1.5 (resize traps), §4.5 (torchmetrics SSIM is *not*
bit-exact with scikit-image). Images first go through a resolution chain
(:class:`brainbench.metrics.preprocess.ResolutionChain`), which yields float64 ``(N, 3, S, S)`` in ``[0, 1]``
for the reconstruction ``x`` and the ground truth ``y``; every score is per image, and a column is the
mean over images.

**PixCorr** (MindEye ``np.corrcoef(gt_i, rec_i)[0, 1]``; Brain-Diffuser the same): Pearson r of the 3·S²
flattened RGB values,

.. math::

    \mathrm{PixCorr}_i = \frac{\sum_p (x_p - \bar x)(y_p - \bar y)}
                              {\sqrt{\sum_p (x_p - \bar x)^2 \, \sum_p (y_p - \bar y)^2}},

with ``r = 0`` when either image is constant (``np.corrcoef`` gives NaN; a blank reconstruction scores 0,
it is not dropped).

**SSIM** (Wang et al. 2004, IEEE TIP 13:600, DOI 10.1109/TIP.2003.819861), pinned as MindEye passes it to
scikit-image: ``structural_similarity(rec, gt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1.0, channel_axis=None)`` on ``rgb2gray`` images. With ``w`` the separable Gaussian window
(σ = 1.5, truncated at radius ``int(3.5σ + 0.5) = 5``, i.e. 11×11, scipy's kernel), local moments
``μ_x = w * x``, ``σ_x² = w * x² − μ_x²`` (population covariance), ``σ_xy = w * xy − μ_x μ_y``,
``C1 = (0.01 L)², C2 = (0.03 L)²`` with ``L = data_range = 1``:

.. math::

    \mathrm{SSIM}_i = \operatorname{mean}_{p \in \text{interior}}
        \frac{(2 \mu_x \mu_y + C_1)(2 \sigma_{xy} + C_2)}
              {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}

The mean runs over the pixels at least ``r = 5`` from the border: scikit-image filters with ``mode="reflect"``
and then crops ``(win - 1) // 2``, so the padded values never reach the mean, and a *valid* convolution here
gives the same number (float64 throughout; it matches scikit-image 0.26 to 1e-10 in the tests). torchmetrics'
``StructuralSimilarityIndexMeasure`` differs from it by up to 2e-4 (§4.5), which is why it is not used.

*The scikit-image version trap (§1.4).* All three reference repos call ``structural_similarity(...,
multichannel=True)`` on an image that is already 2-D grey. scikit-image ≤ 0.19 (Brain-Diffuser pins 0.17.2)
then treats the **last axis (columns) as channels** and averages 425 one-dimensional SSIMs along the image
columns; ≥ 0.20 (MindEye1 pins 0.20.0, MindEye2 0.22.0) silently ignores the argument and computes a true
2-D SSIM. On a noisy 425² pair that is 0.7786 versus 0.8206. **Our definition is the 2-D one**
(``layout="2d"``); the column mode is available only when asked for (``layout="columns"``, spec names
ending ``_columns``), to reproduce Brain-Diffuser's published SSIM. MindEye's own pipeline also runs the SSIM
in float32 (its tensors are float32 and ``rgb2gray`` keeps the dtype); ours is float64.

**PSNR**: ``10 log10(L² / MSE)`` per image over the 3·S² RGB values, ``L = 1``; the MSE is floored at one
grey level in one value, ``(1/255)² / (3·S²)`` (v2; v1 gave ``inf`` for identical images, which made the
column mean ``inf``), as the video metric ``frame_psnr`` does.

Speed (this machine: 2 CPU cores shared with other jobs, load average 4-5, ``torch.set_num_threads(1)``,
torch 2.14.1, float64; 1000 random image pairs given as 256-px uint8): ``chain="native"`` PixCorr 1.8 s,
SSIM 3.3 s, PSNR 0.7 s; canonical ``brainbench`` chain (both upsampled to 425 px) PixCorr 18 s, SSIM 14 s;
``mindeye`` 21 s / 21 s; ``braindiffuser`` (Pillow, per image) 25 s / 20 s. scikit-image's SSIM takes 5.2 s
for the same 1000 grey 256² pairs. With 2 torch threads on the loaded machine every number was 2-3× slower
(thread contention), so pin one thread per process when other jobs share the cores.

Example:
    >>> images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> pixcorr_per_image(images, images, chain="native").tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> ssim_spec("mindeye").id, pixcorr_spec().id
    ('ssim_mindeye@v1', 'pixcorr@v1')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from brainbench.errors import ConfigError
from brainbench.metrics.base import PerItemMean, check_round_trip
from brainbench.metrics.preprocess import (
    ResolutionChain,
    apply_chain,
    check_images,
    get_chain,
    image_side,
    list_chains,
    to_grey,
)
from brainbench.metrics.specs import MetricSpec, parse_metric_id

SSIMLayout = Literal["2d", "columns"]
ImageBatch = Tensor | np.ndarray

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 1.0
_REVISION = {"pixcorr": 0, "ssim": 0, "psnr": 1}
"""Per-metric revision of the equation; spec version = chain version + revision, so either change bumps it."""


# --------------------------------------------------------------------------------------------- SSIM core
def _gaussian_kernel(sigma: float, truncate: float) -> list[float]:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate·σ + 0.5)``, ``exp(-x²/2σ²)`` summing to 1."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 / (sigma * sigma) * offsets**2)
    return (weights / weights.sum()).tolist()


def _filter_valid(maps: Tensor, kernel: list[float], dim: int) -> Tensor:
    """Correlate ``maps`` with a 1-D ``kernel`` along ``dim`` without padding (output shorter by len-1)."""
    length = maps.shape[dim] - len(kernel) + 1
    out = maps.narrow(dim, 0, length) * kernel[0]
    for tap, weight in enumerate(kernel[1:], start=1):
        out.add_(maps.narrow(dim, tap, length), alpha=weight)
    return out


def structural_similarity(
    x: Tensor,
    y: Tensor,
    *,
    gaussian_weights: bool = True,
    sigma: float = SSIM_SIGMA,
    win_size: int | None = None,
    data_range: float = DATA_RANGE,
    use_sample_covariance: bool = False,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
    layout: SSIMLayout = "2d",
    block_pixels: int = 1 << 16,
) -> Tensor:
    """Per-image mean SSIM of float ``(N, C, H, W)`` batches, with scikit-image's arguments and result.

    Equals ``skimage.metrics.structural_similarity(x_i, y_i, gaussian_weights=..., sigma=..., win_size=...,
    data_range=..., use_sample_covariance=..., K1=k1, K2=k2, channel_axis=<C axis or None>)`` for each image
    (per-channel SSIMs averaged). ``layout="columns"`` filters along H only and averages the 1-D SSIM of
    every column, i.e. what scikit-image ≤ 0.19 computes for ``multichannel=True`` on a 2-D image.
    Computed in float64, about ``block_pixels`` input pixels at a time. The defaults are our pinned
    definition, not scikit-image's (``gaussian_weights=False``, ``use_sample_covariance=True``): pass those
    explicitly to mirror a call that relied on them (MinD-Video's RGB SSIM does, metrics.md §3.2).

    Args:
        x: ``(N, C, H, W)`` reconstruction.
        y: ``(N, C, H, W)`` ground truth.
        gaussian_weights: Gaussian window (radius ``int(3.5σ + 0.5)``); else a uniform ``win_size`` box.
        sigma: Gaussian σ in pixels.
        win_size: odd box side for the uniform window (default 7, scikit-image's); must be ``None`` or equal
            to ``2·int(3.5σ + 0.5) + 1`` with Gaussian weights.
        data_range: ``L`` in ``C1 = (k1 L)², C2 = (k2 L)²``.
        use_sample_covariance: scale (co)variances by ``NP / (NP − 1)``, ``NP`` the window's pixel count.
        k1: luminance constant.
        k2: contrast constant.
        layout: ``2d`` or ``columns`` (see above).
        block_pixels: pixels (N·C·H·W) per block, at least one image. The default (one 256² grey image,
            ≈ 2.6 MB of float64 moments) keeps a block in CPU cache, 2-5× faster than large blocks on CPU;
            pass more on a GPU.

    Returns:
        ``(N,)`` float64.

    Raises:
        ValueError: on mismatched shapes, an even or too large window.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must be the same (N, C, H, W)")
    if layout not in ("2d", "columns"):
        raise ValueError(f"layout must be '2d' or 'columns', got {layout!r}")
    if gaussian_weights:
        kernel = _gaussian_kernel(sigma, SSIM_TRUNCATE)
        if win_size is not None and win_size != len(kernel):
            raise ValueError(f"with Gaussian weights the window is {len(kernel)} px, not {win_size}")
    else:
        size = 7 if win_size is None else win_size
        if size < 1 or size % 2 == 0:
            raise ValueError(f"win_size must be odd and positive, got {size}")
        kernel = [1.0 / size] * size
    win = len(kernel)
    dims = (-2,) if layout == "columns" else (-2, -1)  # columns: filter along H only, as 1-D signals
    if any(x.shape[d] < win for d in dims):
        raise ValueError(f"images {tuple(x.shape[-2:])} are smaller than the {win}-px SSIM window")
    n_window = win ** len(dims)
    cov_norm = n_window / (n_window - 1) if use_sample_covariance else 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    block_size = max(1, block_pixels // max(1, x[0].numel()))
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], block_size):
        xb = x[start : start + block_size].to(torch.float64)
        yb = y[start : start + block_size].to(torch.float64)
        moments = torch.stack([xb, yb, xb * xb, yb * yb, xb * yb], dim=1)
        for dim in dims:
            moments = _filter_valid(moments, kernel, dim)
        mu_x, mu_y, m_xx, m_yy, m_xy = moments.unbind(dim=1)
        var_x = cov_norm * (m_xx - mu_x**2)
        var_y = cov_norm * (m_yy - mu_y**2)
        cov_xy = cov_norm * (m_xy - mu_x * mu_y)
        numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
        denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        out[start : start + xb.shape[0]] = (numerator / denominator).mean(dim=(1, 2, 3))
    return out


# --------------------------------------------------------------------------------------------- per image
@dataclass(frozen=True)
class ChainedPairs:
    """A block of (reconstruction, ground truth) pairs already through ``chain``: float64 ``(B, 3, S, S)``.

    Pixel metrics of one chain accept these in ``update`` instead of raw images, so the resize (most of
    their cost) runs once for all of them.
    """

    chain: ResolutionChain
    pred: Tensor
    target: Tensor


def chained_blocks(
    pred: ImageBatch, target: ImageBatch, chain: str | ResolutionChain = "brainbench", block_size: int = 8
) -> Iterator[ChainedPairs]:
    """Validate both batches and yield ``block_size`` pairs at a time through ``chain``.

    Raises:
        ValueError: on mismatched N (or sizes under the native chain).
    """
    chain = get_chain(chain)
    pred_t, target_t = check_images(pred, "pred"), check_images(target, "target")
    if pred_t.shape[0] != target_t.shape[0] or pred_t.shape[0] == 0:
        raise ValueError(
            f"pred {tuple(pred_t.shape)} and target {tuple(target_t.shape)} need the same N >= 1"
        )
    if chain.size is None and image_side(pred_t) != image_side(target_t):
        raise ValueError(
            f"pred {image_side(pred_t)} and target {image_side(target_t)} differ in size under the native "
            "chain\n  fix: pick a chain that resizes, e.g. 'brainbench'"
        )
    for start in range(0, int(pred_t.shape[0]), block_size):
        stop = start + block_size
        yield ChainedPairs(
            chain, apply_chain(pred_t[start:stop], chain), apply_chain(target_t[start:stop], chain)
        )


def pixcorr_per_image(
    pred: ImageBatch, target: ImageBatch, *, chain: str | ResolutionChain = "brainbench", block_size: int = 8
) -> Tensor:
    """PixCorr of each pair: Pearson r of the flattened RGB images after ``chain`` (module docstring).

    Args:
        pred: reconstructions, uint8 ``(N, H, W, 3)`` or float ``(N, 3, H, W)`` in ``[0, 1]``.
        target: ground truth, same N, same accepted layouts (may differ in size unless ``chain="native"``).
        chain: a registered chain id or :class:`~brainbench.metrics.preprocess.ResolutionChain`.
        block_size: images preprocessed and scored at once.

    Returns:
        ``(N,)`` float64 in ``[-1, 1]``; 0 where either image is constant.
    """
    return torch.cat([_pixcorr_block(block) for block in chained_blocks(pred, target, chain, block_size)])


def _pixcorr_block(block: ChainedPairs) -> Tensor:
    xc = block.pred.reshape(block.pred.shape[0], -1)
    yc = block.target.reshape(block.target.shape[0], -1)
    xc, yc = xc - xc.mean(dim=1, keepdim=True), yc - yc.mean(dim=1, keepdim=True)
    denominator = (xc.square().sum(dim=1) * yc.square().sum(dim=1)).sqrt()
    r = (xc * yc).sum(dim=1) / denominator.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(denominator > 0, r, torch.zeros_like(r)).cpu()


def ssim_per_image(
    pred: ImageBatch,
    target: ImageBatch,
    *,
    chain: str | ResolutionChain = "brainbench",
    layout: SSIMLayout = "2d",
    block_size: int = 8,
) -> Tensor:
    """SSIM of each pair after ``chain``: grey (or per-channel RGB, as the chain says), the pinned definition.

    Args:
        pred: reconstructions, uint8 ``(N, H, W, 3)`` or float ``(N, 3, H, W)`` in ``[0, 1]``.
        target: ground truth, same N.
        chain: a registered chain id or chain object.
        layout: ``2d`` (ours) or ``columns`` (scikit-image ≤ 0.19 with ``multichannel=True``; Brain-Diffuser).
        block_size: images preprocessed and scored at once.

    Returns:
        ``(N,)`` float64.
    """
    blocks = chained_blocks(pred, target, chain, block_size)
    return torch.cat([_ssim_block(block, layout) for block in blocks])


def _ssim_block(block: ChainedPairs, layout: SSIMLayout) -> Tensor:
    xb, yb = block.pred, block.target
    if block.chain.ssim_colour == "grey":
        xb, yb = to_grey(xb), to_grey(yb)
    return structural_similarity(xb, yb, layout=layout).cpu()


def psnr_per_image(
    pred: ImageBatch, target: ImageBatch, *, chain: str | ResolutionChain = "native", block_size: int = 8
) -> Tensor:
    """PSNR of each pair after ``chain`` (default: no resize): ``10·log10(1 / MSE)`` over RGB in ``[0, 1]``.

    Args:
        pred: reconstructions (or video frames flattened into N), uint8 ``(N, H, W, 3)`` or float
            ``(N, 3, H, W)`` in ``[0, 1]``. For 8-bit images this equals PSNR with ``data_range=255``.
        target: ground truth, same N.
        chain: a registered chain id or chain object.
        block_size: images preprocessed and scored at once.

    Returns:
        ``(N,)`` float64 decibels, finite: the MSE is floored at one grey level in one value.
    """
    return torch.cat([_psnr_block(block) for block in chained_blocks(pred, target, chain, block_size)])


def _psnr_block(block: ChainedPairs) -> Tensor:
    mse = (block.pred - block.target).square().mean(dim=(1, 2, 3))
    floor = (DATA_RANGE / 255.0) ** 2 / block.pred[0].numel()
    return (10.0 * torch.log10(DATA_RANGE**2 / mse.clamp_min(floor))).cpu()


def pixcorr(pred: ImageBatch, target: ImageBatch, *, chain: str | ResolutionChain = "brainbench") -> Tensor:
    """Mean of :func:`pixcorr_per_image` (0-d float64): the PixCorr column."""
    return pixcorr_per_image(pred, target, chain=chain).mean()


def ssim(
    pred: ImageBatch,
    target: ImageBatch,
    *,
    chain: str | ResolutionChain = "brainbench",
    layout: SSIMLayout = "2d",
) -> Tensor:
    """Mean of :func:`ssim_per_image` (0-d float64): the SSIM column."""
    return ssim_per_image(pred, target, chain=chain, layout=layout).mean()


# --------------------------------------------------------------------------------------------- specs
def pixcorr_spec(chain: str | ResolutionChain = "brainbench") -> MetricSpec:
    """Spec of the PixCorr column under ``chain``: ``pixcorr@v1``, ``pixcorr_mindeye@v1``, ..."""
    chain = get_chain(chain)
    params = {**chain.params(), "correlation": "pearson", "flatten": "rgb", "constant_image": 0.0}
    description = f"pixel correlation (Pearson r of flattened RGB, mean over images), chain {chain.id}"
    return MetricSpec(
        f"pixcorr{chain.suffix}", "", chain.version + _REVISION["pixcorr"], True, params, description
    )


def ssim_spec(chain: str | ResolutionChain = "brainbench", *, layout: SSIMLayout = "2d") -> MetricSpec:
    """Spec of the SSIM column: ``ssim@v1``, ``ssim_mindeye@v1``, ``ssim_braindiffuser_columns@v1``, ..."""
    chain = get_chain(chain)
    if layout not in ("2d", "columns"):
        raise ValueError(f"layout must be '2d' or 'columns', got {layout!r}")
    params = {
        **chain.params(),
        "window": "gaussian",
        "sigma": SSIM_SIGMA,
        "truncate": SSIM_TRUNCATE,
        "win_size": len(_gaussian_kernel(SSIM_SIGMA, SSIM_TRUNCATE)),
        "k1": SSIM_K1,
        "k2": SSIM_K2,
        "covariance": "population",
        "data_range": DATA_RANGE,
        "layout": layout,
        "border": "cropped (win-1)//2",
    }
    name = f"ssim{chain.suffix}" + ("_columns" if layout == "columns" else "")
    description = f"SSIM (Wang 2004, Gaussian σ=1.5, {layout}, {chain.ssim_colour}), chain {chain.id}"
    return MetricSpec(name, "", chain.version + _REVISION["ssim"], True, params, description)


def psnr_spec(chain: str | ResolutionChain = "native") -> MetricSpec:
    """Spec of the PSNR column: ``psnr_native@v2`` by default."""
    chain = get_chain(chain)
    params = {**chain.params(), "data_range": DATA_RANGE, "colour": "rgb", "identical": "floor"}
    description = f"PSNR in dB over RGB in [0, 1], mean over images, chain {chain.id}"
    return MetricSpec(f"psnr{chain.suffix}", "", chain.version + _REVISION["psnr"], True, params, description)


# --------------------------------------------------------------------------------------------- torchmetrics
def _chain_of(metric_id: str, metric: str) -> tuple[ResolutionChain, SSIMLayout]:
    """The chain (and SSIM layout) a pixel-metric id names: ``<metric>[_<chain>][_columns]@v<N>``."""
    name, network, _ = parse_metric_id(metric_id)
    layout: SSIMLayout = "columns" if metric == "ssim" and name.endswith("_columns") else "2d"
    stem = name.removesuffix("_columns") if layout == "columns" else name
    for chain_id in list_chains():
        chain = get_chain(chain_id)
        if stem == f"{metric}{chain.suffix}" and not network:
            return chain, layout
    raise ConfigError(f"{metric_id!r} is not a {metric} column\n  fix: use {metric}[_<chain>]@v<N>")


class _PerImageMean(PerItemMean):
    """Mean of a per-image score over every image seen; no chance level is defined."""

    metric = ""

    def score_items(self, pred: ImageBatch, target: ImageBatch) -> Tensor:  # type: ignore[override]
        """Per-image scores of a batch of pairs (layouts as in the per-image functions)."""
        raise NotImplementedError

    def update(self, pred: ImageBatch | ChainedPairs, target: ImageBatch | None = None) -> None:  # type: ignore[override]
        """Score a batch of pairs (or a :class:`ChainedPairs` block of this chain) and keep the scores."""
        if isinstance(pred, ChainedPairs):
            if pred.chain != self.chain:
                raise ConfigError(f"{self.spec.id} got images of chain {pred.chain.id}, not {self.chain.id}")
            self.scores.append(self.score_block(pred))
        else:
            super().update(pred, target)

    def score_block(self, block: ChainedPairs) -> Tensor:
        """Per-image scores of a block already through the chain."""
        raise NotImplementedError

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> _PerImageMean:
        """From ``<metric>[_<chain>]@v<N>`` (``ssim`` also ``..._columns``), e.g. ``pixcorr_mindeye@v1``."""
        chain, layout = _chain_of(metric_id, cls.metric)
        metric = cls(chain=chain, layout=layout) if cls.metric == "ssim" else cls(chain=chain)  # type: ignore[call-arg]
        return check_round_trip(metric, metric_id)  # type: ignore[return-value]


class PixCorr(_PerImageMean):
    """Torchmetrics form of :func:`pixcorr_per_image` (mean over images).

    Example:
        >>> metric = PixCorr(chain="native")
        >>> metric.update(torch.eye(4).expand(2, 3, 4, 4), torch.eye(4).expand(2, 3, 4, 4))
        >>> float(metric.compute()), metric.spec.id
        (1.0, 'pixcorr_native@v1')
    """

    metric = "pixcorr"

    def __init__(self, *, chain: str | ResolutionChain = "brainbench") -> None:
        super().__init__()
        self.chain = get_chain(chain)
        self.set_spec(pixcorr_spec(self.chain))

    def score_items(self, pred: ImageBatch, target: ImageBatch) -> Tensor:  # type: ignore[override]
        """PixCorr of each pair."""
        return pixcorr_per_image(pred, target, chain=self.chain)

    def score_block(self, block: ChainedPairs) -> Tensor:
        """PixCorr of each chained pair."""
        return _pixcorr_block(block)


class SSIM(_PerImageMean):
    """Torchmetrics form of :func:`ssim_per_image` (mean over images); spec in ``.spec``."""

    metric = "ssim"

    def __init__(self, *, chain: str | ResolutionChain = "brainbench", layout: SSIMLayout = "2d") -> None:
        super().__init__()
        self.chain, self.layout = get_chain(chain), layout
        self.set_spec(ssim_spec(self.chain, layout=layout))

    def score_items(self, pred: ImageBatch, target: ImageBatch) -> Tensor:  # type: ignore[override]
        """SSIM of each pair."""
        return ssim_per_image(pred, target, chain=self.chain, layout=self.layout)

    def score_block(self, block: ChainedPairs) -> Tensor:
        """SSIM of each chained pair."""
        return _ssim_block(block, self.layout)


class PSNR(_PerImageMean):
    """Torchmetrics form of :func:`psnr_per_image` (mean over images)."""

    metric = "psnr"

    def __init__(self, *, chain: str | ResolutionChain = "native") -> None:
        super().__init__()
        self.chain = get_chain(chain)
        self.set_spec(psnr_spec(self.chain))

    def score_items(self, pred: ImageBatch, target: ImageBatch) -> Tensor:  # type: ignore[override]
        """PSNR of each pair."""
        return psnr_per_image(pred, target, chain=self.chain)

    def score_block(self, block: ChainedPairs) -> Tensor:
        """PSNR of each chained pair."""
        return _psnr_block(block)
