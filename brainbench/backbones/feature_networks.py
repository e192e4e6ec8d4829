"""Image feature networks: a network cut at one output, behind its pinned input chain, lazily built.

A :class:`FeatureNetwork` pins what a feature column means: the network and its output node, the input chain
(resize, then normalisation) and the weights file, which must already be on the machine (nothing is ever
downloaded). Protocols: ``metrics.md`` §1.3 (MindEye1/2 feature metrics), §1.5 (resize traps). The registry
of every network (image, video, text) is :mod:`brainbench.backbones.networks`.

Networks reading outputs of the same model through the same chain (the world CLIP's pooled embedding and its
four residual-stream layers) share a ``model_id``; :func:`build_shared_pass` builds one
:class:`SharedPassExtractor` that returns all of their features from a single forward pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torchvision.transforms.functional as TF
from torch import Tensor, nn

from brainbench.backbones.weights import RANDOM_ONLY, WeightsSource, verify_hash_in_name
from brainbench.errors import ConfigError, DataFormatError, MissingFileError

Interpolation = Literal["bilinear", "bicubic"]
MultiCore = Callable[[Path | None, tuple[str, ...]], nn.Module]
"""``(weights path or None, outputs) -> module`` whose forward returns ``{output: features}``."""


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
        model_id: the model several entries read (e.g. ``world-clip:v1``); empty for a model of its own.
        build_outputs: builds one module giving several outputs of the model at once (see ``MultiCore``).
    """

    network_id: str
    description: str
    output: str
    chain: InputChain
    feature_shape: tuple[int, ...]
    weights: WeightsSource
    build_core: Callable[[Path | None], nn.Module] = field(repr=False, compare=False)
    model_id: str = ""
    build_outputs: MultiCore | None = field(default=None, repr=False, compare=False)

    @property
    def model(self) -> str:
        """The model the output is read from (networks of one model and chain share a forward pass)."""
        return self.model_id or self.network_id

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
        path = None if random_weights else self.weights_path()
        return FeatureExtractor(self, self.build_core(path), random_weights=random_weights)

    def weights_path(self) -> Path:
        """The checked pretrained weights file.

        Raises:
            MissingFileError: when it is absent.
            DataFormatError: when its content does not match its name's hash.
        """
        path = self.weights.find()
        if path is None:
            raise MissingFileError(
                self.weights.expected(), f"{self.weights.fix} ({self.weights.description})"
            )
        verify_hash_in_name(path)
        return path


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


class SharedPassExtractor(nn.Module):
    """Several networks of one model and chain, read in a single forward pass.

    ``forward(images)`` returns ``{network id: (B, feature_dim) float32}``; each entry equals what that
    network's own :class:`FeatureExtractor` gives (same chain, same operations, one pass instead of one per
    output). Accepts the layouts of :class:`FeatureExtractor`.
    """

    def __init__(self, networks: Sequence[FeatureNetwork], core: nn.Module, *, random_weights: bool) -> None:
        super().__init__()
        self.networks = tuple(networks)
        self.core = core.eval().requires_grad_(False)
        self.random_weights = random_weights

    @property
    def metric_networks(self) -> dict[str, str]:
        """Registry id -> the ``<network>`` part of spec ids (``random:``-prefixed for random weights)."""
        prefix = "random:" if self.random_weights else ""
        return {net.network_id: f"{prefix}{net.network_id}" for net in self.networks}

    def train(self, mode: bool = True) -> SharedPassExtractor:
        """A frozen feature network stays in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Features of every network, flattened, float32."""
        device = next(iter(self.core.parameters()), torch.empty(0)).device
        chain = self.networks[0].chain
        x = chain.resize(images.to(device))
        x = x if chain.normalised_by_network else chain.normalise(x)
        outputs = self.core(x)
        if not isinstance(outputs, Mapping):
            outputs = {self.networks[0].output: outputs}
        features = {}
        for net in self.networks:
            flat = outputs[net.output].reshape(x.shape[0], -1).float()
            if flat.shape[1] != net.feature_dim:
                raise ConfigError(f"{net.network_id} gave {flat.shape[1]} features, not {net.feature_dim}")
            features[net.network_id] = flat
        return features


