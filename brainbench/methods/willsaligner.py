r"""Wills Aligner: one decoder for many subjects, anatomically aligned, with a mixture of brain experts.

Paper: Bao, Zhang, Gong, Zhou, Fan, Yi, Naseem, Hu, Miao 2025, "Wills Aligner: Multi-Subject Collaborative
Brain Visual Decoding", AAAI 39(13):14194-14202, arXiv 2404.13282 (v1: "A Robust Multi-Subject Brain
Representation Learner"). No code is public and the method section could not be read; what follows is built
from the abstracts (v1, v2), the v1 introduction and Fig. 1. Everything else is marked **[choice]** and is a
constructor argument.

1. **Anatomical alignment** is data, not this module: with ``data.space: template`` every subject's betas
   arrive resampled onto one template grid through NSD's ``func1pt8-to-MNI`` transform
   (:mod:`brainbench.data.sources.nsd_transforms`), so one input layer ``h_0 = W_in v + b`` reads every
   subject. ``input_layer: per_subject`` is the alignment-off ablation: subject-native voxels, one input layer
   per subject (as MindEye2's ridges).
2. **Backbone** [choice]: ``n_blocks`` residual MLP blocks ``h_l = h_{l-1} + Dropout(GELU(LN(W_l h_{l-1})))``
   (MindEye's block, :class:`~brainbench.methods.mindtuner.ResidualBlock` without LoRA) and a token head
   ``z = W_T h_L`` reshaped to ``(T, D)``: ``clip_tokens = z``, ``clip_image = z[0]``.
3. **Mixture of brain experts (MoBE)** [choice: placement and router input]: after every block, ``K``
   bottleneck experts ``E_{l,k}(h) = U_{l,k} GELU(D_{l,k} h)`` (``U = 0`` at init) are mixed by **one
   global router** shared by all blocks, ``g = softmax(R [h_0; e_s] / tau_r)`` (optionally top-``k``),
   from the input embedding ``h_0`` and a learned subject embedding ``e_s`` (``router_input``):
   ``h_l <- h_l + sum_k g_k E_{l,k}(h_l)``. A load-balancing term (Shazeer et al. 2017's importance CV^2,
   ``balance_weight``) keeps experts in use.
4. **Stage 1** (:meth:`WillsAligner.pretrain`, on the other subjects): the backbone (and input layers) learn
   what subjects share, experts off, with a contrastive loss plus a **semantic-relation** term:
   .. math::
       L = \mathrm{CLIP}(\hat z \bar z^\top / \tau)
       + \lambda\, \tfrac12 \big[\mathrm{CE}(\hat z \bar z^\top/\tau, S)
       + \mathrm{CE}(\bar z \hat z^\top/\tau, S^\top)\big], \quad S = \mathrm{softmax}(c c^\top / \tau_s)
   over the multi-subject batch (every subject's batch concatenated), with ``\hat z``, ``\bar z`` the
   L2-normalised flattened predicted and target tokens and ``c`` the stimuli's normalised CLIP image
   embeddings, so samples of different subjects who saw semantically related images attract. [choice] The
   paper's "meta-learning strategy" (v2) is not implemented: no inner/outer loop; cross-subject sharing comes
   only from the joint batch and ``S``.
5. **Stage 2** (also in :meth:`pretrain`): experts, router and subject embeddings train on the same subjects
   with the backbone at ``stage2_backbone_lr_scale`` times the learning rate (0: frozen) [choice]. Stage-1 and
   stage-2 weights are cached together (safetensors) and reused; the cache record holds each pre-training
   subject's validation top-1 after stage 1 and after stage 2 and its router usage. Stage 1 is also cached on
   its own, keyed by :data:`STAGE1_ARGS` and the data (:func:`stage1_cache`), so plug-in variants (``K``,
   rank, router) share it.
6. **Fitting the requested subject** (:meth:`fit`): a new subject embedding (initialised at the mean of the
   pre-training subjects'), the router and experts train at ``max_lr``, the backbone (including the shared
   input layer) at ``adapt_backbone_lr_scale * max_lr``; a per-subject input layer is new and trains at
   ``max_lr``. Without a ``pretrain`` section (scratch) everything trains at ``max_lr``.

Faithful: anatomical alignment to a template before one shared model; MoBE adapters with one global router;
two stages (shared model, then its plug-in); semantic relations of the stimuli guiding cross-subject
learning; retrieval on CLIP targets and few-shot subjects. Not faithful / unknown: the backbone (the paper's
is not known here), expert placement, router input, stage-2 freezing, losses' exact form, no meta-learning
loop, no classification head, world widths.

Example:
    >>> model = WillsAligner(40, {"clip_tokens": (3, 8), "clip_image": (8,)}, hidden=16, n_blocks=2,
    ...                      n_experts=4, expert_rank=4)
    >>> {k: tuple(v.shape) for k, v in model(torch.randn(2, 40)).items()}
    {'clip_tokens': (2, 3, 8), 'clip_image': (2, 8)}
    >>> tuple(model.route(torch.randn(5, 16), torch.ones(5, dtype=torch.long)).shape)
    (5, 4)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from brainbench.data.multisubject import combined_train_loader, subject_key
from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule, decay_groups
from brainbench.methods.losses import clip_loss, flat_unit_rows
from brainbench.methods.mindtuner import ResidualBlock

STAGES_FILE = "willsaligner_stages.safetensors"
STAGE1_FILE = "willsaligner_stage1.safetensors"
#: constructor arguments that determine stage 1 (experts, router and subject embeddings take no part)
STAGE1_ARGS = (
    "target_shapes", "hidden", "n_blocks", "block_dropout", "input_layer", "temp", "semantic_weight",
    "semantic_temp", "stage1_epochs", "pretrain_max_lr", "weight_decay",
)  # fmt: skip
MAX_SUBJECTS = 64

log = logging.getLogger("brainbench")


def semantic_relation_loss(
    pred: torch.Tensor, target: torch.Tensor, semantic: torch.Tensor, temp: float, semantic_temp: float
) -> torch.Tensor:
    """Cross-entropy of the brain->target logits against soft targets from the stimuli's semantic similarity.

    Args:
        pred: ``(B, F)`` L2-normalised predictions.
        target: ``(B, F)`` L2-normalised targets.
        semantic: ``(B, E)`` the stimuli's CLIP image embeddings (normalised here).
        temp: temperature of the logits ``pred target^T``.
        semantic_temp: temperature of ``S = softmax(c c^T / semantic_temp)``.
    """
    sem = F.normalize(semantic.flatten(1), dim=-1)
    soft = (sem @ sem.T / semantic_temp).softmax(-1)
    logits = pred @ target.T / temp
    forward = -(logits.log_softmax(-1) * soft).sum(-1).mean()
    backward = -(logits.T.log_softmax(-1) * soft.T).sum(-1).mean()
    return (forward + backward) / 2


def importance_balance(weights: torch.Tensor) -> torch.Tensor:
    """Shazeer et al. 2017's balancing term: squared coefficient of variation of the experts' mean use."""
    if weights.shape[1] < 2:
        return weights.new_zeros(())
    importance = weights.mean(0)
    return importance.var(unbiased=False) / importance.mean().clamp_min(1e-9) ** 2


def router_usage(weights: torch.Tensor) -> dict[str, float | list[float]]:
    """Mean expert weights of a subject's samples, their entropy (bits) and the mean per-sample entropy."""
    mean = weights.mean(0)
    entropy = -(mean * mean.clamp_min(1e-12).log2()).sum()
    per_sample = -(weights * weights.clamp_min(1e-12).log2()).sum(1).mean()
    return {
        "mean_weights": [round(float(w), 4) for w in mean],
        "entropy_bits": round(float(entropy), 4),
        "sample_entropy_bits": round(float(per_sample), 4),
    }


