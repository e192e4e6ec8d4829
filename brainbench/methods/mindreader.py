r"""Mind Reader's fMRI -> CLIP mappers (Lin, Sprague & Singh, NeurIPS 2022, arXiv 2210.01769).

Code ``sklin93/mind-reader`` (``fmri_clip.py::fmri_clip_res``, ``modules.py::ResBlock_1d_BN``,
``fmri_clip_utils.py`` losses, ``nsd_utils.py::NSDwithCLIP`` targets, ``fmri_clip.py __main__`` training);
facts from the paper.

**Mapper** ``fmri_clip_res`` (one per target; two are trained: image and caption). The voxel vector is centre
zero-padded to ``pad_to`` (15744 at NSD scale), then, over the voxel axis:

1. ``Conv1d(1 -> c, k=4, s=2, pad=1) + ReLU``: length ``L -> L/2`` (15744 -> 7872);
2. 4 residual blocks ``x <- ReLU(x + Conv1d_1(ReLU(Conv1d_3(ReLU(Conv1d_3(x))))))`` (``ResBlock_1d_BN`` with
   its BatchNorm lines commented out, as released);
3. ``Conv1d(c -> D, 1)``, transpose to ``(L/2, D)``;
4. ``ReLU, Conv1d(L/2 -> hidden, 1), ReLU, Conv1d(hidden -> 1, 1)``: a learned pooling of the ``L/2``
   positions into one ``D``-vector.

With ``c = 64``, ``hidden = 128``, ``D = 512`` (ViT-B/32) and ``L = 15744`` one mapper has 1,156,929
parameters (the paper's 1.16M).

**Targets**: CLIP embeddings clamped to ``[-t, t]`` (``t = 1.5``, "remove spikes") then L2-normalised. The
caption mapper is trained on **one random caption per sample and step** (``caption_selection: random``,
from ``clip_captions``, zero rows being padding) and validated on the mean caption embedding ``clip_text``.

**Losses** (``p`` the prediction, ``y`` the normalised target):

* ``mse_cos`` (default): ``(1 - w) MSE(p, y) + w (1 - cos(p, y))``, ``w = 0.6``;
* ``contrastive``: ``s_ij = cos(p_i, y_j) / tau`` (``tau = 0.5``), ``(CE_rows(s) + CE_cols(s)) / 2``;
* ``mse_cos_contrastive``: ``(mse_cos + contrastive) / 2``.

**Training**: Adam (lr 2e-4, weight decay 1e-5); every ``lr_decay_epochs`` (10) epochs the lr is multiplied
by 0.8 **and Adam is re-created** in the released loop, which resets its moment estimates: here a StepLR plus
an optimizer-state reset at those epochs (``reset_optimizer_on_decay``). Batch 32 (128 for the contrastive
losses), 40 epochs, selection by validation loss.

Faithful: the mapper (layer for layer, parameter count), the clamp + normalisation, random caption selection,
the three losses, Adam + decay + re-creation. Not faithful: both mappers live in one module and are selected
together on the sum of their validation losses (released: trained and selected separately); no CLIP image
augmentation (targets are cached; released: computed on the fly with ``img_trans``); no caption vetting (the
vetted caption file is released, its filtering code is not); no StyleGAN2 generator (the suite's generators
read ``clip_image`` / ``clip_text``); data splits are the suite's, not the released 85/15 split.

Example:
    >>> shapes = {"clip_image": (8,), "clip_text": (8,), "clip_captions": (3, 8)}
    >>> model = MindReader(n_voxels=30, target_shapes=shapes, channels=4, hidden=6)
    >>> {k: v.shape for k, v in model(torch.randn(2, 30)).items()}
    {'clip_image': torch.Size([2, 8]), 'clip_text': torch.Size([2, 8])}
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule
from brainbench.methods.losses import clip_loss

LossName = Literal["mse_cos", "contrastive", "mse_cos_contrastive"]


def clamp_normalise(embedding: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """``normalise(clamp(e, -t, t))`` along the last axis (``threshold=None``: no clamp)."""
    if threshold is not None:
        embedding = embedding.clamp(-threshold, threshold)
    return F.normalize(embedding, dim=-1)


def select_captions(
    captions: torch.Tensor, mode: Literal["random", "first"], generator: torch.Generator | None = None
) -> torch.Tensor:
    """One caption embedding per sample from ``(B, K, D)`` with zero rows as padding.

    ``random`` draws uniformly among each sample's non-zero rows (``caption_selection='random'``);
    ``first`` takes the first non-zero row.

    Raises:
        ConfigError: a sample without any caption.
    """
    valid = captions.abs().sum(dim=-1) > 0
    if not bool(valid.any(dim=1).all()):
        raise ConfigError("a sample has no caption embedding (all rows zero): use data with captions")
    if mode == "random":
        draw = torch.rand(valid.shape, generator=generator, device="cpu").to(captions.device)
        index = torch.where(valid, draw, torch.full_like(draw, -1.0)).argmax(dim=1)
    elif mode == "first":
        index = valid.int().argmax(dim=1)
    else:
        raise ConfigError(f"caption_selection must be 'random' or 'first', not {mode!r}")
    return captions[torch.arange(len(captions), device=captions.device), index]


def mse_cos_loss(pred: torch.Tensor, target: torch.Tensor, cos_weight: float) -> torch.Tensor:
    """``(1 - w) MSE + w (1 - cos)`` (released ``mse_cos``; ``CosineEmbeddingLoss`` with positive labels)."""
    cos = F.cosine_similarity(pred, target, dim=-1)
    return (1 - cos_weight) * F.mse_loss(pred, target) + cos_weight * (1 - cos).mean()


def contrastive_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(CE_rows + CE_cols) / 2`` of cosine logits / ``temperature`` (released ``contrastive``, lam .5)."""
    return clip_loss(F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / temperature)


