"""Lite-Mind: a DFT-based lightweight fMRI -> CLIP decoder (Gong et al., ACM MM 2024, arXiv 2312.03781).

Faithful to the released training script (``gongzix/Lite-Mind`` ``src/dft_backbone.py``, ``src/engine.py``,
``src/train_litemind.py``):

1. **Patch tokenisation**: ``Conv1d(1 -> d0, kernel=stride=p)`` over the voxel vector gives
   ``N = (V - p) // p + 1`` tokens (34 for V = 15724, p = 450), plus a learned positional embedding, dropout.
2. **Stages** of blocks with widths ``stage_widths + (T,)`` and depths ``depths`` (released: 512/256/128/257,
   2/10/2/4), a channel ``Linear`` between stages. Each block computes
   ``y = DropPath(MLP(LN2(GlobalFilter(LN1(x)))))``, ``y = DropPath(FreMLP(LN3(y)))``, ``x = x + y``.

   * GlobalFilter ("spectrum compression"): ``X = rfft_N(x)``,
     ``Y = sum_f X * W_f * cos((2f + 1) pi / (2F)) * X^2`` (complex square; F = ``num_filters`` = 2),
     then ``irfft``.
   * FreMLP ("frequency projector"): ``relu(Re r - Im i + rb)``, ``relu(Im r + Re i + ib)``, softshrink 0.01,
     ``irfft``. As in the released einsum, only the **diagonals** of the d x d matrices ``r`` and ``i`` are
     read, though the full matrices are allocated (which is why the released model has 15.66 M parameters
     where the paper's "98.7 % fewer than MindEye" implies ~12.9 M). The released ``FreMLP`` also allocates an
     ``embeddings`` vector of size d that is never used (4,868 parameters over the 18 blocks of the released
     config); it is left out here, since an unused parameter breaks DDP, so the released config counts
     15,652,991 parameters here against 15,657,859 there.
3. **Head**: ``LayerNorm(T)``, transpose ``(T, N)``, ``Linear(N -> D)``: the last stage's T channels become
   the backbone's T tokens and the N voxel patches become its D dimensions (257 x 768 for ViT-L/14).
4. **Loss**: one-direction InfoNCE with a **fixed** logit scale (``exp(8)``) on L2-normalised flattened
   ``T*D`` vectors, rows = backbone targets, columns = brain outputs (``ContrastiveLoss(targets, outputs)``).

Training follows the script: AdamW (weight decay 0.1), linear warm-up then cosine decay to ``min_lr``,
dropout 0.1, drop-path 0.15. Deviations: epochs and widths are scaled down in the world config; checkpoints
are chosen on the validation split, never on the test set (the released script selects on test).

Example:
    >>> model = LiteMind(n_voxels=340, target_shapes={"clip_tokens": (5, 16)}, stage_widths=(16, 8),
    ...                  depths=(1, 1, 1), max_epochs=1)
    >>> model(torch.randn(2, 340))["clip_tokens"].shape
    torch.Size([2, 5, 16])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from brainbench.methods.base import DecoderModule, in_batch_top1
from brainbench.methods.losses import flat_unit_rows, info_nce


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zeroes whole samples with probability ``p`` in training, rescaling the rest."""
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= self.p
        return x * keep / (1 - self.p)


