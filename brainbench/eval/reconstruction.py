"""Scores for generated outputs: reconstructed images and videos, alike for every method.

A method that generates (rather than only embeds) returns ``images`` ``(N, H, W, 3)`` uint8 or
``frames`` ``(N, F, H, W, 3)`` uint8 among its predictions; :func:`score_outputs` scores them against the
stimulus store's ground truth with

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
from dataclasses import dataclass, field

import torch
from torch import Tensor

from brainbench.eval.feature_metrics import DEFAULT_PLAN, score_reconstructions
from brainbench.metrics.image_metrics import pixcorr_per_image, pixcorr_spec, ssim_per_image, ssim_spec
from brainbench.metrics.specs import MetricSpec

DEFAULT_CHAINS = ("brainbench",)


@dataclass
class OutputScores:
    """Numbers by spec id, their specs, chance levels where defined, and absent columns with the reason."""

    values: dict[str, float] = field(default_factory=dict)
    specs: dict[str, MetricSpec] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)

    def merge(self, other: object) -> None:
        """Adds another result object with the same four mappings."""
        for name in ("values", "specs", "chance", "absent"):
            getattr(self, name).update(getattr(other, name, {}))


def score_images(
    recons: Tensor,
    ground_truth: Tensor,
    *,
    chains: Sequence[str] = DEFAULT_CHAINS,
    feature_plan: Sequence[tuple[str, str]] = DEFAULT_PLAN,
) -> OutputScores:
    """Pixel metrics per chain and feature metrics per available network, for ``(N, H, W, 3)`` uint8."""
    if recons.shape[0] != ground_truth.shape[0]:
        raise ValueError(f"{recons.shape[0]} reconstructions for {ground_truth.shape[0]} ground-truth images")
    scores = OutputScores()
    for chain in chains:
        for spec, per_image in (
            (pixcorr_spec(chain), pixcorr_per_image(recons, ground_truth, chain=chain)),
            (ssim_spec(chain), ssim_per_image(recons, ground_truth, chain=chain)),
        ):
            scores.values[spec.id] = float(torch.as_tensor(per_image).double().mean())
            scores.specs[spec.id] = spec
    scores.merge(score_reconstructions(recons, ground_truth, feature_plan))
    return scores


def score_outputs(
    predictions: Mapping[str, Tensor], ground_truth: Mapping[str, Tensor], **options: object
) -> OutputScores:
    """Scores ``images`` and/or ``frames`` predictions against the ground truth of the same name."""
    scores = OutputScores()
    if "images" in predictions and "images" in ground_truth:
        scores.merge(score_images(predictions["images"], ground_truth["images"], **options))  # type: ignore[arg-type]
    if "frames" in predictions and "frames" in ground_truth:
        from brainbench.eval.video_metrics import evaluate_video

        scores.merge(evaluate_video(predictions["frames"], ground_truth["frames"]))
    return scores
