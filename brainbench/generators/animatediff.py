r"""NeuroClips' video stage with the published models: AnimateDiff + SparseCtrl RGB (diffusers components).

NeuroClips (Gong et al., NeurIPS 2024, arXiv 2410.19452; methods.md §2; code ``Animatediff/scripts/
neuroclips.py``, ``pipeline_neuroclips.py``, ``configs/NeuroClips/control.yaml``) makes each clip with
AnimateDiff v3 (Guo et al., ICLR 2024, arXiv 2307.04725: SD-1.5 UNet + motion modules) and SparseCtrl RGB
(Guo et al., arXiv 2311.16933): the VAE-encoded keyframe conditions frame 0 through the sparse ControlNet
(condition latents + a mask that is 1 on that frame), the blurry video gives the init latents (α guidance),
the caption the text conditioning. :class:`AnimateDiffSparseCtrlGenerator` (kind ``animatediff-sparsectrl``)
builds ``UNetMotionModel.from_unet2d(UNet2DConditionModel, MotionAdapter)``, ``SparseControlNetModel``,
``AutoencoderKL`` and AnimateDiff v3's ``DDIMScheduler``, and runs the guidance loop of
:class:`~brainbench.generators.diffusers_backends.LatentDiffusionGenerator` (``ε = ε_u + s (ε_c - ε_u)``)
with SparseCtrl's residuals on the UNet's skip connections (:class:`SparseCtrlUNet`). Nothing is downloaded.

Inputs: ``blurry`` -- the blurry video as frames (uint8 ``(N, F, H, W, 3)``, float ``(N, F, 3, H, W)`` in
[0, 1]) or VAE latents ``(N, F, 4, h, w)`` times ``vae.config.scaling_factor`` (0.18215: the PR's target in
the paper; latents of another size are decoded, resized, re-encoded); ``keyframe`` (optional) -- images
(uint8 ``(N, H, W, 3)``, float ``(N, 3, H, W)``), else made by the option ``keyframe_generator`` (a generator
section), else the blurry video's first frame; ``prompt_embeds`` (optional) -- predicted text-encoder hidden
states ``(N, 77, 768)``, else the fixed ``prompt_embeds`` of ``conditioning.safetensors``, which always holds
``negative_prompt_embeds``.

**α guidance.** The ``F`` blurry frames are linearly interpolated to ``n_frames`` (16; pixels before
encoding, as the code's ``cccat``: 6 -> 16 gives its 2/3, 1/3 weights) and VAE-encoded to ``z_b``.
``alpha_form: paper`` (default) is Eq. 5 as a partial trajectory, as img2img: on the DDIM grid of ``steps``,
``z = add_noise(z_b, ε, t_s)`` at the first of the last ``int(steps · strength)`` timesteps (ϑ = 0.3: 7 of
25), then only those steps run (``strength`` 0 returns the decoded ``z_b``). ``alpha_form: released`` is the
code's: ``z_b`` noised at the first (largest) DDIM timestep, then all steps (its ``low_strength`` only guards
the step count, so ``strength`` has no effect).

Output: the generated frames at the blurry input's frame positions (``output_frames``, default ``F``: 6 of
16 for CC2017, so clips pair with the stimulus clips), ``(N, F, S, S, 3)`` uint8 at the stimulus side ``S``.

:class:`~brainbench.backbones.sd_vae.SDVAEFrames` is the same VAE family as the perception reconstructor's
frozen frame autoencoder (NeuroClips ``autoencoder: sd-vae:stabilityai/sd-vae-ft-mse``): its latents
``(4, S/8, S/8)`` times 0.18215 are this generator's ``blurry`` input as they are.

Faithful: the model stack (SD-1.5 UNet, v3 motion adapter, SparseCtrl RGB latent condition on frame 0), DDIM
(linear β .00085-.012, ``steps_offset`` 1) 25 steps, CFG 8.5, 16 frames, the interpolated encoded blurry
init. Not faithful: the base defaults to SD-1.5, not RealisticVision V6.0-B1 (``model:``; its noVAE release
needs ``vae:``); no v3 domain-adapter LoRA (``v3_sd15_adapter.ckpt``; peft is not installed); no text
encoder (transformers is not installed): the BLIP-2 caption + quality suffix and the negative prompt become
hidden states, predicted or stored in ``conditioning.safetensors``; the keyframe is what ``keyframe`` /
``keyframe_generator`` give (NeuroClips: SDXL unCLIP on predicted bigG tokens, not in diffusers); no
multi-fMRI fusion; fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from brainbench.backbones.sd_vae import resolve_model_dir
from brainbench.errors import ConfigError, MissingFileError, require_extra
from brainbench.generators.base import GenerationContext, ImageGenerator
from brainbench.generators.diffusers_backends import (
    LatentDiffusionGenerator,
    Parts,
    _text_states,
    images_to_model_input,
    load_conditioning,
    load_parts,
)

SD15_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
MOTION_ADAPTER_MODEL = "guoyww/animatediff-motion-adapter-v1-5-3"
SPARSECTRL_RGB_MODEL = "guoyww/animatediff-sparsectrl-rgb"
#: AnimateDiff v3's ``noise_scheduler_kwargs`` (``configs/inference/inference-v3.yaml``), over the base's
ANIMATEDIFF_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
}


def load_component(model: str, class_name: str, option: str) -> Any:  # noqa: ANN401 (a diffusers model)
    """A diffusers model saved at a folder's root (motion adapter, SparseCtrl, a separate VAE), offline."""
    diffusers = require_extra("diffusers", "diffusion", f"the {class_name} of AnimateDiff")

    try:
        folder = resolve_model_dir(model)
    except MissingFileError as error:
        raise MissingFileError(
            error.path,
            f"the {class_name} weights {model} are not on this machine and are never downloaded here. On a "
            f"machine with network run `hf download {model} --local-dir /some/dir`, copy the folder here "
            f"and pass it as the generator option `{option}: /some/dir`",
        ) from error
    if not (folder / "config.json").is_file():
        raise MissingFileError(folder / "config.json", f"{folder} is not a diffusers {class_name} folder")
    return getattr(diffusers, class_name).from_pretrained(folder, local_files_only=True)


