r"""The world's frame autoencoder (its SD-VAE), the conv blocks it shares, and its shipped asset.

Not a published model: the embedded world's stand-in for the frozen VAE whose latents NeuroClips' perception
reconstructor regresses (Gong et al., NeurIPS 2024, arXiv 2410.19452, Eq. 1) and its video stage works in.
Trained on fresh world movies by :mod:`brainbench.world.train_video` and shipped like the world CLIP
(safetensors fp16 + ``card.json`` with sha256, command and held-out numbers) in
``brainbench/generators/assets/world-video-ae/``: a 64 px frame <-> a ``(4, 8, 8)`` latent (factor 8, as
SD's 224 px <-> 4x28x28), normalised per channel (the role of SD's 0.18215).

:class:`TemporalAttention` (NeuroClips §3.1, ``E = η E + (1 - η) Attn(E)``) and :class:`ResBlock` are shared
by the perception reconstructor (:mod:`brainbench.methods.neuroclips`) and the world video generator
(:mod:`brainbench.backbones.world_video`).

Example:
    >>> ae = FrameAutoencoder()
    >>> ae.encode(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from brainbench.backbones.world_clip import verified_weights
from brainbench.errors import ConfigError, MissingFileError

#: the shipped world video assets (they stay under ``generators/assets``; read by path, nothing imported)
ASSETS_DIR = Path(str(resources.files("brainbench"))) / "generators" / "assets"
AE_NAME = "world-video-ae"
WEIGHTS_FILE = "model.safetensors"
TRAIN_COMMAND = "python -m brainbench.world.train_video --out brainbench/generators/assets"


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv, GroupNorm, SiLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU())


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(x)) * (1 + γ) + β))``; ``γ, β`` from an optional condition vector (FiLM)."""

    def __init__(self, channels: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels) if cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, C, H, W)`` -> same; ``cond`` ``(N, cond_dim)``."""
        h = self.norm(self.conv1(x))
        if self.film is not None and cond is not None:
            gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + gamma) + beta
        return x + self.conv2(F.silu(h))


class TemporalAttention(nn.Module):
    r"""Attention over the frames at each spatial position, mixed in by a learnable η (NeuroClips §3.1).

    ``E' = η E + (1 - η) Attn(E)`` with ``Attn`` = LayerNorm + learned frame-position embedding + multi-head
    self-attention over the ``F`` frames; ``η`` is clamped to [0, 1], so ``η = 1`` is the identity.

    Args:
        channels: feature channels ``C``.
        n_frames: most frames a clip has (size of the position embedding).
        heads: attention heads.
        eta_init: initial η.
    """

    def __init__(self, channels: int, n_frames: int, heads: int = 4, eta_init: float = 0.5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.position = nn.Parameter(torch.zeros(n_frames, channels))
        self.attn = nn.MultiheadAttention(channels, heads if channels % heads == 0 else 1, batch_first=True)
        self.eta = nn.Parameter(torch.tensor(float(eta_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F, C, H, W)`` -> same."""
        b, f, c, h, w = x.shape
        seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, f, c)
        q = self.norm(seq) + self.position[:f]
        mixed = self.attn(q, q, q, need_weights=False)[0]
        mixed = mixed.view(b, h, w, f, c).permute(0, 3, 4, 1, 2)
        eta = self.eta.clamp(0, 1)
        return eta * x + (1 - eta) * mixed


