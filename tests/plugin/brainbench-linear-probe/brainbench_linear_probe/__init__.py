"""A linear probe from voxels to the CLIP image embedding, trained with a cosine loss: a plug-in method."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brainbench.methods.base import DecoderModule


class LinearProbe(DecoderModule):
    """``clip_image = W v + b``, trained to maximise the cosine with the target embedding.

    Args:
        n_voxels: voxels per sample.
        target_shapes: per-sample shape of each target (``clip_image`` is used).
        lr: AdamW learning rate.
    """

    method_id = "linearprobe"
    paper = "a plug-in example (no paper)"
    fidelity = "not a published method"
    predicts = ("clip_image",)
    config_dir = Path(__file__).parent / "configs"

    def __init__(self, n_voxels: int, target_shapes: dict[str, tuple[int, ...]], lr: float = 1e-3) -> None:
        super().__init__(n_voxels, target_shapes)  # saves the constructor arguments as hparams

    def configure_models(self) -> None:
        """One linear layer onto the flattened ``clip_image``."""
        self.linear = nn.Linear(self.n_voxels, math.prod(self.target_shapes["clip_image"]))

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, V)`` -> ``{"clip_image": (B, D)}``."""
        return {"clip_image": self.linear(voxels).view(len(voxels), *self.target_shapes["clip_image"])}

    def loss_terms(self, batch: dict[str, torch.Tensor], stage: str):
        """``loss = 1 - cos(prediction, target)``, averaged over the batch."""
        predictions = self(batch["voxels"])
        loss = 1 - F.cosine_similarity(predictions["clip_image"], batch["clip_image"], dim=-1).mean()
        return {"loss": loss}, predictions

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW at ``lr``."""
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
