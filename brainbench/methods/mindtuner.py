r"""MindTuner: a multi-subject MindEye2 backbone fine-tuned to a new subject with LoRA, Skip-LoRA and a pivot.

Paper: Gong, Zhang, Bao, Zhu, Liu, Hu, Miao 2024, "MindTuner: Cross-Subject Visual Decoding with Visual
Fingerprint and Semantic Correction", arXiv 2404.12630. No code is public; facts from its abstract and from
MindEye2 (Scotti et al. 2024, arXiv 2403.11207), the stack it builds on. Everything beyond the abstract is
marked **[inference]**.

**Shared backbone** (MindEye2, arXiv 2403.11207): a per-subject ridge ``h_0 = R_s v`` (``V_s -> h``), then
``n_blocks`` residual blocks ``h_k = h_{k-1} + Dropout(GELU(LN(W_k h_{k-1})))``, a token head
``z = W_T h_n`` reshaped to ``(T, D)``, and a per-token retrieval projector ``y = P(z)`` (LN, GELU,
Linear(D, p), LN, GELU, Linear(p, p), LN, GELU, Linear(p, D)). [inference] The block layout is MindEye1's
(:mod:`brainbench.methods.mindeye`); methods.md gives MindEye2's only as "4 blocks".

**Pre-training** (:meth:`MindTuner.pretrain`, MindEye2 multi-subject): one batch per pre-training subject each
step, each through its own ridge, concatenated before the shared layers; BiMixCo (mixing within each subject,
as MindEye2) for ``mixup_pct`` of the epochs, then SoftCLIP, on the flattened L2-normalised token grids
(losses imported from :mod:`brainbench.methods.mindeye`). The shared weights and the pivot are saved to
``cache_dir`` (safetensors) and reused when present; the pre-training ridges are dropped.

**Fine-tuning** (:meth:`MindTuner.fit`) on the new subject: a new ridge ``R_new``, rank-``r`` LoRA
(Hu et al. 2021) on the shared linears, ``W x -> W x + (alpha / r) B A x`` with ``A`` Kaiming-uniform and
``B = 0`` (so the adapted model starts equal to the frozen one), and Skip-LoRAs, non-linear low-rank branches
``h_j <- h_j + (alpha / r) B_s GELU(A_s h_i)`` from the hidden state after block ``i`` (0 = the ridge
output) to the one after block ``j > i`` (``B_s = 0`` at init). Only ``R_new``, the LoRA and Skip-LoRA
factors, and (``train_projector``, MindTuner's "adaptive projector") the projector train; the shared weights
are frozen. [inference] Rank, alpha, LoRA targets and Skip-LoRA placement are config (``lora_rank``,
``lora_targets``, ``skip_lora``); the paper's values were not retrievable.

**Pivot** (fMRI -> text through the image): a frozen linear map ``t = norm(i) W + b`` fit in closed form
(ridge, ``pivot_alpha``) on (``clip_image``, ``clip_text``) pairs of the pre-training subjects' **training**
stimuli (in scratch mode, of the new subject's training stimuli). [inference] NeuroClips' pivot is a frozen
COCO-trained image->text projector; here it is closed-form ridge on the cached world features. The text
loss is the image loss's family on ``norm(pivot(pool(y)))`` vs ``clip_text`` (BiMixCo with the same mixing,
then SoftCLIP), weight ``text_weight``: ``L = L_img + text_weight * L_text``.

**Scratch mode** (a config without ``pretrain``): ``pretrain`` is never called, the shared backbone stays
randomly initialised and **every** parameter trains (ridge, blocks, head, projector, LoRA and Skip-LoRA
factors) with the same losses and schedule; the pivot is fit on the new subject's kept training stimuli.

**Predictions**: ``clip_tokens`` = ``y`` (the contrastive space, ranked by retrieval), ``clip_image`` =
``pool(y)`` (token 0, the CLS/image embedding of the world CLIP and of ViT-L/14; ``pool: mean`` for bigG's
CLS-less grid), ``clip_text`` = ``pivot(clip_image)``: ranked against the stimuli's mean caption embeddings
(the ``clip_text`` targets), i.e. brain->text retrieval through the pivot.

**Schedules**: fine-tuning follows the trainer's ``max_epochs`` and pre-training ``pretrain_epochs`` (BiMixCo
for the first ``int(mixup_pct * epochs)``), so configs that differ only in ``trainer.max_epochs`` and
``data.train_sessions`` share one pre-training cache. Training: AdamW (decay on matrices only), OneCycle with
``pct_start = 2 / epochs`` stepped per batch; the checkpoint is chosen on validation ``val_top1``.

Faithful: multi-subject pre-training then fine-tuning of a frozen shared model with subject ridge + LoRA +
non-linear Skip-LoRA + trainable projector; fMRI->text via a frozen image->text pivot; MindEye2 losses,
schedule and AdamW + OneCycle. Not faithful / unknown: ranks and placements, the pivot's training data and
form, no diffusion prior, no low-level pathway, no SDXL refinement or "semantic correction" of images,
fp32; widths, epochs and subjects scaled to the world (see the configs).

Example:
    >>> model = MindTuner(40, {"clip_tokens": (3, 8), "clip_image": (8,), "clip_text": (6,)}, hidden=16,
    ...                   proj_hidden=16, n_blocks=2)
    >>> {k: tuple(v.shape) for k, v in model(torch.randn(2, 40)).items()}
    {'clip_tokens': (2, 3, 8), 'clip_image': (2, 8), 'clip_text': (2, 6)}
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from brainbench.data.multisubject import combined_train_loader, subject_key, training_pairs
from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule, adamw_one_cycle
from brainbench.methods.losses import ContrastiveSchedule

SHARED_FILE = "mindtuner_shared.safetensors"
LORA_TARGETS = ("blocks", "head", "projector")

log = logging.getLogger("brainbench")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) B A x``: a linear layer with a rank-``r`` update (``r = 0``: none)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.rank, self.scaling = base, int(rank), alpha / max(1, rank)
        if self.rank > 0:
            self.lora_a = nn.Parameter(torch.empty(self.rank, base.in_features))
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
            self.lora_b = nn.Parameter(torch.zeros(base.out_features, self.rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in) -> (..., out)``."""
        out = self.base(x)
        if self.rank > 0:
            out = out + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scaling
        return out


