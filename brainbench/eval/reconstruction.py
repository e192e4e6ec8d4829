"""Scores for generated outputs: reconstructed images and videos, alike for every method.

A method that generates (rather than only embeds) returns ``images`` ``(N, H, W, 3)`` uint8 or
``frames`` ``(N, F, H, W, 3)`` uint8 among its predictions; :func:`score_outputs` scores them against the
stimulus store's ground truth. The image columns are a plan of ids (:data:`IMAGE_PLAN`):

- pixel metrics in each pinned resolution chain (:mod:`brainbench.metrics.image_metrics`): PixCorr and SSIM;
- feature metrics on every registered network on this machine (:mod:`brainbench.eval.feature_metrics`):
  2-way identification, correlation distance, FID, LPIPS; absent networks are listed with the reason;
- video metrics (:mod:`brainbench.eval.video_metrics`): frame SSIM/PSNR, N-way classification, CLIP-pcc.

Example:
    >>> scores = score_outputs({"images": recons}, {"images": ground_truth})  # doctest: +SKIP
    >>> scores.values["pixcorr@v1"], scores.absent  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

from brainbench.eval.feature_metrics import DEFAULT_PLAN, score_reconstructions
from brainbench.eval.result import EvalResult
from brainbench.eval.truth_features import TruthFeatureCache
from brainbench.metrics.base import SpecMetric
from brainbench.metrics.image_metrics import chained_blocks
from brainbench.metrics.registry import build_metric, metric_family
from brainbench.metrics.specs import parse_metric_id

PIXEL_PLAN: tuple[str, ...] = ("pixcorr@v1", "ssim@v1")  # the canonical ``brainbench`` chain
IMAGE_PLAN: tuple[str, ...] = PIXEL_PLAN + DEFAULT_PLAN
_PIXEL_FAMILIES = ("pixcorr", "ssim", "psnr")


def score_images(
    recons: Tensor,
    ground_truth: Tensor,
    *,
    plan: Sequence[str] = IMAGE_PLAN,
    stim_ids: np.ndarray | None = None,
    cache: TruthFeatureCache | None = None,
    batch_size: int = 64,
) -> EvalResult:
    """Every column of ``plan`` for ``(N, H, W, 3)`` uint8 images: pixel metrics, then feature metrics.

    Args:
        recons: the reconstructions.
        ground_truth: the stimuli, same N.
        plan: column ids (pixel metrics of :mod:`brainbench.metrics.image_metrics` and the feature columns of
            :func:`~brainbench.eval.feature_metrics.score_reconstructions`).
        stim_ids: stimulus ids of the rows, keys of ``cache``.
        cache: ground-truth features by stimulus (computed once, then read).
        batch_size: images per network batch.
    """
    if recons.shape[0] != ground_truth.shape[0]:
        raise ValueError(f"{recons.shape[0]} reconstructions for {ground_truth.shape[0]} ground-truth images")
    result = EvalResult()
    pixel = [i for i in plan if metric_family(parse_metric_id(i)[0]) in _PIXEL_FAMILIES]
    by_chain: dict[str, list[SpecMetric]] = {}
    for metric_id in pixel:
        metric = build_metric(metric_id, sync_on_compute=False)
        by_chain.setdefault(metric.chain.id, []).append(metric)  # type: ignore[attr-defined]
    for chain_id, metrics in by_chain.items():  # each chain's resize runs once for all its metrics
        for block in chained_blocks(recons, ground_truth, chain_id):
            for metric in metrics:
                metric.update(block)
        for metric in metrics:
            result.add_metric(metric)
    features = [i for i in plan if i not in pixel]
    result.merge(
        score_reconstructions(
            recons, ground_truth, features, batch_size=batch_size, stim_ids=stim_ids, cache=cache
        )
    )
    return result


def score_outputs(
    predictions: Mapping[str, Tensor], ground_truth: Mapping[str, Tensor], **options: object
) -> EvalResult:
    """Scores ``images`` and/or ``frames`` predictions against the ground truth of the same name.

    ``options`` go to :func:`score_images` (``plan``, ``stim_ids``, ``cache``) and, with a ``video`` key
    holding a dict, to :func:`~brainbench.eval.video_metrics.evaluate_video`.
    """
    result = EvalResult()
    video_options = options.pop("video", None) or {}
    if "images" in predictions and "images" in ground_truth:
        result.merge(score_images(predictions["images"], ground_truth["images"], **options))  # type: ignore[arg-type]
    if "frames" in predictions and "frames" in ground_truth:
        from brainbench.eval.video_metrics import evaluate_video

        result.merge(evaluate_video(predictions["frames"], ground_truth["frames"], **video_options))  # type: ignore[arg-type]
    return result