class Expert(nn.Module):
    """A bottleneck adapter ``U GELU(D h)``; ``U = 0`` at init, so the mixture starts as the identity."""

    def __init__(self, hidden: int, rank: int) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(hidden, rank), nn.Linear(rank, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h) -> (B, h)``."""
        return self.up(F.gelu(self.down(x)))


class WillsAligner(DecoderModule):
    """Aligned shared backbone + mixture-of-brain-experts adapters with a global router (module docstring).

    Args:
        n_voxels: voxels of the fitted subject (template voxels with ``data.space: template``).
        target_shapes: ``clip_tokens: (T, D)``, ``clip_image: (D,)``.
        hidden: backbone width.
        n_blocks: residual blocks.
        block_dropout: dropout in the blocks.
        input_layer: ``shared`` (template-space inputs, one layer for all subjects) or ``per_subject``
            (subject-native inputs: the alignment-off ablation).
        n_experts: ``K`` experts per block.
        expert_rank: bottleneck width of an expert.
        top_k: keep the ``top_k`` largest router weights (renormalised); 0 = dense mixture.
        router_input: ``hidden`` (``h_0``), ``subject`` (``e_s``) or ``both`` (concatenated).
        subject_dim: size of the subject embedding ``e_s``.
        router_temp: softmax temperature of the router.
        temp: temperature of the contrastive logits.
        semantic_weight: ``lambda`` of the semantic-relation term (0: contrastive only).
        semantic_temp: temperature ``tau_s`` of the semantic soft targets.
        balance_weight: weight of the load-balancing term.
        stage1_epochs: epochs of stage 1 (shared model) in pre-training.
        stage2_epochs: epochs of stage 2 (experts, router) in pre-training; 0 skips it.
        stage2_backbone_lr_scale: backbone learning-rate factor in stage 2 (0 = frozen).
        pretrain_max_lr: OneCycle peak learning rate of both pre-training stages.
        max_lr: peak learning rate when fitting the requested subject.
        adapt_backbone_lr_scale: backbone learning-rate factor when fitting after pre-training.
        weight_decay: AdamW decay on matrices.
    """

    method_id = "willsaligner"
    method_version = "1"
    paper = "Bao et al. 2025, Wills Aligner, AAAI 39(13):14194-14202, arXiv 2404.13282"
    fidelity = (
        "[choice] template-space inputs (NSD func1pt8-to-MNI resampling in the data), residual MLP "
        "backbone + token head, K bottleneck experts after every block mixed by one global router on "
        "[h_0; subject embedding]; stage 1 contrastive + CLIP-image semantic soft targets over the "
        "multi-subject batch, stage 2 experts/router with the backbone frozen; no meta-learning loop, no "
        "classification head"
    )
    predicts = ("clip_tokens", "clip_image")
    monitor = "val_top1"
    monitor_mode = "max"
    val_retrieval_target = "clip_tokens"
    pretrain_args = (
        "target_shapes", "hidden", "n_blocks", "block_dropout", "input_layer", "n_experts", "expert_rank",
        "top_k", "router_input", "subject_dim", "router_temp", "temp", "semantic_weight", "semantic_temp",
        "balance_weight", "stage1_epochs", "stage2_epochs", "stage2_backbone_lr_scale", "pretrain_max_lr",
        "weight_decay",
    )  # fmt: skip

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        hidden: int = 4096,
        n_blocks: int = 4,
        block_dropout: float = 0.15,
        input_layer: Literal["shared", "per_subject"] = "shared",
        n_experts: int = 4,
        expert_rank: int = 256,
        top_k: int = 0,
        router_input: Literal["hidden", "subject", "both"] = "both",
        subject_dim: int = 32,
        router_temp: float = 1.0,
        temp: float = 0.006,
        semantic_weight: float = 0.5,
        semantic_temp: float = 0.02,
        balance_weight: float = 0.01,
        stage1_epochs: int = 10,
        stage2_epochs: int = 3,
        stage2_backbone_lr_scale: float = 0.0,
        pretrain_max_lr: float = 1e-3,
        max_lr: float = 1e-3,
        adapt_backbone_lr_scale: float = 1.0,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(n_voxels, target_shapes)
        self.pretrained_from: str | None = None
        self.stage: Literal["stage1", "stage2", "fit"] = "fit"
        self.register_buffer("subject_id", torch.zeros((), dtype=torch.long))

    def configure_models(self) -> None:
        """Input layer, blocks, head, experts, global router and subject embeddings."""
        hp = self.hparams
        if hp.input_layer not in ("shared", "per_subject") or hp.router_input not in (
            "hidden",
            "subject",
            "both",
        ):
            raise ConfigError(f"willsaligner: bad input_layer or router_input in {dict(hp)}")
        if hp.n_experts < 1 or not 0 <= hp.top_k <= hp.n_experts:
            raise ConfigError(
                f"willsaligner: need n_experts >= 1 and 0 <= top_k <= n_experts, got {dict(hp)}"
            )
        self.n_tokens, self.dim = self.target_shapes["clip_tokens"]
        h = hp.hidden
        self.input = nn.Linear(self.n_voxels, h)
        self.blocks = nn.ModuleList(ResidualBlock(h, hp.block_dropout, 0, 1.0) for _ in range(hp.n_blocks))
        self.head = nn.Linear(h, self.n_tokens * self.dim)
        self.experts = nn.ModuleList(
            nn.ModuleList(Expert(h, hp.expert_rank) for _ in range(hp.n_experts)) for _ in range(hp.n_blocks)
        )
        self.subject_embedding = nn.Embedding(MAX_SUBJECTS, hp.subject_dim)
        nn.init.normal_(self.subject_embedding.weight, std=0.02)
        router_in = {"hidden": h, "subject": hp.subject_dim, "both": h + hp.subject_dim}[hp.router_input]
        self.router = nn.Linear(router_in, hp.n_experts)
        nn.init.zeros_(self.router.weight)  # uniform mixture at init
        nn.init.zeros_(self.router.bias)

    # -- forward -------------------------------------------------------------------------------------------
    def route(self, h0: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
        """``(B, h)`` input embedding and ``(B,)`` subject numbers -> ``(B, K)`` expert weights (sum 1)."""
        hp = self.hparams
        parts = {"hidden": [h0], "subject": [self.subject_embedding(subjects)]}
        parts["both"] = parts["hidden"] + parts["subject"]
        weights = (self.router(torch.cat(parts[hp.router_input], dim=-1)) / hp.router_temp).softmax(-1)
        if 0 < hp.top_k < hp.n_experts:
            top = weights.topk(hp.top_k, dim=-1)
            weights = torch.zeros_like(weights).scatter(-1, top.indices, top.values)
            weights = weights / weights.sum(-1, keepdim=True)
        return weights

    def backbone(
        self, h0: torch.Tensor, subjects: torch.Tensor, experts: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, h)`` input embedding -> ``(B, T, D)`` tokens and the ``(B, K)`` router weights (or None)."""
        weights = self.route(h0, subjects) if experts else None
        x = h0
        for block, block_experts in zip(self.blocks, self.experts, strict=True):
            x = block(x)
            if weights is not None:
                x = x + sum(weights[:, k : k + 1] * expert(x) for k, expert in enumerate(block_experts))
        return self.head(x).view(len(x), self.n_tokens, self.dim), weights

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``clip_tokens (B, T, D)``, ``clip_image (B, D)`` for the fitted subject."""
        subjects = self.subject_id.expand(len(voxels))
        tokens, _ = self.backbone(self.input(voxels), subjects, experts=self.stage != "stage1")
        return {"clip_tokens": tokens, "clip_image": tokens[:, 0]}

    # -- losses ----------------------------------------------------------------------------------------------
    def objective(
        self, tokens: torch.Tensor, batch: dict[str, torch.Tensor], weights: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Contrastive + ``lambda`` semantic relation (+ balance): the stage-1 loss, used in every stage."""
        hp = self.hparams
        pred, target = flat_unit_rows(tokens), flat_unit_rows(batch["clip_tokens"])
        contrastive = clip_loss(pred @ target.T / hp.temp)
        terms = {"contrastive": contrastive}
        total = contrastive
        if hp.semantic_weight > 0:
            semantic = semantic_relation_loss(pred, target, batch["clip_image"], hp.temp, hp.semantic_temp)
            terms["semantic"] = semantic
            total = total + hp.semantic_weight * semantic
        if weights is not None and hp.balance_weight > 0:
            balance = importance_balance(weights)
            terms["balance"] = balance
            total = total + hp.balance_weight * balance
        return {"loss": total, **terms}

    def loss_terms(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The objective on one subject's batch (the fitted subject)."""
        subjects = self.subject_id.expand(len(batch["voxels"]))
        tokens, weights = self.backbone(self.input(batch["voxels"]), subjects)
        out = {"clip_tokens": tokens, "clip_image": tokens[:, 0]}
        return self.objective(tokens, batch, weights), out

    # -- parameter roles -------------------------------------------------------------------------------------
    def parameter_roles(self) -> dict[str, list[nn.Parameter]]:
        """``input``, ``backbone`` (blocks, head), ``plugin`` (experts, router, subject embeddings)."""
        return {
            "input": list(self.input.parameters()),
            "backbone": [*self.blocks.parameters(), *self.head.parameters()],
            "plugin": [
                *self.experts.parameters(),
                *self.router.parameters(),
                *self.subject_embedding.parameters(),
            ],
        }

    def shared_state(self) -> dict[str, torch.Tensor]:
        """What pre-training produces (everything but a per-subject input layer)."""
        skip = ("val_retrieval", "subject_id") + (
            ("input.",) if self.hparams.input_layer == "per_subject" else ()
        )
        return {
            k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith(skip)
        }

    # -- pre-training: stage 1 and stage 2 -------------------------------------------------------------------
    def pretrain(
        self,
        datamodules: dict[int, L.LightningDataModule],
        make_trainer: Callable[[str, int], L.Trainer],
        cache_dir: Path,
    ) -> None:
        """Stage 1 (shared model), then stage 2 (plug-in) on the other subjects, or their cached weights."""
        hp = self.hparams
        path = Path(cache_dir) / STAGES_FILE
        if hp.input_layer == "shared":
            wrong = {s: dm.n_voxels for s, dm in datamodules.items() if dm.n_voxels != self.n_voxels}
            if wrong:
                raise ConfigError(
                    "willsaligner input_layer shared needs template-space data (data.space: template): "
                    f"subjects {wrong} have other voxel counts than the fitted subject's {self.n_voxels}"
                )
        self.pretrain_subjects = sorted(datamodules)
        if path.is_file():
            state = load_file(path)
            expected = self.shared_state()
            if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in state):
                raise ConfigError(f"{path} does not fit this model; delete it to pre-train again")
            self.load_state_dict(state, strict=False)
            self.pretrained_from = str(path)
            log.info(f"willsaligner: reused stage 1 + 2 weights from {path}")
            return
        t0 = time.time()
        trainer_module = MultiSubjectStages(
            self, {s: dm.n_voxels for s, dm in datamodules.items()}, datamodules
        )
        record: dict[str, object] = {"subjects": sorted(datamodules)}
        stage1_path = stage1_cache(Path(cache_dir), self, datamodules) / STAGE1_FILE
        for stage, epochs in (("stage1", hp.stage1_epochs), ("stage2", hp.stage2_epochs)):
            if epochs <= 0:
                continue
            trainer_module.stage = self.stage = stage
            if (
                stage == "stage1" and stage1_path.is_file()
            ):  # stage 1 does not depend on the plug-in's arguments
                trainer_module.load_state_dict(load_file(stage1_path), strict=False)
                record["stage1"] = json.loads(stage1_path.with_suffix(".json").read_text())
                record["stage1_from"] = str(stage1_path)
                log.info(f"willsaligner: reused stage 1 from {stage1_path}")
                continue
            make_trainer(f"pretrain-{stage}", epochs).fit(trainer_module)
            self.cpu()
            trainer_module.cpu()
            record[stage] = trainer_module.evaluate(experts=stage == "stage2")
            record[f"{stage}_seconds"] = round(time.time() - t0, 1)
            log.info(f"willsaligner: {stage} per subject {record[stage]}")
            if stage == "stage1":
                stage1_path.parent.mkdir(parents=True, exist_ok=True)
                save_file(trainer_module.stage1_state(), stage1_path)
                stage1_path.with_suffix(".json").write_text(json.dumps(record["stage1"], indent=2))
        self.stage = "fit"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.shared_state(), path)
        path.with_suffix(".json").write_text(json.dumps(record, indent=2))
        self.pretrained_from = str(path)

    # -- fitting the requested subject -----------------------------------------------------------------------
    def fit(
        self, trainer: L.Trainer, datamodule: L.LightningDataModule, ckpt_path: str | None = None
    ) -> None:
        """Adapts to the requested subject (after pre-training) or trains everything (scratch)."""
        subject = int(datamodule.manifest.subject)
        if not 0 < subject < MAX_SUBJECTS:
            raise ConfigError(f"willsaligner handles subjects 1..{MAX_SUBJECTS - 1}, not {subject}")
        self.subject_id.fill_(subject)
        seen = getattr(self, "pretrain_subjects", [])
        if self.pretrained_from and subject not in seen and seen:
            with torch.no_grad():  # a new subject starts from the pre-training subjects' mean embedding
                self.subject_embedding.weight[subject] = self.subject_embedding.weight[seen].mean(0)
        self.stage = "fit"
        trainer.fit(self, datamodule=datamodule, ckpt_path=ckpt_path)
        with torch.no_grad():
            weights = torch.cat(
                [
                    self.route(
                        self.input(b["voxels"].to(self.device)), self.subject_id.expand(len(b["voxels"]))
                    )
                    for b in datamodule.val_dataloader()
                ]
            )
        log.info(f"willsaligner: subject {subject} router usage {router_usage(weights.cpu())}")

    def configure_optimizers(self) -> dict:
        """AdamW + OneCycle; per-role learning rates (see :meth:`fit`)."""
        hp = self.hparams
        pretrained = self.pretrained_from is not None
        input_scale = hp.adapt_backbone_lr_scale if pretrained and hp.input_layer == "shared" else 1.0
        backbone_scale = hp.adapt_backbone_lr_scale if pretrained else 1.0
        roles = self.parameter_roles()
        scaled = [(roles["input"], input_scale), (roles["backbone"], backbone_scale), (roles["plugin"], 1.0)]
        return scaled_one_cycle(self, scaled, hp.max_lr, hp.weight_decay, self.schedule_epochs())