class SkipLoRA(nn.Module):
    """Non-linear low-rank branch ``(alpha / r) B GELU(A x)`` (``B = 0`` at init), added to a later state."""

    def __init__(self, dim: int, rank: int, alpha: float, source: int, target: int) -> None:
        super().__init__()
        self.source, self.target, self.scaling = source, target, alpha / rank
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim) -> (B, dim)``."""
        return self.up(F.gelu(self.down(x))) * self.scaling


class ResidualBlock(nn.Module):
    """``x + Dropout(GELU(LN(W x)))`` with ``W`` a :class:`LoRALinear`."""

    def __init__(self, hidden: int, dropout: float, rank: int, alpha: float) -> None:
        super().__init__()
        self.linear = LoRALinear(nn.Linear(hidden, hidden), rank, alpha)
        self.norm, self.drop = nn.LayerNorm(hidden), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h) -> (B, h)``."""
        return x + self.drop(F.gelu(self.norm(self.linear(x))))


def one_cycle(
    module: L.LightningModule, params: list[nn.Parameter], max_lr: float, n_epochs: int, model: MindTuner
) -> dict:
    """AdamW (weight decay on matrices only) + OneCycle(pct_start = 2/epochs), stepped per batch (MindEye)."""
    return adamw_one_cycle(
        module,
        params,
        max_lr=max_lr,
        weight_decay=model.hparams.weight_decay,
        max_epochs=n_epochs,
        final_div_factor=model.hparams.final_div_factor,
    )


