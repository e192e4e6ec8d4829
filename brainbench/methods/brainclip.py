r"""BrainCLIP: fMRI -> CLIP's joint image-text space with visual and textual supervision (Liu et al. 2023).

Paper: Yulong Liu, Yongqiang Ma, Wei Zhou, Guibo Zhu, Nanning Zheng, "BrainCLIP: Bridging Brain and
Visual-Linguistic Representation via CLIP for Generic Natural Visual Stimulus Decoding", arXiv 2302.12971.
**No code was released**; what follows is the abstract's design, with every
unstated detail an init argument whose default is documented here and in ``data_cards/methods/brainclip.md``.

**Mapper** (``mapper: vae``, the v1 abstract's "VAE-based architecture"): a trunk
``h_0 = Drop(GELU(LN(W_0 v)))``, ``h_k = h_{k-1} + Drop(GELU(LN(W_k h_{k-1})))`` (``n_blocks``), then two
heads ``mu = W_mu h``, ``log sigma^2 = W_s h`` in the CLIP embedding space (``D``). Training samples
``f = mu + sigma * eps``, ``eps ~ N(0, I)``; evaluation uses ``f = mu``. ``mapper: mlp`` drops the variance
head and the KL term (``f = W_mu h``).

**Loss** (symmetric InfoNCE, ``s_ij = cos(f_i, e_j) / tau``):

.. math::

    L = \mathrm{NCE}(f, e^{img}) + \alpha\, \mathrm{NCE}(g(f), e^{txt})
        + \beta\, \frac{1}{B} \sum_i \tfrac12 \sum_d (\mu_{id}^2 + \sigma_{id}^2 - 1 - \log \sigma_{id}^2)

``NCE(p, e) = (CE_rows(s) + CE_cols(s)) / 2`` where a row's positives are every batch item with the **same
target vector** (uniform soft labels): on GOD the text target is the class prompt
("a photo of a {category}.", ``clip_class_text``) and a batch holds several images of one category, which
plain InfoNCE would treat as negatives of each other; with distinct targets this is CLIP's loss.
``e^txt`` is ``clip_class_text`` on GOD-style data and ``clip_text`` (mean caption embedding) on NSD-style
data (``text_target``). ``g`` is the identity (default: one embedding aligned to both modalities, so the
zero-shot classifier, which compares ``clip_image`` with class prompts, sees the text supervision) or a
separate linear text head initialised to the identity (``text_head: true``). ``alpha = 0`` is the image-only
ablation. ``tau`` is CLIP's learnable temperature (``log(1/tau)`` clamped at ``log 100``), or fixed.

**Predictions**: ``clip_image = f`` (image retrieval, and zero-shot by cosine to the class-prompt prototypes)
and, when the data has caption targets (``clip_text`` among the targets, NSD-style), ``clip_text = g(f)``
(brain -> text matching), both in the backbone's joint space. GOD has no captions, so there the model
predicts ``clip_image`` only (the text head, if any, still trains through the class-prompt loss).

Defaults chosen where the paper is silent (methods.md §3 marks alpha, beta, tau and the CLIP variant as
uncertain): alpha 1, beta 1e-3, tau 0.07 learnable, AdamW + cosine decay, hidden 1024 with one residual block,
checkpoint on validation loss.

Example:
    >>> model = BrainCLIP(n_voxels=30, target_shapes={"clip_image": (8,), "clip_class_text": (8,)}, hidden=16)
    >>> {k: v.shape for k, v in model.eval()(torch.randn(2, 30)).items()}
    {'clip_image': torch.Size([2, 8])}
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule, decay_groups
from brainbench.methods.losses import clip_loss
from brainbench.metrics.trials import SingleTrialRetrieval

_MAX_LOGIT_SCALE = 100.0  # CLIP clamps its learnable logit scale here


def same_target_labels(target: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` soft labels: row ``i`` spreads 1 uniformly over the items whose target equals ``i``'s."""
    flat = target.flatten(1)
    same = (flat[:, None, :] == flat[None, :, :]).all(dim=-1).to(flat.dtype)
    return same / same.sum(dim=1, keepdim=True)


