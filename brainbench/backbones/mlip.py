"""MLIP's image-side parts for an open_clip ViT: a frequency stage and frequency/spatial-guided token merging.

Zhang et al. 2024, "MLIP: Efficient Multi-Perspective Language-Image Pretraining with Exhaustive Data
Utilization", ICML 2024, arXiv 2406.01460. The paper adds three things to CLIP: a **frequency branch** beside
the spatial ViT (a frequency transform sees high- and low-frequency variation, the spatial domain mostly the
low), **token-level alignment** in both domains (see :mod:`brainbench.backbones.mlip_loss`) and **token
merging** guided by frequency and spatial semantics with a controllable compression rate. No code is public
and the method section's equations were not reachable when this was written, so every concrete choice below
is ours; each is an option of :class:`MLIPConfig` and is listed in the world CLIP card:

- Frequency stage (:class:`FrequencyStage`): ``rfft2`` (orthonormal) of the patch-embedding grid
  ``(B, W, g, g)`` per channel; each of the ``g * (g // 2 + 1)`` frequencies becomes a token from its real and
  imaginary parts (linear ``2W -> W``), plus a class token and learned frequency-position embeddings, then
  ``frequency_layers`` transformer blocks, LayerNorm and a projection into the joint space. It shares the
  patch embedding (``conv1``) with the spatial tower.
- Token merging (:func:`merge_tokens`): after each block in ``merge_layers`` (not after the last), the
  ``round(merge_rate * N)`` least important of the ``N`` patch tokens are merged into their most similar
  (cosine) kept token by a size-weighted mean, so kept tokens become coarser, multi-granularity tokens.
  Importance fuses the class token's attention to each token in the next block (spatial semantics, heads
  averaged) and the token's high-frequency energy (frequency semantics: energy of its pixels' 2-D FFT outside
  the lowest ring, size-weighted through merges): ``s = alpha * s_spatial + (1 - alpha) * s_freq``, each
  normalised to sum 1. ToMe's proportional attention is not used.

The image embedding of a model trained this way is the spatial tower's, so the trained folder is an ordinary
open_clip model (the frequency stage is saved beside it). Shapes: images ``(B, 3, H, W)``; patch tokens
``(B, N, W)``; projected tokens ``(B, T, E)``.

Example:
    >>> import torch
    >>> x = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]])
    >>> merged, size, _ = merge_tokens(x, torch.ones(1, 3, 1), torch.tensor([[3.0, 1.0, 2.0]]), n_merge=1)
    >>> merged.squeeze(0).tolist(), size.flatten().tolist()
    ([[0.949999988079071, 0.05000000074505806], [0.0, 1.0]], [2.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, text_global_pool
from torch import nn


@dataclass(frozen=True)
class MLIPConfig:
    """The MLIP parts and their weights (every value an assumption where the paper is silent).

    Attributes:
        frequency: add the frequency stage and its losses.
        token_align: add the token-level alignment losses (spatial, and frequency when ``frequency``).
        merge_rate: fraction of the patch tokens merged at each merging block (0 = no merging).
        merge_layers: 1-based blocks after which tokens are merged.
        merge_alpha: weight of the spatial importance against the frequency importance.
        lambda_frequency: weight of the frequency-global CLIP loss.
        lambda_token: weight of each token-level loss.
        token_batch: pairs of the batch (the first ones) that enter the token-level losses (CPU cost).
        frequency_layers: transformer blocks of the frequency stage.
    """

    frequency: bool = True
    token_align: bool = True
    merge_rate: float = 0.0
    merge_layers: tuple[int, ...] = (1, 2)
    merge_alpha: float = 0.5
    lambda_frequency: float = 0.5
    lambda_token: float = 0.5
    token_batch: int = 64
    frequency_layers: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.merge_rate < 1.0:
            raise ValueError(f"merge_rate must be in [0, 1); got {self.merge_rate}")
        if not 0.0 <= self.merge_alpha <= 1.0:
            raise ValueError(f"merge_alpha must be in [0, 1]; got {self.merge_alpha}")


class FrequencyStage(nn.Module):
    """Frequency tokens from the patch-embedding grid: ``(B, W, g, g) -> (B, E), (B, g * (g//2+1), E)``."""

    def __init__(self, width: int, grid: int, embed_dim: int, heads: int, layers: int = 1) -> None:
        super().__init__()
        self.n_freq = grid * (grid // 2 + 1)
        self.embed = nn.Linear(2 * width, width)
        self.class_embedding = nn.Parameter(0.02 * torch.randn(width))
        self.positional_embedding = nn.Parameter(0.02 * torch.randn(self.n_freq + 1, width))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(width**-0.5 * torch.randn(width, embed_dim))

    def forward(self, patch_grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled ``(B, E)`` and token ``(B, n_freq, E)`` frequency embeddings of ``patch_grid``."""
        spectrum = torch.fft.rfft2(patch_grid.float(), norm="ortho")  # (B, W, g, g//2+1)
        tokens = torch.cat([spectrum.real, spectrum.imag], dim=1).flatten(2).transpose(1, 2)
        x = self.embed(tokens)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        for block in self.blocks:
            x = block(x)
        x = self.ln_post(x) @ self.proj
        return x[:, 0], x[:, 1:]


def patch_high_frequency_energy(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Energy of each patch's 2-D FFT outside the DC term and its nearest ring: ``(B, N)``, N = patches."""
    b, c, h, w = images.shape
    patches = images.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)  # B C gh gw p p
    power = torch.fft.fft2(patches.float(), norm="ortho").abs().square().sum(dim=1)  # B gh gw p p
    freq = torch.fft.fftfreq(patch_size) * patch_size
    ring = torch.maximum(freq.abs()[:, None], freq.abs()[None, :])
    return (power * (ring > 1).to(power.dtype)).sum(dim=(-1, -2)).flatten(1)


def cls_attention(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """Attention of the class token to each patch token in ``block`` (heads averaged): ``(B, N)``."""
    attn = block.attn
    h = block.ln_1(x)
    width = h.shape[-1]
    q = F.linear(h[:, :1], attn.in_proj_weight[:width], attn.in_proj_bias[:width])
    k = F.linear(h, attn.in_proj_weight[width : 2 * width], attn.in_proj_bias[width : 2 * width])
    heads = attn.num_heads
    q = q.view(q.shape[0], 1, heads, -1).transpose(1, 2)
    k = k.view(k.shape[0], k.shape[1], heads, -1).transpose(1, 2)
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)  # B heads 1 T
    return weights.mean(dim=1)[:, 0, 1:]


def merge_tokens(
    x: torch.Tensor,
    size: torch.Tensor,
    importance: torch.Tensor,
    n_merge: int,
    extra: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    r"""Merges the ``n_merge`` least important tokens into their most similar kept token.

    .. math:: x'_k = \frac{s_k x_k + \sum_{j \to k} s_j x_j}{s_k + \sum_{j \to k} s_j}, \qquad
              s'_k = s_k + \sum_{j \to k} s_j

    where ``j -> k`` when token ``j`` is merged and ``k = argmax_kept cos(x_j, x_k)``.

    Args:
        x: ``(B, N, W)`` patch tokens (no class token).
        size: ``(B, N, 1)`` how many patches each token already holds.
        importance: ``(B, N)``; the lowest are merged away.
        n_merge: tokens removed, ``0 <= n_merge < N``.
        extra: ``(B, N)`` per-token values merged the same way (e.g. frequency energy), or ``None``.

    Returns:
        ``(B, N - n_merge, W)`` tokens in their original order, their sizes, and ``extra`` merged.
    """
    n = x.shape[1]
    if n_merge <= 0:
        return x, size, extra
    if n_merge >= n:
        raise ValueError(f"cannot merge {n_merge} of {n} tokens")
    order = importance.argsort(dim=1, descending=True)
    keep_idx = order[:, : n - n_merge].sort(dim=1).values
    src_idx = order[:, n - n_merge :]

    def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

    keep, src = take(x, keep_idx), take(x, src_idx)
    keep_size, src_size = take(size, keep_idx), take(size, src_idx)
    dst = (F.normalize(src, dim=-1) @ F.normalize(keep, dim=-1).transpose(1, 2)).argmax(dim=-1)  # B m
    dst_w = dst.unsqueeze(-1).expand(-1, -1, x.shape[-1])
    total = (keep * keep_size).scatter_add(1, dst_w, src * src_size)
    new_size = keep_size.scatter_add(1, dst.unsqueeze(-1), src_size)
    merged_extra = None
    if extra is not None:
        e = extra.unsqueeze(-1)
        e_total = (take(e, keep_idx) * keep_size).scatter_add(
            1, dst.unsqueeze(-1), take(e, src_idx) * src_size
        )
        merged_extra = (e_total / new_size).squeeze(-1)
    return total / new_size, new_size, merged_extra


def merged_token_count(n_patches: int, merge_rate: float, n_merges: int) -> int:
    """Patch tokens left after ``n_merges`` merging blocks at ``merge_rate`` (what the ViT runs on)."""
    for _ in range(n_merges):
        n_patches -= round(merge_rate * n_patches)
    return n_patches


def encode_image_mlip(
    visual: nn.Module, images: torch.Tensor, cfg: MLIPConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An open_clip ``VisionTransformer`` forward with MLIP's token merging.

    With ``cfg.merge_rate == 0`` the pooled output equals ``visual(images)``.

    Returns:
        pooled ``(B, E)``, projected patch tokens after merging ``(B, N', E)``, and the patch-embedding grid
        ``(B, W, g, g)`` (input of the frequency stage).
    """
    grid = visual.conv1(images)
    b, width = grid.shape[:2]
    x = grid.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.to(x.dtype).expand(b, 1, -1), x], dim=1)
    x = visual.ln_pre(visual.patch_dropout(x + visual.positional_embedding.to(x.dtype)))
    blocks = visual.transformer.resblocks
    merging = cfg.merge_rate > 0
    size = torch.ones(b, x.shape[1] - 1, 1, dtype=x.dtype, device=x.device)
    energy = patch_high_frequency_energy(images, grid_patch(visual)) if merging else None
    for i, block in enumerate(blocks, start=1):
        x = block(x)
        if merging and i in cfg.merge_layers and i < len(blocks):
            n_merge = round(cfg.merge_rate * (x.shape[1] - 1))
            with torch.no_grad():
                spatial = cls_attention(blocks[i], x)
                spatial = spatial / spatial.sum(dim=1, keepdim=True)
                freq = energy / energy.sum(dim=1, keepdim=True).clamp_min(1e-12)
                importance = cfg.merge_alpha * spatial + (1 - cfg.merge_alpha) * freq
            patches, size, energy = merge_tokens(x[:, 1:], size, importance, n_merge, energy)
            x = torch.cat([x[:, :1], patches], dim=1)
    tokens = visual.ln_post(x) @ visual.proj
    return tokens[:, 0], tokens[:, 1:], grid


def grid_patch(visual: nn.Module) -> int:
    """The patch size of an open_clip ViT."""
    size = visual.patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def encode_text_tokens(
    model: open_clip.CLIP, text: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """open_clip's ``encode_text`` keeping every token: pooled ``(B, E)``, tokens ``(B, L, E)``, mask.

    The mask ``(B, L)`` keeps the real tokens after the start token, up to and including the end token.
    """
    x = model.token_embedding(text) + model.positional_embedding
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    tokens = x @ model.text_projection
    pooled = text_global_pool(
        tokens, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None)
    )
    mask = text != 0
    mask[:, 0] = False
    return pooled, tokens, mask


class MLIPModel(nn.Module):
    """An open_clip CLIP plus MLIP's frequency stage; ``forward`` returns every embedding the losses read."""

    def __init__(self, clip: open_clip.CLIP, cfg: MLIPConfig) -> None:
        super().__init__()
        self.clip = clip
        self.cfg = cfg
        visual = clip.visual
        width = visual.conv1.out_channels
        grid = visual.positional_embedding.shape[0] - 1
        grid = int(round(grid**0.5))
        embed_dim = visual.proj.shape[1]
        heads = visual.transformer.resblocks[0].attn.num_heads
        self.frequency = (
            FrequencyStage(width, grid, embed_dim, heads, cfg.frequency_layers) if cfg.frequency else None
        )

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised global embeddings and raw token embeddings of both towers (and the frequency stage)."""
        image_global, image_tokens, grid = encode_image_mlip(self.clip.visual, images, self.cfg)
        text_global, text_tokens, text_mask = encode_text_tokens(self.clip, text)
        out = {
            "image": F.normalize(image_global, dim=-1),
            "image_tokens": image_tokens,
            "text": F.normalize(text_global, dim=-1),
            "text_tokens": text_tokens,
            "text_mask": text_mask,
            "logit_scale": self.clip.logit_scale.exp(),
        }
        if self.frequency is not None:
            freq_global, freq_tokens = self.frequency(grid)
            out["frequency"] = F.normalize(freq_global, dim=-1)
            out["frequency_tokens"] = freq_tokens
        return out
