"""The generator interface: named condition tensors in, ``(N, H, W, 3)`` uint8 images (or clips) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from brainbench.data.feature_cache import FeatureCache
from brainbench.data.manifest import Manifest


@dataclass
class GenerationContext:
    """What a generator may use besides the predictions: the prepared dataset and its training stimuli.

    Attributes:
        prepared: the prepared subject folder.
        manifest: its manifest.
        backbone_id: the embedding space of the predictions (and of ``cache``).
        cache: the backbone feature cache of the dataset's stimuli.
        train_stim_ids: stimuli of the training split (a retrieval bank must never hold test stimuli).
        image_size: side of the stimulus images, the size generated images are returned at.
        seed: seed of any sampling.
    """

    prepared: Path
    manifest: Manifest
    backbone_id: str
    cache: FeatureCache
    train_stim_ids: np.ndarray
    image_size: int
    seed: int = 0


class ImageGenerator(ABC):
    """Turns predicted embeddings into images.

    Subclasses set ``generator_id`` (a key of :data:`brainbench.generators.GENERATORS`) and
    ``input_names`` (what :meth:`generate` needs), and build themselves in :meth:`from_config`.
    """

    generator_id: ClassVar[str] = ""
    #: the prediction the output becomes: ``images`` ``(N, H, W, 3)`` or ``frames`` ``(N, F, H, W, 3)`` uint8
    output: ClassVar[str] = "images"
    #: a generator whose images depend on networks other than the suite's says so in its metric specs
    description: ClassVar[str] = ""

    def __init__(self, inputs: dict[str, str]) -> None:
        self.inputs = dict(inputs)

    @classmethod
    @abstractmethod
    def from_config(
        cls, inputs: dict[str, str], context: GenerationContext, **options: Any
    ) -> ImageGenerator:  # noqa: ANN401
        """Builds the generator for a run (loads weights, indexes a bank, ...)."""

    @abstractmethod
    def generate(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images ``(N, H, W, 3)`` or clips ``(N, F, H, W, 3)``, uint8, from conditions keyed by input."""

    def generate_from_predictions(self, predictions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Picks the configured predictions (``inputs``) and generates from them."""
        missing = [p for p in self.inputs.values() if p not in predictions]
        if missing:
            from brainbench.errors import ConfigError

            raise ConfigError(
                f"generator {self.generator_id} needs predictions {missing}; the method predicts "
                f"{sorted(predictions)}: fix the config's generator.inputs"
            )
        return self.generate({name: predictions[pred] for name, pred in self.inputs.items()})
