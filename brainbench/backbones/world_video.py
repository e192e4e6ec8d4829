"""The world's video generator networks (its AnimateDiff + SparseCtrl and unCLIP), and their shipped asset.

Not published models: stand-ins for what NeuroClips (Gong et al., NeurIPS 2024, arXiv 2410.19452; §3.2-3.4)
takes off the shelf, trained by :mod:`brainbench.world.train_video` and shipped in
``brainbench/generators/assets/world-video-generator/``. :class:`WorldVideoModel` bundles a keyframe head
(world-CLIP tokens ``(65, 128)`` -> keyframe latent; the world's unCLIP), a :class:`FrameGenerator` (a
one-step conditional denoiser of clip latents: the world's AnimateDiff + SparseCtrl) and a
:class:`SameShotClassifier` (the shallow "same class" MLP of multi-fMRI fusion, paper §3.4). The generator
backend that runs them is :class:`brainbench.generators.video.WorldVideoGenerator`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brainbench.backbones.frame_autoencoder import ResBlock, TemporalAttention, load_asset_state
from brainbench.errors import ConfigError

GENERATOR_NAME = "world-video-generator"


class KeyframeHead(nn.Module):
    """World-CLIP tokens ``(T, D)`` (CLS first, then a square patch grid) -> a keyframe latent ``(C, h, w)``.

    Each token is LayerNorm-ed (so brain predictions of any scale decode alike), the patch tokens become a
    ``sqrt(T-1)``-side map (row-major, as the ViT flattens them) resized to ``h``, the CLS token is added to
    every position, then two residual blocks and a conv give the latent.
    """

    def __init__(
        self, token_shape: tuple[int, int], latent_shape: tuple[int, int, int], width: int = 64
    ) -> None:
        super().__init__()
        self.token_shape, self.latent_shape = tuple(token_shape), tuple(latent_shape)
        self.grid = math.isqrt(token_shape[0] - 1)
        if self.grid**2 != token_shape[0] - 1:
            raise ConfigError(f"keyframe head: {token_shape[0]} tokens are not CLS + a square patch grid")
        self.norm = nn.LayerNorm(token_shape[1])
        self.patch = nn.Linear(token_shape[1], width)
        self.cls = nn.Linear(token_shape[1], width)
        self.blocks = nn.ModuleList([ResBlock(width), ResBlock(width)])
        self.out = nn.Sequential(
            nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, latent_shape[0], 3, padding=1)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, C, h, w)``."""
        x = self.norm(tokens.float())
        patches = self.patch(x[:, 1:]).transpose(1, 2).reshape(len(x), -1, self.grid, self.grid)
        patches = F.interpolate(patches, size=self.latent_shape[1:], mode="bilinear", align_corners=False)
        h = patches + self.cls(x[:, 0])[:, :, None, None]
        for block in self.blocks:
            h = block(h)
        return self.out(h)


