"""open_clip image/text backbones with multi-layer taps, named ``<arch>:<tag>`` as in open_clip.

Ids:
    ``world-clip:v1``                 the shipped world CLIP (always available, sha256-checked);
    ``world-clip:v2``, ``world-clip:v2-mlip``  the shipped world CLIPs v2 (CLIP and MLIP objectives);
    ``ViT-L-14:openai``               an open_clip pretrained tag (needs its weights in the local cache);
    ``ViT-L-14:/path/weights.pt``     an open_clip architecture with a local checkpoint file;
    ``local-dir:/path``               an open_clip local-dir folder (config + weights);
    ``<arch>:random``                 the architecture with random weights (tests of real-scale code paths).

Outputs (:meth:`ImageBackbone.forward_features`), the names the feature cache, methods and evaluator share:
    ``clip_image``   ``(B, D)`` the pooled, projected image embedding (what ``encode_image`` returns);
    ``clip_tokens``  ``(B, T, D)`` ``ln_post`` applied to **all** tokens (CLS first), then ``@ proj`` -- the
                     fine-grained 257x768 target of Lite-Mind and MindEye1 for ViT-L/14 (methods.md §0);
    ``layer:<k>``    ``(B, T, W)`` the residual stream after transformer block ``k`` (1-based).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from brainbench.backbones.world_clip import (
    WORLD_CLIP_ARCH,
    WORLD_CLIP_TAGS,
    create_world_clip,
    load_world_clip_card,
    world_clip_dir,
)
from brainbench.errors import ConfigError, MissingFileError
from brainbench.offline import apply_offline


@dataclass(frozen=True)
class BackboneInfo:
    """Shapes of a backbone's outputs, known without running it."""

    backbone_id: str
    image_size: int
    n_tokens: int
    embed_dim: int
    width: int
    n_layers: int


