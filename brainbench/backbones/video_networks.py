"""Video-metric networks: frame/clip classifiers and embedders, behind four small protocols.

N-way classification (MinD-Video, metrics.md §3.2) needs a :class:`FrameClassifier` or
:class:`VideoClassifier`; CLIP-pcc (§3.3) a :class:`FrameEmbedder`, and its Mind-Animator gate a
:class:`VideoEmbedder`. Two kinds of registry entry (:mod:`brainbench.backbones.networks`) build them:

- :class:`OpenClipNetwork`: an open_clip backbone (``world-clip:v1``, ``ViT-B-32:openai``, ``<arch>:random``)
  as frame/clip embedder and, when the entry names its classes, a zero-shot classifier. ``world-clip:v1``'s
  classes are the world's 57 object categories (the label set it was trained on), named by the entry;
  the evaluator never learns where they come from.
- :class:`HFNetwork`: a paper's Hugging Face classifier (``vit-imagenet``, ``videomae-kinetics``), buildable
  only when ``transformers`` is installed and the checkpoint is in the local cache (never downloaded).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from torch import Tensor

from brainbench.errors import ConfigError, MissingFileError
from brainbench.registry import import_target

if TYPE_CHECKING:
    from brainbench.backbones.openclip import ImageBackbone

WORLD_CLIP_ID = "world-clip:v1"
WORLD_PROMPT = "a photo of a {}."


@runtime_checkable
class FrameClassifier(Protocol):
    """Logits ``(B, C)`` of uint8 frames ``(B, H, W, 3)``."""

    def frame_logits(self, frames: Tensor) -> Tensor:  # noqa: D102
        ...


@runtime_checkable
class VideoClassifier(Protocol):
    """Logits ``(B, C)`` of uint8 clips ``(B, F, H, W, 3)``."""

    def video_logits(self, clips: Tensor) -> Tensor:  # noqa: D102
        ...


@runtime_checkable
class FrameEmbedder(Protocol):
    """Image embeddings ``(B, D)`` of uint8 frames ``(B, H, W, 3)`` (CLIP-pcc)."""

    def frame_embeddings(self, frames: Tensor) -> Tensor:  # noqa: D102
        ...


@runtime_checkable
class VideoEmbedder(Protocol):
    """Unit video embeddings ``(B, D)`` of uint8 clips ``(B, F, H, W, 3)`` (the CLIP-pcc gate)."""

    def video_embeddings(self, clips: Tensor) -> Tensor:  # noqa: D102
        ...


class ClipVideoNetwork:
    """An open_clip backbone as frame/video embedder and, given class names, a zero-shot classifier.

    Frame embedding: the unit ``clip_image`` of each frame; video embedding: the unit mean of the unit frame
    embeddings; logits: ``logit_scale · cos(embedding, prompt embedding)`` for each class prompt.

    Args:
        backbone: an :class:`~brainbench.backbones.openclip.ImageBackbone` (e.g. ``load_backbone(id)``).
        class_names: classes of the zero-shot head, e.g. the 57 world categories; ``None`` embeds only.
        prompt: template filled with each class name.
    """

    def __init__(
        self, backbone: ImageBackbone, class_names: Sequence[str] | None = None, prompt: str = WORLD_PROMPT
    ) -> None:
        self.backbone = backbone
        self.network_id = str(backbone.backbone_id)
        self.device = next(backbone.parameters()).device
        self.class_names = tuple(class_names or ())
        self.logit_scale = float(backbone.model.logit_scale.exp())
        self.text = (
            F.normalize(
                backbone.encode_text([prompt.format(c) for c in self.class_names]).float(), dim=-1
            ).cpu()
            if self.class_names
            else None
        )

    def frame_embeddings(self, frames: Tensor) -> Tensor:
        """Unit image embeddings ``(B, D)`` float32."""
        features = self.backbone.forward_features(frames.to(self.device))["clip_image"]
        return F.normalize(features.float(), dim=-1).cpu()

    @staticmethod
    def pool_frames(frame_embeddings: Tensor) -> Tensor:
        """Unit mean ``(B, D)`` of unit frame embeddings ``(B, F, D)``: the clip embedding."""
        return F.normalize(F.normalize(frame_embeddings, dim=-1).mean(dim=1), dim=-1)

    def video_embeddings(self, clips: Tensor) -> Tensor:
        """Clip embeddings ``(B, D)`` of uint8 clips ``(B, F, H, W, 3)``."""
        frames = self.frame_embeddings(clips.reshape(-1, *clips.shape[2:]))
        return self.pool_frames(frames.reshape(*clips.shape[:2], -1))

    def classify(self, embeddings: Tensor) -> Tensor:
        """Zero-shot logits ``(B, C)`` of unit embeddings ``(B, D)``."""
        if self.text is None:
            raise ConfigError(f"{self.network_id} was built without class names\n  fix: pass class_names")
        return self.logit_scale * embeddings @ self.text.T

    def frame_logits(self, frames: Tensor) -> Tensor:
        """Zero-shot logits ``(B, C)`` of single frames."""
        return self.classify(self.frame_embeddings(frames))

    def video_logits(self, clips: Tensor) -> Tensor:
        """Zero-shot logits ``(B, C)`` of the frame-averaged clip embedding."""
        return self.classify(self.video_embeddings(clips))


class HFFrameClassifier:
    """A Hugging Face image classifier (``processor(images=[HWC uint8, ...])`` then ``model(...).logits``)."""

    def __init__(self, processor: Callable[..., Mapping[str, Tensor]], model: Callable[..., object]) -> None:
        self.processor, self.model = processor, model

    @torch.no_grad()
    def frame_logits(self, frames: Tensor) -> Tensor:
        """Logits ``(B, C)`` float32; the processor resizes and normalises as the checkpoint expects."""
        inputs = self.processor(images=list(frames.cpu().numpy()), return_tensors="pt")
        device = getattr(self.model, "device", "cpu")
        return self.model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()


class HFVideoClassifier:
    """A Hugging Face video classifier built per frame count (VideoMAE takes ``num_frames`` = ``F``)."""

    def __init__(
        self, processor: Callable[..., Mapping[str, Tensor]], build: Callable[[int], Callable[..., object]]
    ) -> None:
        self.processor, self.build = processor, build
        self.models: dict[int, Callable[..., object]] = {}

    @torch.no_grad()
    def video_logits(self, clips: Tensor) -> Tensor:
        """Logits ``(B, C)`` float32 of whole clips."""
        if clips.shape[1] not in self.models:
            self.models[clips.shape[1]] = self.build(clips.shape[1])
        model = self.models[clips.shape[1]]
        inputs = self.processor([list(clip) for clip in clips.cpu().numpy()], return_tensors="pt")
        device = getattr(model, "device", "cpu")
        return model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()


@dataclass(frozen=True)
class HFNetwork:
    """A network a paper used, registered by id; buildable only when its weights are on this machine.

    Attributes:
        network_id: registry id (the column's ``<network>``).
        repo: Hugging Face repository (or the checkpoint name, for a network with no loader).
        processor: ``transformers`` processor class name ("" when no loader exists).
        model: ``transformers`` model class name ("" when no loader exists).
        used_by: which paper column it reproduces.
    """

    network_id: str
    repo: str
    processor: str
    model: str
    used_by: str

    def availability(self) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, what is missing)``; never touches the network."""
        if not self.model:
            return False, f"{self.used_by}; the column is reported absent"
        missing = [] if importlib.util.find_spec("transformers") else ["the transformers package"]
        weights = ("model.safetensors", "pytorch_model.bin")
        if not all(
            any(isinstance(try_to_load_from_cache(self.repo, name), str) for name in names)
            for names in (("config.json",), weights)
        ):
            missing.append(f"{self.repo} in the Hugging Face cache")
        if missing:
            return False, f"{self.used_by} needs {' and '.join(missing)}; install / copy them to this machine"
        return True, ""

    def build(self, device: str = "cpu") -> HFFrameClassifier | HFVideoClassifier:
        """The classifier, loaded from the local cache only.

        Raises:
            MissingFileError: when :meth:`availability` says it is absent.
        """
        available, reason = self.availability()
        if not available:
            raise MissingFileError(self.network_id, reason)
        import transformers

        processor = getattr(transformers, self.processor).from_pretrained(self.repo, local_files_only=True)
        model_class = getattr(transformers, self.model)

        def build(n_frames: int | None = None) -> Callable[..., object]:
            extra = {} if n_frames is None else {"num_frames": n_frames}
            return model_class.from_pretrained(self.repo, local_files_only=True, **extra).to(device).eval()

        if "Video" in self.model:
            return HFVideoClassifier(processor, build)
        return HFFrameClassifier(processor, build())


def _open_clip_weights_cached(network_id: str) -> bool:
    import open_clip

    arch, tag = network_id.split(":", 1)
    if os.sep in tag:
        return os.path.isfile(tag)
    try:
        hub = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "")
    except Exception:  # unknown architecture or tag
        return False
    repo, filename = os.path.split(hub)  # open_clip: 'org/model/' (default file name) or 'org/model/file'
    names = {filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors"}
    return bool(repo) and any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


@dataclass(frozen=True)
class OpenClipNetwork:
    """An open_clip backbone ``<arch>:<tag>`` (see :mod:`brainbench.backbones.openclip`) as a network.

    Attributes:
        network_id: the backbone id, e.g. ``world-clip:v1`` or ``ViT-B-32:openai``.
        class_names: ``"module:attribute"`` of the class names of its zero-shot head, or ``""`` for an
            embedder only.
        prompt: template filled with each class name.
    """

    network_id: str
    class_names: str = ""
    prompt: str = WORLD_PROMPT

    def availability(self) -> tuple[bool, str]:
        """``world-clip:v1``, ``local-dir:`` and ``:random`` ids always; a pretrained tag when cached."""
        network_id = self.network_id
        if (
            network_id == WORLD_CLIP_ID
            or network_id.startswith("local-dir:")
            or network_id.endswith(":random")
        ):
            return True, ""
        if ":" in network_id and _open_clip_weights_cached(network_id):
            return True, ""
        return False, (
            "open_clip weights not in the Hugging Face cache (no download is attempted); copy the cache of a "
            "machine that ran open_clip.create_model with this tag, or name a local file <arch>:/path"
        )

    def build_backbone(self) -> ImageBackbone:
        """The open_clip image/text backbone (text tower included).

        Raises:
            MissingFileError: when :meth:`availability` says it is absent.
        """
        available, reason = self.availability()
        if not available:
            raise MissingFileError(self.network_id, reason)
        from brainbench.backbones.openclip import load_backbone

        return load_backbone(self.network_id)

    def build(self, device: str = "cpu") -> ClipVideoNetwork:
        """Frame/clip embedder, and zero-shot classifier when the entry names its classes."""
        names = tuple(import_target(self.class_names)) if self.class_names else None  # type: ignore[call-overload]
        return ClipVideoNetwork(self.build_backbone().to(device), names, self.prompt)
