r"""Video reconstruction metrics of MinD-Video and NeuroClips: frame SSIM/PSNR, N-way top-k, CLIP-pcc.

Sources (``metrics.md`` §3; reference code re-read at the commits metrics.md names):
MinD-Video ``jqin4749/MindVideo`` ``src/MindVideo/utils/eval_metrics.py`` + ``scripts/run_metrics.py``
(§3.2), NEURONS ``xmed-lab/NEURONS`` ``eval_metrics.py`` + ``run_metrics.py`` (§3.3, the public metric
code closest to NeuroClips, which ships none), Mind-Animator ``Evaluation Metrics/ST_level_metric.py``
(§3.3, the gated CLIP-pcc). Clips are ``(N, F, H, W, 3)`` uint8, reconstruction and ground truth at the same
size; nothing is resized (the reference code scores the 256x256 GIF frames as they are). Resample frame
counts first (:func:`resample_frames`, §3.1). Columns (ids ``<metric>[/<network>]@v<N>``, see
:mod:`brainbench.metrics.specs`):

- ``frame_ssim_mindvideo@v1``: per frame ``skimage.structural_similarity(rec, gt, data_range=255,
  channel_axis=-1)``: RGB, uniform 7x7 window, sample covariance (MinD-Video ``ssim_metric``, §3.2).
- ``frame_ssim_neurons@v1``: NEURONS ``ssim_metric``: ``rgb2gray``, Gaussian σ=1.5 (11 taps), population
  covariance, ``data_range=1``, and ``channel_axis=-1`` on the grey frame, i.e. the mean of 1-D SSIMs down
  each pixel column (the "column mode" of §1.4, in every scikit-image version); NeuroClips' SSIM (§3.4).
- ``frame_psnr@v1``: NEURONS ``psnr_metric``, :math:`10\log_{10}(255^2/\mathrm{MSE})` per RGB frame. skimage
  returns ``inf`` for an identical frame; here the MSE is floored at one grey level in one value,
  :math:`1/(3HW)`, so an identical frame scores :math:`10\log_{10}(255^2 \cdot 3HW)` and means stay finite.
- ``nway_{frame,video}_top<k>_<n>way/<classifier>@v1``: MinD-Video ``n_way_top_k_acc`` (§3.2, below).
- ``clip_pcc_adjacent/<clip>@v1`` (NeuroClips' "ST-level" CLIP-pcc, NEURONS ``compute_clip_pcc``: cosine of
  adjacent frames' CLIP image embeddings of the reconstruction), ``clip_pcc_allpairs/<clip>@v1`` (NEURONS
  ``clip_score_frame``, "CLIP-pcc new": all off-diagonal frame pairs), ``clip_pcc_gated0.6/<clip>+<gate>@v1``
  (Mind-Animator's ST-level: a video's CLIP-pcc counts 0 unless the gate network's cosine between the
  reconstructed and the true video exceeds 0.6). GT-free and gameable: a frozen video scores 1 (§3.3).

Every value is the mean over frames (or videos) of the mean over clips, as ``run_metrics.py`` averages.

N-way protocol (§3.2, verified in ``n_way_top_k_acc``): the ground-truth label set ``G`` is the top-3
classes of the classifier on the true frame (clip); ``p`` is the softmax of the classifier on the
reconstruction. A trial draws ``n-1`` distinct distractors among the ``C - 3`` other classes and is correct if
for *any* ``g ∈ G`` fewer than ``k`` distractors have ``p_d >= p_g`` (ties count as wrong; the reference's
argsort leaves them to chance). Only the best ``g* = argmax_{g∈G} p_g`` matters, and only how many "beaters"
``B = {c ∉ G : p_c >= p_{g*}}`` a trial draws, which is hypergeometric: a trial succeeds with probability

.. math::

    P(\text{hit}) = P\big[\mathrm{Hypergeom}(C-3,\ |B|,\ n-1) < k\big], \qquad
    \text{chance} = 1 - \binom{n-1}{k} \Big/ \binom{n+2}{k} \;(=3/(n+2) \text{ at } k=1)

so each trial samples that count directly (``numpy.random.default_rng(seed).hypergeometric``), the same
distribution as drawing class indices. MinD-Video's RNG is unseeded; here ``trials=100`` and ``seed=42`` are
pinned in the spec. The chance level assumes outputs that ignore the input; a classifier with a class prior
scores above it on mismatched pairs (world CLIP, 50-way: 0.30 on shuffled world images vs 3/52).

Classifier logits and CLIP embeddings come from networks of :mod:`brainbench.backbones.networks`, run by the
evaluator (:mod:`brainbench.eval.video_metrics`); this module only sees frames, logits and embeddings, so
world-asset trainers can use the pixel metrics without the evaluator.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, stats
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from brainbench.errors import ConfigError
from brainbench.metrics.base import PerItemMean, SpecMetric, check_round_trip, option
from brainbench.metrics.specs import MetricSpec, parse_metric_id

SsimFlavour = Literal["mindvideo", "neurons"]
ClipPccVariant = Literal["adjacent", "allpairs"]
Level = Literal["frame", "video"]
GATE_THRESHOLD = 0.6
_GREY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray (ITU-R BT.709)
_REFERENCE = "metrics.md §3.2-3.3"


# ---------------------------------------------------------------- frames in, frames out


def _as_clips(clips: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = clips.cpu().numpy() if isinstance(clips, Tensor) else np.asarray(clips)
    if array.ndim != 5 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (N, F, H, W, 3) clips, got {array.dtype} {array.shape}")
    return array


def check_clips(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both clip batches as uint8 ``(N, F, H, W, 3)`` arrays of one shape.

    Raises:
        ValueError: on another dtype or layout, or different shapes.
    """
    pred_np, target_np = _as_clips(pred, "pred"), _as_clips(target, "target")
    if pred_np.shape != target_np.shape:
        raise ValueError(
            f"pred {pred_np.shape} and target {target_np.shape} differ\n  fix: resample frames "
            "(resample_frames) and resize reconstructions to the ground-truth frame size first"
        )
    return pred_np, target_np