class FrameAutoencoder(nn.Module):
    """Frames ``(N, 3, S, S)`` in [0, 1] <-> normalised latents ``(N, C, S/8, S/8)`` (the world's SD-VAE).

    Encoder: 3x3 conv, three stride-2 4x4 convs, 3x3 conv to ``C``; decoder: conv, residual block, three
    (nearest x2, conv) stages, conv, sigmoid. ``encode`` returns ``(z - shift) / scale`` with per-channel
    statistics of the training frames (buffers set after training), ``decode`` inverts that first.

    Args:
        image_size: frame side ``S`` (a multiple of 8).
        latent_channels: ``C``.
        channels: widths at S/2, S/4 and S/8.
    """

    def __init__(
        self, image_size: int = 64, latent_channels: int = 4, channels: tuple[int, ...] = (32, 64, 64)
    ) -> None:
        super().__init__()
        if image_size % 8 or len(channels) != 3:
            raise ConfigError(f"frame autoencoder: image_size {image_size} must be a multiple of 8, 3 widths")
        self.image_size, self.latent_channels, self.channels = image_size, latent_channels, tuple(channels)
        c1, c2, c3 = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1 // 2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c1 // 2, c1, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(c2, c3, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(c3, latent_channels, 3, padding=1),
        )  # fmt: skip
        self.dec_in = nn.Conv2d(latent_channels, c3, 3, padding=1)
        self.dec_res = ResBlock(c3)
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.decoder = nn.Sequential(
            up, _conv(c3, c2), up, _conv(c2, c1), up, _conv(c1, c1 // 2), nn.Conv2d(c1 // 2, 3, 3, padding=1)
        )
        self.register_buffer("latent_shift", torch.zeros(latent_channels))
        self.register_buffer("latent_scale", torch.ones(latent_channels))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, S/8, S/8)``."""
        return (self.latent_channels, self.image_size // 8, self.image_size // 8)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` in [0, 1] -> normalised latents ``(N, C, S/8, S/8)``."""
        z = self.encoder(frames * 2 - 1)
        return (z - self.latent_shift[:, None, None]) / self.latent_scale[:, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> frames ``(N, 3, S, S)`` in [0, 1]."""
        z = latents * self.latent_scale[:, None, None] + self.latent_shift[:, None, None]
        return torch.sigmoid(self.decoder(self.dec_res(self.dec_in(z))))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (for ``card.json``)."""
        return {
            "image_size": self.image_size,
            "latent_channels": self.latent_channels,
            "channels": list(self.channels),
        }


# ---------------------------------------------------------------- shipped checkpoints


def asset_dir(name: str) -> Path:
    """``brainbench/generators/assets/<name>``."""
    return ASSETS_DIR / name


def load_card(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The ``card.json`` of a shipped video asset."""
    path = (directory or asset_dir(name)) / "card.json"
    if not path.is_file():
        raise MissingFileError(path, f"train the world video models with `{TRAIN_COMMAND}`")
    return json.loads(path.read_text())


def load_asset_state(name: str, directory: Path | None, verify: bool) -> tuple[dict[str, Any], dict]:
    """The card and float32 state dict of shipped asset ``name`` (sha256 checked when ``verify``)."""
    directory = directory or asset_dir(name)
    card = load_card(name, directory)
    weights = verified_weights(directory / WEIGHTS_FILE, card["sha256"] if verify else None, TRAIN_COMMAND)
    return card, {k: v.float() for k, v in load_file(weights).items()}


def load_autoencoder(directory: Path | None = None, verify: bool = True) -> FrameAutoencoder:
    """The shipped frame autoencoder (sha256 checked against its card), frozen, in eval mode."""
    card, state = load_asset_state(AE_NAME, directory, verify)
    model_cfg = card["model"]
    ae = FrameAutoencoder(model_cfg["image_size"], model_cfg["latent_channels"], tuple(model_cfg["channels"]))
    ae.load_state_dict(state)
    return ae.requires_grad_(False).eval()


# ---------------------------------------------------------------- frame autoencoders by id


def load_frame_encoder(autoencoder: str, image_size: int) -> nn.Module:
    """A frozen frame autoencoder by id, for ``image_size`` px frames.

    Args:
        autoencoder: ``world-video-ae`` (the shipped :class:`FrameAutoencoder`) or
            ``sd-vae:<model id or folder>`` (:func:`brainbench.backbones.sd_vae.load_sd_vae`).
        image_size: frame side in pixels.

    Returns:
        A module with ``encode``, ``decode``, ``latent_shape`` and ``image_size``, gradients off.

    Raises:
        ConfigError: an unknown id, or frames of a size the autoencoder does not take.
    """
    if autoencoder == AE_NAME:
        encoder: nn.Module = load_autoencoder()
    elif autoencoder.startswith("sd-vae:"):
        from brainbench.backbones.sd_vae import load_sd_vae

        encoder = load_sd_vae(autoencoder.removeprefix("sd-vae:"), image_size)
    else:
        raise ConfigError(
            f"unknown frame autoencoder {autoencoder!r}: use {AE_NAME!r} or 'sd-vae:<model id or folder>'"
        )
    if encoder.image_size != image_size:
        raise ConfigError(
            f"the autoencoder {autoencoder} takes {encoder.image_size} px frames, not {image_size} px"
        )
    return encoder.requires_grad_(False)


def latent_target_name(autoencoder: str, image_size: int) -> str:
    """The feature-cache name of the latents of ``frames:<image_size>``: ``latents:<px>:<autoencoder>``.

    >>> latent_target_name("world-video-ae", 64)
    'latents:64:world-video-ae'
    """
    return f"latents:{int(image_size)}:{autoencoder}"


def is_latent_target(name: str) -> bool:
    """Whether ``name`` is a ``latents:<px>:<autoencoder>`` feature."""
    return name.startswith("latents:")


def parse_latent_target(name: str) -> tuple[int, str]:
    """``latents:<px>:<autoencoder>`` -> ``(px, autoencoder)``.

    >>> parse_latent_target("latents:224:sd-vae:stabilityai/sd-vae-ft-mse")
    (224, 'sd-vae:stabilityai/sd-vae-ft-mse')
    """
    kind, _, rest = name.partition(":")
    size, _, autoencoder = rest.partition(":")
    if kind != "latents" or not size.isdigit() or not autoencoder:
        raise ConfigError(
            f"feature {name!r} must look like latents:<pixels>:<autoencoder>, e.g. latents:64:{AE_NAME}"
        )
    return int(size), autoencoder


def latent_target_shape(name: str, n_frames: int) -> tuple[int, int, int, int]:
    """Per-stimulus shape ``(F, C, px/8, px/8)`` of a ``latents:<px>:<autoencoder>`` target, no weights read.

    The shipped autoencoder's channels come from its card, an SD VAE's from the kl-f8 architecture.

    >>> latent_target_shape("latents:224:sd-vae:stabilityai/sd-vae-ft-mse", 6)
    (6, 4, 28, 28)
    """
    size, autoencoder = parse_latent_target(name)
    if autoencoder == AE_NAME:
        channels, factor = int(load_card(AE_NAME)["model"]["latent_channels"]), 8
    elif autoencoder.startswith("sd-vae:"):
        from brainbench.backbones.sd_vae import SD_VAE_CONFIG

        channels = int(SD_VAE_CONFIG["latent_channels"])
        factor = 2 ** (len(SD_VAE_CONFIG["block_out_channels"]) - 1)
    else:
        raise ConfigError(f"unknown frame autoencoder in {name!r}: use {AE_NAME!r} or 'sd-vae:<model id>'")
    return (n_frames, channels, size // factor, size // factor)


@torch.no_grad()
def encode_clips(encoder: nn.Module, frames: Any, chunk: int = 64) -> torch.Tensor:  # noqa: ANN401
    """Latents ``(N, F, C, h, w)`` (float32, CPU) of clips ``(N, F, 3, S, S)`` in [0, 1] (array or tensor).

    ``chunk`` clips go through the encoder at once, on the GPU when there is one (the SD VAE at 224 px is
    slow on CPU); the encoder is moved back where it was afterwards.
    """
    home = next(encoder.parameters()).device
    device = torch.device("cuda") if torch.cuda.is_available() else home
    encoder.to(device)
    try:
        out = []
        for start in range(0, len(frames), chunk):
            clips = torch.as_tensor(np.asarray(frames[start : start + chunk], np.float32)).to(device)
            out.append(encoder.encode(clips.flatten(0, 1)).unflatten(0, clips.shape[:2]).cpu())
    finally:
        encoder.to(home)
    if not out:
        return torch.empty(0, dtype=torch.float32)
    return torch.cat(out)
