r"""MindEye's retrieval pathway: voxel2clip + projector, BiMixCo then SoftCLIP (Scotti et al., NeurIPS 2023).

Paper: Scotti et al. 2023, "Reconstructing the Mind's Eye: fMRI-to-Image with Contrastive Learning and
Diffusion Priors", NeurIPS, arXiv 2305.18274; code ``MedARC-AI/fMRI-reconstruction-NSD`` (``src/models.py::
BrainNetwork``, ``src/utils.py::mixco, mixco_nce, soft_clip_loss, cosine_anneal``, ``src/Train_MindEye.py``).
The ridge variant follows MindEye2 (Scotti et al., ICML 2024, arXiv 2403.11207). Facts from
shared/reference/methods.md §7 (architecture, losses, schedule) and §0 (targets, retrieval protocol).

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

* BiMixCo (epochs ``< int(mixup_pct * E)``): a random half of the batch (``rand <= 0.5``) gets
  ``v_i <- lambda_i v_i + (1 - lambda_i) v_{pi(i)}`` with ``lambda_i ~ Beta(.15, .15)`` and ``pi`` a random
  permutation (``lambda_i = 1`` for the others). Soft targets ``P_ii = lambda_i``,
  ``P_{i,pi(i)} = 1 - lambda_i`` (set after the diagonal); with ``S_ij = b_i . c_j / tau``, ``tau = 0.006``:
  ``L = -1/2 [mean_i sum_j P_ij log softmax_j(S_i.) + mean_j sum_i P_ij log softmax_i(S_.j)]``.
* SoftCLIP (the remaining epochs): soft labels ``Q = softmax_row(c c^T / tau_e)`` from the CLIP-CLIP
  similarities, ``L = -1/2 [mean_i sum_j Q_ij log softmax_j(S_ij) + mean_i sum_j Q_ij log softmax_j(S^T_ij)]``
  with ``S = b c^T / tau_e`` and ``tau_e`` cosine-annealed over those epochs from 0.004 to 0.0075:
  ``tau_e = end + (start - end) / 2 * (1 + cos(pi * e / (n - 1)))`` (``cosine_anneal``).
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

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule, adamw_one_cycle
from brainbench.metrics.trials import SingleTrialRetrieval


def mixco(
    voxels: torch.Tensor, beta: float = 0.15, s_thresh: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixCo voxel mixup (MindEye1 ``utils.mixco``), out of place.

    Args:
        voxels: ``(B, V)`` batch.
        beta: both parameters of the Beta distribution of ``lambda``.
        s_thresh: probability that a sample is mixed.
        generator: optional RNG for the permutation and the selection (the Beta draw uses the global RNG).

    Returns:
        The mixed voxels, the permutation ``pi`` and ``lambda`` (1 for unmixed samples).
    """
    n = voxels.shape[0]
    perm = torch.randperm(n, generator=generator).to(voxels.device)
    lam = torch.distributions.Beta(beta, beta).sample((n,)).to(voxels.device, voxels.dtype)
    select = (torch.rand(n, generator=generator) <= s_thresh).to(voxels.device)
    lam = torch.where(select, lam, torch.ones_like(lam))
    shape = (-1,) + (1,) * (voxels.ndim - 1)
    mixed = voxels * lam.view(shape) + voxels[perm] * (1 - lam).view(shape)
    return mixed, perm, lam