def resample_frames(clips: Tensor | np.ndarray, n_frames: int) -> np.ndarray:
    """Pick ``n_frames`` evenly spaced frames per clip: output frame ``j`` is input ``floor((j+½)·F/n)``.

    Methods generate at different rates (MinD-Video 3 fps, NeuroClips 8 fps, §3.1); video-level metrics
    need a common ``F``. Nearest frame at each output interval's centre, no blending.
    """
    array = _as_clips(clips, "clips")
    picks = np.floor((np.arange(n_frames) + 0.5) * array.shape[1] / n_frames).astype(np.int64)
    return array[:, picks]


# ---------------------------------------------------------------- pixel level: SSIM and PSNR


def _ssim_block(pred: np.ndarray, target: np.ndarray, flavour: SsimFlavour) -> np.ndarray:
    """``skimage.metrics.structural_similarity`` of each frame of ``(B, H, W, 3)`` uint8 blocks, batched."""
    if flavour == "mindvideo":  # RGB, channels filtered separately, uniform 7x7, sample covariance
        x, y = pred.astype(np.float64), target.astype(np.float64)
        win, data_range, cov_norm = 7, 255.0, 49 / 48

        def blur(a: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(a, size=(1, win, win, 1))

        crop = (slice(None), slice(3, -3), slice(3, -3))
    elif flavour == "neurons":  # grey; channel_axis=-1 makes each pixel column a 1-D "image" along H
        x, y = (pred.astype(np.float64) / 255.0) @ _GREY, (target.astype(np.float64) / 255.0) @ _GREY
        win, data_range, cov_norm = 11, 1.0, 1.0

        def blur(a: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(a, sigma=(0, 1.5, 0), truncate=3.5, mode="reflect")

        crop = (slice(None), slice(5, -5))
    else:
        raise ConfigError(f"unknown SSIM flavour {flavour!r}\n  fix: use 'mindvideo' or 'neurons'")
    if min(x.shape[1 : len(crop)]) < win:  # skimage's check on each per-channel image
        raise ValueError(f"frames {pred.shape[1:3]} are smaller than the {win}-pixel SSIM window")
    ux, uy = blur(x), blur(y)
    vx, vy, vxy = (
        cov_norm * (blur(a * b) - ua * ub)
        for a, b, ua, ub in ((x, x, ux, ux), (y, y, uy, uy), (x, y, ux, uy))
    )
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    cropped = ssim_map[crop]
    return cropped.reshape(cropped.shape[0], -1).mean(axis=1)


def frame_ssim(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    *,
    flavour: SsimFlavour = "mindvideo",
    block_size: int = 4,
) -> Tensor:
    """Per-frame SSIM ``(N, F)`` float64 of reconstructed vs true clips, in the pinned flavour (module doc).

    Equal to ``skimage.metrics.structural_similarity`` called frame by frame (tested to 1e-10), computed on
    blocks of ``block_size`` frames with ``scipy.ndimage`` filters (reflect mode, border cropped as skimage).
    """
    pred_np, target_np = check_clips(pred, target)
    n, f = pred_np.shape[:2]
    flat_pred, flat_target = (
        pred_np.reshape(n * f, *pred_np.shape[2:]),
        target_np.reshape(n * f, *pred_np.shape[2:]),
    )
    values = [
        _ssim_block(flat_pred[i : i + block_size], flat_target[i : i + block_size], flavour)
        for i in range(0, n * f, block_size)
    ]
    return torch.from_numpy(np.concatenate(values)).reshape(n, f)


def frame_psnr(
    pred: Tensor | np.ndarray, target: Tensor | np.ndarray, *, identical: Literal["floor", "inf"] = "floor"
) -> Tensor:
    r"""Per-frame PSNR ``(N, F)`` float64 in dB: :math:`10\log_{10}(255^2/\mathrm{MSE})` over the RGB frame.

    Args:
        pred: ``(N, F, H, W, 3)`` uint8 reconstructions.
        target: ground-truth clips, same shape.
        identical: ``"floor"`` (the spec) floors the MSE at ``1/(3HW)``, one grey level in one value;
            ``"inf"`` gives skimage's ``inf`` for identical frames.
    """
    pred_np, target_np = check_clips(pred, target)
    mse = np.stack(
        [
            ((p.astype(np.float64) - t) ** 2).mean(axis=(1, 2, 3))
            for p, t in zip(pred_np, target_np, strict=True)
        ]
    )
    floor = 1.0 / math.prod(pred_np.shape[2:]) if identical == "floor" else 0.0
    with np.errstate(divide="ignore"):
        return torch.from_numpy(10.0 * np.log10(255.0**2 / np.maximum(mse, floor)))


# ---------------------------------------------------------------- N-way top-k (MinD-Video)


def _beaters(pred_logits: Tensor, target_logits: Tensor, gt_classes: int) -> tuple[Tensor, int]:
    if pred_logits.ndim != 2 or pred_logits.shape != target_logits.shape:
        raise ValueError(
            f"logits must be two (S, C) tensors, got {tuple(pred_logits.shape)}, {tuple(target_logits.shape)}"
        )
    probs = torch.softmax(pred_logits.double(), dim=-1)
    gt = target_logits.topk(gt_classes, dim=-1).indices
    best = probs.gather(1, gt).max(dim=1).values
    is_gt = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, gt, True)
    return ((probs >= best[:, None]) & ~is_gt).sum(dim=1), pred_logits.shape[1] - gt_classes


def _check_nway(n_way: int, top_k: int, others: int) -> None:
    if not 1 <= top_k < n_way or n_way - 1 > others:
        raise ConfigError(
            f"{n_way}-way top-{top_k} needs 1 <= top_k < n_way and n_way - 1 <= {others} non-GT classes"
            "\n  fix: lower n_way or use a classifier with more classes"
        )


def nway_accuracy(
    pred_logits: Tensor,
    target_logits: Tensor,
    *,
    n_way: int,
    top_k: int = 1,
    trials: int = 100,
    seed: int = 42,
    gt_classes: int = 3,
) -> Tensor:
    """MinD-Video N-way top-k accuracy of each sample ``(S,)`` float64, over ``trials`` seeded trials.

    Args:
        pred_logits: ``(S, C)`` classifier logits on the reconstructed frames (clips); softmax inside.
        target_logits: ``(S, C)`` logits on the true frames (clips); their top ``gt_classes`` are the labels.
        n_way: classes per trial (the best true class and ``n_way - 1`` distractors).
        top_k: rank the true class must reach among them (ties count as wrong).
        trials: trials per sample; draws are row-major over (sample, trial) from ``default_rng(seed)``.
        seed: the generator seed.
        gt_classes: size of the ground-truth label set (3 in MinD-Video).
    """
    beaters, others = _beaters(pred_logits, target_logits, gt_classes)
    _check_nway(n_way, top_k, others)
    good = beaters.numpy()[:, None]
    drawn = np.random.default_rng(seed).hypergeometric(
        good, others - good, n_way - 1, size=(len(good), trials)
    )
    return torch.from_numpy((drawn < top_k).mean(axis=1))


def nway_expected_accuracy(
    pred_logits: Tensor, target_logits: Tensor, *, n_way: int, top_k: int = 1, gt_classes: int = 3
) -> Tensor:
    """The infinite-trial limit of :func:`nway_accuracy` per sample ``(S,)``: the hypergeometric CDF."""
    beaters, others = _beaters(pred_logits, target_logits, gt_classes)
    _check_nway(n_way, top_k, others)
    return torch.from_numpy(stats.hypergeom.cdf(top_k - 1, others, beaters.numpy(), n_way - 1))


def nway_chance(n_way: int, top_k: int = 1, gt_classes: int = 3) -> float:
    """Accuracy of a classifier whose outputs ignore the input: ``1 - C(n-1, k) / C(n-1+g, k)``."""
    return 1.0 - math.comb(n_way - 1, top_k) / math.comb(n_way - 1 + gt_classes, top_k)


# ---------------------------------------------------------------- CLIP-pcc (ST level)


def clip_pcc(frame_embeddings: Tensor, variant: ClipPccVariant = "adjacent") -> Tensor:
    """Per-video CLIP-pcc ``(N,)`` float64 from the reconstruction's frame embeddings ``(N, F, D)``.

    ``adjacent``: mean over ``t`` of ``cos(e_t, e_{t+1})`` (NeuroClips / NEURONS ``compute_clip_pcc``);
    ``allpairs``: mean over ``s != t`` of ``cos(e_s, e_t)`` (NEURONS ``clip_score_frame``). Needs ``F >= 2``.
    """
    if frame_embeddings.ndim != 3 or frame_embeddings.shape[1] < 2:
        raise ValueError(f"frame embeddings must be (N, F >= 2, D), got {tuple(frame_embeddings.shape)}")
    unit = F.normalize(frame_embeddings.double(), dim=-1)
    if variant == "adjacent":
        return (unit[:, :-1] * unit[:, 1:]).sum(dim=-1).mean(dim=1)
    if variant == "allpairs":
        n_frames = unit.shape[1]
        gram = unit @ unit.transpose(1, 2)
        return (gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)) / (n_frames * (n_frames - 1))
    raise ConfigError(f"unknown CLIP-pcc variant {variant!r}\n  fix: use 'adjacent' or 'allpairs'")


