"""Procedural stimuli of the embedded world: scenes of 1-3 coloured, textured objects with captions.

Every image is a pure function of ``(seed, index)``: image ``i`` is identical whether 10 or 10,000 images are
generated, so worlds of different sizes share their first stimuli and nothing depends on generation order.

A scene has a background (a grey level or a pale/dark tint) and 1-3 objects, each with a category
(:mod:`brainbench.world.shapes`, 57 categories), a colour (10), a texture (solid, striped, dotted, checkered),
a size (small, medium, large) and one of nine positions. Each image gets 1-5 captions written from different
templates that mention all or some of those attributes.

Example:
    >>> stim = generate_stimuli(4, seed=0, image_size=32)
    >>> stim.images.shape, stim.images.dtype
    ((4, 32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

import multiprocessing
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from brainbench.world.shapes import CATEGORIES, CATEGORY_NAMES
from brainbench.world.types import StimulusSet

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
TEXTURES = ("solid", "striped", "dotted", "checkered")
SIZES: dict[str, float] = {"small": 0.12, "medium": 0.18, "large": 0.26}  # radius / image size
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.22, 0.22),
    "top": (0.5, 0.22),
    "top right": (0.78, 0.22),
    "left": (0.22, 0.5),
    "center": (0.5, 0.5),
    "right": (0.78, 0.5),
    "bottom left": (0.22, 0.78),
    "bottom": (0.5, 0.78),
    "bottom right": (0.78, 0.78),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "light": (215, 215, 205),
    "dark": (45, 45, 55),
    "sky": (170, 205, 235),
    "sand": (225, 205, 160),
    "grass": (150, 195, 130),
}
_SUPERSAMPLE = 3


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene, with every attribute a caption can mention."""

    category: str
    colour: str
    texture: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """A full scene description: background plus objects, largest first."""

    background: str
    objects: tuple[SceneObject, ...]


def sample_scene(
    rng: np.random.Generator, n_objects: int | None = None, category: str | None = None
) -> Scene:
    """Draws a random scene: 1-3 objects (40/35/25 %) in distinct positions, largest drawn first.

    Args:
        rng: the scene's generator.
        n_objects: number of objects; drawn when ``None``.
        category: if given, every object is of this category (no category is drawn, so the other
            attributes come from a different stream than the unforced scene's); ``None`` draws each one.

    Raises:
        ValueError: ``category`` is not a world category.
    """
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown world category {category!r}; see brainbench.world.shapes.CATEGORY_NAMES")
    if n_objects is None:
        n_objects = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    background = str(rng.choice(list(BACKGROUNDS)))
    positions = rng.choice(list(POSITIONS), size=n_objects, replace=False)
    if n_objects == 1 and rng.random() < 0.5:
        positions = np.array(["center"])
    objects = []
    for position in positions:
        colour = str(rng.choice(list(COLOURS)))
        objects.append(
            SceneObject(
                category=str(rng.choice(CATEGORY_NAMES)) if category is None else category,
                colour=colour,
                texture=str(rng.choice(TEXTURES, p=[0.4, 0.2, 0.2, 0.2])),
                size=str(
                    rng.choice(list(SIZES), p=[0.3, 0.35, 0.35] if n_objects > 1 else [0.15, 0.35, 0.5])
                ),
                position=str(position),
            )
        )
    objects.sort(key=lambda o: -SIZES[o.size])
    return Scene(background=background, objects=tuple(objects))