def stage1_cache(cache_dir: Path, model: WillsAligner, datamodules: dict[int, L.LightningDataModule]) -> Path:
    """A sibling of ``cache_dir`` keyed by what determines stage 1 only, so variants of the plug-in share it.

    The key holds :data:`STAGE1_ARGS`, the method version, the fitted voxel count and, per pre-training
    subject, its prepared folder, voxel count, backbone, targets, batch size, shuffle buffer, space and seed.
    """
    args = model.init_args()
    names = (
        "data_dir",
        "n_voxels",
        "backbone_id",
        "target_names",
        "batch_size",
        "shuffle_buffer",
        "space",
        "seed",
    )
    subjects = {
        str(s): [str(getattr(dm, name, "")) for name in names] for s, dm in sorted(datamodules.items())
    }
    key = {
        "version": model.method_version,
        "n_voxels": model.n_voxels,
        "args": {k: args.get(k) for k in STAGE1_ARGS},
        "subjects": subjects,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cache_dir).parent / f"{model.method_id}-stage1-{digest}"


def scaled_one_cycle(
    module: L.LightningModule,
    scaled: Iterable[tuple[list[nn.Parameter], float]],
    max_lr: float,
    weight_decay: float,
    n_epochs: int,
) -> dict:
    """:func:`adamw_one_cycle` with a learning-rate factor per parameter set (factor 0: frozen)."""
    groups, peaks = [], []
    for params, scale in scaled:
        for param in params:
            param.requires_grad_(scale > 0)
        if scale > 0:
            for group in decay_groups(params, weight_decay):
                if group["params"]:
                    groups.append(group)
                    peaks.append(max_lr * scale)
    if not groups:
        raise ConfigError("willsaligner: every learning-rate factor is 0, nothing would train")
    optimizer = torch.optim.AdamW(groups, lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=peaks,
        total_steps=max(4, int(module.trainer.estimated_stepping_batches)),  # as adamw_one_cycle
        final_div_factor=1e3,
        pct_start=min(0.5, 2 / max(1, n_epochs)),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class MultiSubjectStages(L.LightningModule):
    """Both pre-training stages on several subjects at once: one batch per subject per step, concatenated.

    Args:
        model: the :class:`WillsAligner` trained in place.
        n_voxels: subject -> voxel count (per-subject input layers when ``input_layer: per_subject``).
        datamodules: subject -> set-up datamodule.
    """

    def __init__(
        self, model: WillsAligner, n_voxels: dict[int, int], datamodules: dict[int, L.LightningDataModule]
    ) -> None:
        super().__init__()
        self.model, self.datamodules = model, datamodules
        self.stage: Literal["stage1", "stage2"] = "stage1"
        per_subject = model.hparams.input_layer == "per_subject"
        self.inputs = nn.ModuleDict(
            {subject_key(s): nn.Linear(v, model.hparams.hidden) for s, v in n_voxels.items()}
            if per_subject
            else {}
        )

    def stage1_state(self) -> dict[str, torch.Tensor]:
        """What stage 1 trains: the input layer(s), the blocks and the head."""
        prefixes = ("model.input.", "model.blocks.", "model.head.", "inputs.")
        return {
            k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if k.startswith(prefixes)
        }

    def input_layer(self, subject: int) -> nn.Module:
        """The subject's input layer (the shared one for template-space data)."""
        key = subject_key(subject)
        return self.inputs[key] if key in self.inputs else self.model.input

    def train_dataloader(self):  # noqa: ANN201
        """One batch per subject each step."""
        return combined_train_loader(self.datamodules, self.trainer)

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        """Every subject's batch through its input layer, concatenated, then the backbone and one loss."""
        h0, subjects, targets = [], [], []
        for key in sorted(batch):
            sub = batch[key]
            h0.append(self.input_layer(int(sub["subject"][0]))(sub["voxels"]))
            subjects.append(sub["subject"])
            targets.append(sub)
        joined = {name: torch.cat([t[name] for t in targets]) for name in ("clip_tokens", "clip_image")}
        tokens, weights = self.model.backbone(
            torch.cat(h0), torch.cat(subjects), experts=self.stage == "stage2"
        )
        terms = self.model.objective(tokens, joined, weights)
        for name, value in terms.items():
            self.log(f"{self.stage}_{name}", value, prog_bar=name == "loss", batch_size=len(tokens))
        return terms["loss"]

    @torch.no_grad()
    def evaluate(self, experts: bool) -> dict[str, dict[str, object]]:
        """Per subject: validation top-1 among its (repeat-averaged) validation stimuli, and router usage."""
        self.eval()
        results = {}
        for subject, dm in sorted(self.datamodules.items()):
            preds, targets, weights = [], [], []
            for batch in dm.val_dataloader():
                subjects = batch["subject"]
                h0 = self.input_layer(subject)(batch["voxels"])
                tokens, w = self.model.backbone(h0, subjects, experts=experts)
                preds.append(flat_unit_rows(tokens))
                targets.append(flat_unit_rows(batch["clip_tokens"]))
                if w is not None:
                    weights.append(w)
            sim = torch.cat(preds) @ torch.cat(targets).T
            top1 = (sim.argmax(1) == torch.arange(len(sim))).float().mean()
            entry: dict[str, object] = {"val_top1": round(float(top1), 4), "n_val": len(sim)}
            if weights:
                entry["router"] = router_usage(torch.cat(weights))
            results[subject_key(subject)] = entry
        self.train()
        return results

    def configure_optimizers(self) -> dict:
        """Stage 1: input layers + backbone; stage 2: plug-in at full rate, backbone at the stage-2 factor."""
        hp = self.model.hparams
        roles = self.model.parameter_roles()
        inputs = [*self.inputs.parameters()] + (roles["input"] if not self.inputs else [])
        if self.stage == "stage1":
            scaled = [(inputs + roles["backbone"], 1.0), (roles["plugin"], 0.0)]
        else:
            scale = hp.stage2_backbone_lr_scale
            scaled = [(inputs + roles["backbone"], scale), (roles["plugin"], 1.0)]
        epochs = hp.stage1_epochs if self.stage == "stage1" else hp.stage2_epochs
        return scaled_one_cycle(self, scaled, hp.pretrain_max_lr, hp.weight_decay, epochs)


__all__ = ["Expert", "WillsAligner", "importance_balance", "router_usage", "semantic_relation_loss"]