class GlobalFilter(nn.Module):
    """Spectrum compression over the token axis, cubic in the spectrum (released ``GlobalFilter``)."""

    def __init__(self, dim: int, n_tokens: int, num_filters: int = 2) -> None:
        super().__init__()
        n_freq = n_tokens // 2 + 1
        self.weight = nn.Parameter(torch.randn(num_filters, n_freq, dim, 2) * 0.02)
        cos = torch.tensor([math.cos((2 * f + 1) * math.pi / (2 * num_filters)) for f in range(num_filters)])
        self.register_buffer("cos", cos.view(num_filters, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, d)`` -> ``(B, N, d)``: filter the token-axis spectrum, cubic in it."""
        n = x.shape[1]
        spectrum = torch.fft.rfft(x.float(), dim=1, norm="ortho")  # (B, F, d)
        weight = torch.view_as_complex(self.weight)  # (K, F, d)
        gain = (weight * self.cos).sum(dim=0)  # sum_f W_f cos(...)
        spectrum = spectrum * gain * spectrum * spectrum
        return torch.fft.irfft(spectrum, n=n, dim=1, norm="ortho").to(x.dtype)


class FreMLP(nn.Module):
    """Frequency-domain complex MLP; reads only the diagonals of ``r`` and ``i`` (as the released einsum)."""

    def __init__(self, dim: int, sparsity: float = 0.01, scale: float = 0.02) -> None:
        super().__init__()
        self.r = nn.Parameter(scale * torch.randn(dim, dim))
        self.i = nn.Parameter(scale * torch.randn(dim, dim))
        self.rb = nn.Parameter(scale * torch.randn(dim))
        self.ib = nn.Parameter(scale * torch.randn(dim))
        self.sparsity = sparsity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, d)`` -> ``(B, N, d)``: complex per-channel MLP on the token-axis spectrum."""
        n = x.shape[1]
        spectrum = torch.fft.rfft(x.float(), dim=1, norm="ortho")
        r, i = torch.diagonal(self.r), torch.diagonal(self.i)
        real = F.relu(spectrum.real * r - spectrum.imag * i + self.rb)
        imag = F.relu(spectrum.imag * r + spectrum.real * i + self.ib)
        out = F.softshrink(torch.stack([real, imag], dim=-1), lambd=self.sparsity)
        return torch.fft.irfft(torch.view_as_complex(out.contiguous()), n=n, dim=1, norm="ortho").to(x.dtype)


class LiteMindBlock(nn.Module):
    """``y = DropPath(MLP(LN2(GF(LN1(x)))))``; ``y = DropPath(FreMLP(LN3(y)))``; ``x + y``."""

    def __init__(
        self, dim: int, n_tokens: int, mlp_ratio: float, drop: float, drop_path: float, num_filters: int
    ) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.filter = GlobalFilter(dim, n_tokens, num_filters)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim), nn.Dropout(drop)
        )
        self.fremlp = FreMLP(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, d)`` -> ``(B, N, d)``."""
        y = self.drop_path(self.mlp(self.norm2(self.filter(self.norm1(x)))))
        y = self.drop_path(self.fremlp(self.norm3(y)))
        return x + y


def _init_weights(module: nn.Module) -> None:
    """The released initialisation: truncated-normal(0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class LiteMind(DecoderModule):
    """Lite-Mind decoder onto all backbone tokens (``clip_tokens``), see the module docstring.

    Args:
        n_voxels: voxels per sample.
        target_shapes: must hold ``clip_tokens: (T, D)``.
        patch_size: voxels per patch; ``None`` picks ``n_voxels // target_patches`` (450 in the paper).
        target_patches: patch count to aim for when ``patch_size`` is ``None`` (34, as the paper).
        stage_widths: widths of the stages before the last (whose width is ``T``).
        depths: blocks per stage (one more entry than ``stage_widths``).
        mlp_ratio: hidden width of the block MLPs.
        num_filters: ``F`` of the GlobalFilter (the released code hard-codes 2).
        dropout: dropout after the positional embedding and in the MLPs.
        drop_path: stochastic-depth rate.
        logit_scale: fixed InfoNCE logit scale (``exp(8)`` in the released loss).
        lr: peak learning rate (``1e-4 * 600 / 512`` in the released script).
        min_lr: final learning rate of the cosine schedule.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length.
        max_epochs: schedule length (set it equal to the trainer's).
    """

    method_id = "litemind"
    method_version = "2"  # v2: checkpoint chosen by val_top1 on repeat-averaged val images
    paper = "Gong et al. 2024, Lite-Mind, ACM MM, arXiv 2312.03781"
    fidelity = (
        "faithful to the released training script (architecture, fixed-temperature one-way InfoNCE, "
        "AdamW + warm-up cosine); widths, depths and epochs scaled to the world; validation-split "
        "model selection instead of the script's test-set selection"
    )
    predicts = ("clip_tokens",)
    monitor = "val_top1"  # validation trials ranked among the distinct val images; val loss bottoms out early
    monitor_mode = "max"
    val_retrieval_target = "clip_tokens"

    def __init__(
        self,
        n_voxels: int,
        target_shapes: dict[str, tuple[int, ...]],
        patch_size: int | None = None,
        target_patches: int = 34,
        stage_widths: tuple[int, ...] = (512, 256, 128),
        depths: tuple[int, ...] = (2, 10, 2, 4),
        mlp_ratio: float = 4.0,
        num_filters: int = 2,
        dropout: float = 0.1,
        drop_path: float = 0.15,
        logit_scale: float = math.exp(8),
        lr: float = 1e-4 * 600 / 512,
        min_lr: float = 1e-5,
        weight_decay: float = 0.1,
        warmup_epochs: int = 5,
        max_epochs: int = 1500,
    ) -> None:
        super().__init__(n_voxels, target_shapes)

    def configure_models(self) -> None:
        """Patch embedding, stages with their transitions, and the token head."""
        hp = self.hparams
        n_tokens_out, dim_out = self.target_shapes["clip_tokens"]
        self.patch_size = hp.patch_size or max(1, self.n_voxels // hp.target_patches)
        self.n_patches = (self.n_voxels - self.patch_size) // self.patch_size + 1
        widths = tuple(hp.stage_widths) + (n_tokens_out,)
        if len(hp.depths) != len(widths):
            raise ValueError(f"depths {hp.depths} needs one entry per stage width {widths}")
        self.patch_embed = nn.Conv1d(1, widths[0], kernel_size=self.patch_size, stride=self.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.n_patches, widths[0]))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(hp.dropout)
        rates = torch.linspace(0, hp.drop_path, sum(hp.depths)).tolist()
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for s, (width, depth) in enumerate(zip(widths, hp.depths, strict=True)):
            start = sum(hp.depths[:s])
            self.stages.append(
                nn.Sequential(
                    *[
                        LiteMindBlock(
                            width, self.n_patches, hp.mlp_ratio, hp.dropout, rates[start + b], hp.num_filters
                        )
                        for b in range(depth)
                    ]
                )
            )
            if s + 1 < len(widths):
                self.transitions.append(nn.Linear(width, widths[s + 1]))
        self.head_norm = nn.LayerNorm(n_tokens_out, eps=1e-6)
        self.head = nn.Linear(self.n_patches, dim_out)
        self.apply(_init_weights)

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` voxels -> ``{"clip_tokens": (B, T, D)}``."""
        x = self.patch_embed(voxels.unsqueeze(1)).transpose(1, 2)  # (B, N, d0)
        x = self.pos_drop(x + self.pos_embed)
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if s < len(self.transitions):
                x = self.transitions[s](x)
        x = self.head_norm(x).transpose(1, 2)  # (B, T, N)
        return {"clip_tokens": self.head(x)}  # (B, T, D)

    def contrastive_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``CE(s * norm(target) @ norm(pred)^T, I)``: rows are targets, as the released loss."""
        return info_nce(self.hparams.logit_scale * flat_unit_rows(target) @ flat_unit_rows(pred).T)

    def loss_terms(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The InfoNCE loss and the in-batch top-1 of a batch."""
        pred = self(batch["voxels"])["clip_tokens"]
        terms = {
            "loss": self.contrastive_loss(pred, batch["clip_tokens"]),
            "inbatch_top1": in_batch_top1(pred, batch["clip_tokens"]),
        }
        return terms, {"clip_tokens": pred}

    def configure_optimizers(self) -> dict:
        """AdamW with a linear warm-up then cosine decay to ``min_lr``, stepped per batch."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        steps_per_epoch = max(1, self.trainer.estimated_stepping_batches // max(1, self.trainer.max_epochs))
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = hp.warmup_epochs * steps_per_epoch

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return (
                hp.min_lr + 0.5 * (hp.lr - hp.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
            ) / hp.lr

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
