"""Generator kind ``world-decoder``: predicted world-CLIP features -> 64 px world images, deterministic.

Runs the shipped :class:`~brainbench.backbones.world_decoder.WorldDecoder` whose input set matches the
config's ``inputs`` (variants ``image``, ``image+text``, ``image+detail``, ``tokens``; network, inputs and
training in :mod:`brainbench.backbones.world_decoder` and :mod:`brainbench.world.train_world_decoder`).
"""

from __future__ import annotations

import torch

from brainbench.backbones.world_decoder import (
    VARIANTS,
    WorldDecoder,
    load_card,
    load_world_decoder,
    to_uint8_images,
)
from brainbench.errors import ConfigError
from brainbench.generators.base import GenerationContext, ImageGenerator


class WorldDecoderGenerator(ImageGenerator):
    """Decodes predicted world-CLIP features with the shipped decoder whose input set matches ``inputs``.

    Deterministic (no sampling); works in batches of ``batch_size`` on the CPU.
    """

    generator_id = "world-decoder"
    description = "conv decoder trained on world-clip:v1 features of fresh world scenes"

    def __init__(
        self,
        inputs: dict[str, str],
        decoder: WorldDecoder,
        variant: str,
        image_size: int,
        batch_size: int = 256,
    ) -> None:
        super().__init__(inputs)
        self.decoder = decoder
        self.variant = variant
        self.image_size = image_size
        self.batch_size = batch_size
        self.full_id = f"world-decoder-{variant}"

    @classmethod
    def from_config(
        cls,
        inputs: dict[str, str],
        context: GenerationContext,
        variant: str | None = None,
        batch_size: int = 256,
    ) -> WorldDecoderGenerator:
        """Picks the shipped variant whose input set equals ``inputs``'s keys (or ``variant``).

        Raises:
            ConfigError: no variant has that input set, ``variant`` is unknown or disagrees with ``inputs``,
                or the predictions are not in the world CLIP's space (``context.backbone_id``).
        """
        wanted = tuple(sorted(inputs))
        shipped = {v: tuple(sorted(VARIANTS[v])) for v in VARIANTS}
        listing = ", ".join(f"{v} = {{{', '.join(s)}}}" for v, s in shipped.items())
        if variant is None:
            matches = [v for v, s in shipped.items() if s == wanted]
            if not matches:
                raise ConfigError(
                    f"no world decoder takes inputs {list(wanted)}; variants: {listing}. "
                    "Set generator.inputs to one of these sets"
                )
            variant = matches[0]
        elif variant not in VARIANTS:
            raise ConfigError(f"unknown world decoder variant {variant!r}; variants: {listing}")
        elif shipped[variant] != wanted:
            raise ConfigError(
                f"world decoder {variant} takes {list(shipped[variant])}, but inputs are {list(wanted)}"
            )
        card = load_card(variant)
        if context.backbone_id != card["backbone"]:
            raise ConfigError(
                f"world decoder {variant} was trained on {card['backbone']} features and cannot decode "
                f"{context.backbone_id} predictions; use --backbone {card['backbone']}, or generator kind "
                "retrieval / a diffusers backend for this backbone"
            )
        return cls(inputs, load_world_decoder(variant), variant, context.image_size, batch_size)

    @torch.no_grad()
    def generate(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images ``(N, image_size, image_size, 3)`` uint8."""
        n = len(next(iter(conditions.values())))
        out = []
        for start in range(0, n, self.batch_size):
            batch = {
                k: torch.as_tensor(v[start : start + self.batch_size]).float().cpu()
                for k, v in conditions.items()
            }
            out.append(to_uint8_images(self.decoder(batch), self.image_size))
        if not out:
            return torch.empty(0, self.image_size, self.image_size, 3, dtype=torch.uint8)
        return torch.cat(out)
