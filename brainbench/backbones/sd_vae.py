r"""The SD VAE as a frozen frame autoencoder: frames in [0, 1] <-> scaled latents (diffusers AutoencoderKL).

NeuroClips' perception reconstructor (Gong et al., NeurIPS 2024, arXiv 2410.19452, Eq. 1) regresses
``0.18215 · mode(VAE.encode(2x - 1))`` of the true frames (MindEye2's ``sd_image_var_autoenc``, the kl-f8
SD VAE); the ``animatediff-sparsectrl`` generator takes the same latents as its blurry video. Weights are
read offline from a local folder or the Hugging Face cache (:func:`resolve_model_dir`), never downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainbench.errors import ConfigError, MissingFileError, require_extra
from brainbench.offline import apply_offline

log = logging.getLogger(__name__)


def resolve_model_dir(model: str) -> Path:
    """A local diffusers folder: ``model`` itself if it is a directory, else its snapshot in the HF cache.

    Raises:
        MissingFileError: neither exists; names the id, where it was looked for and how to fetch it.
    """
    if Path(model).is_dir():
        return Path(model)
    is_repo_id = "/" in model and not model.startswith(("/", "."))
    if is_repo_id:
        apply_offline()  # BRAINBENCH_OFFLINE (default on), before huggingface_hub reads its switch
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(model, local_files_only=True))
        except Exception:  # noqa: BLE001 (LocalEntryNotFoundError, OfflineModeIsEnabled, ...: "not here")
            pass
    from huggingface_hub.constants import HF_HUB_CACHE

    raise MissingFileError(
        Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" if is_repo_id else model,
        f"the diffusers weights of {model} are not on this machine and are never downloaded here. On a "
        f"machine with network run `hf download {model} --local-dir /some/dir` (huggingface_hub's CLI), "
        "copy the folder here and pass it as the generator option `model: /some/dir`",
    )


#: the Stable Diffusion 1.x/2.x kl-f8 VAE (``stabilityai/sd-vae-ft-mse``'s ``config.json``): the architecture
#: an absent ``sd-vae:`` model is assumed to have, for sizing only (83,653,863 parameters)
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}


def _drop_vae_state(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:  # noqa: ANN401
    """State-dict post-hook: the frozen published VAE is loaded from its model id, never saved."""
    for key in [k for k in state if k.startswith(f"{prefix}vae.")]:
        del state[key]


def _keep_vae_state(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:  # noqa: ANN401
    """Load-state-dict pre-hook: saved states hold no VAE weights (by design), so the loaded ones stay."""
    for key, value in module.vae.state_dict().items():
        state.setdefault(f"{prefix}vae.{key}", value)


class SDVAEFrames(nn.Module):
    r"""A diffusers ``AutoencoderKL`` as a frozen frame autoencoder: frames in [0, 1] <-> scaled latents.

    ``encode(x) = (mode(q(z | 2x - 1)) - shift) · scaling_factor`` (the posterior mean, as MindEye2's and
    NeuroClips' PR targets ``0.18215 · VAE.encode(2x - 1)``; SD-1.x: no shift, 0.18215), ``decode`` inverts
    it to [0, 1] frames. The interface of
    :class:`~brainbench.backbones.frame_autoencoder.FrameAutoencoder`: ``encode``, ``decode``,
    ``latent_shape``, ``image_size``. Built by :func:`load_sd_vae`; its weights stay out of the state dict
    (hooks).

    Args:
        vae: the ``AutoencoderKL``.
        image_size: frame side ``S`` (a multiple of the VAE's factor).
        model: where the weights come from (named in errors).
        missing: ``(path, fix)`` when only the architecture was built (weights absent): encoding and decoding
            then raise :class:`~brainbench.errors.MissingFileError`.
        chunk: frames per encoder/decoder call (bounds activation memory at 224 px).
    """

    def __init__(
        self,
        vae: nn.Module,
        image_size: int,
        model: str,
        missing: tuple[Path, str] | None = None,
        chunk: int = 32,
    ) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False)
        config = vae.config
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        if image_size % self.factor:
            raise ConfigError(
                f"{model}: frames of {image_size} px are not a multiple of its factor {self.factor}"
            )
        self.image_size, self.model, self.missing, self.chunk = image_size, model, missing, chunk
        self.latent_channels = int(config.latent_channels)
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.register_state_dict_post_hook(_drop_vae_state)
        self.register_load_state_dict_pre_hook(_keep_vae_state)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, S/f, S/f)``: ``(4, 28, 28)`` for SD at 224 px."""
        side = self.image_size // self.factor
        return (self.latent_channels, side, side)

    def _check_loaded(self) -> None:
        if self.missing is not None:
            raise MissingFileError(*self.missing)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` in [0, 1] -> scaled latents ``(N, C, S/f, S/f)``, on the frames' device."""
        self._check_loaded()
        device = next(self.vae.parameters()).device
        out = [
            self.vae.encode(frames[i : i + self.chunk].to(device) * 2 - 1).latent_dist.mode()
            for i in range(0, len(frames), self.chunk)
        ]
        return ((torch.cat(out) - self.shift_factor) * self.scaling_factor).to(frames.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> frames ``(N, 3, S, S)`` in [0, 1]."""
        self._check_loaded()
        device = next(self.vae.parameters()).device
        z = latents / self.scaling_factor + self.shift_factor
        out = [self.vae.decode(z[i : i + self.chunk].to(device)).sample for i in range(0, len(z), self.chunk)]
        return (torch.cat(out) / 2 + 0.5).clamp(0, 1).to(latents.device)


def load_sd_vae(model: str, image_size: int) -> SDVAEFrames:
    """``model`` (a VAE's folder or HF-cache id, or a pipeline's with ``vae/``) as :class:`SDVAEFrames`.

    Offline. Weights absent (:func:`resolve_model_dir` finds nothing): the architecture of
    :data:`SD_VAE_CONFIG` is built without them, for parameter counts and predictions only (the PR's forward
    never uses the VAE); a warning says so, and encoding or decoding raises :class:`MissingFileError` naming
    the id, the path and the fetch command, so nothing is ever trained on a random VAE. On the meta device
    (``brainbench describe``) no weights are read.
    """
    require_extra("diffusers", "diffusion", "the Stable Diffusion VAE")
    from diffusers import AutoencoderKL

    meta = torch.empty(0).device.type == "meta"
    try:
        folder = resolve_model_dir(model)
    except MissingFileError as error:
        missing = (
            error.path,
            f"the VAE weights {model} are not on this machine and are never downloaded here. On a machine "
            f"with network run `hf download {model} --local-dir /some/dir`, copy the folder here and pass "
            "`autoencoder: sd-vae:/some/dir`",
        )
        log.warning(
            "the VAE %s is not on this machine: built the SD-1.x kl-f8 VAE architecture without its weights, "
            "for parameter counts and predictions only; encoding frames (training) raises MissingFileError",
            model,
        )
        vae = AutoencoderKL.from_config(SD_VAE_CONFIG)
        return SDVAEFrames(vae, image_size, model, missing)
    subfolder = "" if (folder / "config.json").is_file() else "vae"
    vae_dir = folder / subfolder
    if not (vae_dir / "config.json").is_file():
        raise MissingFileError(
            vae_dir / "config.json",
            f"{folder} is neither a diffusers AutoencoderKL folder nor has a vae/ one",
        )
    if meta:
        return SDVAEFrames(AutoencoderKL.from_config(AutoencoderKL.load_config(vae_dir)), image_size, model)
    if not any(vae_dir.glob("*.safetensors")):
        raise MissingFileError(
            vae_dir, f"no safetensors weights in {vae_dir} (pickled .bin files are not read)"
        )
    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True, use_safetensors=True)
    return SDVAEFrames(vae, image_size, model)