class ImageBackbone(nn.Module):
    """A frozen open_clip model exposing pooled, all-token and intermediate-layer image features."""

    def __init__(self, model: open_clip.CLIP, backbone_id: str, tokenizer: object | None = None) -> None:
        super().__init__()
        if not hasattr(model.visual, "transformer"):
            raise ConfigError(f"{backbone_id}: only ViT image towers expose tokens; got {type(model.visual)}")
        self.model = model.requires_grad_(False)
        self.backbone_id = backbone_id
        self.tokenizer = tokenizer
        cfg = model.visual.preprocess_cfg
        size = cfg["size"]
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> ImageBackbone:
        """A frozen feature extractor stays in eval mode (no dropout), whatever its parent asks."""
        return super().train(False)

    @property
    def info(self) -> BackboneInfo:
        """Token count, widths and depth of the image tower."""
        visual = self.model.visual
        grid = visual.grid_size
        return BackboneInfo(
            backbone_id=self.backbone_id,
            image_size=self.image_size,
            n_tokens=grid[0] * grid[1] + 1,
            embed_dim=int(visual.output_dim),
            width=int(visual.transformer.width),
            n_layers=len(visual.transformer.resblocks),
        )

    @property
    def cls_token_is_pooled(self) -> bool:
        """Whether ``clip_tokens[:, 0]`` is the pooled ``clip_image`` (open_clip ``pool_type="tok"``)."""
        return self.model.visual.pool_type == "tok"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in [0, 1] -> normalised model input.

        Resizing (bicubic, antialias on) happens only when the image size differs from the model's.
        """
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float() / 255.0
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bicubic",
                antialias=True,
                align_corners=False,
            ).clamp(0, 1)
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward_features(self, images: torch.Tensor, layers: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
        """Image features by name (see the module docstring); ``layers`` are 1-based block indices."""
        visual = self.model.visual
        n_layers = len(visual.transformer.resblocks)
        unknown = [k for k in layers if not 1 <= k <= n_layers]
        if unknown:
            raise ConfigError(
                f"{self.backbone_id} has blocks 1..{n_layers}; layer:{unknown[0]} does not exist"
            )
        x = visual._embeds(self.preprocess(images))
        seq_first = not getattr(visual.transformer, "batch_first", True)
        out: dict[str, torch.Tensor] = {}
        wanted = set(layers)
        x = x.transpose(0, 1) if seq_first else x
        for k, block in enumerate(visual.transformer.resblocks, start=1):
            x = block(x)
            if k in wanted:
                out[f"layer:{k}"] = x.transpose(0, 1) if seq_first else x
        x = x.transpose(0, 1) if seq_first else x
        tokens = visual.ln_post(x)
        pooled = tokens[:, 0] if visual.pool_type == "tok" else tokens[:, 1:].mean(dim=1)
        out["clip_tokens"] = tokens @ visual.proj
        out["clip_image"] = pooled @ visual.proj
        return out

    @torch.no_grad()
    def encode_text(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        """Projected text embeddings ``(len(texts), D)`` (not normalised)."""
        if self.tokenizer is None:
            raise ConfigError(f"{self.backbone_id} has no tokenizer")
        chunks = [
            self.model.encode_text(self.tokenizer(texts[i : i + batch_size]))
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(chunks)


def _missing_weights_error(backbone_id: str, cause: Exception) -> MissingFileError:
    arch = backbone_id.split(":")[0]
    return MissingFileError(
        backbone_id,
        "its weights are not on this machine and cannot be downloaded here. Put them in the open_clip/HF "
        f"cache, or pass a local file: --backbone {arch}:/path/to/open_clip_model.safetensors "
        f"(or local-dir:/path). Cause: {type(cause).__name__}: {str(cause)[:200]}",
    )


def _shipped_world_clip_tag(backbone_id: str) -> str | None:
    arch, _, tag = backbone_id.partition(":")
    return tag if arch == WORLD_CLIP_ARCH and tag in WORLD_CLIP_TAGS else None


def weights_sha256(backbone_id: str) -> str | None:
    """The sha256 of a shipped world CLIP's weights, from its card (no model load); ``None`` for other ids.

    Feature caches record it, so that weights replaced under the same id never reuse stale features.
    """
    tag = _shipped_world_clip_tag(backbone_id)
    return None if tag is None else load_world_clip_card(world_clip_dir(tag)).get("sha256")


def load_backbone(backbone_id: str) -> ImageBackbone:
    """Builds the backbone named ``backbone_id`` (see the module docstring for the grammar)."""
    tag = _shipped_world_clip_tag(backbone_id)
    if tag is not None:
        model = create_world_clip(world_clip_dir(tag))
        return ImageBackbone(model, backbone_id, open_clip.get_tokenizer(WORLD_CLIP_ARCH))
    if backbone_id.startswith("local-dir:"):
        path = backbone_id.removeprefix("local-dir:")
        if not Path(path).is_dir():
            raise MissingFileError(
                path, "pass an open_clip local-dir folder (open_clip_config.json + weights)"
            )
        model = open_clip.create_model(backbone_id)
        return ImageBackbone(model, backbone_id, open_clip.get_tokenizer(backbone_id))
    if ":" not in backbone_id:
        raise ConfigError(f"backbone id {backbone_id!r} must look like <arch>:<tag>, e.g. ViT-L-14:openai")
    arch, tag = backbone_id.split(":", 1)
    if arch == WORLD_CLIP_ARCH:
        from brainbench.backbones.world_clip import register_world_clip

        register_world_clip()
    if arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture {arch!r} in {backbone_id!r}")
    if tag == "random":
        model = open_clip.create_model(arch)
    elif os.sep in tag or tag.endswith((".pt", ".pth", ".bin", ".safetensors")):
        if not Path(tag).is_file():
            raise MissingFileError(tag, f"pass an existing checkpoint file for {arch}")
        model = open_clip.create_model(arch, pretrained=tag)
    else:
        if tag not in open_clip.list_pretrained_tags_by_model(arch):
            raise ConfigError(
                f"{arch} has no pretrained tag {tag!r}; "
                f"known: {open_clip.list_pretrained_tags_by_model(arch)}"
            )
        apply_offline()  # BRAINBENCH_OFFLINE (default on): local caches only
        try:
            model = open_clip.create_model(arch, pretrained=tag)
        except Exception as error:  # open_clip raises RuntimeError/OSError/HF errors when offline
            raise _missing_weights_error(backbone_id, error) from error
    return ImageBackbone(model, backbone_id, open_clip.get_tokenizer(arch))
