r"""The world's video stage of NeuroClips: a frame autoencoder and a conditional frame generator, shipped.

Not published models: the embedded world's stand-ins for what NeuroClips (Gong et al., NeurIPS 2024, arXiv
2410.19452; methods.md §2) takes off the shelf, trained on fresh world movies by
:mod:`brainbench.world.train_video` and shipped like the world CLIP (safetensors fp16 + ``card.json``
with sha256, command and held-out numbers); the networks live in :mod:`brainbench.backbones.frame_autoencoder`
and :mod:`brainbench.backbones.world_video`, this module runs them:

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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from brainbench.backbones.frame_autoencoder import (
    FrameAutoencoder,
    load_autoencoder,
    load_card,
)
from brainbench.backbones.world_video import (
    GENERATOR_NAME,
    WorldVideoModel,
    load_video_model,
    to_uint8_clips,
)
from brainbench.errors import ConfigError
from brainbench.generators.base import GenerationContext, ImageGenerator

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
