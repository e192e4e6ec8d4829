"""The video evaluator: reconstructed clips scored by the metrics of :mod:`brainbench.metrics.video`.

:func:`evaluate_video` turns its arguments into a plan of column ids (:func:`video_plan`): frame SSIM (both
flavours) and PSNR, MinD-Video N-way top-k per classifier and N, CLIP-pcc per ``(variant, network)``, and
Mind-Animator's gated CLIP-pcc per ``(network, gate)``. Each metric is built from the registry by its id and
fed what its id names: the clips, a classifier's logits, a network's frame embeddings. Networks come from
:mod:`brainbench.backbones.networks` by id (or are passed in, e.g. a test's fake classifier), are built
once, and their frame embeddings are computed once and shared by every column using them; an absent network
gives ``absent`` entries with the reason, never numbers. Definitions, protocols and chance levels are in
:mod:`brainbench.metrics.video`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from brainbench.backbones.networks import build_video_network
from brainbench.backbones.video_networks import (
    WORLD_CLIP_ID,
    ClipVideoNetwork,
    FrameClassifier,
    FrameEmbedder,
    VideoClassifier,
    VideoEmbedder,
)
from brainbench.errors import BrainbenchError, ConfigError
from brainbench.eval.result import EvalResult
from brainbench.metrics.registry import build_metric, metric_family
from brainbench.metrics.specs import parse_metric_id
from brainbench.metrics.video import (
    ClipPccVariant,
    Level,
    check_clips,
    clip_pcc_spec,
    nway_spec,
    psnr_spec,
    ssim_spec,
)

__all__ = ["DEFAULT_CLIP_PCC", "DEFAULT_GATED", "evaluate_video", "run_video_plan"]

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
        """The network ``network_id`` in ``role`` (a protocol), or the reason it is absent."""
        if network_id not in self.networks:
            try:
                self.networks[network_id] = build_video_network(network_id, self.device)
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


def video_plan(
    *,
    frame_classifiers: Sequence[str] = (WORLD_CLIP_ID, "vit-imagenet"),
    video_classifiers: Sequence[str] = (WORLD_CLIP_ID, "videomae-kinetics"),
    clip_pcc_networks: Sequence[tuple[ClipPccVariant, str]] = DEFAULT_CLIP_PCC,
    gated: Sequence[tuple[str, str]] = DEFAULT_GATED,
    n_ways: Sequence[int] = (2, 50),
    top_k: int = 1,
) -> list[str]:
    """The column ids of :func:`evaluate_video` (arguments as there)."""
    plan = [ssim_spec("mindvideo").id, ssim_spec("neurons").id, psnr_spec().id]
    for level, ids in (("frame", frame_classifiers), ("video", video_classifiers)):
        plan += [nway_spec(level, n, network_id, top_k=top_k).id for network_id in ids for n in n_ways]  # type: ignore[arg-type]
    plan += [clip_pcc_spec(variant, network_id).id for variant, network_id in clip_pcc_networks]
    plan += [clip_pcc_spec("adjacent", network_id, gate_id).id for network_id, gate_id in gated]
    return plan


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
) -> EvalResult:
    """Every video column; absent networks give ``absent`` entries, never numbers.

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
    plan = video_plan(
        frame_classifiers=frame_classifiers,
        video_classifiers=video_classifiers,
        clip_pcc_networks=clip_pcc_networks,
        gated=gated,
        n_ways=n_ways,
        top_k=top_k,
    )
    return run_video_plan(
        plan, pred, target, trials=trials, seed=seed, block_size=block_size, networks=networks, device=device
    )


def run_video_plan(
    plan: Sequence[str],
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    *,
    trials: int = 100,
    seed: int = 42,
    block_size: int = 32,
    networks: Mapping[str, object] | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Builds each metric of ``plan`` from the registry and feeds it what its id names (module doc)."""
    pred_np, target_np = check_clips(pred, target)
    result, pool = EvalResult(), _NetworkPool(networks, device)
    clips = {"pred": pred_np, "target": target_np}
    for metric_id in plan:
        name, network_id, _ = parse_metric_id(metric_id)
        family = metric_family(name)
        inputs: tuple[object, ...] | str
        if family in ("frame_ssim", "frame_psnr"):
            inputs = (pred_np, target_np)
        elif family in ("nway_frame", "nway_video"):
            level: Level = "frame" if family == "nway_frame" else "video"
            role = FrameClassifier if level == "frame" else VideoClassifier
            net = pool.get(network_id, role)
            inputs = (
                net
                if isinstance(net, str)
                else tuple(
                    pool.logits(network_id, level, which, clips[which], block_size)
                    for which in ("pred", "target")
                )
            )
        elif family == "clip_pcc_gated0.6":
            inputs = _gated_inputs(pool, network_id, clips, block_size)
        elif family in ("clip_pcc_adjacent", "clip_pcc_allpairs"):
            embedded = pool.frame_embeddings(network_id, "pred", pred_np, block_size)
            inputs = embedded if isinstance(embedded, str) else (embedded,)
        else:
            raise ConfigError(f"{metric_id!r} is not a video column")
        if isinstance(inputs, str):
            result.absent[metric_id] = inputs
            continue
        metric = build_metric(metric_id, sync_on_compute=False, trials=trials, seed=seed)
        metric.update(*inputs)
        result.add_metric(metric)
    return result


def _gated_inputs(
    pool: _NetworkPool, networks: str, clips: dict[str, np.ndarray], block_size: int
) -> tuple[Tensor, Tensor, Tensor] | str:
    network_id, gate_id = networks.rsplit("+", 1)
    embedded = pool.frame_embeddings(network_id, "pred", clips["pred"], block_size)
    gate = pool.get(gate_id, VideoEmbedder)
    if isinstance(embedded, str) or isinstance(gate, str):
        return "; ".join(x for x in (embedded, gate) if isinstance(x, str))
    pred_video, target_video = (
        pool.video_embeddings(gate_id, which, clips[which], block_size) for which in ("pred", "target")
    )
    return embedded, pred_video, target_video