def interpolate_frames(clips: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, F, ...)`` -> ``(B, n, ...)``: linear along frames, ends kept (6 -> 16: NeuroClips' ``cccat``)."""
    f = clips.shape[1]
    position = torch.linspace(0, f - 1, n)
    low = position.floor().long().clamp(max=f - 1)
    high = (low + 1).clamp(max=f - 1)
    weight = (position - low).view(1, n, *[1] * (clips.ndim - 2)).to(clips)
    return clips[:, low] * (1 - weight) + clips[:, high] * weight


class SparseCtrlUNet(nn.Module):
    """The motion UNet with SparseCtrl residuals on its skip connections, called as the loop calls a UNet."""

    def __init__(self, unet: nn.Module, controlnet: nn.Module, scale: float) -> None:
        super().__init__()
        self.unet, self.controlnet, self.scale = unet, controlnet, scale

    @property
    def config(self) -> Any:  # noqa: ANN401
        """The motion UNet's config."""
        return self.unet.config

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        conditioning_mask: torch.Tensor,
    ) -> Any:  # noqa: ANN401 (the UNet's output)
        """``sample`` ``(B, C, F, h, w)``; text states ``(B, L, D)``, repeated per frame for the UNets."""
        states = encoder_hidden_states.repeat_interleave(sample.shape[2], dim=0)
        down, mid = self.controlnet(
            sample, timestep, encoder_hidden_states=states, controlnet_cond=controlnet_cond,
            conditioning_mask=conditioning_mask, conditioning_scale=self.scale, return_dict=False,
        )  # fmt: skip
        return self.unet(
            sample, timestep, encoder_hidden_states=states,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        )  # fmt: skip


