r"""NeuroClips: semantics + perception reconstructors from fMRI, for video (Gong et al., NeurIPS 2024).

Paper: Zixuan Gong, Guangyin Bao, Qi Zhang, Zhongwei Wan, Duoqian Miao, Shoujin Wang, Lei Zhu, Changwei Wang,
Rongtao Xu, Liang Hu, Ke Liu, Yu Zhang, "NeuroClips: Towards High-fidelity and Smooth fMRI-to-Video
Reconstruction", NeurIPS 2024 oral, arXiv 2410.19452; code ``gongzix/NeuroClips`` (``src/Semantic.py``,
``src/train_SR.py``, ``src/Perception.py``, ``src/train_PR.py``, ``src/video_decoder.py``).
The video stage (keyframe + blurry video -> clip) is the ``world-video``
generator (:mod:`brainbench.generators.video`) in the world, ``animatediff-sparsectrl``
(:mod:`brainbench.generators.animatediff`) at real scale, which the configs call after prediction.

**Semantics reconstructor (SR)**, the MindEye2 backbone: ``h = ridge(v)`` (``Linear(V, h)``), ``n_blocks``
residual mixer blocks ``h <- h + Linear(Dropout(GELU(Linear(LN(h)))))``, ``z = backbone_linear(h)`` reshaped
to the keyframe's token grid ``(T, D)``, ``y = clip_proj(z)`` (per-token 3-layer MLP, width ``D``). Loss
(paper Eq. 4): ``L_SR = L_BiMixCo(y, c) + δ L_prior + μ L_Reftm``, with BiMixCo = MindEye's
``mixco_nce`` on flattened, L2-normalised grids (τ .006, voxels mixed with Beta(.15, .15) on half the batch,
every epoch: ``mixup_pct`` 1.0 as released), and the text term ``L_Reftm = mixco_nce(norm(P(y)), norm(t),
τ .1)`` with the same mixing (the text target of a mixed sample is mixed alike), ``t`` the caption
embedding (``clip_text``) and ``P(y) = mean_tokens(y) W`` the frozen image->text pivot. ``W`` (the paper's
``coco_tokens_avg_proj``, fine-tuned on MSCOCO) is fitted **closed form** before training: ridge regression
from the training stimuli's mean target token to their normalised ``clip_text`` (feature cache, training
split only; ``pivot: fit``), or the identity (``pivot: identity``, world CLIP's tokens already live in the
joint space). The diffusion prior is replaced by its deterministic x0 target: ``L_prior`` is the
normalised MSE ``mean((z - c)^2) / var(c)`` of the backbone output itself (trained jointly, as MindEye2
trains its prior; for a mixed sample ``c`` is mixed alike), so ``z`` is a calibrated token prediction
while ``y`` lives in the contrastive space (the world configs still give the generator ``y``: chosen on the
validation split, see ``configs/neuroclips/world.yaml``). Predictions: the token target
(``y``), ``clip_image = y[:, 0]`` (the world CLIP pools by its CLS token), ``clip_text = norm(P(y))`` and
``keyframe_tokens = z``.

**Perception reconstructor (PR)**, trained from scratch: the *Inception Extension* maps one fMRI to ``F``
"fMRIs" (``Linear(V, e)+GELU+Dropout``, one mixer block, ``Linear(e, F V)+GELU+Dropout``, reshaped to
``(B F, V)``), then ``ridge1`` ``Linear(V, h)``, the mixer blocks, ``blin1`` ``Linear(h, c0 s0^2)``
reshaped to ``(c0, s0, s0)`` + GroupNorm, and ``DecoderVideo``: up blocks (a residual conv block, then
temporal attention over the ``F`` frames with the learnable mix ``E = η E + (1 - η) Attn(E)`` (§3.1), then
x2 upsampling except after the last) and a conv to the autoencoder's latent ``(C, h, w)``. Loss (paper Eq. 1
with the code's weights): ``blur_scale (L1(ẑ, z) + 0.1 InfoNCE_τ=.2(ẑ, z))``, ``z`` the frozen frame
autoencoder's latents of the ``F`` true frames (the feature-cache target ``latents:<S>:<autoencoder>``,
encoded once per stimulus), InfoNCE bidirectional between flattened clips of the batch.
Prediction: ``frame_latents`` ``(F, C, h, w)``, the blurry video's latents.

Faithful: both pathways' architectures (ridge, 4 residual mixer blocks, token head, 3-layer projector; the
Inception Extension, ridge1/blin1, decoder with temporal attention and η), BiMixCo at τ .006 with the text
term at τ .1 through a frozen pivot, the PR's L1 + contrastive loss with blur_scale .5, AdamW + OneCycle
(pct_start 2/epochs). Not faithful: **no diffusion prior** (a regression of the backbone output stands in
for it, trained jointly instead of in a second stage, with δ scaled to a normalised MSE: 3 instead of 30
on raw MSE); no MindEye2 NSD-pretrained initialisation; MindEye2's second mixer (over a sequence of
length 1: a learned constant) and the decoder blocks' spatial self-attention are dropped; the PR's
contrastive term compares latents (paper Eq. 1), not ConvNeXt features (released code); the pivot is fitted
closed form on the dataset's training stimuli, not fine-tuned on MSCOCO; the keyframe target is the store's
keyframe (frame 2, the test frame of the code) every epoch; SR and PR are trained together in one run
(they share no weights); fp32. At world scale the widths, epochs and learning rate are scaled (see the
config); at real scale (``cc2017.yaml``) the autoencoder is the SD VAE (``autoencoder: sd-vae:<id>``,
:class:`~brainbench.backbones.sd_vae.SDVAEFrames`: ``0.18215 · mode(VAE.encode(2x - 1))``, 4 x 28 x 28
at 224 px), whose latents the ``animatediff-sparsectrl`` generator takes as its blurry video.

Example:
    >>> model = NeuroClips(40, {"clip_tokens": (5, 8), "clip_text": (8,), "frames:16": (3, 3, 16, 16)},
    ...                    frames_target="frames:16", autoencoder=None, hidden=16, pr_hidden=16,
    ...                    extension_dim=8, base_channels=8, decoder_widths=(8, 8), heads=1)
    >>> {k: tuple(v.shape) for k, v in model(torch.randn(2, 40)).items()}["frame_latents"]
    (2, 3, 4, 2, 2)
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainbench.backbones.frame_autoencoder import (
    FrameAutoencoder,
    ResBlock,
    TemporalAttention,
    latent_target_name,
    load_frame_encoder,
)
from brainbench.data.feature_cache import FeatureCache
from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule, adamw_one_cycle
from brainbench.methods.losses import ContrastiveSchedule, flat_unit_rows, mixco_nce


class MixerBlock(nn.Module):
    """MindEye2 ``mixer_block1``, residual: ``x + Linear(Dropout(GELU(Linear(LN(x)))))``."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., width)`` -> same."""
        return x + self.net(x)


