"""Latent-diffusion generators conditioned on predicted CLIP embeddings, built from diffusers components.

Three backends, each the one a published decoder used:

* :class:`UnCLIPGenerator` -- Stable unCLIP image variation (``stabilityai/stable-diffusion-2-1-unclip-small``
  on a 768-d CLIP ViT-L/14 image embedding); MindEye2 (Scotti et al. 2024, arXiv 2403.11207 §2.5) decodes
  with an SDXL unCLIP of its own, SD-2.1 unCLIP is the counterpart diffusers ships.
* :class:`VersatileDiffusionGenerator` -- Versatile Diffusion (Xu et al. 2023, arXiv 2211.08332) image
  variation on 257x768 CLIP image tokens, optionally dual-guided with 77x768 text tokens (Brain-Diffuser,
  Ozcelik & VanRullen 2023, arXiv 2303.05334 §2.3, text-to-image strength 0.4 there).
* :class:`Img2ImgGenerator` -- Stable Diffusion img2img (Takagi & Nishimoto 2023, CVPR, DOI
  10.1109/CVPR52729.2023.01389): an init image (another generator's output, e.g. the world decoder's or
  retrieval's, or a method's blurry ``lowlevel`` prediction) noised to ``strength`` and denoised under text
  conditioning.

Why components and not the pipeline classes: the diffusers pipelines encode images and prompts with their
own (transformers) encoders, while a brain decoder supplies the embeddings itself. So the generators load the
UNet, VAE and schedulers with ``from_pretrained(..., local_files_only=True)`` and run the pipelines' sampling
loop (classifier-free guidance ``ε = ε_u + s (ε_c - ε_u)``, scheduler steps, ``vae.decode(z / scaling)``)
on the predicted embeddings. The fixed conditioning that needs a text or image encoder (the empty prompt's
hidden states, VD's blank-image embedding) is computed once with transformers when it is installed, or read
from a ``conditioning.safetensors`` file (keys ``prompt_embeds``, ``negative_prompt_embeds``,
``negative_image_embeds``, each ``(1, L, C)``). Nothing is ever downloaded: absent weights raise
:class:`~brainbench.errors.MissingFileError` naming the model id, the expected path and the fetch command.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from brainbench.backbones.sd_vae import resolve_model_dir
from brainbench.errors import ConfigError, MissingFileError, require_extra
from brainbench.generators.base import GenerationContext, ImageGenerator

UNCLIP_MODEL = "stabilityai/stable-diffusion-2-1-unclip-small"
VD_MODEL = "shi-labs/versatile-diffusion"
SD_MODEL = "CompVis/stable-diffusion-v1-4"
CONDITIONING_FILE = "conditioning.safetensors"


Parts = dict[str, Any]
"""diffusers components by role: ``unet``, ``vae``, ``scheduler`` and the backend's extras."""


def _import(path: str) -> Any:  # noqa: ANN401 (a class)
    import importlib

    module, _, name = path.partition(":")
    if module.split(".")[0] in ("diffusers", "transformers"):
        require_extra(module.split(".")[0], "diffusion", f"loading {name}")
    return getattr(importlib.import_module(module), name)


def load_parts(folder: Path, components: dict[str, tuple[str, str]]) -> Parts:
    """``{role: (subfolder, "module:Class")}`` -> components, ``from_pretrained(local_files_only=True)``."""
    parts = {}
    for role, (subfolder, class_path) in components.items():
        if not (folder / subfolder).is_dir():
            raise MissingFileError(folder / subfolder, f"{folder} is not a complete diffusers folder")
        parts[role] = _import(class_path).from_pretrained(folder, subfolder=subfolder, local_files_only=True)
    return parts


def load_conditioning(folder: Path, names: tuple[str, ...], encode: Any) -> dict[str, torch.Tensor]:  # noqa: ANN401
    """Fixed conditioning from ``folder/conditioning.safetensors``, else ``encode()`` (needs transformers)."""
    path = folder / CONDITIONING_FILE
    if path.is_file():
        from safetensors.torch import load_file

        stored = load_file(path)
        if missing := [n for n in names if n not in stored]:
            raise ConfigError(f"{path} lacks {missing}; it holds {sorted(stored)}")
        return {n: stored[n].float() for n in names}
    try:
        import transformers  # noqa: F401
    except ImportError as error:
        raise ConfigError(
            f"{folder}: the fixed conditioning {list(names)} needs the model's own encoders (the "
            f"transformers package, not installed) or a {CONDITIONING_FILE} file in that folder holding "
            "them (write it once where transformers is installed: pip install 'brainbench[diffusion]')"
        ) from error
    return {n: v for n, v in encode().items() if n in names}


