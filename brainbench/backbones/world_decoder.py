"""The world decoder: a small conv net from world-CLIP features to 64 px world images, shipped per input set.

Not a published model: it is the embedded world's stand-in for the low-level pathway of brain decoders that
turn predicted embeddings into pixels (MindEye's low-level VAE branch, Scotti et al. 2023, arXiv 2305.18274
§2.3; Brain-Diffuser's VDVAE stage, Ozcelik & VanRullen 2023, arXiv 2303.05334 §2.2), trained on fresh world
scenes by ``brainbench world train-decoder`` (:mod:`brainbench.world.train_world_decoder`) and shipped
like the world CLIP: ``brainbench/generators/assets/world-decoder-<variant>/`` holds ``decoder.safetensors``
(float16) and ``card.json`` (architecture, sha256, training command, held-out PixCorr / SSIM from true
features). The generator backend that runs it is
:class:`brainbench.generators.world_decoder.WorldDecoderGenerator`.

Inputs (generator input names of the shared contract; shapes for ``world-clip:v1``):

================= ============== ===============================================================
name              shape          content
================= ============== ===============================================================
``clip_image``    ``(128,)``     pooled, projected image embedding
``clip_text``     ``(128,)``     normalised mean caption embedding (:mod:`brainbench.data.text_features`)
``detail``        ``(65, 192)``  mean of the ``layer:2`` and ``layer:3`` residual tokens (CLS first)
``clip_tokens``   ``(65, 128)``  final projected tokens (CLS first)
================= ============== ===============================================================

Variants (one checkpoint each): ``image`` = {clip_image}, ``image+text`` = {clip_image, clip_text},
``image+detail`` = {clip_image, detail}, ``tokens`` = {clip_tokens}.

Architecture: every vector input is **L2-normalised** and every token grid is **LayerNorm-ed per token**
before use, so predictions of any scale (ridge shrinks, contrastive heads do not care about norm) decode
alike. The vectors, plus the CLS token of each grid, are concatenated and mapped by a linear layer to a
4x4 feature map; the 64 patch tokens of each grid become an 8x8 map (row-major patch order, as the ViT
flattens them) that a 1x1 conv projects and concatenates into the decoder at 8x8 (nearest-upsampled from
4x4). After a fusing conv and a residual conv at 8x8, two sub-pixel stages (1x1 conv + PixelShuffle, Shi et
al. 2016, arXiv 1609.05158, then a 3x3 conv) reach 16 and 32 px and a PixelShuffle head 64 px; GroupNorm
and SiLU throughout, a sigmoid gives RGB in [0, 1]. Sub-pixel stages keep the 3x3 convs off the 64 px grid,
which on 2 shared CPU cores made training 3x cheaper than nearest-upsampling stages of equal width.

Example:
    >>> decoder = WorldDecoder({"clip_image": (128,)})
    >>> decoder({"clip_image": torch.randn(2, 128)}).shape
    torch.Size([2, 3, 64, 64])
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

from brainbench.backbones.world_clip import WORLD_CLIP_ARCH, WORLD_CLIP_TAG, verified_weights
from brainbench.errors import ConfigError, MissingFileError

WORLD_BACKBONE = f"{WORLD_CLIP_ARCH}:{WORLD_CLIP_TAG}"
VARIANTS: dict[str, tuple[str, ...]] = {
    "image": ("clip_image",),
    "image+text": ("clip_image", "clip_text"),
    "image+detail": ("clip_image", "detail"),
    "tokens": ("clip_tokens",),
}
VECTOR_INPUTS = ("clip_image", "clip_text")
GRID_INPUTS = ("detail", "clip_tokens")
DETAIL_LAYERS = (2, 3)
#: the shipped decoders (they stay under ``generators/assets``; read by path, nothing imported)
ASSETS_DIR = Path(str(resources.files("brainbench"))) / "generators" / "assets"
WEIGHTS_FILE = "decoder.safetensors"
CHANNELS = (96, 160, 64, 32)  # at 4, 8, 16 and 32 px


def train_command(variant: str) -> str:
    """The command that trains (and ships) the decoder ``variant``."""
    return f"brainbench world train-decoder --inputs {variant} --out {decoder_dir(variant, relative=True)}"


def decoder_dir(variant: str, relative: bool = False) -> Path:
    """Folder of a shipped variant (``brainbench/generators/assets/world-decoder-<variant>``)."""
    name = f"world-decoder-{variant}"
    return Path("brainbench/generators/assets") / name if relative else ASSETS_DIR / name


def list_variants() -> list[str]:
    """Variants whose checkpoint is shipped (a folder with ``card.json`` under ``assets/``)."""
    return [v for v in VARIANTS if (decoder_dir(v) / "card.json").is_file()]


def detail_from_layers(layer_2: torch.Tensor, layer_3: torch.Tensor) -> torch.Tensor:
    """The ``detail`` input: mean of the ``layer:2`` and ``layer:3`` tokens ``(N, T, width)``."""
    return 0.5 * (layer_2.float() + layer_3.float())


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv, GroupNorm, SiLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


def _subpixel_up(c_in: int, c_out: int) -> nn.Sequential:
    """x2 upsampling: a 1x1 conv to ``4 * c_out`` channels, PixelShuffle, then a 3x3 conv."""
    return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 1), nn.PixelShuffle(2), _conv(c_out, c_out))


class WorldDecoder(nn.Module):
    """Conditions (named tensors, see the module docstring) -> images ``(B, 3, 64, 64)`` in [0, 1].

    Args:
        input_shapes: per input name its per-sample shape: ``(D,)`` for a vector input, ``(T, W)`` for a
            token grid whose first token is CLS and whose ``T - 1`` patch tokens form the 8x8 grid.
        channels: feature channels at 4, 8, 16 and 32 px (64 px comes from a sub-pixel head).
        grid_channels: channels each token grid is projected to before it joins the 8x8 map.
    """

    def __init__(
        self,
        input_shapes: dict[str, tuple[int, ...]],
        channels: tuple[int, ...] = CHANNELS,
        grid_channels: int = 64,
    ) -> None:
        super().__init__()
        unknown = sorted(set(input_shapes) - set(VECTOR_INPUTS) - set(GRID_INPUTS))
        if unknown or not input_shapes:
            raise ConfigError(
                f"world decoder inputs must be among {VECTOR_INPUTS + GRID_INPUTS}, "
                f"got {sorted(input_shapes)}"
            )
        if len(channels) != 4:
            raise ConfigError(f"channels are given at 4, 8, 16 and 32 px; got {channels}")
        self.input_shapes = {k: tuple(int(s) for s in v) for k, v in sorted(input_shapes.items())}
        self.vector_names = [n for n in self.input_shapes if n in VECTOR_INPUTS]
        self.grid_names = [n for n in self.input_shapes if n in GRID_INPUTS]
        for name in self.grid_names:
            if self.input_shapes[name][0] != 65:
                raise ConfigError(
                    f"{name}: {self.input_shapes[name][0]} tokens are not CLS + the 8x8 patch grid "
                    "the decoder expects"
                )
        self.channels = tuple(channels)
        c4, c8, c16, c32 = channels
        vec_dim = sum(self.input_shapes[n][-1] for n in self.vector_names)
        vec_dim += sum(self.input_shapes[n][-1] for n in self.grid_names)  # their CLS tokens
        self.grid_norms = nn.ModuleDict({n: nn.LayerNorm(self.input_shapes[n][-1]) for n in self.grid_names})
        self.grid_proj = nn.ModuleDict(
            {n: nn.Conv2d(self.input_shapes[n][-1], grid_channels, 1) for n in self.grid_names}
        )
        self.stem = nn.Linear(vec_dim, c4 * 16)
        self.to_8 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(c4, c8))
        self.fuse = _conv(c8 + grid_channels * len(self.grid_names), c8)
        self.trunk = _conv(c8, c8)
        self.to_16 = _subpixel_up(c8, c16)
        self.to_32 = _subpixel_up(c16, c32)
        self.head = nn.Sequential(nn.Conv2d(c32, 12, 3, padding=1), nn.PixelShuffle(2))

    def normalise(self, conditions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L2-normalised vectors (+ each grid's LayerNorm-ed CLS) concatenated, and LayerNorm-ed grids."""
        missing = [n for n in self.input_shapes if n not in conditions]
        if missing:
            raise ConfigError(f"world decoder needs inputs {missing}; got {sorted(conditions)}")
        vectors, grids = [], {}
        for name in self.vector_names:
            value = conditions[name].float()
            if tuple(value.shape[1:]) != self.input_shapes[name]:
                raise ConfigError(
                    f"{name}: expected per-sample shape {self.input_shapes[name]}, "
                    f"got {tuple(value.shape[1:])}"
                )
            vectors.append(F.normalize(value, dim=-1))
        for name in self.grid_names:
            value = conditions[name].float()
            if tuple(value.shape[1:]) != self.input_shapes[name]:
                raise ConfigError(
                    f"{name}: expected per-sample shape {self.input_shapes[name]}, "
                    f"got {tuple(value.shape[1:])}"
                )
            tokens = self.grid_norms[name](value)
            vectors.append(tokens[:, 0])
            grids[name] = tokens[:, 1:]
        return torch.cat(vectors, dim=1), grids

    def forward(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images ``(B, 3, 64, 64)`` in [0, 1]."""
        vector, grids = self.normalise(conditions)
        x = self.stem(vector).view(vector.shape[0], self.channels[0], 4, 4)
        x = self.to_8(x)
        maps = [x]
        for name in self.grid_names:
            patches = grids[name]  # (B, 64, W), row-major over the 8x8 patch grid
            grid = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], 8, 8)
            maps.append(self.grid_proj[name](grid))
        x = self.fuse(torch.cat(maps, dim=1))
        x = x + self.trunk(x)
        return torch.sigmoid(self.head(self.to_32(self.to_16(x))))


def load_card(variant: str, directory: Path | None = None) -> dict[str, Any]:
    """The ``card.json`` of a decoder folder."""
    directory = directory or decoder_dir(variant)
    card_path = directory / "card.json"
    if not card_path.is_file():
        raise MissingFileError(card_path, f"train the decoder with `{train_command(variant)}`")
    return json.loads(card_path.read_text())


def load_world_decoder(variant: str, directory: Path | None = None, verify: bool = True) -> WorldDecoder:
    """Builds a trained decoder from its folder (sha256 of the weights checked against ``card.json``)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown world decoder variant {variant!r}; variants: {', '.join(VARIANTS)}")
    directory = directory or decoder_dir(variant)
    card = load_card(variant, directory)
    expected = card["sha256"] if verify else None
    weights = verified_weights(directory / WEIGHTS_FILE, expected, train_command(variant))
    model_cfg = card["model"]
    decoder = WorldDecoder(
        {k: tuple(v) for k, v in model_cfg["input_shapes"].items()},
        channels=tuple(model_cfg["channels"]),
        grid_channels=int(model_cfg["grid_channels"]),
    )
    state = {k: v.float() for k, v in load_file(weights).items()}
    decoder.load_state_dict(state)
    return decoder.eval()


def to_uint8_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float ``(N, 3, S, S)`` in [0, 1] -> uint8 ``(N, size, size, 3)`` (bilinear resize, antialiased)."""
    if images.shape[-1] != size:
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def world_features(
    backbone: Any,  # noqa: ANN401  (brainbench.backbones.openclip.ImageBackbone; imported lazily)
    images: np.ndarray,
    captions: list[list[str]] | None = None,
    names: tuple[str, ...] = ("clip_image", "clip_text", "detail", "clip_tokens"),
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Decoder inputs of uint8 ``(N, 64, 64, 3)`` images computed with the backbone (float32, CPU).

    ``clip_text`` needs ``captions`` (one list per image) and follows
    :func:`brainbench.data.text_features.text_features`.
    """
    from brainbench.metrics.text_retrieval import caption_embeddings

    layers = DETAIL_LAYERS if "detail" in names else ()
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names if n != "clip_text"}
    for start in range(0, len(images), batch_size):
        out = backbone.forward_features(torch.from_numpy(images[start : start + batch_size]), layers=layers)
        if "detail" in names:
            out["detail"] = detail_from_layers(out["layer:2"], out["layer:3"])
        for n in chunks:
            chunks[n].append(out[n].float())
    result = {n: torch.cat(c) for n, c in chunks.items()}
    if "clip_text" in names:
        if captions is None:
            raise ValueError("clip_text needs the images' captions")
        counts = torch.tensor([len(c) for c in captions])
        owners = torch.repeat_interleave(torch.arange(len(captions)), counts)
        embedded = backbone.encode_text([c for caps in captions for c in caps]).float()
        result["clip_text"] = caption_embeddings(embedded, owners, len(captions))
    return result