def symmetric_nce(
    pred: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor | float, share_positives: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE on cosine logits ``logit_scale * cos(pred_i, target_j)``.

    Args:
        pred: ``(B, D)`` brain embeddings.
        target: ``(B, D)`` CLIP embeddings.
        logit_scale: ``1 / tau``.
        share_positives: items with identical targets are positives of each other (soft labels);
            ``False`` gives plain CLIP InfoNCE (identity labels).
    """
    logits = logit_scale * F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T
    if not share_positives:
        return clip_loss(logits)
    soft = same_target_labels(target)  # symmetric pattern, so the column problem uses the same labels
    rows = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
    cols = -(soft * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (rows + cols) / 2


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, I))`` summed over dimensions, averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=-1).mean()


def _row_keys(rows: torch.Tensor) -> torch.Tensor:
    """An int64 key per row, equal for identical rows (a fixed random projection, rounded)."""
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(rows.shape[-1], generator=gen, dtype=torch.float64).to(rows.device)
    return torch.round(rows.double() @ direction * 2**20).long()


class BrainCLIP(DecoderModule):
    """VAE (or MLP) mapper from voxels to CLIP's joint space, trained on image and text targets.

    Args:
        n_voxels: voxels per sample.
        target_shapes: must hold ``clip_image: (D,)`` and ``<text_target>: (D,)``.
        text_target: the text supervision: ``clip_class_text`` (GOD class prompts) or ``clip_text``
            (captions).
        mapper: ``vae`` (mu, log-variance, reparameterisation, KL) or ``mlp`` (deterministic).
        hidden: trunk width.
        n_blocks: residual blocks after the first layer.
        dropout: dropout after every trunk layer.
        alpha: weight of the text InfoNCE (0: image-only ablation).
        beta: weight of the KL term (``vae`` only).
        temperature: InfoNCE temperature ``tau`` (its initial value when learnable).
        learn_temperature: learn ``log(1/tau)`` as CLIP does, or keep ``tau`` fixed.
        text_head: a separate linear text head ``g`` (identity-initialised) instead of the shared embedding.
        share_positives: items with identical targets are positives of each other in the InfoNCE.
        lr: AdamW learning rate (cosine-decayed per step to ``lr * min_lr_ratio``).
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        weight_decay: AdamW weight decay on weight matrices.
        max_epochs: schedule length (set it equal to the trainer's).
    """

    method_id = "brainclip"
    method_version = "1"
    paper = "Liu et al. 2023, BrainCLIP, arXiv 2302.12971 (no code released)"
    fidelity = (
        "reconstructed from the abstract (no released code): VAE mapper fMRI -> CLIP joint space, symmetric "
        "InfoNCE to the image embedding + alpha x InfoNCE to the text embedding (class prompt on GOD, "
        "captions on NSD) + beta x KL; alpha, beta, tau, widths and schedule are documented choices; "
        "no generator of its own (the suite's generators read clip_image)"
    )
    predicts = ("clip_image", "clip_text")
    monitor = "val_loss"
    monitor_mode = "min"
    val_retrieval_target = "clip_image"

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        text_target: str = "clip_class_text",
        mapper: Literal["vae", "mlp"] = "vae",
        hidden: int = 1024,
        n_blocks: int = 1,
        dropout: float = 0.3,
        alpha: float = 1.0,
        beta: float = 1e-3,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        text_head: bool = False,
        share_positives: bool = True,
        lr: float = 3e-4,
        min_lr_ratio: float = 0.01,
        weight_decay: float = 1e-2,
        max_epochs: int = 50,
    ) -> None:
        if "clip_image" not in target_shapes or text_target not in target_shapes:
            raise ConfigError(
                f"brainclip needs targets clip_image and {text_target} (data.targets), "
                f"got {sorted(target_shapes)}"
            )
        if tuple(target_shapes[text_target]) != tuple(target_shapes["clip_image"]):
            raise ConfigError(
                f"brainclip's text target {text_target} {tuple(target_shapes[text_target])} must be a pooled "
                f"embedding in the image space {tuple(target_shapes['clip_image'])}"
            )
        super().__init__(n_voxels, target_shapes)

    def predicted_names(self) -> tuple[str, ...]:
        """``clip_image``, plus ``clip_text`` when the data has that target (captions: NSD-style data)."""
        return ("clip_image", "clip_text") if "clip_text" in self.target_shapes else ("clip_image",)

    def configure_models(self) -> None:
        """Trunk, mean (and log-variance) heads, optional text head, temperature."""
        hp = self.hparams
        if hp.mapper not in ("vae", "mlp"):
            raise ConfigError(f"brainclip mapper must be 'vae' or 'mlp', not {hp.mapper!r}")
        if hp.temperature <= 0:
            raise ConfigError(f"brainclip temperature must be positive, not {hp.temperature}")
        (self.dim,) = self.target_shapes["clip_image"]
        h = hp.hidden
        self.lin0 = nn.Sequential(
            nn.Linear(self.n_voxels, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(hp.dropout)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(h, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(hp.dropout))
            for _ in range(hp.n_blocks)
        )
        self.mu_head = nn.Linear(h, self.dim)
        self.logvar_head = nn.Linear(h, self.dim) if hp.mapper == "vae" else None
        self.text_proj: nn.Linear | None = None
        if hp.text_head:
            self.text_proj = nn.Linear(self.dim, self.dim)
            with torch.no_grad():
                self.text_proj.weight.copy_(torch.eye(self.dim))
                self.text_proj.bias.zero_()
        scale = torch.tensor(math.log(1 / hp.temperature))
        if hp.learn_temperature:
            self.log_logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("log_logit_scale", scale)

    def configure_metrics(self) -> None:
        """``val_top1`` (image retrieval) and ``val_zeroshot_top1`` (among the split's text targets)."""
        super().configure_metrics()
        self.val_zero_shot = SingleTrialRetrieval()

    def encode(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, V)`` -> ``mu (B, D)`` and ``log sigma^2 (B, D)`` (``None`` for the MLP mapper)."""
        x = self.lin0(voxels)
        for block in self.blocks:
            x = x + block(x)
        logvar = self.logvar_head(x) if self.logvar_head is not None else None
        return self.mu_head(x), logvar

    def _text(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.text_proj(embedding) if self.text_proj is not None else embedding

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``clip_image`` (and ``clip_text``) ``(B, D)``: ``mu``, or a sample in training."""
        embedding = self._embed(voxels)[0]
        out = {"clip_image": embedding}
        if "clip_text" in self.target_shapes:
            out["clip_text"] = self._text(embedding)
        return out

    def _embed(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        mu, logvar = self.encode(voxels)
        if logvar is not None and self.training:
            return mu + torch.randn_like(mu) * (0.5 * logvar).exp(), mu, logvar
        return mu, mu, logvar

    def logit_scale(self) -> torch.Tensor:
        """``1 / tau``, clamped at 100 as in CLIP."""
        return self.log_logit_scale.clamp(max=math.log(_MAX_LOGIT_SCALE)).exp()

    def loss_terms(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The three loss terms and their weighted sum (``loss``), on a sampled embedding in training."""
        hp = self.hparams
        embedding, mu, logvar = self._embed(batch["voxels"])
        scale = self.logit_scale()
        image = symmetric_nce(embedding, batch["clip_image"], scale, hp.share_positives)
        text = symmetric_nce(self._text(embedding), batch[hp.text_target], scale, hp.share_positives)
        kl = gaussian_kl(mu, logvar) if logvar is not None else torch.zeros((), device=embedding.device)
        total = image + hp.alpha * text + (hp.beta * kl if logvar is not None else 0.0)
        terms = {"loss": total, "image_nce": image, "text_nce": text, "kl": kl}
        if stage == "train":
            terms["temp"] = 1 / scale.detach()
        return terms, {"clip_image": embedding}

    def update_val_metrics(
        self, batch: dict[str, torch.Tensor], predictions: dict[str, torch.Tensor]
    ) -> None:
        """``val_top1`` and ``val_zeroshot_top1``: each sample ranked among the split's distinct text targets.

        On GOD those are the val categories' prompts.
        """
        super().update_val_metrics(batch, predictions)
        embedding, text = predictions["clip_image"], batch[self.hparams.text_target]
        self.val_zero_shot.update(embedding, text, _row_keys(text.flatten(1)))
        self.log("val_zeroshot_top1", self.val_zero_shot, batch_size=len(embedding))

    def configure_optimizers(self) -> dict:
        """AdamW (no decay on biases, norms and the temperature), cosine decay per step."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(decay_groups(self.parameters(), hp.weight_decay), lr=hp.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total, eta_min=hp.lr * hp.min_lr_ratio
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