def mixco_nce(
    preds: torch.Tensor,
    targets: torch.Tensor,
    temp: float,
    perm: torch.Tensor | None = None,
    lam: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bidirectional (Mix)InfoNCE on normalised rows (MindEye1 ``utils.mixco_nce``).

    With ``perm`` and ``lam`` the soft targets are ``P = diag(lam)`` then ``P[i, perm[i]] = 1 - lam[i]`` (set
    after the diagonal, as released); without them, the hard identity targets.
    """
    logits = preds @ targets.T / temp
    if perm is None or lam is None:
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    probs = torch.diag(lam)
    probs[torch.arange(len(logits), device=logits.device), perm] = 1 - lam
    loss = -(logits.log_softmax(-1) * probs).sum(-1).mean()
    loss_t = -(logits.T.log_softmax(-1) * probs.T).sum(-1).mean()
    return (loss + loss_t) / 2


def soft_clip_loss(preds: torch.Tensor, targets: torch.Tensor, temp: float) -> torch.Tensor:
    """SoftCLIP (MindEye1 ``utils.soft_clip_loss``): soft labels ``softmax(c c^T / temp)``, both ways."""
    soft = (targets @ targets.T / temp).softmax(-1)
    logits = preds @ targets.T / temp
    loss = -(logits.log_softmax(-1) * soft).sum(-1).mean()
    loss_t = -(logits.T.log_softmax(-1) * soft).sum(-1).mean()
    return (loss + loss_t) / 2


def cosine_anneal(start: float, end: float, steps: int) -> torch.Tensor:
    """``end + (start - end) / 2 * (1 + cos(pi * k / (steps - 1)))`` for ``k < steps`` (MindEye1 utils)."""
    if steps == 1:
        return torch.tensor([float(start)], dtype=torch.float64)
    k = torch.arange(steps, dtype=torch.float64)
    return end + (start - end) / 2 * (1 + torch.cos(math.pi * k / (steps - 1)))


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
        mixup_pct: fraction of epochs trained with BiMixCo (0.33).
        mixco_beta: the Beta(beta, beta) of the mixing weight (0.15).
        mixco_select: fraction of the batch that is mixed (0.5).
        mixco_temp: BiMixCo temperature (0.006).
        soft_temp_start: SoftCLIP temperature at its first epoch (0.004).
        soft_temp_end: SoftCLIP temperature at the last epoch (0.0075).
        max_lr: OneCycle peak learning rate (3e-4).
        weight_decay: AdamW weight decay on the weight matrices (1e-2).
        final_div_factor: OneCycle ``final_div_factor`` (1000).
        max_epochs: schedule length (set it equal to the trainer's).
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
        self.val_retrieval = SingleTrialRetrieval()

    def backbone_tokens(self, voxels: torch.Tensor) -> torch.Tensor:
        """``(B, V)`` -> ``(B, T, D)``: the voxel2clip output (what MindEye1's diffusion prior consumes)."""
        x = self.lin0(voxels)
        for block in self.blocks:
            x = x + block(x)
        return self.lin1(x).view(len(voxels), self.n_tokens, self.dim)

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``{"clip_tokens": (B, T, D)}``, the projector output (the contrastive space)."""
        return {"clip_tokens": self.projector(self.backbone_tokens(voxels))}

    # -- loss schedule ---------------------------------------------------------------------------------------
    def mixup_epochs(self) -> int:
        """Epochs trained with BiMixCo: ``int(mixup_pct * max_epochs)``, as released."""
        return int(self.hparams.mixup_pct * self.hparams.max_epochs)

    def soft_temperature(self, epoch: int) -> float:
        """SoftCLIP temperature of ``epoch`` (``cosine_anneal`` over the epochs after BiMixCo)."""
        n_mix = self.mixup_epochs()
        temps = cosine_anneal(
            self.hparams.soft_temp_start, self.hparams.soft_temp_end, max(1, self.hparams.max_epochs - n_mix)
        )
        return float(temps[min(max(0, epoch - n_mix), len(temps) - 1)])

    def loss(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        epoch: int,
        perm: torch.Tensor | None = None,
        lam: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The epoch's loss on flattened, L2-normalised grids: (Mix)InfoNCE, then SoftCLIP."""
        b = F.normalize(pred.flatten(1), dim=-1)
        c = F.normalize(target.flatten(1), dim=-1)
        if epoch < self.mixup_epochs():
            return mixco_nce(b, c, self.hparams.mixco_temp, perm, lam)
        return soft_clip_loss(b, c, self.soft_temperature(epoch))

    def _log(self, stage: str, loss: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
        with torch.no_grad():
            sim = F.normalize(pred.flatten(1), dim=-1) @ F.normalize(target.flatten(1), dim=-1).T
            top1 = (sim.argmax(dim=1) == torch.arange(len(sim), device=sim.device)).float().mean()
        sync = stage != "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=len(pred), sync_dist=sync)
        self.log(f"{stage}_inbatch_top1", top1, prog_bar=sync, batch_size=len(pred), sync_dist=sync)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """BiMixCo (mixed voxels, soft targets) or SoftCLIP, by epoch."""
        voxels, target = batch["voxels"], batch["clip_tokens"]
        epoch = self.current_epoch
        perm = lam = None
        if epoch < self.mixup_epochs():
            voxels, perm, lam = mixco(voxels, self.hparams.mixco_beta, self.hparams.mixco_select)
        pred = self(voxels)["clip_tokens"]
        loss = self.loss(pred, target, epoch, perm, lam)
        self._log("train", loss, pred, target)
        self.log("train_temp", self._temperature(epoch), batch_size=len(pred))
        return loss

    def _temperature(self, epoch: int) -> float:
        return self.hparams.mixco_temp if epoch < self.mixup_epochs() else self.soft_temperature(epoch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The epoch's loss without mixing; the trials join the epoch's ``val_top1``."""
        pred = self(batch["voxels"])["clip_tokens"]
        loss = self.loss(pred, batch["clip_tokens"], self.current_epoch)
        self._log("val", loss, pred, batch["clip_tokens"])
        self.val_retrieval.update(pred, batch["clip_tokens"], batch["stim_id"])
        self.log("val_top1", self.val_retrieval, prog_bar=True, batch_size=len(pred))
        return loss

    def configure_optimizers(self) -> dict:
        """AdamW (no decay on biases and LayerNorms) with OneCycle(pct_start=2/epochs), stepped per batch."""
        hp = self.hparams
        return adamw_one_cycle(
            self,
            self.parameters(),
            max_lr=hp.max_lr,
            weight_decay=hp.weight_decay,
            max_epochs=hp.max_epochs,
            final_div_factor=hp.final_div_factor,
        )