def level_features(level: torch.Tensor) -> torch.Tensor:
    """``(B,)`` noise level ϑ in [0, 1] -> ``(B, 8)`` sin/cos features."""
    freqs = torch.pi * torch.arange(1, 5, device=level.device, dtype=torch.float32)
    angles = level.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FrameGenerator(nn.Module):
    """One-step conditional denoiser of clip latents (module docstring): init + keyframe + caption -> x0.

    Per frame the input is ``[z_init, keyframe latent * m_f, m_f]`` (``m_f`` = 1 on the keyframe's frame);
    ``n_blocks`` of (FiLM residual block on the caption + ϑ features, temporal attention), then a conv.
    """

    def __init__(
        self,
        latent_channels: int = 4,
        n_frames: int = 6,
        caption_dim: int = 128,
        width: int = 64,
        n_blocks: int = 3,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(2 * latent_channels + 1, width, 3, padding=1)
        self.cond = nn.Sequential(nn.Linear(caption_dim + 8, width), nn.SiLU())
        self.blocks = nn.ModuleList(ResBlock(width, cond_dim=width) for _ in range(n_blocks))
        self.temporal = nn.ModuleList(TemporalAttention(width, n_frames, heads) for _ in range(n_blocks))
        self.out = nn.Sequential(
            nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, latent_channels, 3, padding=1)
        )

    def forward(
        self,
        z_init: torch.Tensor,
        keyframe: torch.Tensor,
        key_mask: torch.Tensor,
        caption: torch.Tensor,
        level: torch.Tensor,
    ) -> torch.Tensor:
        """Clean latents ``(B, F, C, h, w)``.

        Args:
            z_init: ``(B, F, C, h, w)`` noised blurry latents.
            keyframe: ``(B, C, h, w)`` keyframe latent.
            key_mask: ``(B, F)``, 1 on the frame the keyframe is injected on.
            caption: ``(B, D)`` caption embedding.
            level: ``(B,)`` noise level ϑ of ``z_init``.
        """
        b, f = z_init.shape[:2]
        mask = key_mask.float()[:, :, None, None, None].expand(-1, -1, 1, *z_init.shape[3:])
        x = torch.cat([z_init, keyframe[:, None] * mask, mask], dim=2).flatten(0, 1)
        x = self.conv_in(x)
        cond = self.cond(torch.cat([caption.float(), level_features(level)], dim=1)).repeat_interleave(f, 0)
        for block, temporal in zip(self.blocks, self.temporal, strict=True):
            x = block(x, cond)
            x = temporal(x.view(b, f, *x.shape[1:])).flatten(0, 1)
        return self.out(x).view(b, f, *z_init.shape[2:])


class SameShotClassifier(nn.Module):
    """Shallow MLP on two unit keyframe embeddings ``(a, b, a*b, |a-b|)`` -> logit of "same class" (§3.4)."""

    def __init__(self, dim: int = 128, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` twice -> ``(N,)`` logits."""
        a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
        return self.mlp(torch.cat([a, b, a * b, (a - b).abs()], dim=-1)).squeeze(-1)


class WorldVideoModel(nn.Module):
    """The shipped generator bundle: keyframe head, frame generator and fusion classifier."""

    def __init__(
        self,
        token_shape: tuple[int, int] = (65, 128),
        latent_shape: tuple[int, int, int] = (4, 8, 8),
        n_frames: int = 6,
        caption_dim: int = 128,
        width: int = 64,
        n_blocks: int = 3,
    ) -> None:
        super().__init__()
        self.settings = {
            "token_shape": list(token_shape),
            "latent_shape": list(latent_shape),
            "n_frames": n_frames,
            "caption_dim": caption_dim,
            "width": width,
            "n_blocks": n_blocks,
        }
        self.keyframe_head = KeyframeHead(token_shape, latent_shape, width)
        self.frame_generator = FrameGenerator(latent_shape[0], n_frames, caption_dim, width, n_blocks)
        self.same_shot = SameShotClassifier(token_shape[1])

    def config(self) -> dict[str, Any]:
        """Constructor arguments (for ``card.json``)."""
        return dict(self.settings)


def load_video_model(directory: Path | None = None, verify: bool = True) -> WorldVideoModel:
    """The shipped keyframe head + frame generator + fusion classifier, frozen, in eval mode."""
    card, state = load_asset_state(GENERATOR_NAME, directory, verify)
    cfg = card["model"]
    model = WorldVideoModel(
        tuple(cfg["token_shape"]),
        tuple(cfg["latent_shape"]),
        cfg["n_frames"],
        cfg["caption_dim"],
        cfg["width"],
        cfg["n_blocks"],
    )
    model.load_state_dict(state)
    return model.requires_grad_(False).eval()


def to_uint8_clips(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, F, 3, S, S)`` in [0, 1] -> ``(N, F, size, size, 3)`` uint8 (bilinear, antialiased resize)."""
    n, f = frames.shape[:2]
    flat = frames.flatten(0, 1)
    if flat.shape[-1] != size:
        flat = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = (flat.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return out.reshape(n, f, size, size, 3).contiguous()
