"""Generators: predicted embeddings -> images, behind one interface, so every reconstruction is scored alike.

A method config asks for one in its ``generator`` section::

    generator:
      kind: world-decoder          # an id of GENERATORS (``GENERATORS.list()``)
      inputs:                      # generator input -> the method's prediction of that name
        clip_image: clip_image
      options: {}                  # keyword arguments of the generator's ``from_config``

``brainbench bench`` builds it after training (:func:`build_generator`), feeds it the test predictions and
scores the images it returns against the stimuli (PixCorr, SSIM, 2-way, FID on the networks available).
"""

from __future__ import annotations

from typing import Any

from brainbench.errors import ConfigError
from brainbench.generators.base import GenerationContext, ImageGenerator
from brainbench.registry import Registry

#: generator kind -> ``module:Class`` (imported on use, so heavy backends load only when asked for); other
#: packages add kinds through the ``brainbench.generators`` entry-point group
GENERATORS: Registry[type[ImageGenerator]] = Registry(
    "generator kind",
    {
        "retrieval": "brainbench.generators.retrieval:RetrievalGenerator",
        "world-decoder": "brainbench.generators.world_decoder:WorldDecoderGenerator",
        "unclip": "brainbench.generators.diffusers_backends:UnCLIPGenerator",
        "versatile-diffusion": "brainbench.generators.diffusers_backends:VersatileDiffusionGenerator",
        "sd-img2img": "brainbench.generators.diffusers_backends:Img2ImgGenerator",
        "world-video": "brainbench.generators.video:WorldVideoGenerator",
        "animatediff-sparsectrl": "brainbench.generators.animatediff:AnimateDiffSparseCtrlGenerator",
    },
    entry_point_group="brainbench.generators",
)

__all__ = ["GENERATORS", "GenerationContext", "ImageGenerator", "build_generator", "generator_inputs"]


def generator_inputs(spec: dict[str, Any]) -> dict[str, str]:
    """The ``inputs`` mapping of a generator section (generator input -> prediction name)."""
    inputs = spec.get("inputs") or {}
    if not isinstance(inputs, dict) or not inputs:
        raise ConfigError(
            f"generator section {spec} needs an 'inputs' mapping, e.g. {{clip_image: clip_image}}"
        )
    return {str(k): str(v) for k, v in inputs.items()}


def build_generator(spec: dict[str, Any], context: GenerationContext) -> ImageGenerator:
    """Instantiates the generator a config's ``generator`` section names (an unknown kind lists the valid)."""
    cls = GENERATORS.load(str(spec.get("kind")))
    return cls.from_config(inputs=generator_inputs(spec), context=context, **(spec.get("options") or {}))
