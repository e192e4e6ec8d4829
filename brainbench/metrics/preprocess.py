"""Resolution chains: the pinned preprocessing that turns images into what a pixel metric compares.

Pixel-level metrics (PixCorr, SSIM, PSNR; ``brainbench.metrics.image_metrics``) depend on how images were
resized, quantised and turned grey before they are compared, and the published NSD numbers used different
chains (``metrics.md`` §1.3, §1.5). A :class:`ResolutionChain` is that recipe as
*data*: one frozen record per flavour, registered by id in :data:`CHAINS`. Its id and version go into the
metric spec (``brainbench.metrics.specs.MetricSpec``); changing a chain means a new chain version, hence a new
spec version, never an edit in place.

Chains (all compare ``(N, 3, S, S)`` float64 images in ``[0, 1]``):

- ``brainbench`` (canonical): both images → 425×425 (NSD's native size, the size every published PixCorr /
  SSIM is computed at) with a torch bilinear resize, ``antialias=True`` passed explicitly (§1.5); PixCorr on
  RGB, SSIM on grey.
- ``mindeye`` (MindEye1 ``src/Reconstruction_Metrics.py`` and MindEye2 ``src/final_evaluations.ipynb``,
  identical code): both images → ``Resize((256, 256))`` then ``Resize(425, BILINEAR)``, torchvision *tensor*
  resizes with the ``antialias=False`` that their pinned torchvision (0.15.2 / 0.16.0) used by default
  (§1.5). So ground truth goes 425→256→425 and 512-px recons 512→256→425. MindEye2's
  ``0.75·recon + 0.25·blurry`` blend is a method post-process, not part of the chain (the leaderboard records
  it).
- ``braindiffuser`` (Brain-Diffuser ``scripts/evaluate_reconstruction.py``): 8-bit images (PNG round trip)
  resized with Pillow's ``Image.resize((425, 425))`` default filter (BICUBIC in Pillow 9.2, the version its
  ``environment.yml`` pins; Pillow's resampling is always antialiased), then ``/255``. Ground truth is native
  425, where the resize is a copy.
- ``native``: no resize; prediction and target must already share a size (video frames, world images).

Every chain converts colour the same way: PixCorr and PSNR flatten RGB; SSIM uses ``skimage.color.rgb2gray``
(ITU-R BT.709 luma ``0.2125 R + 0.7154 G + 0.0721 B``) unless ``ssim_colour == "rgb"`` (per-channel SSIM, then
mean over channels). Torch resizes run on float64 tensors; ``F.interpolate(..., align_corners=False)`` is
exactly what torchvision's tensor ``resize`` calls for float inputs.

Example:
    >>> chain = get_chain("mindeye")
    >>> [step.tag for step in chain.resize], chain.size
    (['torch-bilinear-256-noaa', 'torch-bilinear-425-noaa'], 425)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from brainbench.errors import BrainbenchError, ConfigError
from brainbench.registry import Registry

Interpolation = Literal["nearest", "bilinear", "bicubic"]
Backend = Literal["torch", "pil"]
SSIMColour = Literal["grey", "rgb"]

BT709_GREY = (0.2125, 0.7154, 0.0721)
"""``skimage.color.rgb2gray`` weights (ITU-R BT.709 luma), applied to linear [0, 1] RGB."""

RANGE_TOLERANCE = 0.05
"""Float inputs may leave ``[0, 1]`` by this much (decoder overshoot) and are clamped; further out is an
error, to catch ``[0, 255]`` or ``[-1, 1]`` images rather than silently clamp them."""

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclass(frozen=True)
class ResizeStep:
    """One resize to ``size × size``.

    Attributes:
        size: output side in pixels.
        interpolation: resampling kernel.
        antialias: low-pass filter when downsampling (torch's ``antialias``; Pillow always filters, so a
            ``pil`` step must say ``True``).
        backend: ``torch`` (``F.interpolate`` on float64 ``(N, 3, H, W)``, as torchvision's tensor resize) or
            ``pil`` (``PIL.Image.resize`` on uint8 ``(H, W, 3)``, one image at a time).
    """

    size: int
    interpolation: Interpolation
    antialias: bool
    backend: Backend = "torch"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"resize size {self.size!r} is not valid\n  fix: use a positive integer")
        if self.interpolation not in _PIL_FILTERS:
            raise ConfigError(f"interpolation {self.interpolation!r} is not one of {sorted(_PIL_FILTERS)}")
        if self.backend not in ("torch", "pil"):
            raise ConfigError(f"resize backend {self.backend!r} is not 'torch' or 'pil'")
        if self.backend == "pil" and not self.antialias:
            raise ConfigError(
                "Pillow resizes are always antialiased\n  fix: set antialias=True for pil steps"
            )
        if self.backend == "torch" and self.interpolation == "nearest" and self.antialias:
            raise ConfigError("torch nearest resizes have no antialias\n  fix: set antialias=False")

    @property
    def tag(self) -> str:
        """Short description, e.g. ``torch-bilinear-425-aa`` or ``pil-bicubic-425``."""
        aa = "" if self.backend == "pil" else ("-aa" if self.antialias else "-noaa")
        return f"{self.backend}-{self.interpolation}-{self.size}{aa}"


@dataclass(frozen=True)
class ResolutionChain:
    """A pinned preprocessing chain for pixel metrics; see the module docstring for the registered ones.

    Attributes:
        id: registry key, also the spec-name suffix (none for the canonical ``brainbench`` chain).
        version: bumped whenever anything below changes; metric specs derive their version from it.
        size: final side in pixels, or ``None`` for no resize (inputs must then share a size).
        resize: steps applied in order to prediction and target alike; the last one ends at ``size``.
        quantize_uint8: round float inputs to 8 bits first (``round(255·x)``), as a PNG round trip does.
        pixel_colour: what PixCorr and PSNR flatten (always ``rgb``: 3·S² values).
        ssim_colour: ``grey`` (``rgb2gray`` with :data:`BT709_GREY`, 2-D SSIM) or ``rgb`` (per channel).
        clamp: clamp float inputs to ``[0, 1]`` (MindEye1 clamps its recons).
        dtype: compute dtype of resizes and metrics.
        source: where the recipe comes from.
    """

    id: str
    version: int
    size: int | None
    resize: tuple[ResizeStep, ...]
    quantize_uint8: bool
    pixel_colour: Literal["rgb"]
    ssim_colour: SSIMColour
    clamp: bool = True
    dtype: Literal["float64"] = "float64"
    source: str = ""

    def __post_init__(self) -> None:
        if self.resize and self.resize[-1].size != self.size:
            raise ConfigError(f"chain {self.id!r}: the last resize step must end at size {self.size}")
        if not self.resize and self.size is not None:
            raise ConfigError(f"chain {self.id!r}: size {self.size} without a resize step")
        if any(step.backend == "pil" for step in self.resize) and not self.quantize_uint8:
            raise ConfigError(
                f"chain {self.id!r}: Pillow steps resize 8-bit images\n  fix: quantize_uint8=True"
            )
        if self.ssim_colour not in ("grey", "rgb") or self.pixel_colour != "rgb":
            raise ConfigError(f"chain {self.id!r}: unknown colour handling")

    @property
    def suffix(self) -> str:
        """Spec-name suffix: ``""`` for the canonical chain, ``_<id>`` for the others."""
        return "" if self.id == CANONICAL_CHAIN_ID else f"_{self.id}"

    def params(self) -> dict[str, object]:
        """Everything the chain pins, flat, for :class:`~brainbench.metrics.specs.MetricSpec` params."""
        return {
            "chain": self.id,
            "chain_version": self.version,
            "size": "native" if self.size is None else self.size,
            "resize": ">".join(step.tag for step in self.resize) or "none",
            "quantize_uint8": self.quantize_uint8,
            "clamp": self.clamp,
            "value_range": "0-1",
            "dtype": self.dtype,
            "pixel_colour": self.pixel_colour,
            "ssim_colour": "grey-bt709" if self.ssim_colour == "grey" else "rgb",
        }


CANONICAL_CHAIN_ID = "brainbench"

_BUILT_IN_CHAINS = (
    ResolutionChain(
        id=CANONICAL_CHAIN_ID,
        version=1,
        size=425,
        resize=(ResizeStep(425, "bilinear", antialias=True),),
        quantize_uint8=False,
        pixel_colour="rgb",
        ssim_colour="grey",
        source="brainbench canonical: NSD native 425 px, explicit antialias (metrics.md §1.4-§1.5, §6.2)",
    ),
    ResolutionChain(
        id="mindeye",
        version=1,
        size=425,
        resize=(
            ResizeStep(256, "bilinear", antialias=False),
            ResizeStep(425, "bilinear", antialias=False),
        ),
        quantize_uint8=False,
        pixel_colour="rgb",
        ssim_colour="grey",
        source="MindEye1 src/Reconstruction_Metrics.py @6b30ea5, MindEye2 src/final_evaluations.ipynb "
        "@c184718 (metrics.md §1.1, §1.3)",
    ),
    ResolutionChain(
        id="braindiffuser",
        version=1,
        size=425,
        resize=(ResizeStep(425, "bicubic", antialias=True, backend="pil"),),
        quantize_uint8=True,
        pixel_colour="rgb",
        ssim_colour="grey",
        source="Brain-Diffuser scripts/evaluate_reconstruction.py @31d52c0, Pillow 9.2 (metrics.md §1.3)",
    ),
    ResolutionChain(
        id="native",
        version=1,
        size=None,
        resize=(),
        quantize_uint8=False,
        pixel_colour="rgb",
        ssim_colour="grey",
        source="no resize: compare at the stimuli's own resolution",
    ),
)
CHAINS: Registry[ResolutionChain] = Registry(
    "resolution chain", {chain.id: chain for chain in _BUILT_IN_CHAINS}
)
CANONICAL_CHAIN = CHAINS.load(CANONICAL_CHAIN_ID)


def list_chains() -> list[str]:
    """Ids of the registered chains."""
    return CHAINS.list()


def get_chain(chain: str | ResolutionChain) -> ResolutionChain:
    """Return the registered chain ``chain`` (a chain object passes through).

    Raises:
        ConfigError: for an unknown id.
    """
    if isinstance(chain, ResolutionChain):
        return chain
    return CHAINS.load(chain)


def check_images(images: Tensor | np.ndarray, what: str) -> Tensor:
    """Validate an image batch and return it as a tensor: uint8 ``(N, H, W, 3)`` or float ``(N, 3, H, W)``.

    Raises:
        ValueError: on another dtype / layout, or float values outside ``[0, 1]`` by more than
            :data:`RANGE_TOLERANCE`.
        BrainbenchError: on NaN or inf.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if tensor.dtype == torch.uint8:
        if tensor.ndim != 4 or tensor.shape[-1] != 3:
            raise ValueError(f"{what}: uint8 images must be (N, H, W, 3), got {tuple(tensor.shape)}")
        return tensor
    if not tensor.is_floating_point():
        raise ValueError(
            f"{what}: images must be uint8 (N, H, W, 3) or float (N, 3, H, W), got {tensor.dtype}"
        )
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"{what}: float images must be (N, 3, H, W) in [0, 1], got {tuple(tensor.shape)}")
    if tensor.numel():
        if not torch.isfinite(tensor).all():
            raise BrainbenchError(f"{what} holds NaN or inf values\n  fix: check the generator output")
        low, high = float(tensor.min()), float(tensor.max())
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise ValueError(
                f"{what}: float images must lie in [0, 1], got [{low:.3g}, {high:.3g}]\n"
                "  fix: rescale ([0, 255] → x/255, [-1, 1] → (x+1)/2) or pass uint8 (N, H, W, 3)"
            )
        if low < 0.0 or high > 1.0:
            warnings.warn(
                f"{what}: float images in [{low:.3g}, {high:.3g}] are clamped to [0, 1] before scoring",
                stacklevel=2,
            )
    return tensor