def build_shared_pass(
    networks: Sequence[FeatureNetwork], *, random_weights: bool = False
) -> SharedPassExtractor:
    """One extractor for ``networks``, which must read the same model through the same chain.

    Raises:
        ConfigError: networks of different models or chains, or several outputs of a model without
            ``build_outputs``.
        MissingFileError: when the pretrained weights are absent.
    """
    first = networks[0]
    if any(net.model != first.model or net.chain != first.chain for net in networks):
        raise ConfigError(
            f"{[net.network_id for net in networks]} are not outputs of one model through one chain"
        )
    path = None if random_weights else first.weights_path()
    if len(networks) == 1:
        core = first.build_core(path)
    elif first.build_outputs is None:
        raise ConfigError(f"{first.model} cannot give several outputs in one pass")
    else:
        core = first.build_outputs(path, tuple(net.output for net in networks))
    return SharedPassExtractor(networks, core, random_weights=random_weights)


def group_by_model(networks: Sequence[FeatureNetwork]) -> list[list[FeatureNetwork]]:
    """``networks`` grouped by (model, chain), in first-seen order: each group is one forward pass."""
    groups: dict[tuple[str, InputChain], list[FeatureNetwork]] = {}
    for net in networks:
        groups.setdefault((net.model, net.chain), []).append(net)
    return list(groups.values())


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


def torchvision_core(
    builder: str, node: str, swav: bool = False, **kwargs: object
) -> Callable[[Path | None], nn.Module]:
    """Builds torchvision ``builder`` (weights from the given file, or random) cut at graph node ``node``."""

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


class OpenClipOutputs(nn.Module):
    """Outputs of an open_clip :class:`~brainbench.backbones.openclip.ImageBackbone` by name, one pass.

    ``forward`` returns ``{output: tensor}`` for several outputs, or the tensor itself for one.
    """

    def __init__(self, backbone: nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.backbone, self.outputs = backbone, outputs
        self.layers = tuple(int(o.split(":")[1]) for o in outputs if o.startswith("layer:"))

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """``forward_features(x)`` restricted to the outputs (the backbone normalises ``x`` itself)."""
        features = self.backbone.forward_features(x, layers=self.layers)
        if len(self.outputs) == 1:
            return features[self.outputs[0]]
        return {name: features[name] for name in self.outputs}


def world_clip_outputs(path: Path | None, outputs: tuple[str, ...]) -> nn.Module:
    """The shipped world CLIP (random weights when ``path`` is ``None``) giving ``outputs``."""
    from brainbench.backbones.openclip import ImageBackbone, load_backbone
    from brainbench.backbones.world_clip import create_world_clip

    if path is None:
        return OpenClipOutputs(ImageBackbone(create_world_clip(None), "world-clip:random"), outputs)
    return OpenClipOutputs(load_backbone("world-clip:v1"), outputs)  # checks the shipped sha256


def world_clip_core(output: str) -> Callable[[Path | None], nn.Module]:
    """:func:`world_clip_outputs` for one output."""

    def build(path: Path | None) -> nn.Module:
        return world_clip_outputs(path, (output,))

    return build


def clip_vit_l14_core(path: Path | None) -> nn.Module:
    """OpenAI CLIP ViT-L/14 ``clip_image`` (random weights when ``path`` is ``None``)."""
    from brainbench.backbones.openclip import load_backbone

    return OpenClipOutputs(
        load_backbone("ViT-L-14:random" if path is None else "ViT-L-14:openai"), ("clip_image",)
    )


def random_only_network(
    network_id: str,
    core: Callable[[Path | None], nn.Module],
    chain: InputChain,
    feature_shape: tuple[int, ...],
) -> FeatureNetwork:
    """An unregistered entry with no pretrained weights (tiny test networks); build it with random weights."""
    return FeatureNetwork(
        network_id, "random-weights test network", "output", chain, feature_shape, RANDOM_ONLY, core
    )