def _text_states(folder: Path, prompts: list[str], projected: bool = False) -> torch.Tensor:
    """The folder's CLIP text encoder on ``prompts`` (VD: projected and divided by the pooled norm)."""
    import transformers

    tokenizer = transformers.CLIPTokenizer.from_pretrained(
        folder, subfolder="tokenizer", local_files_only=True
    )
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    ids = torch.tensor(ids.input_ids)
    cls = transformers.CLIPTextModelWithProjection if projected else transformers.CLIPTextModel
    encoder = cls.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    with torch.no_grad():
        out = encoder(ids)
        if not projected:
            return out.last_hidden_state.float()
        embeds = encoder.text_projection(out.last_hidden_state)
        return (embeds / out.text_embeds.norm(dim=-1, keepdim=True).unsqueeze(1)).float()


def _prompt_pair(folder: Path, prompt: str = "") -> dict[str, torch.Tensor]:
    states = _text_states(folder, [prompt, ""])
    return {"prompt_embeds": states[:1], "negative_prompt_embeds": states[1:]}


def _vd_null_conditioning(folder: Path) -> dict[str, torch.Tensor]:
    """VD's unconditional embeddings: the image encoder on a grey (0.5) image, the text encoder on ``""``."""
    import transformers

    processor = transformers.CLIPImageProcessor.from_pretrained(
        folder, subfolder="image_feature_extractor", local_files_only=True
    )
    encoder = transformers.CLIPVisionModelWithProjection.from_pretrained(
        folder, subfolder="image_encoder", local_files_only=True
    )
    pixels = processor(images=[np.zeros((512, 512, 3)) + 0.5], return_tensors="pt").pixel_values
    with torch.no_grad():
        hidden = encoder(pixels).last_hidden_state
        embeds = encoder.visual_projection(encoder.vision_model.post_layernorm(hidden))
    return {
        "negative_image_embeds": (embeds / embeds[:, :1].norm(dim=-1, keepdim=True)).float(),
        "negative_prompt_embeds": _text_states(folder, [""], projected=True),
    }


