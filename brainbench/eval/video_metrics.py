r"""Video reconstruction metrics of MinD-Video and NeuroClips: frame SSIM/PSNR, N-way classifiers, CLIP-pcc.

Sources (``/work/shared/reference/metrics.md`` §3; reference code re-read at the commits metrics.md names):
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

Classifiers are pluggable and name the column: ``world-clip:v1`` (zero-shot over the 57 world categories,
"a photo of a {}.", clip level = mean of unit frame embeddings), and the papers' ``vit-imagenet``
(``google/vit-base-patch16-224``) and ``videomae-kinetics`` (``MCG-NJU/videomae-base-finetuned-kinetics``),
run in float32 (MinD-Video: float16 on CUDA), reported absent unless cached with ``transformers`` installed.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from scipy import ndimage, stats
from torch import Tensor

from brainbench.errors import BrainbenchError, ConfigError, MissingFileError
from brainbench.metrics.specs import MetricSpec

if TYPE_CHECKING:
    from brainbench.backbones.openclip import ImageBackbone

SsimFlavour = Literal["mindvideo", "neurons"]
ClipPccVariant = Literal["adjacent", "allpairs"]
Level = Literal["frame", "video"]
WORLD_CLIP_ID = "world-clip:v1"
WORLD_PROMPT = "a photo of a {}."
GATE_THRESHOLD = 0.6
_GREY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray (ITU-R BT.709)
_REFERENCE = "metrics.md §3.2-3.3"


# ---------------------------------------------------------------- frames in, frames out


def _as_clips(clips: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = clips.cpu().numpy() if isinstance(clips, Tensor) else np.asarray(clips)
    if array.ndim != 5 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (N, F, H, W, 3) clips, got {array.dtype} {array.shape}")
    return array


def _paired(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    pred_np, target_np = _paired(pred, target)
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
    pred_np, target_np = _paired(pred, target)
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


# ---------------------------------------------------------------- networks (pluggable, registered by id)


@runtime_checkable
class FrameClassifier(Protocol):
    """Logits ``(B, C)`` of uint8 frames ``(B, H, W, 3)``."""

    def frame_logits(self, frames: Tensor) -> Tensor:  # noqa: D102
        ...


@runtime_checkable
class VideoClassifier(Protocol):
    """Logits ``(B, C)`` of uint8 clips ``(B, F, H, W, 3)``."""

    def video_logits(self, clips: Tensor) -> Tensor:  # noqa: D102
        ...


@runtime_checkable
class FrameEmbedder(Protocol):
    """Image embeddings ``(B, D)`` of uint8 frames ``(B, H, W, 3)`` (CLIP-pcc)."""

    def frame_embeddings(self, frames: Tensor) -> Tensor:  # noqa: D102
        ...


@runtime_checkable
class VideoEmbedder(Protocol):
    """Unit video embeddings ``(B, D)`` of uint8 clips ``(B, F, H, W, 3)`` (the CLIP-pcc gate)."""

    def video_embeddings(self, clips: Tensor) -> Tensor:  # noqa: D102
        ...


class ClipVideoNetwork:
    """An open_clip backbone as frame/video embedder and, given class names, a zero-shot classifier.

    Frame embedding: the unit ``clip_image`` of each frame; video embedding: the unit mean of the unit frame
    embeddings; logits: ``logit_scale · cos(embedding, prompt embedding)`` for each class prompt.

    Args:
        backbone: an :class:`~brainbench.backbones.openclip.ImageBackbone` (e.g. ``load_backbone(id)``).
        class_names: classes of the zero-shot head, e.g. the 57 world categories; ``None`` embeds only.
        prompt: template filled with each class name.
    """

    def __init__(
        self, backbone: ImageBackbone, class_names: Sequence[str] | None = None, prompt: str = WORLD_PROMPT
    ) -> None:
        self.backbone = backbone
        self.network_id = str(backbone.backbone_id)
        self.device = next(backbone.parameters()).device
        self.class_names = tuple(class_names or ())
        self.logit_scale = float(backbone.model.logit_scale.exp())
        self.text = (
            F.normalize(
                backbone.encode_text([prompt.format(c) for c in self.class_names]).float(), dim=-1
            ).cpu()
            if self.class_names
            else None
        )

    def frame_embeddings(self, frames: Tensor) -> Tensor:
        """Unit image embeddings ``(B, D)`` float32."""
        features = self.backbone.forward_features(frames.to(self.device))["clip_image"]
        return F.normalize(features.float(), dim=-1).cpu()

    @staticmethod
    def pool_frames(frame_embeddings: Tensor) -> Tensor:
        """Unit mean ``(B, D)`` of unit frame embeddings ``(B, F, D)``: the clip embedding."""
        return F.normalize(F.normalize(frame_embeddings, dim=-1).mean(dim=1), dim=-1)

    def video_embeddings(self, clips: Tensor) -> Tensor:
        """Clip embeddings ``(B, D)`` of uint8 clips ``(B, F, H, W, 3)``."""
        frames = self.frame_embeddings(clips.reshape(-1, *clips.shape[2:]))
        return self.pool_frames(frames.reshape(*clips.shape[:2], -1))

    def classify(self, embeddings: Tensor) -> Tensor:
        """Zero-shot logits ``(B, C)`` of unit embeddings ``(B, D)``."""
        if self.text is None:
            raise ConfigError(f"{self.network_id} was built without class names\n  fix: pass class_names")
        return self.logit_scale * embeddings @ self.text.T

    def frame_logits(self, frames: Tensor) -> Tensor:
        """Zero-shot logits ``(B, C)`` of single frames."""
        return self.classify(self.frame_embeddings(frames))

    def video_logits(self, clips: Tensor) -> Tensor:
        """Zero-shot logits ``(B, C)`` of the frame-averaged clip embedding."""
        return self.classify(self.video_embeddings(clips))


class HFFrameClassifier:
    """A Hugging Face image classifier (``processor(images=[HWC uint8, ...])`` then ``model(...).logits``)."""

    def __init__(self, processor: Callable[..., Mapping[str, Tensor]], model: Callable[..., object]) -> None:
        self.processor, self.model = processor, model

    @torch.no_grad()
    def frame_logits(self, frames: Tensor) -> Tensor:
        """Logits ``(B, C)`` float32; the processor resizes and normalises as the checkpoint expects."""
        inputs = self.processor(images=list(frames.cpu().numpy()), return_tensors="pt")
        device = getattr(self.model, "device", "cpu")
        return self.model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()


class HFVideoClassifier:
    """A Hugging Face video classifier built per frame count (VideoMAE takes ``num_frames`` = ``F``)."""

    def __init__(
        self, processor: Callable[..., Mapping[str, Tensor]], build: Callable[[int], Callable[..., object]]
    ) -> None:
        self.processor, self.build = processor, build
        self.models: dict[int, Callable[..., object]] = {}

    @torch.no_grad()
    def video_logits(self, clips: Tensor) -> Tensor:
        """Logits ``(B, C)`` float32 of whole clips."""
        if clips.shape[1] not in self.models:
            self.models[clips.shape[1]] = self.build(clips.shape[1])
        model = self.models[clips.shape[1]]
        inputs = self.processor([list(clip) for clip in clips.cpu().numpy()], return_tensors="pt")
        device = getattr(model, "device", "cpu")
        return model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()


@dataclass(frozen=True)
class PaperNetwork:
    """A network a paper used, registered by id; loadable only when its weights are on this machine."""

    repo: str
    processor: str
    model: str
    used_by: str


PAPER_NETWORKS: dict[str, PaperNetwork] = {
    "vit-imagenet": PaperNetwork(
        "google/vit-base-patch16-224",
        "ViTImageProcessor",
        "ViTForImageClassification",
        "MinD-Video / NeuroClips frame-level N-way (§3.2)",
    ),
    "videomae-kinetics": PaperNetwork(
        "MCG-NJU/videomae-base-finetuned-kinetics",
        "VideoMAEImageProcessor",
        "VideoMAEForVideoClassification",
        "MinD-Video / NeuroClips video-level N-way (§3.2)",
    ),
    "vifi-clip:k400-base2novel": PaperNetwork(
        "k400_seed1_vifi_clip_base2novel.pth", "", "", "Mind-Animator CLIP-pcc gate (§3.3); no loader exists"
    ),
}


def _open_clip_weights_cached(network_id: str) -> bool:
    import open_clip

    arch, tag = network_id.split(":", 1)
    if os.sep in tag:
        return os.path.isfile(tag)
    try:
        hub = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "")
    except Exception:  # unknown architecture or tag
        return False
    repo, filename = os.path.split(hub)  # open_clip: 'org/model/' (default file name) or 'org/model/file'
    names = {filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors"}
    return bool(repo) and any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def video_network_availability(network_id: str) -> tuple[bool, str]:
    """Whether ``network_id`` can be built here and, if not, what is missing; never touches the network.

    ``world-clip:v1`` ships with brainbench; an open_clip ``<arch>:<tag>`` needs its weights in the Hugging
    Face cache; the papers' classifiers need ``transformers`` and their repository in that cache.
    """
    if network_id == WORLD_CLIP_ID or network_id.startswith("local-dir:") or network_id.endswith(":random"):
        return True, ""
    entry = PAPER_NETWORKS.get(network_id)
    if entry is None:
        if ":" in network_id and _open_clip_weights_cached(network_id):
            return True, ""
        return False, (
            "open_clip weights not in the Hugging Face cache (no download is attempted); copy the cache of a "
            "machine that ran open_clip.create_model with this tag, or name a local file <arch>:/path"
        )
    if not entry.model:
        return False, f"{entry.used_by}; the column is reported absent"
    missing = [] if importlib.util.find_spec("transformers") else ["the transformers package"]
    weights = ("model.safetensors", "pytorch_model.bin")
    if not all(
        any(isinstance(try_to_load_from_cache(entry.repo, name), str) for name in names)
        for names in (("config.json",), weights)
    ):
        missing.append(f"{entry.repo} in the Hugging Face cache")
    if missing:
        return False, f"{entry.used_by} needs {' and '.join(missing)}; install / copy them to this machine"
    return True, ""


def load_video_network(network_id: str, device: str = "cpu") -> object:
    """Build a registered network: world CLIP (all roles), an open_clip embedder, or a paper classifier.

    Raises:
        MissingFileError: when :func:`video_network_availability` says it is absent.
    """
    available, reason = video_network_availability(network_id)
    if not available:
        raise MissingFileError(network_id, reason)
    if network_id in PAPER_NETWORKS:
        import transformers

        entry = PAPER_NETWORKS[network_id]
        processor = getattr(transformers, entry.processor).from_pretrained(entry.repo, local_files_only=True)
        model_class = getattr(transformers, entry.model)

        def build(n_frames: int | None = None) -> Callable[..., object]:
            extra = {} if n_frames is None else {"num_frames": n_frames}
            return model_class.from_pretrained(entry.repo, local_files_only=True, **extra).to(device).eval()

        return (
            HFVideoClassifier(processor, build)
            if "Video" in entry.model
            else HFFrameClassifier(processor, build())
        )
    from brainbench.backbones.openclip import load_backbone
    from brainbench.world.shapes import CATEGORY_NAMES

    backbone = load_backbone(network_id).to(device)
    return ClipVideoNetwork(backbone, CATEGORY_NAMES if network_id == WORLD_CLIP_ID else None)


# ---------------------------------------------------------------- all columns at once


@dataclass(frozen=True)
class VideoEvalResult:
    """Video metric values by spec id, their specs, chance levels (N-way) and absent columns with reasons."""

    values: dict[str, float] = field(default_factory=dict)
    specs: dict[str, MetricSpec] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)

    def add(self, spec: MetricSpec, value: float | Tensor, chance: float | None = None) -> None:
        """Record one column."""
        self.values[spec.id], self.specs[spec.id] = float(value), spec
        if chance is not None:
            self.chance[spec.id] = chance


DEFAULT_CLIP_PCC: tuple[tuple[ClipPccVariant, str], ...] = (
    ("adjacent", WORLD_CLIP_ID),
    ("allpairs", WORLD_CLIP_ID),
    ("adjacent", "ViT-B-32:openai"),  # NEURONS compute_clip_pcc: openai/clip-vit-base-patch32
    ("allpairs", "ViT-L-14:openai"),  # NEURONS clip_score_frame: openai/clip-vit-large-patch14
)
DEFAULT_GATED: tuple[tuple[str, str], ...] = (
    (WORLD_CLIP_ID, WORLD_CLIP_ID),
    ("ViT-B-32:openai", "vifi-clip:k400-base2novel"),  # Mind-Animator
)


def _batched(fn: Callable[[Tensor], Tensor], items: np.ndarray, block_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat(
            [fn(torch.from_numpy(items[i : i + block_size].copy())) for i in range(0, len(items), block_size)]
        )


class _NetworkPool:
    """Networks by id, each built once; an absent one is held as its reason (a string)."""

    def __init__(self, given: Mapping[str, object] | None, device: str) -> None:
        self.networks: dict[str, object] = dict(given or {})
        self.device = device
        self.embedded: dict[tuple[str, str], Tensor] = {}

    def get(self, network_id: str, role: type) -> object:
        if network_id not in self.networks:
            try:
                self.networks[network_id] = load_video_network(network_id, self.device)
            except BrainbenchError as error:
                self.networks[network_id] = str(error)
        net = self.networks[network_id]
        if not isinstance(net, str) and not isinstance(net, role):
            raise ConfigError(f"network {network_id!r} is not a {role.__name__}")
        return net

    def frame_embeddings(
        self, network_id: str, which: str, clips: np.ndarray, block_size: int
    ) -> Tensor | str:
        """``(N, F, D)`` frame embeddings of ``clips`` (cached under ``which``), or the network's absence."""
        net = self.get(network_id, FrameEmbedder)
        if isinstance(net, str) or (network_id, which) in self.embedded:
            return net if isinstance(net, str) else self.embedded[network_id, which]
        frames = clips.reshape(-1, *clips.shape[2:])
        embedded = _batched(net.frame_embeddings, frames, block_size).reshape(*clips.shape[:2], -1)
        return self.embedded.setdefault((network_id, which), embedded)

    def logits(self, network_id: str, level: Level, which: str, clips: np.ndarray, block_size: int) -> Tensor:
        """Classifier logits ``(N·F, C)`` (frame level) or ``(N, C)`` (video level) of ``clips``."""
        net = self.networks[network_id]
        if isinstance(net, ClipVideoNetwork):  # one embedding pass serves every column of this network
            embedded = self.frame_embeddings(network_id, which, clips, block_size)
            return net.classify(embedded.flatten(0, 1) if level == "frame" else net.pool_frames(embedded))
        if level == "frame":
            return _batched(net.frame_logits, clips.reshape(-1, *clips.shape[2:]), block_size)
        return _batched(net.video_logits, clips, max(1, block_size // clips.shape[1]))

    def video_embeddings(self, network_id: str, which: str, clips: np.ndarray, block_size: int) -> Tensor:
        """Unit clip embeddings ``(N, D)`` of ``clips`` by a :class:`VideoEmbedder` (the CLIP-pcc gate)."""
        net = self.networks[network_id]
        if isinstance(net, ClipVideoNetwork):
            return net.pool_frames(self.frame_embeddings(network_id, which, clips, block_size))
        embedded = _batched(net.video_embeddings, clips, max(1, block_size // clips.shape[1]))
        return F.normalize(embedded, dim=-1)


def evaluate_video(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    *,
    frame_classifiers: Sequence[str] = (WORLD_CLIP_ID, "vit-imagenet"),
    video_classifiers: Sequence[str] = (WORLD_CLIP_ID, "videomae-kinetics"),
    clip_pcc_networks: Sequence[tuple[ClipPccVariant, str]] = DEFAULT_CLIP_PCC,
    gated: Sequence[tuple[str, str]] = DEFAULT_GATED,
    n_ways: Sequence[int] = (2, 50),
    top_k: int = 1,
    trials: int = 100,
    seed: int = 42,
    block_size: int = 32,
    networks: Mapping[str, object] | None = None,
    device: str = "cpu",
) -> VideoEvalResult:
    """Every video column of the module docstring; absent networks give ``absent`` entries, never numbers.

    Args:
        pred: ``(N, F, H, W, 3)`` uint8 reconstructions.
        target: the ground-truth clips, same shape.
        frame_classifiers: ids of frame classifiers for the frame-level N-way columns.
        video_classifiers: ids of clip classifiers for the video-level N-way columns.
        clip_pcc_networks: ``(variant, CLIP id)`` pairs for CLIP-pcc.
        gated: ``(CLIP id, gate id)`` pairs for Mind-Animator's gated CLIP-pcc.
        n_ways: the N of the N-way columns (2 and 50 as NeuroClips reports).
        top_k: rank threshold of the N-way columns.
        trials: N-way trials per sample.
        seed: N-way seed.
        block_size: frames per network batch.
        networks: already built networks by id (e.g. a test's fake classifier); others are loaded by id.
        device: where loaded networks run.
    """
    pred_np, target_np = _paired(pred, target)
    result, pool = VideoEvalResult(), _NetworkPool(networks, device)
    for flavour in ("mindvideo", "neurons"):
        result.add(ssim_spec(flavour), frame_ssim(pred_np, target_np, flavour=flavour).mean())
    result.add(psnr_spec(), frame_psnr(pred_np, target_np).mean())
    for level, ids, role in (
        ("frame", frame_classifiers, FrameClassifier),
        ("video", video_classifiers, VideoClassifier),
    ):
        for network_id in ids:
            specs = [nway_spec(level, n, network_id, top_k=top_k, trials=trials, seed=seed) for n in n_ways]
            net = pool.get(network_id, role)
            if isinstance(net, str):
                result.absent.update({spec.id: net for spec in specs})
                continue
            logits = [
                pool.logits(network_id, level, which, clips, block_size)
                for which, clips in (("pred", pred_np), ("target", target_np))
            ]
            for spec, n_way in zip(specs, n_ways, strict=True):
                accuracy = nway_accuracy(*logits, n_way=n_way, top_k=top_k, trials=trials, seed=seed)
                result.add(spec, accuracy.mean(), nway_chance(n_way, top_k))
    for variant, network_id in clip_pcc_networks:
        embedded = pool.frame_embeddings(network_id, "pred", pred_np, block_size)
        if isinstance(embedded, str):
            result.absent[clip_pcc_spec(variant, network_id).id] = embedded
        else:
            result.add(clip_pcc_spec(variant, network_id), clip_pcc(embedded, variant).mean())
    for network_id, gate_id in gated:
        spec = clip_pcc_spec("adjacent", network_id, gate_id)
        embedded = pool.frame_embeddings(network_id, "pred", pred_np, block_size)
        gate = pool.get(gate_id, VideoEmbedder)
        if isinstance(embedded, str) or isinstance(gate, str):
            result.absent[spec.id] = "; ".join(x for x in (embedded, gate) if isinstance(x, str))
            continue
        pred_video, target_video = (
            pool.video_embeddings(gate_id, which, clips, block_size)
            for which, clips in (("pred", pred_np), ("target", target_np))
        )
        scores = (pred_video * target_video).sum(dim=-1)
        result.add(spec, gated_clip_pcc(clip_pcc(embedded, "adjacent"), scores).mean())
    return result
