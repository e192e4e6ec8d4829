r"""MindEye's retrieval pathway: voxel2clip + projector, BiMixCo then SoftCLIP (Scotti et al., NeurIPS 2023).

Paper: Scotti et al. 2023, "Reconstructing the Mind's Eye: fMRI-to-Image with Contrastive Learning and
Diffusion Priors", NeurIPS, arXiv 2305.18274; code ``MedARC-AI/fMRI-reconstruction-NSD`` (``src/models.py::
BrainNetwork``, ``src/utils.py::mixco, mixco_nce, soft_clip_loss, cosine_anneal``, ``src/Train_MindEye.py``).
The ridge variant follows MindEye2 (Scotti et al., ICML 2024, arXiv 2403.11207): its architecture, losses,
schedule, targets and retrieval protocol.

**Backbone** (``backbone: mlp``, MindEye1 ``BrainNetwork``):
``h_0 = Dropout_.5(GELU(LN(W_0 v)))`` (``V -> h``, 4096 in the paper), then ``n_blocks`` (4) residual blocks
``h_k = h_{k-1} + Dropout_.15(GELU(LN(W_k h_{k-1})))``, then ``z = W_1 h_n`` reshaped to the token grid
``(T, D)`` (257 x 768). **Ridge variant** (``backbone: ridge``, MindEye2): the first layer is a plain
linear map ``h_0 = W_0 v`` (MindEye2's per-subject "ridge" ``Linear(V -> h)``, trained with AdamW weight
decay; one subject here), followed by the same residual blocks.

**Projector** (per token, the contrastive space): ``LN, GELU, Linear(D, p), LN, GELU, Linear(p, p), LN, GELU,
Linear(p, D)`` (p = 2048). The contrastive loss is computed on the projector output ``y``; in MindEye1 the
backbone output ``z`` feeds the diffusion prior only.

**Losses** on flattened, L2-normalised grids ``b_i = norm(flat(y_i))`` and ``c_i = norm(flat(target_i))``
(the per-token ``norm_embs`` scaling of MindEye1's targets is a per-sample scale, removed by this
normalisation):

* BiMixCo (paper Eq. 1) for the first ``int(mixup_pct * E)`` epochs: half the batch mixed with
  ``lambda ~ Beta(.15, .15)``, soft targets ``lambda`` / ``1 - lambda``, ``tau = 0.006``;
* SoftCLIP (paper Eq. 2) for the remaining epochs, soft labels ``softmax(c c^T / tau_e)`` with ``tau_e``
  cosine-annealed from 0.004 to 0.0075 (``cosine_anneal``); both defined, with their released quirks, in
  :mod:`brainbench.methods.losses` (:class:`~brainbench.methods.losses.ContrastiveSchedule`).
* Validation uses the epoch's loss without mixing (plain bidirectional InfoNCE at 0.006 during BiMixCo).

**Training**: AdamW (weight decay 1e-2, none on biases and LayerNorms), OneCycle with ``max_lr`` 3e-4,
``pct_start = 2 / epochs``, ``final_div_factor = 1000``, stepped per batch; batch 32, 240 epochs.

**Prediction**: ``clip_tokens`` is the projector output ``y`` (the contrastive space, which MindEye1's
``Retrievals.py`` ranks), so the evaluator's retrieval is the paper's retrieval; the backbone output ``z`` is
returned by :meth:`MindEye.backbone_tokens`.

Faithful: the architecture (both variants), BiMixCo with the released ``mixco``/``mixco_nce`` semantics,
SoftCLIP with its temperature schedule, the mixup fraction, AdamW + OneCycle. Not faithful: **no diffusion
prior** at any scale (a reconstruction component that does not feed the retrieval head; without it the 940.2M
backbone is trained only through the projector's contrastive loss, and ``backbone_tokens`` is not a calibrated
CLIP prediction); no low-level (blurry) pathway; no image augmentation (targets are cached features); fp32
instead of fp16; no decay on LayerNorm weights (methods.md; the released name filter decays them); at world
scale the widths (``hidden``, ``proj_hidden``), batch, learning rate and epochs are scaled (see the config);
the checkpoint is chosen on validation ``val_top1`` (as Lite-Mind here), not the last epoch.

Example:
    >>> model = MindEye(n_voxels=40, target_shapes={"clip_tokens": (3, 8)}, hidden=16, proj_hidden=16)
    >>> model(torch.randn(2, 40))["clip_tokens"].shape
    torch.Size([2, 3, 8])
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule, adamw_one_cycle, in_batch_top1
from brainbench.methods.losses import ContrastiveSchedule


class MindEye(DecoderModule):
    """MindEye1 voxel2clip + projector (``backbone: mlp``) or its MindEye2-style ridge variant (``ridge``).

    Args:
        n_voxels: voxels per sample.
        target_shapes: must hold ``clip_tokens: (T, D)``.
        backbone: ``mlp`` (MindEye1's ``lin0``: Linear+LN+GELU+Dropout) or ``ridge`` (MindEye2's Linear).
        hidden: backbone width ``h`` (4096 in the paper).
        n_blocks: residual blocks (4).
        proj_hidden: projector width ``p`` (2048); ``0`` drops the projector (the loss uses the backbone).
        lin0_dropout: dropout after the first layer (0.5; unused by the ridge variant).
        block_dropout: dropout in the residual blocks (0.15).
        mixup_pct, mixco_beta, mixco_select, mixco_temp, soft_temp_start, soft_temp_end: the
            :class:`~brainbench.methods.losses.ContrastiveSchedule` (0.33, 0.15, 0.5, 0.006, 0.004, 0.0075).
        max_lr: OneCycle peak learning rate (3e-4).
        weight_decay: AdamW weight decay on the weight matrices (1e-2).
        final_div_factor: OneCycle ``final_div_factor`` (1000).
        max_epochs: schedule length outside a trainer (a trainer's ``max_epochs`` takes precedence).
    """

    method_id = "mindeye"
    method_version = "1"
    paper = (
        "Scotti et al. 2023, MindEye, NeurIPS, arXiv 2305.18274 (ridge variant: MindEye2, arXiv 2403.11207)"
    )
    fidelity = (
        "retrieval pathway faithful to MindEye1's released code (voxel2clip residual MLP + projector, "
        "BiMixCo for the first 33% of epochs then SoftCLIP with cosine-annealed temperature, AdamW + "
        "OneCycle); no diffusion prior or low-level pathway, no image augmentation, fp32; widths, batch, "
        "lr and epochs scaled to the world; checkpoint chosen on validation val_top1"
    )
    predicts = ("clip_tokens",)
    monitor = "val_top1"
    monitor_mode = "max"
    val_retrieval_target = "clip_tokens"

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        backbone: Literal["mlp", "ridge"] = "mlp",
        hidden: int = 4096,
        n_blocks: int = 4,
        proj_hidden: int = 2048,
        lin0_dropout: float = 0.5,
        block_dropout: float = 0.15,
        mixup_pct: float = 0.33,
        mixco_beta: float = 0.15,
        mixco_select: float = 0.5,
        mixco_temp: float = 0.006,
        soft_temp_start: float = 0.004,
        soft_temp_end: float = 0.0075,
        max_lr: float = 3e-4,
        weight_decay: float = 1e-2,
        final_div_factor: float = 1000.0,
        max_epochs: int = 240,
    ) -> None:
        super().__init__(n_voxels, target_shapes)

    def configure_models(self) -> None:
        """First layer (MLP or ridge), residual blocks, token head and per-token projector."""
        hp = self.hparams
        if hp.backbone not in ("mlp", "ridge"):
            raise ConfigError(f"mindeye backbone must be 'mlp' or 'ridge', not {hp.backbone!r}")
        self.n_tokens, self.dim = self.target_shapes["clip_tokens"]
        h = hp.hidden
        if hp.backbone == "mlp":
            self.lin0 = nn.Sequential(
                nn.Linear(self.n_voxels, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(hp.lin0_dropout)
            )
        else:
            self.lin0 = nn.Linear(self.n_voxels, h)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(h, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(hp.block_dropout))
            for _ in range(hp.n_blocks)
        )
        self.lin1 = nn.Linear(h, self.n_tokens * self.dim)
        p, d = hp.proj_hidden, self.dim
        self.projector = (
            nn.Sequential(
                nn.LayerNorm(d),
                nn.GELU(),
                nn.Linear(d, p),
                nn.LayerNorm(p),
                nn.GELU(),
                nn.Linear(p, p),
                nn.LayerNorm(p),
                nn.GELU(),
                nn.Linear(p, d),
            )  # fmt: skip
            if p > 0
            else nn.Identity()
        )

    def configure_losses(self) -> None:
        """MindEye's BiMixCo -> SoftCLIP schedule from the six loss arguments."""
        hp = self.hparams
        self.schedule = ContrastiveSchedule(
            hp.mixup_pct, hp.mixco_beta, hp.mixco_select, hp.mixco_temp, hp.soft_temp_start, hp.soft_temp_end
        )

    def backbone_tokens(self, voxels: torch.Tensor) -> torch.Tensor:
        """``(B, V)`` -> ``(B, T, D)``: the voxel2clip output (what MindEye1's diffusion prior consumes)."""
        x = self.lin0(voxels)
        for block in self.blocks:
            x = x + block(x)
        return self.lin1(x).view(len(voxels), self.n_tokens, self.dim)

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``{"clip_tokens": (B, T, D)}``, the projector output (the contrastive space)."""
        return {"clip_tokens": self.projector(self.backbone_tokens(voxels))}

    def loss_terms(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The epoch's loss (BiMixCo on mixed voxels in training, SoftCLIP later) and the in-batch top-1."""
        voxels, target = batch["voxels"], batch["clip_tokens"]
        epoch, n_epochs = self.current_epoch, self.schedule_epochs()
        perm = lam = None
        if stage == "train" and self.schedule.mixing(epoch, n_epochs):
            voxels, perm, lam = self.schedule.mix(voxels)
        pred = self(voxels)["clip_tokens"]
        terms = {
            "loss": self.schedule.loss(pred, target, epoch, n_epochs, perm, lam),
            "inbatch_top1": in_batch_top1(pred, target),
        }
        if stage == "train":
            terms["temp"] = self.schedule.temperature(epoch, n_epochs)
        return terms, {"clip_tokens": pred}

    def configure_optimizers(self) -> dict:
        """AdamW (no decay on biases and LayerNorms) with OneCycle(pct_start=2/epochs), stepped per batch."""
        hp = self.hparams
        return adamw_one_cycle(
            self,
            self.parameters(),
            max_lr=hp.max_lr,
            weight_decay=hp.weight_decay,
            max_epochs=self.schedule_epochs(),
            final_div_factor=hp.final_div_factor,
        )
