r"""The world's video stage of NeuroClips: a frame autoencoder and a conditional frame generator, shipped.

Not published models: the embedded world's stand-ins for what NeuroClips (Gong et al., NeurIPS 2024, arXiv
2410.19452; methods.md §2) takes off the shelf, trained on fresh world movies by
:mod:`brainbench.generators.train_video` and shipped like the world CLIP (safetensors fp16 + ``card.json``
with sha256, command and held-out numbers):

``assets/world-video-ae/``
    :class:`FrameAutoencoder`, the world's SD-VAE: a 64 px frame <-> a ``(4, 8, 8)`` latent (factor 8, as
    SD's 224 px <-> 4x28x28), normalised per channel (the role of SD's 0.18215). The perception
    reconstructor regresses these latents (paper Eq. 1) and the generator works in them.
``assets/world-video-generator/``
    :class:`WorldVideoModel`: a keyframe head (world-CLIP tokens ``(65, 128)`` -> keyframe latent; the
    world's unCLIP), a :class:`FrameGenerator` (the world's AnimateDiff + SparseCtrl) and a
    :class:`SameShotClassifier` (the shallow "same class" MLP of multi-fMRI fusion, paper §3.4).

**Generation** (:class:`WorldVideoGenerator`, kind ``world-video``, ``output = "frames"``): a deterministic
conditional decoder replaces diffusion. From the blurry video's latents ``z_b`` (the perception
reconstructor's prediction), the α guidance of paper Eq. 5 (strength ``ϑ``, 0.3) becomes the noise level of
the init: ``z_init = sqrt(1-ϑ) z_b + sqrt(ϑ) ε`` (ε seeded); the generator maps ``z_init`` in **one
x0-prediction step** to clean latents, conditioned on the keyframe latent, injected on frame 0 only
(SparseCtrl's sparse condition: condition channels + a mask that is 1 on that frame), and on the caption
embedding (FiLM), with ``ϑ`` given as an input. It was trained on exactly this corruption, so ``ϑ = 1`` (no
blurry video) is generation from keyframe and caption alone. This is the paper's partial-trajectory form
(Eq. 5) collapsed to one step, not the released code's (noise at the first DDIM timestep, then all 25 steps).
Keyframe information reaches frames other than frame 0 only through the temporal attention layers
(``E = η E + (1 - η) Attn(E)``, paper §3.1): with every ``η = 1`` it changes frame 0 alone.

Example:
    >>> ae = FrameAutoencoder()
    >>> ae.encode(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from brainbench.errors import ConfigError, DataFormatError, MissingFileError
from brainbench.generators.base import GenerationContext, ImageGenerator
from brainbench.world.clip import sha256_file

ASSETS_DIR = Path(str(resources.files("brainbench.generators") / "assets"))
AE_NAME = "world-video-ae"
GENERATOR_NAME = "world-video-generator"
WEIGHTS_FILE = "model.safetensors"
TRAIN_COMMAND = "python -m brainbench.generators.train_video --out brainbench/generators/assets"


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


def _load_state(name: str, directory: Path | None, verify: bool) -> tuple[dict[str, Any], dict]:
    directory = directory or asset_dir(name)
    card = load_card(name, directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise MissingFileError(weights, f"train the world video models with `{TRAIN_COMMAND}`")
    if verify and sha256_file(weights) != card["sha256"]:
        raise DataFormatError(weights, "sha256 does not match card.json", f"retrain with `{TRAIN_COMMAND}`")
    return card, {k: v.float() for k, v in load_file(weights).items()}


def load_autoencoder(directory: Path | None = None, verify: bool = True) -> FrameAutoencoder:
    """The shipped frame autoencoder (sha256 checked against its card), frozen, in eval mode."""
    card, state = _load_state(AE_NAME, directory, verify)
    model_cfg = card["model"]
    ae = FrameAutoencoder(model_cfg["image_size"], model_cfg["latent_channels"], tuple(model_cfg["channels"]))
    ae.load_state_dict(state)
    return ae.requires_grad_(False).eval()


def load_video_model(directory: Path | None = None, verify: bool = True) -> WorldVideoModel:
    """The shipped keyframe head + frame generator + fusion classifier, frozen, in eval mode."""
    card, state = _load_state(GENERATOR_NAME, directory, verify)
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


# ---------------------------------------------------------------- the generator backend


def neighbour_rows(stim_ids: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: row ``i`` follows row ``i-1`` in the same movie (CC2017 ids ``movie * 1000 + t``)."""
    ids = np.asarray(stim_ids, dtype=np.int64)
    previous = np.concatenate([[-10], ids[:-1]])
    return (ids - previous == 1) & (ids // 1000 == previous // 1000)


class WorldVideoGenerator(ImageGenerator):
    """NeuroClips' video stage in the world: blurry latents + keyframe tokens + caption -> clips (module doc).

    Inputs: ``blurry`` (frame latents ``(N, F, C, h, w)`` in the shipped autoencoder's normalised space),
    ``keyframe`` (world-CLIP tokens ``(N, 65, 128)``), ``caption`` (a caption embedding ``(N, 128)``).

    Args:
        inputs: generator input -> prediction name.
        autoencoder: the frame autoencoder (decodes latents, encodes tail frames for fusion).
        model: keyframe head, frame generator and fusion classifier.
        image_size: side of the returned frames.
        strength: ϑ, the noise level of the init (paper Eq. 5's strength; 0.3).
        use_keyframe: inject the keyframe on frame ``keyframe_index`` (ablation: ``False``).
        use_blurry: start from the blurry video (ablation: ``False`` = pure noise init, ϑ = 1).
        use_caption: condition on the caption embedding (``False``: a zero caption).
        keyframe_index: the frame the keyframe is injected on (NeuroClips: 0).
        mode: ``generate``, or ``blurry``: return the autoencoder-decoded blurry video itself.
        fusion: multi-fMRI fusion (§3.4): when the classifier says consecutive clips show the same class,
            the previous clip's generated tail frame replaces the next keyframe.
        fusion_threshold: probability above which two keyframes count as the same class.
        stim_ids: the rows' stimulus ids (only fusion needs them, to find consecutive clips).
        seed: seed of the init noise.
        batch_size: clips per batch.
    """

    generator_id = "world-video"
    output = "frames"
    description = "world frame autoencoder + one-step conditional frame generator trained on world movies"

    def __init__(
        self,
        inputs: dict[str, str],
        autoencoder: FrameAutoencoder,
        model: WorldVideoModel,
        image_size: int,
        strength: float = 0.3,
        use_keyframe: bool = True,
        use_blurry: bool = True,
        use_caption: bool = True,
        keyframe_index: int = 0,
        mode: str = "generate",
        fusion: bool = False,
        fusion_threshold: float = 0.5,
        stim_ids: np.ndarray | None = None,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        super().__init__(inputs)
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"world-video strength must be in [0, 1], not {strength}")
        if mode not in ("generate", "blurry"):
            raise ConfigError(f"world-video mode must be 'generate' or 'blurry', not {mode!r}")
        if fusion and stim_ids is None:
            raise ConfigError("world-video fusion needs the rows' stimulus ids")
        self.autoencoder, self.model, self.image_size = autoencoder, model, image_size
        self.strength, self.keyframe_index, self.mode = float(strength), int(keyframe_index), mode
        self.use_keyframe, self.use_blurry, self.use_caption = use_keyframe, use_blurry, use_caption
        self.fusion, self.fusion_threshold, self.stim_ids = fusion, fusion_threshold, stim_ids
        self.seed, self.batch_size = seed, batch_size
        flags = [n for n, on in (("nokey", not use_keyframe), ("noblur", not use_blurry)) if on]
        flags += ["nocap"] if not use_caption else []
        flags += ["fusion"] if fusion else []
        self.full_id = "world-video-blurry" if mode == "blurry" else "-".join(["world-video", *flags])

    @classmethod
    def from_config(
        cls, inputs: dict[str, str], context: GenerationContext, **options: Any
    ) -> WorldVideoGenerator:  # noqa: ANN401
        """Loads the shipped autoencoder and generator; ``options`` are the constructor's keywords."""
        missing = {"blurry", "keyframe", "caption"} - set(inputs)
        if missing:
            raise ConfigError(
                f"world-video needs inputs blurry, keyframe, caption; missing {sorted(missing)} "
                "(e.g. {blurry: frame_latents, keyframe: clip_tokens, caption: clip_text})"
            )
        card = load_card(GENERATOR_NAME)
        if context.backbone_id != card["backbone"]:
            raise ConfigError(
                f"world-video was trained on {card['backbone']} features, not {context.backbone_id}"
            )
        stim_ids = None
        if options.get("fusion"):
            from brainbench.data.shards import iter_split

            samples = iter_split(context.prepared, context.manifest, "test")
            stim_ids = np.unique(np.array([s.stim_id for s in samples], dtype=np.int64))
        return cls(
            inputs,
            load_autoencoder(),
            load_video_model(),
            context.image_size,
            stim_ids=stim_ids,
            seed=context.seed,
            **options,
        )

    def _generate(
        self, blurry: torch.Tensor, keyframe: torch.Tensor, caption: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """One batch: latents -> frames ``(B, F, 3, S, S)`` in [0, 1]."""
        b, f = blurry.shape[:2]
        level = torch.full((b,), self.strength if self.use_blurry else 1.0)
        z_init = (1 - level).sqrt()[:, None, None, None, None] * blurry + level.sqrt()[
            :, None, None, None, None
        ] * noise
        mask = torch.zeros(b, f)
        if self.use_keyframe:
            mask[:, self.keyframe_index] = 1.0
        latents = self.model.frame_generator(z_init, keyframe, mask, caption, level)
        return self.autoencoder.decode(latents.flatten(0, 1)).unflatten(0, (b, f))

    @torch.no_grad()
    def generate(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Clips ``(N, F, image_size, image_size, 3)`` uint8."""
        blurry = torch.as_tensor(conditions["blurry"]).float()
        n, f = blurry.shape[:2]
        if self.mode == "blurry":
            frames = torch.cat(
                [
                    self.autoencoder.decode(blurry[i : i + self.batch_size].flatten(0, 1)).unflatten(
                        0, (-1, f)
                    )
                    for i in range(0, n, self.batch_size)
                ]
            )
            return to_uint8_clips(frames, self.image_size)
        tokens = torch.as_tensor(conditions["keyframe"]).float()
        caption = F.normalize(torch.as_tensor(conditions["caption"]).float(), dim=-1)
        if not self.use_caption:
            caption = torch.zeros_like(caption)
        if not self.use_blurry:
            blurry = torch.zeros_like(blurry)
        noise = torch.randn(blurry.shape, generator=torch.Generator().manual_seed(self.seed))
        keyframes = torch.cat(
            [self.model.keyframe_head(tokens[i : i + self.batch_size]) for i in range(0, n, self.batch_size)]
        )
        frames = torch.cat(
            [
                self._generate(*(x[i : i + self.batch_size] for x in (blurry, keyframes, caption, noise)))
                for i in range(0, n, self.batch_size)
            ]
        )
        if self.fusion and self.use_keyframe:
            frames = self._fuse(frames, blurry, keyframes, caption, noise, tokens[:, 0])
        return to_uint8_clips(frames, self.image_size)

    def _fuse(
        self,
        frames: torch.Tensor,
        blurry: torch.Tensor,
        keyframes: torch.Tensor,
        caption: torch.Tensor,
        noise: torch.Tensor,
        embeddings: torch.Tensor,
    ) -> torch.Tensor:
        """Multi-fMRI fusion (§3.4), in row order: a same-class successor takes the tail frame before it."""
        assert self.stim_ids is not None
        if len(self.stim_ids) != len(frames):
            raise ConfigError(f"fusion: {len(self.stim_ids)} test stimuli but {len(frames)} predictions")
        follows = torch.from_numpy(neighbour_rows(self.stim_ids))
        same = torch.sigmoid(self.model.same_shot(embeddings[:-1], embeddings[1:])) > self.fusion_threshold
        replace = follows & torch.cat([torch.zeros(1, dtype=torch.bool), same])
        self.n_fused = int(replace.sum())
        for i in torch.nonzero(replace).flatten().tolist():
            tail = self.autoencoder.encode(frames[i - 1, -1:])
            frames[i] = self._generate(blurry[i : i + 1], tail, caption[i : i + 1], noise[i : i + 1])[0]
        return frames