def images_to_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Decoded images in [-1, 1] ``(N, 3, H, W)`` -> uint8 ``(N, size, size, 3)`` (diffusers' postprocess)."""
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def images_to_model_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` or float ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, size, size)`` in [-1, 1]."""
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float() / 255.0
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(
            f"init images must be (N, H, W, 3) uint8 or (N, 3, H, W) float, not {tuple(images.shape)}"
        )
    images = F.interpolate(
        images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return images.clamp(0, 1) * 2 - 1


_SD_PARTS = {
    "unet": ("unet", "diffusers:UNet2DConditionModel"),
    "vae": ("vae", "diffusers:AutoencoderKL"),
    "scheduler": ("scheduler", "diffusers:DDIMScheduler"),
}


class LatentDiffusionGenerator(ImageGenerator):
    """Shared sampling over ``parts`` (UNet, VAE, scheduler): guidance, batches, seeded noise, decoding.

    Args:
        inputs: generator input -> prediction name.
        parts: the diffusers components by role (see each backend's ``components``).
        fixed: the fixed conditioning tensors the backend needs (``(1, L, C)`` each).
        image_size: side of the returned images.
        steps: denoising steps; ``guidance_scale``: classifier-free guidance ``s`` (no guidance at 1).
        batch_size: images denoised at once; ``seed``: batch ``b`` draws its noise from ``(seed, b)``.
        resolution: generation side in pixels (default: the UNet's sample size times the VAE's factor).
    """

    model_id: str = ""
    fixed_names: tuple[str, ...] = ("prompt_embeds", "negative_prompt_embeds")

    def __init__(
        self,
        inputs: dict[str, str],
        parts: Parts,
        fixed: dict[str, torch.Tensor],
        image_size: int,
        steps: int = 30,
        guidance_scale: float = 7.5,
        batch_size: int = 4,
        seed: int = 0,
        resolution: int | None = None,
    ) -> None:
        super().__init__(inputs)
        self.parts, self.fixed = parts, fixed
        self.unet, self.vae, self.scheduler = parts["unet"].eval(), parts["vae"].eval(), parts["scheduler"]
        self.image_size, self.steps, self.guidance_scale = image_size, steps, guidance_scale
        self.batch_size, self.seed = batch_size, seed
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = resolution or int(self.unet.config.sample_size) * self.vae_scale
        self.full_id = f"{self.generator_id}:{self.model_id}"

    @classmethod
    def components(cls, inputs: dict[str, str]) -> dict[str, tuple[str, str]]:
        """``{role: (subfolder, "module:Class")}`` the backend loads for ``inputs``."""
        return dict(_SD_PARTS)

    @classmethod
    def encode_fixed(cls, folder: Path, options: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Computes the fixed conditioning with the model's own encoders (transformers)."""
        return _prompt_pair(folder, options.get("prompt", ""))

    @classmethod
    def from_config(
        cls,
        inputs: dict[str, str],
        context: GenerationContext,
        model: str = "",
        **options: Any,  # noqa: ANN401
    ) -> LatentDiffusionGenerator:
        """Loads ``model`` (a local folder or an HF-cache id; default :attr:`model_id`) without network."""
        folder = resolve_model_dir(model or cls.model_id)
        parts = load_parts(folder, cls.components(inputs))
        names = cls.needed_fixed(inputs)
        fixed = load_conditioning(folder, names, lambda: cls.encode_fixed(folder, options))
        return cls(
            inputs, parts, fixed, context.image_size, seed=context.seed, **cls.build_options(context, options)
        )

    @classmethod
    def needed_fixed(cls, inputs: dict[str, str]) -> tuple[str, ...]:
        """Names of the fixed conditioning tensors needed for ``inputs``."""
        return cls.fixed_names

    @classmethod
    def build_options(cls, context: GenerationContext, options: dict[str, Any]) -> dict[str, Any]:
        """Config options -> constructor keyword arguments (``prompt`` only feeds :meth:`encode_fixed`)."""
        return {k: v for k, v in options.items() if k != "prompt"}

    def _check_width(self, name: str, value: torch.Tensor, width: int, what: str) -> None:
        if value.shape[-1] != width:
            raise ConfigError(
                f"{self.generator_id} ({self.model_id}) takes {what} of width {width}; the '{name}' "
                f"predictions have width {value.shape[-1]}: predict in the model's CLIP space "
                "(e.g. --backbone ViT-L-14:openai)"
            )

    def denoise(
        self,
        latents: torch.Tensor,
        cond: dict[str, torch.Tensor],
        uncond: dict[str, torch.Tensor],
        timesteps: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The pipelines' loop: ``ε = ε_u + s (ε_c - ε_u)`` (for ``s > 1``), then a scheduler step."""
        guided = self.guidance_scale > 1
        kwargs = {k: torch.cat([uncond[k], cond[k]]) for k in cond} if guided else cond
        accepted = inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if "generator" in accepted else {}
        for t in timesteps:
            model_in = self.scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
            noise = self.unet(model_in, t, **kwargs).sample
            if guided:
                noise_u, noise_c = noise.chunk(2)
                noise = noise_u + self.guidance_scale * (noise_c - noise_u)
            latents = self.scheduler.step(noise, t, latents, **step_kwargs).prev_sample
        return latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> uint8 ``(N, image_size, image_size, 3)``."""
        decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return images_to_uint8(decoded, self.image_size)

    def sample(
        self,
        n: int,
        cond: dict[str, torch.Tensor],
        uncond: dict[str, torch.Tensor],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Text-to-image style sampling from Gaussian latents (scaled by the scheduler's initial sigma)."""
        side = self.resolution // self.vae_scale
        latents = torch.randn((n, self.unet.config.in_channels, side, side), generator=generator)
        self.scheduler.set_timesteps(self.steps)
        latents = latents * self.scheduler.init_noise_sigma
        return self.decode(self.denoise(latents, cond, uncond, self.scheduler.timesteps, generator))

    def sample_batch(self, conditions: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """uint8 images of one batch of conditions."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images ``(N, image_size, image_size, 3)`` uint8, deterministic given ``seed``."""
        n = len(next(iter(conditions.values())))
        out = [torch.empty(0, self.image_size, self.image_size, 3, dtype=torch.uint8)]
        for b, start in enumerate(range(0, n, self.batch_size)):
            generator = torch.Generator().manual_seed(self.seed * 100_003 + b)
            batch = {
                k: torch.as_tensor(v[start : start + self.batch_size]).cpu() for k, v in conditions.items()
            }
            out.append(self.sample_batch(batch, generator))
        return torch.cat(out)


class UnCLIPGenerator(LatentDiffusionGenerator):
    """Stable unCLIP image variation from a predicted CLIP image embedding ``clip_image`` ``(N, D)``.

    Conditioning as diffusers' ``StableUnCLIPImg2ImgPipeline.noise_image_embeddings``: the embedding is
    standardised by the ``image_normalizer``, noised to ``noise_level`` by ``image_noising_scheduler``,
    un-standardised, and concatenated with the sinusoidal embedding of ``noise_level``; it enters the UNet as
    ``class_labels`` (zeros for the unconditional branch), with the empty prompt as cross-attention context.
    ``embed_norm`` (default ``None``: as predicted) first rescales each embedding to that L2 norm.
    """

    generator_id = "unclip"
    description = "Stable unCLIP (diffusers components) on predicted CLIP image embeddings"
    model_id = UNCLIP_MODEL

    def __init__(
        self,
        inputs: dict[str, str],
        parts: Parts,
        fixed: dict[str, torch.Tensor],
        image_size: int,
        noise_level: int = 0,
        embed_norm: float | None = None,
        **sampling: Any,  # noqa: ANN401 (LatentDiffusionGenerator's sampling arguments)
    ) -> None:
        super().__init__(inputs, parts, fixed, image_size, **sampling)
        if set(inputs) != {"clip_image"}:
            raise ConfigError(f"unclip takes one input, clip_image; got {sorted(inputs)}")
        self.noise_level, self.embed_norm = noise_level, embed_norm

    @classmethod
    def components(cls, inputs: dict[str, str]) -> dict[str, tuple[str, str]]:
        """SD parts plus the embedding normaliser and noising scheduler."""
        return {
            **_SD_PARTS,
            "image_normalizer": (
                "image_normalizer",
                "diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer:StableUnCLIPImageNormalizer",
            ),
            "image_noising_scheduler": ("image_noising_scheduler", "diffusers:DDPMScheduler"),
        }

    def image_condition(self, image_embeds: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``class_labels`` ``(N, 2D)``: noised, de-standardised embedding + noise-level embedding."""
        from diffusers.models.embeddings import get_timestep_embedding

        normalizer, noising = self.parts["image_normalizer"], self.parts["image_noising_scheduler"]
        image_embeds = image_embeds.float()
        self._check_width(
            "clip_image", image_embeds, int(normalizer.config.embedding_dim), "image embeddings"
        )
        if self.embed_norm is not None:
            image_embeds = F.normalize(image_embeds, dim=-1) * self.embed_norm
        level = torch.full((len(image_embeds),), self.noise_level, dtype=torch.long)
        noise = torch.randn(image_embeds.shape, generator=generator)
        noised = normalizer.unscale(
            noising.add_noise(normalizer.scale(image_embeds), noise=noise, timesteps=level)
        )
        level_emb = get_timestep_embedding(
            level, noised.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0
        )
        return torch.cat([noised, level_emb.to(noised.dtype)], dim=1)

    def sample_batch(self, conditions: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Generates one batch."""
        labels = self.image_condition(conditions["clip_image"], generator)
        n = len(labels)
        cond = {
            "encoder_hidden_states": self.fixed["prompt_embeds"].expand(n, -1, -1),
            "class_labels": labels,
        }
        uncond = {
            "encoder_hidden_states": self.fixed["negative_prompt_embeds"].expand(n, -1, -1),
            "class_labels": torch.zeros_like(labels),
        }
        return self.sample(n, cond, uncond, generator)


def convert_to_dual_attention(image_unet: Any, text_unet: Any) -> None:  # noqa: ANN401
    """VD's ``_convert_to_dual_attention``: each image-UNet transformer paired with the text UNet's."""
    from diffusers.models import DualTransformer2DModel, Transformer2DModel

    class _DualTransformer(DualTransformer2DModel):
        """diffusers' dual transformer, also accepting ``encoder_attention_mask`` (None here).

        The UNet blocks of diffusers 0.42 pass it; ``DualTransformer2DModel.forward`` does not take it.
        """

        def forward(self, *args: Any, encoder_attention_mask: Any = None, **kwargs: Any) -> Any:  # noqa: ANN401
            return super().forward(*args, **kwargs)

    for name, module in list(image_unet.named_modules()):
        if isinstance(module, Transformer2DModel):
            parent_name, index = name.rsplit(".", 1)
            keys = ("num_attention_heads", "attention_head_dim", "in_channels", "num_layers", "dropout",
                    "norm_num_groups", "cross_attention_dim", "attention_bias", "sample_size",
                    "num_vector_embeds", "activation_fn", "num_embeds_ada_norm")  # fmt: skip
            dual = _DualTransformer(**{k: module.config[k] for k in keys})
            dual.transformers[0] = module
            dual.transformers[1] = text_unet.get_submodule(parent_name)[int(index)]
            image_unet.get_submodule(parent_name)[int(index)] = dual


class VersatileDiffusionGenerator(LatentDiffusionGenerator):
    """Versatile Diffusion from predicted image tokens ``clip_tokens`` ``(N, 257, 768)`` (+ ``text_tokens``).

    Tokens are normalised as VD normalises its encoder output (divided by the L2 norm of the CLS token), so
    unnormalised predictions are fine. With a ``text_tokens`` input ``(N, 77, 768)`` (VD-normalised text
    states) the image UNet's transformers become dual (image + text UNet, :func:`convert_to_dual_attention`),
    mixed with ``text_to_image_strength`` as in ``VersatileDiffusionDualGuidedPipeline``. The unconditional
    branch uses VD's blank-image embedding (and the empty prompt's).
    """

    generator_id = "versatile-diffusion"
    description = "Versatile Diffusion (diffusers components) on predicted CLIP image/text tokens"
    model_id = VD_MODEL

    def __init__(
        self,
        inputs: dict[str, str],
        parts: Parts,
        fixed: dict[str, torch.Tensor],
        image_size: int,
        text_to_image_strength: float = 0.4,
        **sampling: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(inputs, parts, fixed, image_size, **sampling)
        if "clip_tokens" not in inputs or not set(inputs) <= {"clip_tokens", "text_tokens"}:
            raise ConfigError(
                f"versatile-diffusion takes clip_tokens (and text_tokens); got {sorted(inputs)}"
            )
        self.dual = "text_tokens" in inputs
        if self.dual:
            convert_to_dual_attention(self.unet, parts["text_unet"])
        self.text_to_image_strength = text_to_image_strength

    @classmethod
    def components(cls, inputs: dict[str, str]) -> dict[str, tuple[str, str]]:
        """VD's image UNet (and text UNet when dual-guided), VAE and scheduler."""
        parts = {**_SD_PARTS, "unet": ("image_unet", "diffusers:UNet2DConditionModel")}
        if "text_tokens" in inputs:
            module = "diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet"
            parts["text_unet"] = ("text_unet", f"{module}:UNetFlatConditionModel")
        return parts

    @classmethod
    def needed_fixed(cls, inputs: dict[str, str]) -> tuple[str, ...]:
        """The blank-image embedding, and the empty prompt's when dual-guided."""
        names = ("negative_image_embeds",)
        return (*names, "negative_prompt_embeds") if "text_tokens" in inputs else names

    @classmethod
    def encode_fixed(cls, folder: Path, options: dict[str, Any]) -> dict[str, torch.Tensor]:
        """VD's unconditional embeddings from its own encoders."""
        return _vd_null_conditioning(folder)

    def sample_batch(self, conditions: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Generates one batch."""
        width = int(self.unet.config.cross_attention_dim)
        tokens = conditions["clip_tokens"].float()
        self._check_width("clip_tokens", tokens, width, "image tokens")
        context = tokens / tokens[:, :1].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        n = len(context)
        null = self.fixed["negative_image_embeds"].expand(n, -1, -1)
        if self.dual:
            from diffusers.models import DualTransformer2DModel

            text = conditions["text_tokens"].float()
            self._check_width("text_tokens", text, width, "text tokens")
            context = torch.cat([text, context], dim=1)
            null = torch.cat([self.fixed["negative_prompt_embeds"].expand(n, -1, -1), null], dim=1)
            for module in self.unet.modules():
                if isinstance(module, DualTransformer2DModel):
                    module.mix_ratio = self.text_to_image_strength
                    module.condition_lengths = [text.shape[1], tokens.shape[1]]
                    module.transformer_index_for_condition = [1, 0]
        return self.sample(n, {"encoder_hidden_states": context}, {"encoder_hidden_states": null}, generator)


class Img2ImgGenerator(LatentDiffusionGenerator):
    """Stable Diffusion img2img: init images noised to ``strength``, denoised under text conditioning.

    Inputs: ``init_image`` (a prediction holding images, uint8 ``(N, H, W, 3)`` or float ``(N, 3, H, W)``)
    unless the option ``init_generator`` (a generator section, e.g. ``{kind: world-decoder, inputs:
    {clip_image: clip_image}}``) makes them; ``prompt_embeds`` ``(N, 77, C)`` predicted text hidden states,
    else the fixed ``prompt`` option (default ``""``) embedded by the model's text encoder.
    """

    generator_id = "sd-img2img"
    description = "Stable Diffusion img2img (diffusers components) from an init image"
    model_id = SD_MODEL

    def __init__(
        self,
        inputs: dict[str, str],
        parts: Parts,
        fixed: dict[str, torch.Tensor],
        image_size: int,
        init_generator: ImageGenerator | None = None,
        strength: float = 0.75,
        **sampling: Any,  # noqa: ANN401
    ) -> None:
        super().__init__(inputs, parts, fixed, image_size, **sampling)
        if not set(inputs) <= {"init_image", "prompt_embeds"}:
            raise ConfigError(f"sd-img2img takes init_image and/or prompt_embeds; got {sorted(inputs)}")
        if ("init_image" in inputs) == (init_generator is not None):
            raise ConfigError(
                "sd-img2img needs exactly one source of init images: init_image or init_generator"
            )
        if not 0 < strength <= 1:
            raise ConfigError(f"strength must lie in (0, 1], got {strength}")
        self.init_generator, self.strength = init_generator, strength

    @classmethod
    def needed_fixed(cls, inputs: dict[str, str]) -> tuple[str, ...]:
        """The empty prompt's states, and the fixed prompt's unless predicted."""
        return ("negative_prompt_embeds",) if "prompt_embeds" in inputs else cls.fixed_names

    @classmethod
    def build_options(cls, context: GenerationContext, options: dict[str, Any]) -> dict[str, Any]:
        """Also builds the ``init_generator`` section into a generator."""
        from brainbench.generators import build_generator

        options = super().build_options(context, options)
        if options.get("init_generator"):
            options["init_generator"] = build_generator(options["init_generator"], context)
        return options

    def generate_from_predictions(self, predictions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Runs the init generator on the predictions first (when configured), then img2img."""
        if self.init_generator is None:
            return super().generate_from_predictions(predictions)
        if missing := [p for p in self.inputs.values() if p not in predictions]:
            raise ConfigError(
                f"sd-img2img needs predictions {missing}; the method predicts {sorted(predictions)}"
            )
        conditions = {name: predictions[pred] for name, pred in self.inputs.items()}
        return self.generate(
            {**conditions, "init_image": self.init_generator.generate_from_predictions(predictions)}
        )

    def sample_batch(self, conditions: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Generates one batch: ``z_t = add_noise(E(x) · scaling, ε, t_start)``, then the denoising loop."""
        init = images_to_model_input(conditions["init_image"], self.resolution)
        n = len(init)
        if "prompt_embeds" in conditions:
            context = conditions["prompt_embeds"].float()
            self._check_width(
                "prompt_embeds", context, int(self.unet.config.cross_attention_dim), "text states"
            )
        else:
            context = self.fixed["prompt_embeds"].expand(n, -1, -1)
        null = self.fixed["negative_prompt_embeds"].expand(n, -1, -1)
        if null.shape[1] != context.shape[1]:
            raise ConfigError(
                f"prompt_embeds have {context.shape[1]} tokens, the empty prompt {null.shape[1]}"
            )
        latents = self.vae.encode(init).latent_dist.sample(generator) * self.vae.config.scaling_factor
        self.scheduler.set_timesteps(self.steps)
        start = self.steps - min(int(self.steps * self.strength), self.steps)
        timesteps = self.scheduler.timesteps[start * self.scheduler.order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start * self.scheduler.order)
        noise = torch.randn(latents.shape, generator=generator)
        latents = self.scheduler.add_noise(latents, noise, timesteps[:1].repeat(n))
        cond, uncond = {"encoder_hidden_states": context}, {"encoder_hidden_states": null}
        return self.decode(self.denoise(latents, cond, uncond, timesteps, generator))