def gated_clip_pcc(per_video: Tensor, gate_scores: Tensor, threshold: float = GATE_THRESHOLD) -> Tensor:
    """Mind-Animator's ST-level per video: CLIP-pcc where the gate score exceeds ``threshold``, else 0."""
    return torch.where(
        gate_scores.double() > threshold, per_video.double(), torch.zeros((), dtype=torch.float64)
    )


# ---------------------------------------------------------------- specs


def _spec(name: str, network: str, params: dict[str, object], description: str) -> MetricSpec:
    return MetricSpec(name, network, 1, True, {**params, "resize": "none", "source": _REFERENCE}, description)


def ssim_spec(flavour: SsimFlavour) -> MetricSpec:
    """``frame_ssim_<flavour>@v1``; the parameters pin colour, window, covariance and data range."""
    params: dict[SsimFlavour, dict[str, object]] = {
        "mindvideo": {"colour": "rgb", "window": "uniform 7x7", "covariance": "sample", "data_range": 255},
        "neurons": {
            "colour": "grey bt709",
            "window": "gaussian sigma 1.5, 11 taps, 1-D per column",
            "covariance": "population",
            "data_range": 1.0,
        },
    }
    return _spec(
        f"frame_ssim_{flavour}", "", params[flavour], f"per-frame SSIM ({flavour} code), mean over frames"
    )