def _texture_mask(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (size, size) map of the texture's darker pixels (random phase and period)."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = int(rng.integers(4, 7)) * _SUPERSAMPLE
    phase = int(rng.integers(0, period))
    if texture == "striped":
        return ((xx + yy + phase) // (period // 2)) % 2 == 0
    if texture == "dotted":
        cx = (xx + phase) % period - period / 2
        cy = (yy + phase) % period - period / 2
        return cx**2 + cy**2 < (period / 3.2) ** 2
    if texture == "checkered":
        return (((xx + phase) // (period // 2)) + ((yy + phase) // (period // 2))) % 2 == 0
    return np.zeros((size, size), dtype=bool)


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Renders a scene to ``(image_size, image_size, 3)`` uint8 (supersampled, then box-filtered down)."""
    big = image_size * _SUPERSAMPLE
    canvas = np.empty((big, big, 3), dtype=np.float32)
    canvas[:] = BACKGROUNDS[scene.background]
    # A gentle luminance gradient so the background is not a perfectly flat field.
    ramp = np.linspace(-1, 1, big, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    canvas += 12.0 * gradient[..., None]
    for obj in scene.objects:
        mask_img = Image.new("L", (big, big), 0)
        jx, jy = rng.uniform(-0.04, 0.04, size=2)
        px, py = POSITIONS[obj.position]
        radius = SIZES[obj.size] * big * rng.uniform(0.9, 1.1)
        CATEGORIES[obj.category][1](ImageDraw.Draw(mask_img), (px + jx) * big, (py + jy) * big, radius)
        mask = np.asarray(mask_img, dtype=np.float32)[..., None] / 255.0
        colour = np.asarray(COLOURS[obj.colour], dtype=np.float32)
        layer = np.broadcast_to(colour, canvas.shape).copy()
        dark = _texture_mask(obj.texture, big, rng)
        shade = 0.45 if obj.colour != "black" else 3.0
        layer[dark] = np.clip(colour * shade + (0 if obj.colour != "black" else 40), 0, 255)
        canvas = canvas * (1 - mask) + layer * mask
    small = canvas.reshape(image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(obj: SceneObject, rng: np.random.Generator, detail: float) -> str:
    """A noun phrase for an object; each attribute is kept with probability ``detail``."""
    words = []
    if rng.random() < detail:
        words.append(obj.size)
    if rng.random() < detail:
        words.append(obj.colour)
    if obj.texture != "solid" and rng.random() < detail:
        words.append(obj.texture)
    words.append(obj.category)
    phrase = " ".join(words)
    return f"{_article(phrase)} {phrase}"


def _where(position: str) -> str:
    if position == "center":
        return "in the center"
    if " " in position:
        return f"in the {position}"
    return f"on the {position}" if position in ("left", "right") else f"at the {position}"


def write_captions(scene: Scene, rng: np.random.Generator, n_captions: int) -> list[str]:
    """Writes ``n_captions`` distinct captions of a scene from a pool of templates."""
    objs = scene.objects
    templates = [
        lambda: " and ".join(f"{_describe(o, rng, 1.0)} {_where(o.position)}" for o in objs),
        lambda: "a picture of " + " with ".join(_describe(o, rng, 0.0) for o in objs),
        lambda: ", ".join(_describe(o, rng, 0.6) for o in objs) + f" on a {scene.background} background",
        lambda: "; ".join(f"{_where(o.position)}, {_describe(o, rng, 0.5)}" for o in objs),
        lambda: (
            (f"{len(objs)} objects: " if len(objs) > 1 else "one object: ")
            + " and ".join(_describe(o, rng, 0.3) for o in objs)
        ),
        lambda: " next to ".join(f"{_article(o.colour)} {o.colour} {o.category}" for o in objs),
    ]
    order = rng.permutation(len(templates))
    captions: list[str] = []
    for t in order:
        caption = templates[t]()
        if caption not in captions:
            captions.append(caption)
        if len(captions) == n_captions:
            break
    return captions


def generate_scene(
    seed: int, index: int, image_size: int, category: str | None = None, n_objects: int | None = None
) -> tuple[np.ndarray, list[str], Scene]:
    """Image, captions and scene of stimulus ``index`` of the world with ``seed`` (order independent).

    ``category`` and ``n_objects`` force the scene's content (see :func:`sample_scene`); left ``None`` the
    scene is the world's stimulus ``index`` itself.
    """
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, n_objects=n_objects, category=category)
    image = render_scene(scene, image_size, rng)
    captions = write_captions(scene, rng, int(rng.integers(1, 6)))
    return image, captions, scene


def _generate_chunk(args: tuple[int, int, int, int]) -> tuple[np.ndarray, list[list[str]], list[list[str]]]:
    seed, start, stop, image_size = args
    images = np.empty((stop - start, image_size, image_size, 3), dtype=np.uint8)
    captions, categories = [], []
    for row, index in enumerate(range(start, stop)):
        images[row], caps, scene = generate_scene(seed, index, image_size)
        captions.append(caps)
        categories.append([o.category for o in scene.objects])
    return images, captions, categories


def _main_is_importable() -> bool:
    """Spawned workers re-import ``__main__``; from stdin or ``python -c`` they cannot, so stay in-process."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is not None and Path(main_file).is_file()


def generate_stimuli(
    n_stimuli: int, seed: int, image_size: int = 64, progress: bool = False, workers: int = 1
) -> StimulusSet:
    """Generates the first ``n_stimuli`` stimuli of the world with ``seed`` (``workers`` processes)."""
    chunk = 250
    jobs = [(seed, start, min(start + chunk, n_stimuli), image_size) for start in range(0, n_stimuli, chunk)]
    bar = tqdm(total=n_stimuli, desc="stimuli", disable=not progress, unit="img")
    results = []
    if workers > 1 and len(jobs) > 1 and _main_is_importable():
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap(_generate_chunk, jobs):
                results.append(result)
                bar.update(len(result[1]))
    else:
        for job in jobs:
            results.append(_generate_chunk(job))
            bar.update(len(results[-1][1]))
    bar.close()
    images = (
        np.concatenate([r[0] for r in results])
        if results
        else np.empty((0, image_size, image_size, 3), np.uint8)
    )
    captions = [c for r in results for c in r[1]]
    categories = [c for r in results for c in r[2]]
    return StimulusSet(
        images=images, captions=captions, categories=categories, category_names=list(CATEGORY_NAMES)
    )


def zero_shot_prompts(category: str) -> list[str]:
    """Prompts in the captions' own style, for zero-shot classification with the world CLIP."""
    return [f"a picture of {_article(category)} {category}", f"one object: {_article(category)} {category}"]