class AnimateDiffSparseCtrlGenerator(LatentDiffusionGenerator):
    """Clips ``(N, F, S, S, 3)`` uint8 from a blurry video, a keyframe and text states (module docstring).

    Args:
        strength: ϑ of the α guidance (NeuroClips 0.3). ``alpha_form``: ``paper`` or ``released``.
        n_frames: frames generated (NeuroClips 16); ``output_frames``: returned (default: the blurry's).
        keyframe_index: the frame SparseCtrl conditions (NeuroClips 0); ``controlnet_scale``: its scale.
        keyframe_generator: a built generator making the keyframes from the predictions.
        device: where the networks run. Others: :class:`LatentDiffusionGenerator`'s (NeuroClips: 25 steps,
            guidance 8.5, ``resolution: 256``).
    """

    generator_id = "animatediff-sparsectrl"
    output = "frames"
    description = "AnimateDiff v3 + SparseCtrl RGB (diffusers components) from a blurry video and a keyframe"
    model_id = SD15_MODEL

    def __init__(
        self,
        inputs: dict[str, str],
        parts: Parts,
        fixed: dict[str, torch.Tensor],
        image_size: int,
        strength: float = 0.3,
        alpha_form: Literal["paper", "released"] = "paper",
        n_frames: int = 16,
        output_frames: int | None = None,
        keyframe_index: int = 0,
        controlnet_scale: float = 1.0,
        keyframe_generator: ImageGenerator | None = None,
        device: str = "cpu",
        steps: int = 25,
        guidance_scale: float = 8.5,
        batch_size: int = 1,
        **sampling: Any,  # noqa: ANN401 (LatentDiffusionGenerator's seed, resolution)
    ) -> None:
        super().__init__(
            inputs, parts, fixed, image_size, steps=steps, guidance_scale=guidance_scale,
            batch_size=batch_size, **sampling,
        )  # fmt: skip
        if "blurry" not in inputs or not set(inputs) <= {"blurry", "keyframe", "prompt_embeds"}:
            raise ConfigError(
                f"animatediff-sparsectrl takes blurry (and keyframe, prompt_embeds); got {sorted(inputs)}"
            )
        if "keyframe" in inputs and keyframe_generator is not None:
            raise ConfigError(
                "animatediff-sparsectrl: give the keyframe as an input or a generator, not both"
            )
        if not 0 <= strength <= 1 or alpha_form not in ("paper", "released"):
            raise ConfigError(
                f"strength must lie in [0, 1], alpha_form be paper|released: {strength}, {alpha_form}"
            )
        if not 0 <= keyframe_index < n_frames:
            raise ConfigError(f"keyframe_index {keyframe_index} is not a frame of {n_frames}")
        controlnet = parts["controlnet"].eval()
        if not controlnet.config.use_simplified_condition_embedding:
            raise ConfigError(
                "only SparseCtrl RGB (VAE-latent condition, use_simplified_condition_embedding)"
            )
        self.strength, self.alpha_form, self.n_frames = strength, alpha_form, n_frames
        self.output_frames = output_frames
        self.keyframe_index, self.keyframe_generator, self.device = keyframe_index, keyframe_generator, device
        self.unet = SparseCtrlUNet(parts["unet"], controlnet, controlnet_scale).to(device).eval()
        self.vae = self.vae.to(device)
        self.full_id += "" if alpha_form == "paper" else "+released-alpha"

    @classmethod
    def from_config(
        cls,
        inputs: dict[str, str],
        context: GenerationContext,
        model: str = "",
        motion_adapter: str = MOTION_ADAPTER_MODEL,
        controlnet: str = SPARSECTRL_RGB_MODEL,
        vae: str = "",
        **options: Any,  # noqa: ANN401
    ) -> AnimateDiffSparseCtrlGenerator:
        """Loads the base (``model``), ``motion_adapter``, ``controlnet`` (and a separate ``vae``) offline."""
        require_extra("diffusers", "diffusion", "AnimateDiff")
        from diffusers import DDIMScheduler, UNetMotionModel

        folder = resolve_model_dir(model or cls.model_id)
        components = {"unet": ("unet", "diffusers:UNet2DConditionModel"),
                      "scheduler": ("scheduler", "diffusers:DDIMScheduler")}  # fmt: skip
        if not vae:
            components["vae"] = ("vae", "diffusers:AutoencoderKL")
        parts = load_parts(folder, components)
        if vae:
            parts["vae"] = load_component(vae, "AutoencoderKL", "vae")
        adapter = load_component(motion_adapter, "MotionAdapter", "motion_adapter")
        parts["unet"] = UNetMotionModel.from_unet2d(parts["unet"], adapter)
        parts["controlnet"] = load_component(controlnet, "SparseControlNetModel", "controlnet")
        parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config, **ANIMATEDIFF_SCHEDULER)
        fixed = load_conditioning(folder, cls.needed_fixed(inputs), lambda: cls.encode_fixed(folder, options))
        return cls(
            inputs, parts, fixed, context.image_size, seed=context.seed, **cls.build_options(context, options)
        )

    @classmethod
    def needed_fixed(cls, inputs: dict[str, str]) -> tuple[str, ...]:
        """The negative prompt's states, and the fixed prompt's unless predicted."""
        return ("negative_prompt_embeds",) if "prompt_embeds" in inputs else cls.fixed_names

    @classmethod
    def encode_fixed(cls, folder: Path, options: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``prompt`` and ``negative_prompt`` through the base's text encoder (needs transformers)."""
        states = _text_states(folder, [options.get("prompt", ""), options.get("negative_prompt", "")])
        return {"prompt_embeds": states[:1], "negative_prompt_embeds": states[1:]}

    @classmethod
    def build_options(cls, context: GenerationContext, options: dict[str, Any]) -> dict[str, Any]:
        """Drops the prompts (they feed :meth:`encode_fixed`), builds ``keyframe_generator``."""
        from brainbench.generators import build_generator

        options = {k: v for k, v in super().build_options(context, options).items() if k != "negative_prompt"}
        if options.get("keyframe_generator"):
            options["keyframe_generator"] = build_generator(options["keyframe_generator"], context)
        return options

    def generate_from_predictions(self, predictions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Makes the keyframes with ``keyframe_generator`` first, when configured."""
        if self.keyframe_generator is None:
            return super().generate_from_predictions(predictions)
        if missing := [p for p in self.inputs.values() if p not in predictions]:
            raise ConfigError(f"{self.generator_id} needs predictions {missing}; got {sorted(predictions)}")
        conditions = {name: predictions[pred] for name, pred in self.inputs.items()}
        keyframes = self.keyframe_generator.generate_from_predictions(predictions)
        return self.generate({**conditions, "keyframe": keyframes})

    def encode(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images (any form :func:`images_to_model_input` takes) -> scaled latents ``(N, C, h, w)``."""
        pixels = images_to_model_input(images, self.resolution).to(self.device)
        return self.vae.encode(pixels).latent_dist.sample(generator) * self.vae.config.scaling_factor

    def blurry_latents(self, blurry: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The blurry video -> init latents ``(B, C, n_frames, h, w)`` (interpolated, encoded)."""
        side, channels = self.resolution // self.vae_scale, int(self.vae.config.latent_channels)
        if blurry.dtype == torch.uint8:
            blurry = blurry.permute(0, 1, 4, 2, 3).float() / 255.0
        elif blurry.ndim != 5 or blurry.shape[2] not in (3, channels):
            raise ConfigError(
                f"blurry must be frames (N, F, H, W, 3) uint8 / (N, F, 3, H, W) float or VAE latents "
                f"(N, F, {channels}, h, w); got {tuple(blurry.shape)}"
            )
        elif blurry.shape[2] == channels and blurry.shape[-2:] != (side, side):
            decoded = self.vae.decode(
                blurry.flatten(0, 1).float().to(self.device) / self.vae.config.scaling_factor
            )
            blurry = (decoded.sample.cpu() / 2 + 0.5).clamp(0, 1).unflatten(0, blurry.shape[:2])
        clips = interpolate_frames(blurry.float(), self.n_frames)
        if clips.shape[2] == 3:
            clips = self.encode(clips.flatten(0, 1), generator).unflatten(0, clips.shape[:2])
        return clips.to(self.device).transpose(1, 2)

    def text_states(self, conditions: dict[str, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditional, unconditional) hidden states ``(n, L, D)``."""
        null = self.fixed["negative_prompt_embeds"].expand(n, -1, -1)
        context = conditions.get("prompt_embeds", self.fixed.get("prompt_embeds"))
        context = context.float().expand(n, -1, -1) if context.ndim == 3 else context
        if context.ndim != 3 or context.shape[1] != null.shape[1]:
            raise ConfigError(
                f"prompt_embeds must be text-encoder hidden states (N, {null.shape[1]}, D) like the negative "
                f"prompt's; got {tuple(context.shape)} (a pooled caption embedding cannot condition the UNet)"
            )
        self._check_width("prompt_embeds", context, int(self.unet.config.cross_attention_dim), "text states")
        return context.to(self.device), null.to(self.device)

    def sample_batch(self, conditions: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """One batch of clips ``(B, F_out, S, S, 3)`` uint8."""
        f_in = conditions["blurry"].shape[1]
        init = self.blurry_latents(conditions["blurry"], generator)
        b, f = init.shape[0], init.shape[2]
        key = self.encode(conditions["keyframe"], generator) if "keyframe" in conditions else init[:, :, 0]
        cond = torch.zeros_like(init)
        mask = torch.zeros_like(init[:, :1])
        cond[:, :, self.keyframe_index], mask[:, :, self.keyframe_index] = key, 1.0
        context, null = self.text_states(conditions, b)
        self.scheduler.set_timesteps(self.steps)
        start = (
            self.steps - min(int(self.steps * self.strength), self.steps) if self.alpha_form == "paper" else 0
        )
        timesteps = self.scheduler.timesteps[start * self.scheduler.order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start * self.scheduler.order)
        latents = init
        if len(timesteps):
            noise = torch.randn(init.shape, generator=generator).to(self.device)
            latents = self.scheduler.add_noise(init, noise, timesteps[:1].repeat(b))
            control = {"controlnet_cond": cond, "conditioning_mask": mask}
            latents = self.denoise(
                latents, {"encoder_hidden_states": context, **control},
                {"encoder_hidden_states": null, **control}, timesteps, generator,
            )  # fmt: skip
        keep = torch.linspace(0, f - 1, self.output_frames or f_in).round().long()
        frames = latents[:, :, keep].transpose(1, 2)
        return self.decode(frames.flatten(0, 1)).cpu().unflatten(0, frames.shape[:2])

    @torch.no_grad()
    def generate(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Clips ``(N, F_out, image_size, image_size, 3)`` uint8, deterministic given ``seed``."""
        n = len(conditions["blurry"])
        clips = []
        for b, start in enumerate(range(0, n, self.batch_size)):
            generator = torch.Generator().manual_seed(self.seed * 100_003 + b)
            batch = {
                k: torch.as_tensor(v[start : start + self.batch_size]).cpu() for k, v in conditions.items()
            }
            clips.append(self.sample_batch(batch, generator))
        return torch.cat(clips)