def psnr_spec() -> MetricSpec:
    """``frame_psnr@v1``: RGB, data range 255, MSE floored at ``1/(3HW)`` (identical frames stay finite)."""
    params = {"colour": "rgb", "data_range": 255, "identical_frames": "mse floor 1/(3HW)"}
    return _spec("frame_psnr", "", params, "per-frame PSNR in dB, mean over frames")


def nway_spec(
    level: Level, n_way: int, classifier: str, *, top_k: int = 1, trials: int = 100, seed: int = 42
) -> MetricSpec:
    """``nway_<level>_top<k>_<n>way/<classifier>@v1``, e.g. ``nway_frame_top1_50way/world-clip:v1@v1``."""
    params = {
        "n_way": n_way,
        "top_k": top_k,
        "trials": trials,
        "seed": seed,
        "gt_classes": 3,
        "ties": "wrong",
    }
    description = f"MinD-Video {level}-level {n_way}-way top-{top_k} semantic classification"
    return _spec(f"nway_{level}_top{top_k}_{n_way}way", classifier, params, description)


def clip_pcc_spec(variant: ClipPccVariant, clip: str, gate: str | None = None) -> MetricSpec:
    """``clip_pcc_<variant>/<clip>@v1``, or gated ``clip_pcc_gated0.6/<clip>+<gate>@v1`` (adjacent pairs)."""
    if gate is None:
        return _spec(f"clip_pcc_{variant}", clip, {"pairs": variant}, f"CLIP-pcc ({variant} frame pairs)")
    params = {
        "pairs": "adjacent",
        "gate_threshold": GATE_THRESHOLD,
        "gate": "video cosine(rec, gt) > threshold",
    }
    return _spec(f"clip_pcc_gated{GATE_THRESHOLD}", f"{clip}+{gate}", params, "Mind-Animator gated CLIP-pcc")


