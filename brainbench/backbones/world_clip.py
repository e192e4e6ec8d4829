"""The world CLIP backbone: a small open_clip ViT trained by the project on the embedded world's pairs.

The architecture is an ordinary open_clip model config (``assets/model_configs/world-clip.json``: ViT with
64 px input, 8 px patches, width 192, 4 layers; text transformer width 128, 3 layers; 128-d joint space), so
once :func:`register_world_clip` has run, ``open_clip.create_model("world-clip")`` builds it like any other
open_clip architecture. The trained weights ship inside the package as an open_clip ``local-dir`` folder
(``assets/world-clip-v1/``: ``open_clip_config.json`` + ``open_clip_model.safetensors`` + ``card.json``), so
``open_clip.create_model("local-dir:<that folder>")`` loads them too, with their preprocessing.
``card.json`` records the sha256 of the weights, the command that trained them and what they reach.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import open_clip
import torch

from brainbench.errors import DataFormatError, MissingFileError

WORLD_CLIP_ARCH = "world-clip"
WORLD_CLIP_TAG = "v1"
_ASSETS = (
    Path(str(resources.files("brainbench"))) / "world" / "assets"
)  # shipped with the world it was trained on
MODEL_CONFIG_DIR = _ASSETS / "model_configs"
WORLD_CLIP_DIR = _ASSETS / f"{WORLD_CLIP_ARCH}-{WORLD_CLIP_TAG}"
# Every shipped world CLIP: backbone id ``world-clip:<tag>`` -> folder ``assets/world-clip-<tag>``. v1 is the
# world's own encoding model and target space; v2 (CLIP objective) and v2-mlip (MLIP objective, Zhang et al.
# 2024, arXiv 2406.01460) are later target spaces that leave v1 and every dataset built on it unchanged.
WORLD_CLIP_TAGS = ("v1", "v2", "v2-mlip")
WEIGHTS_FILE = "open_clip_model.safetensors"
TRAIN_COMMAND = "brainbench world train-clip --out brainbench/world/assets/world-clip-v1 --steps 700"


def world_clip_dir(tag: str) -> Path:
    """The shipped folder of world CLIP ``tag`` (one of :data:`WORLD_CLIP_TAGS`)."""
    if tag not in WORLD_CLIP_TAGS:
        raise ValueError(f"unknown world CLIP tag {tag!r}; shipped: {', '.join(WORLD_CLIP_TAGS)}")
    return _ASSETS / f"{WORLD_CLIP_ARCH}-{tag}"


def register_world_clip() -> None:
    """Adds the world CLIP config to open_clip's registry (idempotent)."""
    if WORLD_CLIP_ARCH not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def world_clip_config() -> dict:
    """The registered open_clip model config of the world CLIP (a deep copy)."""
    register_world_clip()
    return open_clip.get_model_config(WORLD_CLIP_ARCH)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_weights(weights: Path, expected_sha256: str | None, train_command: str) -> Path:
    """``weights`` when it exists and (if ``expected_sha256`` is given) matches its card's sha256.

    The one check of every shipped world asset (world CLIP, world decoders, frame autoencoder, video model).

    Raises:
        MissingFileError: the file is absent; the fix names ``train_command``.
        DataFormatError: the file's sha256 differs from the card's.
    """
    if not weights.is_file():
        raise MissingFileError(weights, f"train it with `{train_command}`")
    if expected_sha256 is not None and sha256_file(weights) != expected_sha256:
        raise DataFormatError(
            weights,
            "sha256 does not match card.json",
            f"restore the shipped file (git checkout) or retrain with `{train_command}`",
        )
    return weights


def load_world_clip_card(weights_dir: Path = WORLD_CLIP_DIR) -> dict:
    """The card of a trained world CLIP folder (metrics, sha256, training command)."""
    card_path = weights_dir / "card.json"
    if not card_path.is_file():
        raise MissingFileError(card_path, f"train the world CLIP with `{TRAIN_COMMAND}`")
    return json.loads(card_path.read_text())


def create_world_clip(weights_dir: Path | None = WORLD_CLIP_DIR, verify: bool = True) -> open_clip.CLIP:
    """Builds the world CLIP through open_clip; with ``weights_dir=None`` it is randomly initialised.

    Args:
        weights_dir: a folder written by ``brainbench world train-clip``; ``None`` for untrained weights
            (tests that only need the architecture).
        verify: check the weights' sha256 against the folder's ``card.json``.
    """
    register_world_clip()
    if weights_dir is None:
        return open_clip.create_model(WORLD_CLIP_ARCH).eval()
    weights = weights_dir / WEIGHTS_FILE
    card = load_world_clip_card(weights_dir) if verify and weights.is_file() else {}
    # a missing file is named before a missing card; the fix names the folder's own training command
    verified_weights(weights, card.get("sha256"), card.get("command", TRAIN_COMMAND))
    model = open_clip.create_model(f"local-dir:{weights_dir}")
    return model.eval()


def world_clip_tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    """The tokenizer that goes with the world CLIP (open_clip's BPE, 32-token context)."""
    register_world_clip()
    return open_clip.get_tokenizer(WORLD_CLIP_ARCH)


@torch.no_grad()
def encode_texts(model: open_clip.CLIP, texts: list[str], batch_size: int = 512) -> torch.Tensor:
    """L2-normalised text embeddings ``(len(texts), embed_dim)``."""
    tokenizer = world_clip_tokenizer()
    out = [
        model.encode_text(tokenizer(texts[i : i + batch_size]), normalize=True)
        for i in range(0, len(texts), batch_size)
    ]
    return torch.cat(out)