def projector(dim: int, hidden: int) -> nn.Sequential:
    """MindEye's per-token projector: ``LN, GELU, Linear(D, p)``, twice ``LN, GELU, Linear``, to ``D``."""
    return nn.Sequential(
        nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, hidden),
        nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, dim),
    )  # fmt: skip


class SemanticsReconstructor(nn.Module):
    """Voxels ``(B, V)`` -> backbone tokens ``z`` and projector tokens ``y``, both ``(B, T, D)``."""

    def __init__(
        self,
        n_voxels: int,
        token_shape: tuple[int, int],
        hidden: int,
        n_blocks: int,
        dropout: float,
        proj: int,
    ) -> None:
        super().__init__()
        self.token_shape = token_shape
        self.ridge = nn.Linear(n_voxels, hidden)
        self.blocks = nn.Sequential(*(MixerBlock(hidden, dropout) for _ in range(n_blocks)))
        self.backbone_linear = nn.Linear(hidden, token_shape[0] * token_shape[1])
        self.clip_proj = projector(token_shape[1], proj)

    def forward(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, y)``."""
        z = self.backbone_linear(self.blocks(self.ridge(voxels))).view(len(voxels), *self.token_shape)
        return z, self.clip_proj(z)


class InceptionExtension(nn.Module):
    """One fMRI ``(B, V)`` -> ``F`` fMRIs ``(B F, V)`` (NeuroClips ``Inception_Extension``)."""

    def __init__(self, n_voxels: int, n_frames: int, width: int, dropout: float) -> None:
        super().__init__()
        self.n_frames = n_frames
        self.net = nn.Sequential(
            nn.Linear(n_voxels, width), nn.GELU(), nn.Dropout(dropout),
            MixerBlock(width, dropout),
            nn.Linear(width, n_frames * n_voxels), nn.GELU(), nn.Dropout(dropout),
        )  # fmt: skip

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        """``(B, V)`` -> ``(B F, V)``."""
        return self.net(voxels).view(len(voxels) * self.n_frames, voxels.shape[1])


class VideoLatentDecoder(nn.Module):
    """``DecoderVideo``: per-frame up blocks with temporal attention (η) -> latents ``(B, F, C, h, w)``."""

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], latent_channels: int, n_frames: int, heads: int,
        eta_init: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            previous = widths[max(0, i - 1)]
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "proj": nn.Conv2d(previous, width, 1) if previous != width else nn.Identity(),
                        "res": ResBlock(width),
                        "temporal": TemporalAttention(width, n_frames, heads, eta_init),
                    }
                )
            )
        self.out = nn.Sequential(
            nn.GroupNorm(min(8, widths[-1]), widths[-1]), nn.SiLU(),
            nn.Conv2d(widths[-1], latent_channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, n_frames: int) -> torch.Tensor:
        """``(B F, c0, s0, s0)`` -> ``(B, F, C, s0 2^(n-1), ...)``."""
        x = self.conv_in(x)
        for i, block in enumerate(self.blocks):
            x = block["res"](block["proj"](x))
            x = block["temporal"](x.unflatten(0, (-1, n_frames))).flatten(0, 1)
            if i < len(self.blocks) - 1:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.out(x).unflatten(0, (-1, n_frames))


class PerceptionReconstructor(nn.Module):
    """Voxels ``(B, V)`` -> blurry-video latents ``(B, F, C, h, w)`` (module docstring)."""

    def __init__(
        self, n_voxels: int, n_frames: int, latent_shape: tuple[int, int, int], hidden: int, n_blocks: int,
        extension_dim: int, base_channels: int, widths: tuple[int, ...], heads: int, dropout: float,
        eta_init: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.n_frames = n_frames
        self.base = latent_shape[1] // 2 ** (len(widths) - 1)
        if self.base * 2 ** (len(widths) - 1) != latent_shape[1] or self.base < 1:
            raise ConfigError(f"{len(widths)} decoder blocks cannot reach a {latent_shape[1]}-side latent")
        self.base_channels = base_channels
        self.extension = InceptionExtension(n_voxels, n_frames, extension_dim, dropout)
        self.ridge1 = nn.Linear(n_voxels, hidden)
        self.blocks = nn.Sequential(*(MixerBlock(hidden, dropout) for _ in range(n_blocks)))
        self.blin1 = nn.Linear(hidden, base_channels * self.base**2)
        self.norm = nn.GroupNorm(1, base_channels)
        self.decoder = VideoLatentDecoder(base_channels, widths, latent_shape[0], n_frames, heads, eta_init)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        """``(B, V)`` -> ``(B, F, C, h, w)``."""
        h = self.blin1(self.blocks(self.ridge1(self.extension(voxels))))
        h = self.norm(h.view(-1, self.base_channels, self.base, self.base))
        return self.decoder(h, self.n_frames)


def fit_ridge_pivot(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    r"""Ridge ``W = (X^T X + λ I)^{-1} X^T Y`` with ``λ = ridge * trace(X^T X) / D``; ``(D, D_t)``."""
    gram = x.T @ x
    penalty = ridge * torch.trace(gram) / gram.shape[0]
    return torch.linalg.solve(gram + penalty * torch.eye(gram.shape[0], dtype=gram.dtype), x.T @ y)


def split_stim_ids(datamodule: L.LightningDataModule, split: str) -> np.ndarray:
    """Sorted distinct stimulus ids of a prepared split."""
    from brainbench.data.shards import iter_split

    samples = iter_split(datamodule.data_dir, datamodule.manifest, split)
    return np.unique(np.array([s.stim_id for s in samples], dtype=np.int64))


class NeuroClips(DecoderModule):
    """NeuroClips' semantics and perception reconstructors (module docstring).

    Args:
        n_voxels: voxels per sample.
        target_shapes: must hold ``token_target`` ``(T, D)`` and ``frames_target`` ``(F, 3, S, S)``; with
            ``clip_text`` ``(D_t,)`` the text term is trained and predicted, with ``clip_image`` the CLS token
            is predicted as the pooled embedding.
        token_target: the keyframe's token grid (``clip_tokens``; ``layer:48`` at real scale = bigG's 1664-d
            tokens, as NeuroClips' unprojected 256 x 1664).
        frames_target: the clip frames (``frames:<S>``) whose autoencoder latents the PR regresses.
        autoencoder: ``world-video-ae`` (the shipped frame autoencoder), ``sd-vae:<model id or folder>`` (a
            diffusers ``AutoencoderKL``, NeuroClips' SD VAE: ``sd-vae:stabilityai/sd-vae-ft-mse``; latents
            times its ``scaling_factor``, frozen, loaded offline, not saved with the decoder) or ``None`` (an
            untrained stand-in of SD-VAE's geometry).
        latent_channels: latent channels of the stand-in autoencoder.
        hidden: SR width ``h`` (4096).
        n_blocks: mixer blocks of both pathways (4).
        proj_hidden: projector width (``None``: ``D``, as MindEye2's ``clip_proj``).
        dropout: mixer / extension dropout (.15).
        pr_hidden: PR width (4096).
        extension_dim: Inception Extension width (256).
        base_channels: channels of ``blin1``'s map (64).
        decoder_widths: up-block widths, first to last (128, 64, 32); ``len - 1`` upsamplings.
        heads: temporal attention heads.
        eta_init: initial η of the temporal attention mix.
        mixup_pct: fraction of epochs with BiMixCo (1.0); later epochs use unmixed InfoNCE.
        mixco_beta: Beta(β, β) of the mixing weight (.15).
        mixco_select: fraction of the batch mixed (.5).
        mixco_temp: BiMixCo τ (.006).
        prior_weight: δ of the prior stand-in (normalised MSE of the backbone output; 0 drops it).
        text_weight: μ of the text term (.25, stage 1).
        text_temp: τ of the text term (.1).
        pivot: ``fit`` (closed-form ridge on the training stimuli) or ``identity`` (``D == D_t`` only).
        pivot_ridge: ridge penalty of the pivot, relative to the mean eigenvalue of ``X^T X``.
        perception: train and predict the PR (``False``: semantics only).
        blur_scale: weight of the PR loss (.5).
        blur_cont_weight: weight of its contrastive term (.1).
        blur_cont_temp: τ of its contrastive term (.2).
        max_lr: OneCycle peak learning rate.
        weight_decay: AdamW decay on weight matrices.
        final_div_factor: OneCycle ``final_div_factor``.
        max_epochs: schedule length outside a trainer (a trainer's ``max_epochs`` takes precedence).
    """

    method_id = "neuroclips"
    method_version = "1"
    paper = "Gong et al. 2024, NeuroClips, NeurIPS (oral), arXiv 2410.19452"
    fidelity = (
        "SR (MindEye2 ridge + 4 mixer blocks + token head + projector, BiMixCo tau .006 + text term tau .1 "
        "through a frozen image->text pivot) and PR (Inception Extension, ridge1/blin1, decoder with "
        "temporal attention and learnable eta, L1 + InfoNCE on latents of a frozen frame autoencoder: the "
        "world's, or the SD VAE at real scale) as released; a joint MSE regression of the backbone output "
        "replaces the diffusion prior, no NSD-pretrained init, pivot fitted closed form on training stimuli, "
        "world-scale widths/epochs; the world's video stage is the world-video generator (one-step "
        "conditional decoder), the real scale's AnimateDiff + SparseCtrl"
    )
    predicts = ("clip_tokens", "clip_image", "clip_text", "keyframe_tokens", "frame_latents")
    monitor = None  # NeuroClips keeps the last epoch

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        token_target: str = "clip_tokens",
        frames_target: str = "frames:64",
        autoencoder: str | None = "world-video-ae",
        latent_channels: int = 4,
        hidden: int = 4096,
        n_blocks: int = 4,
        proj_hidden: int | None = None,
        dropout: float = 0.15,
        pr_hidden: int = 4096,
        extension_dim: int = 256,
        base_channels: int = 64,
        decoder_widths: tuple[int, ...] = (128, 64, 32),
        heads: int = 4,
        eta_init: float = 0.5,
        mixup_pct: float = 1.0,
        mixco_beta: float = 0.15,
        mixco_select: float = 0.5,
        mixco_temp: float = 0.006,
        prior_weight: float = 3.0,
        text_weight: float = 0.25,
        text_temp: float = 0.1,
        pivot: Literal["fit", "identity"] = "fit",
        pivot_ridge: float = 1e-2,
        perception: bool = True,
        blur_scale: float = 0.5,
        blur_cont_weight: float = 0.1,
        blur_cont_temp: float = 0.2,
        max_lr: float = 3e-4,
        weight_decay: float = 1e-2,
        final_div_factor: float = 1000.0,
        max_epochs: int = 30,
    ) -> None:
        super().__init__(n_voxels, target_shapes)

    def predicted_names(self) -> tuple[str, ...]:
        """The token target, plus ``clip_image`` / ``clip_text`` when they are targets.

        ``keyframe_tokens`` and ``frame_latents`` are predicted too but are no backbone targets: the
        generator consumes them.
        """
        names = [self.hparams.token_target]
        names += [n for n in ("clip_image", "clip_text") if n in self.target_shapes]
        return tuple(names)

    def configure_models(self) -> None:
        """SR, pivot, frozen autoencoder and PR."""
        hp = self.hparams
        for name in (hp.token_target, hp.frames_target):
            if name not in self.target_shapes:
                raise ConfigError(
                    f"neuroclips needs the target {name!r}; add it to the config's data.targets"
                )
        if hp.pivot not in ("fit", "identity"):
            raise ConfigError(f"neuroclips pivot must be 'fit' or 'identity', not {hp.pivot!r}")
        token_shape = tuple(self.target_shapes[hp.token_target])
        self.semantic = SemanticsReconstructor(
            self.n_voxels, token_shape, hp.hidden, hp.n_blocks, hp.dropout, hp.proj_hidden or token_shape[1]
        )
        text_dim = self.target_shapes.get("clip_text", (token_shape[1],))[0]
        if hp.pivot == "identity" and text_dim != token_shape[1]:
            raise ConfigError(f"pivot: identity needs token width {token_shape[1]} == text width {text_dim}")
        eye = torch.eye(token_shape[1], text_dim)
        self.register_buffer("text_pivot", eye if text_dim == token_shape[1] else torch.zeros_like(eye))
        n_frames, _, size, _ = self.target_shapes[hp.frames_target]
        if hp.autoencoder is None:
            self.autoencoder = FrameAutoencoder(size, hp.latent_channels)
        elif isinstance(hp.autoencoder, str) and (
            hp.autoencoder == "world-video-ae" or hp.autoencoder.startswith("sd-vae:")
        ):
            self.autoencoder = load_frame_encoder(hp.autoencoder, size)
        else:
            raise ConfigError(
                "neuroclips autoencoder must be 'world-video-ae', 'sd-vae:<model id or folder>' or null, not "
                f"{hp.autoencoder!r}"
            )
        latents = self.latent_target()
        expected = (n_frames, *self.autoencoder.latent_shape)
        if latents in self.target_shapes and tuple(self.target_shapes[latents]) != expected:
            raise ConfigError(f"the target {latents} has shape {self.target_shapes[latents]}, not {expected}")
        # frozen by requires_grad; left in train mode (it has no mode-dependent layer), so Lightning does not
        # warn about modules in eval mode at the start of training
        self.autoencoder.requires_grad_(False).train()
        self.perception_net = (
            PerceptionReconstructor(
                self.n_voxels,
                n_frames,
                self.autoencoder.latent_shape,
                hp.pr_hidden,
                hp.n_blocks,
                hp.extension_dim,
                hp.base_channels,
                tuple(hp.decoder_widths),
                hp.heads,
                hp.dropout,
                hp.eta_init,
            )  # fmt: skip
            if hp.perception
            else None
        )

    def configure_losses(self) -> None:
        """BiMixCo of the semantics reconstructor: the mixing of MindEye's schedule (no SoftCLIP stage)."""
        hp = self.hparams
        self.schedule = ContrastiveSchedule(hp.mixup_pct, hp.mixco_beta, hp.mixco_select, hp.mixco_temp)

    def val_retrieval_name(self) -> str:
        """The token target: its single-trial retrieval is ``val_top1``."""
        return self.hparams.token_target

    def latent_target(self) -> str | None:
        """The feature-cache target holding the true clips' latents (``latents:<px>:<autoencoder>``).

        ``None`` for the untrained stand-in autoencoder, whose latents are encoded batch by batch.
        """
        if self.hparams.autoencoder is None:
            return None
        return latent_target_name(self.hparams.autoencoder, self.target_shapes[self.hparams.frames_target][2])

    def pivot_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """The frozen Reftm pivot: ``mean_tokens(y) W`` ``(B, D_t)`` (not normalised)."""
        return tokens.mean(dim=1) @ self.text_pivot

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """True clips ``(B, F, 3, S, S)`` in [0, 1] -> autoencoder latents ``(B, F, C, h, w)``."""
        with torch.no_grad():
            return self.autoencoder.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> the token target, ``clip_image`` / ``clip_text`` (if targets), ``frame_latents``."""
        backbone, tokens = self.semantic(voxels)
        out = {self.hparams.token_target: tokens, "keyframe_tokens": backbone}
        if "clip_image" in self.target_shapes:
            out["clip_image"] = tokens[:, 0]
        if "clip_text" in self.target_shapes:
            out["clip_text"] = F.normalize(self.pivot_text(tokens), dim=-1)
        if self.perception_net is not None:
            out["frame_latents"] = self.perception_net(voxels)
        return out

    # -- training ----------------------------------------------------------------------------------------
    def fit(
        self, trainer: L.Trainer, datamodule: L.LightningDataModule, ckpt_path: str | None = None
    ) -> None:
        """Fits the pivot (``pivot: fit``) on the training stimuli, then trains with Lightning."""
        if self.hparams.pivot == "fit" and "clip_text" in self.target_shapes:
            datamodule.setup("fit")
            self.fit_pivot(datamodule.cache, split_stim_ids(datamodule, "train"))
        super().fit(trainer, datamodule, ckpt_path)

    def fit_pivot(self, cache: FeatureCache, train_ids: np.ndarray) -> None:
        """Closed-form ridge (:func:`fit_ridge_pivot`) from mean target tokens to normalised captions.

        ``X`` ``(N, D)``: the training stimuli's mean ``token_target`` token; ``Y``: their ``clip_text``.
        Only training stimuli are used (the test set never is).
        """
        rows = cache.rows(train_ids)
        x = torch.from_numpy(np.asarray(cache.arrays[self.hparams.token_target][rows], np.float64)).mean(1)
        y = F.normalize(torch.from_numpy(np.asarray(cache.arrays["clip_text"][rows], np.float64)), dim=-1)
        w = fit_ridge_pivot(x, y, self.hparams.pivot_ridge)
        self.text_pivot.copy_(w.to(self.text_pivot.dtype))
        pred = F.normalize(x @ w, dim=-1)
        self.pivot_train_top1 = float(((pred @ y.T).argmax(1) == torch.arange(len(y))).double().mean())

    def true_latents(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Latents of the batch's true clips: the cached :meth:`latent_target`, else encoded here.

        The feature cache computes the latents once per stimulus (the autoencoder is frozen); encoding every
        batch's ``F`` frames again each step costs more than the rest of a world step, so configs list the
        latent target in ``data.targets``.
        """
        name = self.latent_target()
        if name is not None and name in batch:
            return batch[name]
        return self.encode_frames(batch[self.hparams.frames_target])

    def losses(self, batch: dict[str, torch.Tensor], mix: bool) -> dict[str, torch.Tensor]:
        """Every loss term of a batch (``total`` = the weighted sum), with or without BiMixCo mixing."""
        hp = self.hparams
        voxels, target = batch["voxels"], batch[hp.token_target]
        perm = lam = None
        sr_voxels = voxels
        if mix:
            sr_voxels, perm, lam = self.schedule.mix(voxels)
        backbone, tokens = self.semantic(sr_voxels)
        b, c = flat_unit_rows(tokens), flat_unit_rows(target)
        out = {"bimixco": mixco_nce(b, c, hp.mixco_temp, perm, lam), "tokens": tokens}
        total = out["bimixco"]
        if hp.prior_weight > 0:
            if lam is not None and perm is not None:
                weight = lam.view(-1, *[1] * (target.ndim - 1))
                target = weight * target + (1 - weight) * target[perm]
            out["prior"] = F.mse_loss(backbone, target) / target.var().clamp_min(1e-8)
            total = total + hp.prior_weight * out["prior"]
        if "clip_text" in self.target_shapes and hp.text_weight > 0:
            text = F.normalize(self.pivot_text(tokens), dim=-1)
            out["text"] = mixco_nce(text, F.normalize(batch["clip_text"], dim=-1), hp.text_temp, perm, lam)
            total = total + hp.text_weight * out["text"]
        if self.perception_net is not None:
            pred, true = self.perception_net(voxels), self.true_latents(batch)
            out["blur_l1"] = F.l1_loss(pred, true)
            out["blur_cont"] = mixco_nce(flat_unit_rows(pred), flat_unit_rows(true), hp.blur_cont_temp)
            total = total + hp.blur_scale * (out["blur_l1"] + hp.blur_cont_weight * out["blur_cont"])
        out["total"] = total
        return out

    def loss_terms(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`losses` (``total`` logged as the loss) and the SR's tokens.

        BiMixCo epochs mix the SR's voxels in training; the PR always sees the unmixed ones.
        """
        mix = stage == "train" and self.schedule.mixing(self.current_epoch, self.schedule_epochs())
        out = self.losses(batch, mix=mix)
        terms = {"loss": out.pop("total"), **out}
        return terms, {self.hparams.token_target: terms.pop("tokens")}

    def configure_optimizers(self) -> dict:
        """AdamW (no decay on biases and norms; the frozen autoencoder excluded), OneCycle per batch."""
        hp = self.hparams
        return adamw_one_cycle(
            self,
            [p for p in self.parameters() if p.requires_grad],
            max_lr=hp.max_lr,
            weight_decay=hp.weight_decay,
            max_epochs=self.schedule_epochs(),
            final_div_factor=hp.final_div_factor,
        )