def image_side(images: Tensor) -> tuple[int, int]:
    """``(H, W)`` of a batch accepted by :func:`check_images`."""
    return (
        (int(images.shape[1]), int(images.shape[2]))
        if images.dtype == torch.uint8
        else tuple(images.shape[-2:])
    )


def _to_float(images: Tensor | np.ndarray) -> Tensor:
    """uint8 ``(N, H, W, 3)`` (tensor or array) → float64 ``(N, 3, H, W)`` / 255; float tensors → float64."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).to(torch.float64, memory_format=torch.contiguous_format) / 255.0
    return images.to(torch.float64)


def _to_uint8_hwc(images: Tensor | np.ndarray) -> np.ndarray:
    """→ uint8 ``(N, H, W, 3)`` array; float ``(N, 3, H, W)`` becomes ``round(255·x)``, half to even.

    That is how diffusers' ``numpy_to_pil`` rounds before a PNG is written.
    """
    if isinstance(images, np.ndarray):
        return images
    if images.dtype == torch.uint8:
        return images.cpu().numpy()
    quantized = (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return quantized.permute(0, 2, 3, 1).cpu().numpy()


def _pil_resize(images: np.ndarray, step: ResizeStep) -> np.ndarray:
    if images.shape[1:3] == (step.size, step.size):
        return images  # Pillow returns a copy at the same size
    out = np.empty((images.shape[0], step.size, step.size, 3), dtype=np.uint8)
    for row, image in enumerate(images):
        resized = Image.fromarray(image).resize(
            (step.size, step.size), resample=_PIL_FILTERS[step.interpolation]
        )
        out[row] = np.asarray(resized)
    return out


def _torch_resize(images: Tensor, step: ResizeStep) -> Tensor:
    if tuple(images.shape[-2:]) == (step.size, step.size):
        return images  # torchvision returns the input unchanged at the same size
    align = None if step.interpolation == "nearest" else False
    return F.interpolate(
        images,
        size=(step.size, step.size),
        mode=step.interpolation,
        align_corners=align,
        antialias=step.antialias,
    )


def apply_chain(images: Tensor, chain: ResolutionChain) -> Tensor:
    """Run ``chain`` on a batch from :func:`check_images`; returns float64 ``(N, 3, S, S)`` in ``[0, 1]``.

    Order: clamp (float inputs) → 8-bit quantisation (``quantize_uint8``) → resize steps in order (Pillow
    steps on uint8, torch steps on float64) → float64 in ``[0, 1]``.
    """
    state: Tensor | np.ndarray = images
    if images.is_floating_point() and chain.clamp:
        state = images.clamp(0.0, 1.0)
    if chain.quantize_uint8:
        state = _to_uint8_hwc(state)
    for step in chain.resize:
        state = (
            _pil_resize(_to_uint8_hwc(state), step)
            if step.backend == "pil"
            else _torch_resize(_to_float(state), step)
        )
    return _to_float(state)


def to_grey(images: Tensor) -> Tensor:
    """``(N, 3, H, W)`` → ``(N, 1, H, W)`` with ``skimage.color.rgb2gray``'s BT.709 weights."""
    red, green, blue = images.unbind(dim=1)
    return (BT709_GREY[0] * red + BT709_GREY[1] * green + BT709_GREY[2] * blue).unsqueeze(1)