class MindTuner(DecoderModule):
    """MindEye2 backbone + subject ridge + LoRA + Skip-LoRA + pivot text loss (see the module docstring).

    Args:
        n_voxels: voxels of the fine-tuned subject.
        target_shapes: ``clip_tokens: (T, D)``, ``clip_image: (D,)``, ``clip_text: (D_text,)``.
        hidden: backbone width ``h`` (4096 in MindEye2).
        n_blocks: shared residual blocks (4).
        proj_hidden: projector width ``p``.
        block_dropout: dropout in the blocks (0.15).
        lora_rank: rank ``r`` of the LoRA on the shared linears (0: no LoRA).
        lora_alpha: LoRA scale numerator (``alpha / r``).
        lora_targets: which shared linears get LoRA: ``blocks``, ``head``, ``projector``.
        skip_lora: Skip-LoRA placements ``(i, j)``: from the state after block ``i`` (0 = ridge output) to
            the state after block ``j`` (negative counts from the end, -1 = last block).
        skip_rank: rank of the Skip-LoRAs.
        train_projector: fine-tune the projector (the "adaptive projector") or keep it frozen.
        pool: ``cls`` (token 0) or ``mean`` over tokens, the pooled ``clip_image`` prediction.
        text_weight: weight of the pivot text loss (0: image loss only).
        pivot_alpha: ridge penalty of the closed-form image->text pivot.
        mixup_pct, mixco_beta, mixco_select, mixco_temp, soft_temp_start, soft_temp_end: MindEye's losses.
        max_lr: fine-tuning OneCycle peak learning rate.
        weight_decay: AdamW weight decay on weight matrices (1e-2).
        final_div_factor: OneCycle ``final_div_factor`` (1000).
        pretrain_epochs: epochs of multi-subject pre-training.
        pretrain_max_lr: pre-training OneCycle peak learning rate.
    """

    method_id = "mindtuner"
    method_version = "1"
    paper = (
        "Gong et al. 2024, MindTuner, arXiv 2404.12630 (on MindEye2, Scotti et al. 2024, arXiv 2403.11207)"
    )
    fidelity = (
        "[inference] MindEye2 ridge + residual blocks + token head + projector pre-trained on other subjects "
        "(BiMixCo -> SoftCLIP), frozen; new-subject ridge + LoRA + non-linear Skip-LoRA + adaptive projector "
        "fine-tuned; fMRI->text loss through a frozen closed-form image->text pivot fit on the pre-training "
        "subjects' training stimuli. Ranks and placements are config (paper values unknown); no diffusion "
        "prior, low-level pathway or semantic image correction; world widths, epochs and subjects scaled"
    )
    predicts = ("clip_tokens", "clip_image", "clip_text")
    monitor = "val_top1"
    monitor_mode = "max"
    val_retrieval_target = "clip_tokens"
    pretrain_args = (
        "target_shapes", "hidden", "n_blocks", "proj_hidden", "block_dropout", "pool", "mixup_pct",
        "mixco_beta", "mixco_select", "mixco_temp", "soft_temp_start", "soft_temp_end", "weight_decay",
        "final_div_factor", "pivot_alpha", "pretrain_epochs", "pretrain_max_lr",
    )  # fmt: skip

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        hidden: int = 4096,
        n_blocks: int = 4,
        proj_hidden: int = 2048,
        block_dropout: float = 0.15,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: Sequence[str] = ("blocks", "head"),
        skip_lora: Sequence[Sequence[int]] = ((0, -1),),
        skip_rank: int = 8,
        train_projector: bool = True,
        pool: Literal["cls", "mean"] = "cls",
        text_weight: float = 1.0,
        pivot_alpha: float = 1.0,
        mixup_pct: float = 0.33,
        mixco_beta: float = 0.15,
        mixco_select: float = 0.5,
        mixco_temp: float = 0.006,
        soft_temp_start: float = 0.004,
        soft_temp_end: float = 0.0075,
        max_lr: float = 3e-4,
        weight_decay: float = 1e-2,
        final_div_factor: float = 1000.0,
        pretrain_epochs: int = 150,
        pretrain_max_lr: float = 3e-4,
    ) -> None:
        super().__init__(n_voxels, target_shapes)
        self.pretrained_from: str | None = None  # the shared weights' file once pre-trained or reused

    def configure_models(self) -> None:
        """Ridge, blocks, head and projector (LoRA-wrapped where configured), Skip-LoRAs, pivot buffers."""
        hp = self.hparams
        unknown = set(hp.lora_targets) - set(LORA_TARGETS)
        if unknown or hp.pool not in ("cls", "mean"):
            raise ConfigError(
                f"mindtuner: lora_targets must be in {LORA_TARGETS} and pool cls|mean; got {hp}"
            )
        self.n_tokens, self.dim = self.target_shapes["clip_tokens"]
        h, p, d = hp.hidden, hp.proj_hidden, self.dim

        def lora(layer: nn.Linear, target: str) -> LoRALinear:
            rank = hp.lora_rank if target in hp.lora_targets else 0
            return LoRALinear(layer, rank, hp.lora_alpha)

        self.ridge = nn.Linear(self.n_voxels, h)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                h, hp.block_dropout, hp.lora_rank if "blocks" in hp.lora_targets else 0, hp.lora_alpha
            )
            for _ in range(hp.n_blocks)
        )
        self.head = lora(nn.Linear(h, self.n_tokens * d), "head")
        self.projector = nn.Sequential(
            nn.LayerNorm(d), nn.GELU(), lora(nn.Linear(d, p), "projector"),
            nn.LayerNorm(p), nn.GELU(), lora(nn.Linear(p, p), "projector"),
            nn.LayerNorm(p), nn.GELU(), lora(nn.Linear(p, d), "projector"),
        )  # fmt: skip
        self.skip_loras = nn.ModuleList(self._skip(i, j) for i, j in hp.skip_lora)
        text_dim = self.target_shapes["clip_text"][0]
        self.register_buffer("pivot_weight", torch.zeros(d, text_dim))
        self.register_buffer("pivot_bias", torch.zeros(text_dim))

    def configure_losses(self) -> None:
        """MindEye's BiMixCo -> SoftCLIP schedule, shared by pre-training and fine-tuning."""
        hp = self.hparams
        self.schedule = ContrastiveSchedule(
            hp.mixup_pct, hp.mixco_beta, hp.mixco_select, hp.mixco_temp, hp.soft_temp_start, hp.soft_temp_end
        )

    def _skip(self, source: int, target: int) -> SkipLoRA:
        n = self.hparams.n_blocks
        src, dst = source % (n + 1), target % (n + 1)
        if not 0 <= src < dst <= n:
            raise ConfigError(f"skip_lora ({source}, {target}) must go from a state 0..{n} to a later one")
        if self.hparams.skip_rank < 1:
            raise ConfigError("skip_rank must be >= 1 when skip_lora lists placements (or list none)")
        return SkipLoRA(self.hparams.hidden, self.hparams.skip_rank, self.hparams.lora_alpha, src, dst)

    # -- forward -----------------------------------------------------------------------------------------
    def shared_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, h)`` ridge output -> ``(B, T, D)`` projector output (blocks, Skip-LoRAs, head, projector)."""
        states = [hidden]
        for k, block in enumerate(self.blocks, start=1):
            x = block(states[-1])
            for skip in self.skip_loras:
                if skip.target == k:
                    x = x + skip(states[skip.source])
            states.append(x)
        tokens = self.head(states[-1]).view(len(hidden), self.n_tokens, self.dim)
        return self.projector(tokens)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, D)``: token 0 (``cls``) or the token mean."""
        return tokens[:, 0] if self.hparams.pool == "cls" else tokens.mean(dim=1)

    def pivot(self, image_emb: torch.Tensor) -> torch.Tensor:
        """The frozen image->text projector: ``norm(i) W + b``."""
        return F.normalize(image_emb, dim=-1) @ self.pivot_weight + self.pivot_bias

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``clip_tokens (B, T, D)``, ``clip_image (B, D)``, ``clip_text (B, D_text)``."""
        tokens = self.shared_forward(self.ridge(voxels))
        pooled = self.pool(tokens)
        return {"clip_tokens": tokens, "clip_image": pooled, "clip_text": self.pivot(pooled)}

    # -- pivot -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_pivot(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
        """Closed-form ridge ``W = (X_c^T X_c + alpha I)^-1 X_c^T Y_c``, ``b = mean(Y) - mean(X) W``."""
        x = F.normalize(image_emb.double(), dim=-1)
        y = text_emb.double()
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc + self.hparams.pivot_alpha * torch.eye(x.shape[1], dtype=x.dtype)
        weight = torch.linalg.solve(gram, xc.T @ yc)
        self.pivot_weight.copy_(weight.float())
        self.pivot_bias.copy_((y_mean - x_mean @ weight).float())

    def _fit_pivot_on(self, datamodules: Sequence[L.LightningDataModule]) -> int:
        pairs = [training_pairs(dm) for dm in datamodules]
        images = torch.cat([p["clip_image"] for p in pairs])
        self.fit_pivot(images, torch.cat([p["clip_text"] for p in pairs]))
        return len(images)

    # -- which parameters train ----------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``ridge``, ``adapters`` (LoRA, Skip-LoRA), ``projector``, ``shared``."""
        groups: dict[str, list[nn.Parameter]] = {"ridge": [], "adapters": [], "projector": [], "shared": []}
        for name, param in self.named_parameters():
            if name.startswith("ridge."):
                groups["ridge"].append(param)
            elif "lora_" in name or name.startswith("skip_loras."):
                groups["adapters"].append(param)
            elif name.startswith("projector."):
                groups["projector"].append(param)
            else:
                groups["shared"].append(param)
        return groups

    def set_trainable(self, mode: Literal["pretrain", "finetune", "scratch"]) -> None:
        """Freezes by mode: ``pretrain`` shared + projector, ``finetune`` ridge + adapters (+ projector)."""
        train = {
            "pretrain": {"shared", "projector"},
            "finetune": {"ridge", "adapters"} | ({"projector"} if self.hparams.train_projector else set()),
            "scratch": {"ridge", "adapters", "projector", "shared"},
        }[mode]
        for role, params in self.parameter_groups().items():
            for param in params:
                param.requires_grad_(role in train)

    def shared_state(self) -> dict[str, torch.Tensor]:
        """What pre-training produces: shared layers, projector and pivot (no ridge, no adapters)."""
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if not k.startswith(("ridge.", "skip_loras.", "val_retrieval")) and "lora_" not in k
        }

    # -- pre-training --------------------------------------------------------------------------------------
    def pretrain(
        self,
        datamodules: dict[int, L.LightningDataModule],
        make_trainer: Callable[[str, int], L.Trainer],
        cache_dir: Path,
    ) -> None:
        """Multi-subject pre-training of the shared weights and pivot, or their reuse from ``cache_dir``."""
        path = Path(cache_dir) / SHARED_FILE
        if path.is_file():
            state = load_file(path)
            expected = self.shared_state()
            if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in state):
                raise ConfigError(
                    f"{path} does not fit this model's shared layers; delete it to pre-train again"
                )
            self.load_state_dict(state, strict=False)
            self.pretrained_from = str(path)
            log.info(f"mindtuner: reused pre-trained shared weights from {path}")
            return
        t0 = time.time()
        n_pairs = self._fit_pivot_on(list(datamodules.values()))
        self.set_trainable("pretrain")
        pretrainer = MultiSubjectPretrainer(
            self, {s: dm.n_voxels for s, dm in datamodules.items()}, datamodules
        )
        trainer = make_trainer("pretrain", self.hparams.pretrain_epochs)
        trainer.fit(pretrainer)
        self.cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.shared_state(), path)
        record = {
            "subjects": sorted(datamodules),
            "epochs": self.hparams.pretrain_epochs,
            "pivot_pairs": n_pairs,
            "seconds": round(time.time() - t0, 1),
        }
        path.with_suffix(".json").write_text(json.dumps(record, indent=2))
        self.pretrained_from = str(path)
        log.info(f"mindtuner: pre-trained on subjects {record['subjects']} in {record['seconds']}s -> {path}")

    # -- fine-tuning ---------------------------------------------------------------------------------------
    def fit(
        self, trainer: L.Trainer, datamodule: L.LightningDataModule, ckpt_path: str | None = None
    ) -> None:
        """Fine-tunes ridge + adapters (+ projector) on a pre-trained model, or everything from scratch."""
        if self.pretrained_from is None:
            n_pairs = self._fit_pivot_on([datamodule])
            log.info(f"mindtuner: scratch: every parameter trains; pivot fit on {n_pairs} training stimuli")
        self.set_trainable("finetune" if self.pretrained_from else "scratch")
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        log.info(f"mindtuner: training {n_train:,} of {self.n_parameters():,} parameters")
        trainer.fit(self, datamodule=datamodule, ckpt_path=ckpt_path)

    def loss(
        self,
        out: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        epoch: int,
        n_epochs: int,
        perm: torch.Tensor | None = None,
        lam: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``L_img + text_weight * L_text`` at ``epoch`` of ``n_epochs``; returns (total, image, text)."""
        image = self.schedule.loss(out["clip_tokens"], batch["clip_tokens"], epoch, n_epochs, perm, lam)
        if self.hparams.text_weight == 0:
            return image, image, torch.zeros_like(image)
        text = self.schedule.loss(out["clip_text"], batch["clip_text"], epoch, n_epochs, perm, lam)
        return image + self.hparams.text_weight * text, image, text

    def loss_terms(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """BiMixCo (mixed voxels in training) or SoftCLIP on tokens and, through the pivot, on text."""
        voxels, perm, lam = batch["voxels"], None, None
        epoch, n_epochs = self.current_epoch, self.schedule_epochs()
        if stage == "train" and self.schedule.mixing(epoch, n_epochs):
            voxels, perm, lam = self.schedule.mix(voxels)
        out = self(voxels)
        total, image, text = self.loss(out, batch, epoch, n_epochs, perm, lam)
        return {"loss": total, "image_loss": image, "text_loss": text}, out

    def configure_optimizers(self) -> dict:
        """AdamW + OneCycle over the parameters that train in this mode."""
        params = [p for p in self.parameters() if p.requires_grad]
        return one_cycle(self, params, self.hparams.max_lr, self.schedule_epochs(), self)


class MultiSubjectPretrainer(L.LightningModule):
    """MindEye2 multi-subject stage: per-subject ridges into ``model``'s shared layers, one batch per subject.

    Args:
        model: the :class:`MindTuner` whose shared layers (and projector) are trained in place.
        n_voxels: subject -> voxel count (one ridge each; dropped after pre-training).
        datamodules: subject -> set-up datamodule; their loaders are built in :meth:`train_dataloader`.
    """

    def __init__(
        self, model: MindTuner, n_voxels: dict[int, int], datamodules: dict[int, L.LightningDataModule]
    ) -> None:
        super().__init__()
        self.model, self.datamodules = model, datamodules
        self.ridges = nn.ModuleDict(
            {subject_key(s): nn.Linear(v, model.hparams.hidden) for s, v in n_voxels.items()}
        )

    def train_dataloader(self):  # noqa: ANN201
        """One batch per subject each step (built here so every DDP rank reads its own share)."""
        return combined_train_loader(self.datamodules, self.trainer)

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        """Per-subject mixing and ridge, concatenated, then the shared layers and one contrastive loss."""
        schedule, epoch = self.model.schedule, self.current_epoch
        n_epochs = self.model.hparams.pretrain_epochs
        mixing = schedule.mixing(epoch, n_epochs)
        hidden, targets, perms, lams, offset = [], [], [], [], 0
        for key in sorted(batch):
            voxels = batch[key]["voxels"]
            if mixing:
                voxels, perm, lam = schedule.mix(voxels)
                perms.append(perm + offset)
                lams.append(lam)
            hidden.append(self.ridges[key](voxels))
            targets.append(batch[key]["clip_tokens"])
            offset += len(voxels)
        pred = self.model.shared_forward(torch.cat(hidden))
        perm, lam = (torch.cat(perms), torch.cat(lams)) if mixing else (None, None)
        loss = schedule.loss(pred, torch.cat(targets), epoch, n_epochs, perm, lam)
        self.log("pretrain_loss", loss, prog_bar=True, batch_size=offset)
        return loss

    def configure_optimizers(self) -> dict:
        """AdamW + OneCycle over the ridges and the model's trainable shared parameters."""
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.model.hparams
        return one_cycle(self, params, hp.pretrain_max_lr, hp.pretrain_epochs, self.model)