class ResBlock1d(nn.Module):
    """``ReLU(x + conv1(ReLU(conv3(ReLU(conv3(x))))))``, released ``ResBlock_1d_BN`` without its BN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c, L)`` -> ``(B, c, L)``."""
        return F.relu(x + self.body(x))


class FmriClipRes(nn.Module):
    """One ``fmri_clip_res`` mapper: ``(B, length)`` padded voxels -> ``(B, out_dim)``."""

    def __init__(
        self,
        length: int,
        out_dim: int,
        channels: int = 64,
        hidden: int = 128,
        n_blocks: int = 4,
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        kernel, padding = 2 * stem_stride, stem_stride // 2  # stride 2: the released k=4, s=2, pad=1
        self.conv_in = nn.Sequential(
            nn.Conv1d(1, channels, kernel, stride=stem_stride, padding=padding), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(ResBlock1d(channels) for _ in range(n_blocks)))
        self.conv_out = nn.Conv1d(channels, out_dim, 1)
        self.positions = (length + 2 * padding - kernel) // stem_stride + 1
        self.fc = nn.Sequential(
            nn.ReLU(), nn.Conv1d(self.positions, hidden, 1), nn.ReLU(), nn.Conv1d(hidden, 1, 1)
        )

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        """Conv stem, residual blocks, channel projection, then the learned pooling over positions."""
        x = self.blocks(self.conv_in(voxels.unsqueeze(1)))  # (B, c, L/2)
        x = self.conv_out(x).transpose(1, 2)  # (B, L/2, D)
        return self.fc(x).squeeze(1)  # (B, D)


class MindReader(DecoderModule):
    """Two ``fmri_clip_res`` mappers: voxels -> CLIP image embedding and -> CLIP caption embedding.

    Args:
        n_voxels: voxels per sample.
        target_shapes: must hold ``clip_image: (D,)``, ``clip_text: (D,)`` and ``clip_captions: (K, D)``.
        pad_to: length the voxel vector is centre zero-padded to (15744 at NSD scale; ``None``: no padding).
        channels: convolution channels ``c`` (64).
        hidden: width of the pooling MLP (128).
        n_blocks: residual blocks (4).
        stem_stride: stride of the first convolution, kernel ``2 * stride`` (2, i.e. the released k=4, s=2;
            a world-scale speed knob: the pooling MLP sees ``L / stride`` positions).
        threshold: the clamp ``t`` applied to targets before normalisation (1.5; ``None``: no clamp).
        loss: ``mse_cos``, ``contrastive`` or ``mse_cos_contrastive``.
        cos_weight: ``w`` of ``mse_cos`` (0.6).
        temperature: ``tau`` of the contrastive loss (0.5).
        caption_selection: which caption trains the caption mapper each step (``random`` or ``first``).
        lr: Adam learning rate (2e-4).
        weight_decay: Adam weight decay (1e-5).
        lr_decay: multiplier applied every ``lr_decay_epochs`` (0.8).
        lr_decay_epochs: epochs between decays (10).
        reset_optimizer_on_decay: clear Adam's moments at each decay, as the released re-creation does.
    """

    method_id = "mindreader"
    method_version = "1"
    paper = "Lin, Sprague & Singh 2022, Mind Reader, NeurIPS, arXiv 2210.01769 (code sklin93/mind-reader)"
    fidelity = (
        "mappers faithful to the released fmri_clip_res (conv stem, 4 residual blocks without BN, learned "
        "pooling; 1.16M parameters at NSD scale), targets clamped at 1.5 and L2-normalised, random caption "
        "per step, mse_cos (w .6) / contrastive (tau .5) losses, Adam 2e-4 with x0.8 every 10 epochs and "
        "optimizer reset; both mappers selected together on validation loss; no CLIP image augmentation, "
        "no caption vetting, no StyleGAN2 generator; widths and epochs scaled at world scale"
    )
    predicts = ("clip_image", "clip_text")
    monitor = "val_loss"
    monitor_mode = "min"
    val_retrieval_target = "clip_image"

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        pad_to: int | None = 15744,
        channels: int = 64,
        hidden: int = 128,
        n_blocks: int = 4,
        stem_stride: int = 2,
        threshold: float | None = 1.5,
        loss: LossName = "mse_cos",
        cos_weight: float = 0.6,
        temperature: float = 0.5,
        caption_selection: Literal["random", "first"] = "random",
        lr: float = 2e-4,
        weight_decay: float = 1e-5,
        lr_decay: float = 0.8,
        lr_decay_epochs: int = 10,
        reset_optimizer_on_decay: bool = True,
    ) -> None:
        super().__init__(n_voxels, target_shapes)

    def configure_models(self) -> None:
        """The image and caption mappers."""
        hp = self.hparams
        if hp.loss not in ("mse_cos", "contrastive", "mse_cos_contrastive"):
            raise ConfigError(
                f"mindreader loss must be mse_cos, contrastive or mse_cos_contrastive, not {hp.loss!r}"
            )
        if hp.caption_selection not in ("random", "first"):
            raise ConfigError(f"caption_selection must be 'random' or 'first', not {hp.caption_selection!r}")
        if "clip_captions" not in self.target_shapes:
            raise ConfigError("mindreader's caption mapper trains on clip_captions: add it to data.targets")
        self.length = self.n_voxels if hp.pad_to is None else int(hp.pad_to)
        if self.length < self.n_voxels:
            raise ConfigError(
                f"mindreader pad_to={hp.pad_to} is shorter than the {self.n_voxels} voxels: raise pad_to "
                "(or set it to null for no padding)"
            )
        (dim,) = self.target_shapes["clip_image"]
        args = {
            "channels": hp.channels,
            "hidden": hp.hidden,
            "n_blocks": hp.n_blocks,
            "stem_stride": hp.stem_stride,
        }
        self.image_mapper = FmriClipRes(self.length, dim, **args)
        self.caption_mapper = FmriClipRes(self.length, self.target_shapes["clip_text"][0], **args)

    def pad(self, voxels: torch.Tensor) -> torch.Tensor:
        """Centre zero-padding to ``pad_to`` (the extra voxel of an odd difference goes to the end)."""
        extra = self.length - voxels.shape[-1]
        return F.pad(voxels, (extra // 2, extra - extra // 2))

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``clip_image`` and ``clip_text`` ``(B, D)`` (unnormalised, as trained)."""
        padded = self.pad(voxels)
        return {"clip_image": self.image_mapper(padded), "clip_text": self.caption_mapper(padded)}

    def targets(self, batch: dict[str, torch.Tensor], training: bool) -> dict[str, torch.Tensor]:
        """Clamped, normalised targets; for captions one selected caption in training, else ``clip_text``."""
        t = self.hparams.threshold
        caption = (
            select_captions(batch["clip_captions"], self.hparams.caption_selection)
            if training
            else batch["clip_text"]
        )
        return {
            "clip_image": clamp_normalise(batch["clip_image"], t),
            "clip_text": clamp_normalise(caption, t),
        }

    def mapper_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss of one mapper."""
        hp = self.hparams
        if hp.loss == "mse_cos":
            return mse_cos_loss(pred, target, hp.cos_weight)
        if hp.loss == "contrastive":
            return contrastive_loss(pred, target, hp.temperature)
        return 0.5 * mse_cos_loss(pred, target, hp.cos_weight) + 0.5 * contrastive_loss(
            pred, target, hp.temperature
        )

    def loss_terms(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Sum of the two mappers' losses (independent parameters, so the same as training them apart).

        Validation scores the caption mapper against the mean caption embedding (``clip_text``).
        """
        preds = self(batch["voxels"])
        targets = self.targets(batch, training=stage == "train")
        image = self.mapper_loss(preds["clip_image"], targets["clip_image"])
        caption = self.mapper_loss(preds["clip_text"], targets["clip_text"])
        return {"loss": image + caption, "image_loss": image, "caption_loss": caption}, preds

    def on_train_epoch_start(self) -> None:
        """At every decay epoch, clears Adam's state: the released loop re-creates the optimizer there."""
        epoch, every = self.current_epoch, self.hparams.lr_decay_epochs
        if self.hparams.reset_optimizer_on_decay and epoch > 0 and epoch % every == 0:
            optimizer = self.optimizers()
            optimizer = getattr(optimizer, "optimizer", optimizer)
            optimizer.state.clear()

    def configure_optimizers(self) -> dict:
        """Adam with a StepLR (``lr_decay`` every ``lr_decay_epochs`` epochs)."""
        hp = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=hp.lr_decay_epochs, gamma=hp.lr_decay
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