# ---------------------------------------------------------------- torchmetrics forms


class FrameSSIM(PerItemMean):
    """Mean per-frame SSIM of ``update(pred, target)`` clips, in one flavour (:func:`frame_ssim`)."""

    def __init__(self, flavour: SsimFlavour = "mindvideo") -> None:
        super().__init__()
        self.flavour = flavour
        self.set_spec(ssim_spec(flavour))

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> FrameSSIM:
        """From ``frame_ssim_<mindvideo|neurons>@v1``."""
        name = parse_metric_id(metric_id)[0]
        flavour = name.removeprefix("frame_ssim_")
        if flavour not in ("mindvideo", "neurons"):
            raise ConfigError(f"{metric_id!r} is not a frame SSIM column")
        return check_round_trip(cls(flavour), metric_id)  # type: ignore[arg-type,return-value]

    def score_items(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:  # type: ignore[override]
        """``(B, F)`` per-frame SSIM."""
        return frame_ssim(pred, target, flavour=self.flavour)


class FramePSNR(PerItemMean):
    """Mean per-frame PSNR of ``update(pred, target)`` clips (:func:`frame_psnr`, MSE floored)."""

    def __init__(self) -> None:
        super().__init__()
        self.set_spec(psnr_spec())

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> FramePSNR:
        """From ``frame_psnr@v1``."""
        return check_round_trip(cls(), metric_id)  # type: ignore[return-value]

    def score_items(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:  # type: ignore[override]
        """``(B, F)`` per-frame PSNR in dB."""
        return frame_psnr(pred, target)


_NWAY_RE = re.compile(r"^nway_(?P<level>frame|video)_top(?P<k>[0-9]+)_(?P<n>[0-9]+)way$")


class NWayAccuracy(SpecMetric):
    """MinD-Video N-way top-k (:func:`nway_accuracy`): ``update(pred_logits, target_logits)`` per sample.

    The state is each sample's count of "beaters"; the seeded trials run at ``compute`` over every sample in
    update order (rank order under DDP), so the draws, and the value, are those of one
    :func:`nway_accuracy` call on all rows.
    """

    beaters: list[Tensor]

    def __init__(
        self,
        level: Level,
        n_way: int,
        classifier: str,
        *,
        top_k: int = 1,
        trials: int = 100,
        seed: int = 42,
        gt_classes: int = 3,
    ) -> None:
        super().__init__()
        self.n_way, self.top_k, self.trials, self.seed, self.gt_classes = (
            n_way,
            top_k,
            trials,
            seed,
            gt_classes,
        )
        self.others: int | None = None
        spec = nway_spec(level, n_way, classifier, top_k=top_k, trials=trials, seed=seed)
        self.set_spec(spec, nway_chance(n_way, top_k, gt_classes))
        self.add_state("beaters", default=[], dist_reduce_fx="cat")

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> NWayAccuracy:
        """From ``nway_<frame|video>_top<k>_<n>way/<classifier>@v1``; ``context``: ``trials``, ``seed``."""
        name, classifier, _ = parse_metric_id(metric_id)
        match = _NWAY_RE.match(name)
        if match is None:
            raise ConfigError(f"{metric_id!r} is not an N-way column")
        metric = cls(
            match["level"],  # type: ignore[arg-type]
            int(match["n"]),
            classifier,
            top_k=int(match["k"]),
            trials=int(option(context, "trials", 100)),  # type: ignore[call-overload]
            seed=int(option(context, "seed", 42)),  # type: ignore[call-overload]
        )
        return check_round_trip(metric, metric_id)  # type: ignore[return-value]

    def update(self, pred_logits: Tensor, target_logits: Tensor) -> None:
        """Add ``(S, C)`` logits of reconstructed and true samples (frames or clips)."""
        beaters, others = _beaters(pred_logits, target_logits, self.gt_classes)
        _check_nway(self.n_way, self.top_k, others)
        self.others = others
        self.beaters.append(beaters.to(torch.int64))

    def compute(self) -> Tensor:
        """Mean accuracy over samples (each sample's accuracy in ``computed_per_item``)."""
        if self.others is None:
            raise ConfigError("NWayAccuracy.compute before any update")
        good = dim_zero_cat(self.beaters).cpu().numpy()[:, None]
        drawn = np.random.default_rng(self.seed).hypergeometric(
            good, self.others - good, self.n_way - 1, size=(len(good), self.trials)
        )
        self.computed_per_item = torch.from_numpy((drawn < self.top_k).mean(axis=1))
        return self.computed_per_item.mean()


_CLIP_PCC_RE = re.compile(r"^clip_pcc_(?P<variant>adjacent|allpairs)$")


class ClipPcc(PerItemMean):
    """CLIP-pcc of ``update(frame_embeddings)`` ``(B, F, D)`` of the reconstructions (:func:`clip_pcc`)."""

    def __init__(self, variant: ClipPccVariant = "adjacent", network: str = "") -> None:
        super().__init__()
        self.variant = variant
        self.set_spec(clip_pcc_spec(variant, network))

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> ClipPcc:
        """From ``clip_pcc_<adjacent|allpairs>/<network>@v1``."""
        name, network, _ = parse_metric_id(metric_id)
        match = _CLIP_PCC_RE.match(name)
        if match is None:
            raise ConfigError(f"{metric_id!r} is not an ungated CLIP-pcc column")
        return check_round_trip(cls(match["variant"], network), metric_id)  # type: ignore[arg-type,return-value]

    def score_items(self, frame_embeddings: Tensor) -> Tensor:  # type: ignore[override]
        """Per-video CLIP-pcc."""
        return clip_pcc(frame_embeddings, self.variant)


class GatedClipPcc(PerItemMean):
    """Mind-Animator's gated CLIP-pcc: ``update(frame_embeddings, pred_video, target_video)``.

    ``frame_embeddings`` ``(B, F, D)`` of the reconstructions by the CLIP network; ``pred_video`` and
    ``target_video`` ``(B, D)`` unit clip embeddings by the gate network.
    """

    def __init__(self, network: str, gate: str, threshold: float = GATE_THRESHOLD) -> None:
        super().__init__()
        self.threshold = threshold
        self.set_spec(clip_pcc_spec("adjacent", network, gate))

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> GatedClipPcc:
        """From ``clip_pcc_gated0.6/<clip>+<gate>@v1``."""
        name, networks, _ = parse_metric_id(metric_id)
        if name != f"clip_pcc_gated{GATE_THRESHOLD}" or "+" not in networks:
            raise ConfigError(f"{metric_id!r} is not a gated CLIP-pcc column")
        network, gate = networks.rsplit("+", 1)
        return check_round_trip(cls(network, gate), metric_id)  # type: ignore[return-value]

    def score_items(self, frame_embeddings: Tensor, pred_video: Tensor, target_video: Tensor) -> Tensor:  # type: ignore[override]
        """Per-video gated CLIP-pcc."""
        scores = (pred_video * target_video).sum(dim=-1)
        return gated_clip_pcc(clip_pcc(frame_embeddings, "adjacent"), scores, self.threshold)
