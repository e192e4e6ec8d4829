"""Moving-object movies of the embedded world: captioned shots of 1-2 objects gliding over a background.

A movie is a sequence of *shots* (10-24 s each, so a few per minute). A shot is a scene drawn by
:func:`brainbench.world.stimuli.sample_scene` with 1 or 2 objects; every object moves along a straight line
from its scene position (the object's ``position`` attribute names where it starts), and may grow or shrink.
Frames are ``frame_size`` px RGB at ``fps`` frames per second (8 by default: the rate NeuroClips generates at,
datasets.md §4.2).

Rendering reuses :func:`brainbench.world.stimuli.render_scene` without touching it: the shot's background is
rendered as an empty scene, and each object is rendered once, centred, over two plain backgrounds of known
colour. The two renders differ only where the object is transparent, which gives its alpha matte exactly
(``alpha = 1 - (A - B) / (colour_A - colour_B)``; the background gradient cancels). The premultiplied sprite
is then translated and scaled per frame with bilinear sampling and composited, largest object behind.

Each shot has 1-3 captions in the style of the still images' captions, e.g. "a red striped star moves left".
Everything is a pure function of ``(seed, movie key)``. :func:`window_features` gives the encoding model's
features of each 2-s window (the fMRI sample of CC2017, datasets.md §4.1).

Example:
    >>> movie = render_movie("seg1", seed=0, key=(1, 1), duration_s=4.0, frame_size=32)
    >>> movie.frames.shape, movie.fps
    ((32, 32, 32, 3), 8)
    >>> movie.caption_rows()[0][:3]
    ('seg1', 0.0, 4.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from brainbench.backbones.openclip import ImageBackbone
from brainbench.world.features import StimulusFeatures, compute_features
from brainbench.world.shapes import CATEGORY_NAMES
from brainbench.world.stimuli import BACKGROUNDS, POSITIONS, Scene, SceneObject, render_scene, sample_scene
from brainbench.world.types import StimulusSet

FPS = 8
FRAME_SIZE = 64
SHOT_SECONDS = (10.0, 24.0)
_MATTE_BACKGROUNDS = ("dark", "light")
_DIRECTIONS = {  # unit steps in image coordinates (y down)
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up and to the left": (-0.7071, -0.7071),
    "up and to the right": (0.7071, -0.7071),
    "down and to the left": (-0.7071, 0.7071),
    "down and to the right": (0.7071, 0.7071),
}
_SCALE_CHANGES = {"": (1.0, 1.0), "grows": (0.85, 1.3), "shrinks": (1.2, 0.75)}
_TRACK = (0.15, 0.85)  # object centres stay inside this band of the frame


@dataclass(frozen=True)
class MovingObject:
    """A world object and its straight-line trajectory over one shot.

    Attributes:
        obj: the object's attributes; ``obj.position`` names where it starts.
        direction: a key of ``_DIRECTIONS`` (what the captions say).
        start: centre ``(x, y)`` on the shot's first frame, in image units (0..1, y down).
        end: centre on the shot's last frame.
        scale_change: ``""``, ``"grows"`` or ``"shrinks"``.
    """

    obj: SceneObject
    direction: str
    start: tuple[float, float]
    end: tuple[float, float]
    scale_change: str


@dataclass(frozen=True)
class Shot:
    """One continuous shot: frames ``[start_frame, start_frame + n_frames)`` of its movie."""

    start_frame: int
    n_frames: int
    background: str
    objects: tuple[MovingObject, ...]
    captions: tuple[str, ...]

    @property
    def categories(self) -> list[str]:
        """Category names of the shot's objects, largest first."""
        return [moving.obj.category for moving in self.objects]


@dataclass(frozen=True)
class Movie:
    """A rendered movie.

    Attributes:
        name: ``seg<N>`` or ``test<N>``, as in CC2017 (datasets.md §4.1).
        fps: frames per second.
        frames: ``(n_frames, H, W, 3)`` uint8 RGB.
        shots: the shots, in order, covering every frame once.
    """

    name: str
    fps: int
    frames: np.ndarray
    shots: tuple[Shot, ...]

    @property
    def duration_s(self) -> float:
        """Length in seconds (``n_frames / fps``)."""
        return len(self.frames) / self.fps

    def shot_of_frame(self) -> np.ndarray:
        """``(n_frames,)`` int64: index of the shot each frame belongs to."""
        return np.repeat(np.arange(len(self.shots)), [shot.n_frames for shot in self.shots])

    def caption_rows(self) -> list[tuple[str, float, float, str]]:
        """``(movie, start_s, end_s, caption)`` for every caption of every shot (the captions.tsv rows)."""
        return [
            (self.name, shot.start_frame / self.fps, (shot.start_frame + shot.n_frames) / self.fps, caption)
            for shot in self.shots
            for caption in shot.captions
        ]


def _article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _noun_phrase(obj: SceneObject, size: bool, colour: bool, texture: bool) -> str:
    words = [obj.size] if size else []
    words += [obj.colour] if colour else []
    words += [obj.texture] if texture and obj.texture != "solid" else []
    return _article(" ".join([*words, obj.category]))


def _motion(moving: MovingObject) -> str:
    verb = f"moves {moving.direction}"
    return f"{verb} and {moving.scale_change}" if moving.scale_change else verb


def shot_captions(background: str, objects: tuple[MovingObject, ...], rng: np.random.Generator) -> list[str]:
    """1-3 distinct captions of a shot, e.g. ``"a red striped star moves left"``."""
    templates = [
        lambda: " and ".join(f"{_noun_phrase(m.obj, False, True, True)} {_motion(m)}" for m in objects),
        lambda: " and ".join(f"{_noun_phrase(m.obj, True, True, True)} {_motion(m)}" for m in objects),
        lambda: (
            " and ".join(_noun_phrase(m.obj, False, True, False) for m in objects)
            + f" on a {background} background"
        ),
        lambda: "a video of " + " and ".join(_noun_phrase(m.obj, False, False, False) for m in objects),
        lambda: " while ".join(f"{_noun_phrase(m.obj, False, False, False)} {_motion(m)}" for m in objects),
    ]
    n_captions = int(rng.integers(1, 4))
    captions: list[str] = []
    for index in rng.permutation(len(templates)):
        caption = templates[index]()
        if caption not in captions:
            captions.append(caption)
        if len(captions) == n_captions:
            break
    return captions


def _trajectory(obj: SceneObject, rng: np.random.Generator) -> MovingObject:
    """A straight path from the object's scene position; the caption's direction is the one taken."""
    start = np.asarray(POSITIONS[obj.position])
    names = list(_DIRECTIONS)
    for name in rng.permutation(names):
        distance = rng.uniform(0.18, 0.4)
        end = np.clip(start + distance * np.asarray(_DIRECTIONS[str(name)]), *_TRACK)
        if np.linalg.norm(end - start) >= 0.15:
            break
    scale_change = str(rng.choice(list(_SCALE_CHANGES), p=[0.6, 0.2, 0.2]))
    return MovingObject(obj, str(name), tuple(start.tolist()), tuple(end.tolist()), scale_change)


def plan_shots(n_frames: int, fps: int, rng: np.random.Generator) -> list[Shot]:
    """Cuts ``n_frames`` into shots of ``SHOT_SECONDS`` and draws each shot's scene, motion and captions."""
    shots: list[Shot] = []
    start = 0
    while start < n_frames:
        length = int(round(rng.uniform(*SHOT_SECONDS) * fps))
        if n_frames - (start + length) < SHOT_SECONDS[0] * fps / 2:
            length = n_frames - start  # no stub shot at the end
        scene = sample_scene(rng, n_objects=int(rng.choice([1, 2], p=[0.55, 0.45])))
        objects = tuple(_trajectory(obj, rng) for obj in scene.objects)
        captions = tuple(shot_captions(scene.background, objects, rng))
        shots.append(Shot(start, length, scene.background, objects, captions))
        start += length
    return shots


def _sprite(obj: SceneObject, frame_size: int, seed: list[int]) -> torch.Tensor:
    """``(4, H, W)``: premultiplied RGB (0..255) and alpha (0..1) of ``obj``, centred (module docstring)."""
    centred = SceneObject(obj.category, obj.colour, obj.texture, obj.size, "center")
    over = [
        render_scene(Scene(name, (centred,)), frame_size, np.random.default_rng(seed)).astype(np.float32)
        for name in _MATTE_BACKGROUNDS
    ]
    empty = render_scene(Scene(_MATTE_BACKGROUNDS[0], ()), frame_size, np.random.default_rng(seed))
    colours = np.asarray([BACKGROUNDS[name] for name in _MATTE_BACKGROUNDS], dtype=np.float32)
    alpha = np.clip(1.0 - ((over[0] - over[1]) / (colours[0] - colours[1])).mean(-1), 0.0, 1.0)[..., None]
    premultiplied = np.clip(over[0] - (1.0 - alpha) * empty.astype(np.float32), 0.0, 255.0)
    return torch.from_numpy(np.concatenate([premultiplied, alpha], axis=-1)).permute(2, 0, 1)


def _place(sprite: torch.Tensor, moving: MovingObject, n_frames: int) -> torch.Tensor:
    """``(n_frames, 4, H, W)``: the centred sprite moved along its path (bilinear, linear in time)."""
    u = torch.linspace(0.0, 1.0, n_frames) if n_frames > 1 else torch.zeros(1)
    start, end = torch.tensor(moving.start), torch.tensor(moving.end)
    centre = 2.0 * (start + u[:, None] * (end - start)) - 1.0  # (n, 2) in normalised coordinates, -1..1
    s0, s1 = _SCALE_CHANGES[moving.scale_change]
    scale = (s0 + u * (s1 - s0))[:, None]
    height, width = sprite.shape[1:]
    # Output pixel centre p samples the sprite at (p - centre) / scale; x and y are separable.
    xs = (2.0 * torch.arange(width) + 1.0) / width - 1.0
    ys = (2.0 * torch.arange(height) + 1.0) / height - 1.0
    gx = ((xs[None, :] - centre[:, :1]) / scale)[:, None, :].expand(n_frames, height, width)
    gy = ((ys[None, :] - centre[:, 1:]) / scale)[:, :, None].expand(n_frames, height, width)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(sprite.expand(n_frames, -1, -1, -1), grid, mode="bilinear", align_corners=False)


def render_shot(shot: Shot, frame_size: int, seed: list[int]) -> np.ndarray:
    """``(shot.n_frames, frame_size, frame_size, 3)`` uint8 frames of one shot."""
    background = render_scene(Scene(shot.background, ()), frame_size, np.random.default_rng([*seed, 0]))
    frames = torch.from_numpy(background.astype(np.float32)).permute(2, 0, 1).repeat(shot.n_frames, 1, 1, 1)
    for index, moving in enumerate(shot.objects):
        layer = _place(_sprite(moving.obj, frame_size, [*seed, index + 1]), moving, shot.n_frames)
        frames.mul_(1.0 - layer[:, 3:]).add_(layer[:, :3])
    return frames.round_().clamp_(0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()


def render_movie(
    name: str,
    seed: int,
    key: tuple[int, ...],
    duration_s: float,
    fps: int = FPS,
    frame_size: int = FRAME_SIZE,
) -> Movie:
    """Plans and renders one movie.

    Args:
        name: the movie's name (``seg3``, ``test1``), stored with it and used in its caption rows.
        seed: the world seed.
        key: integers that identify the movie within the world (its content depends on ``(seed, key)`` only).
        duration_s: length; the movie has ``round(duration_s * fps)`` frames.
        fps: frames per second.
        frame_size: frame side in pixels.

    Returns:
        The movie with its frames and shots.
    """
    n_frames = int(round(duration_s * fps))
    shots = plan_shots(n_frames, fps, np.random.default_rng([seed, *key, 0]))
    frames = np.empty((n_frames, frame_size, frame_size, 3), dtype=np.uint8)
    for index, shot in enumerate(shots):
        frames[shot.start_frame : shot.start_frame + shot.n_frames] = render_shot(
            shot, frame_size, [seed, *key, 1, index]
        )
    return Movie(name=name, fps=fps, frames=frames, shots=tuple(shots))


def window_features(
    movie: Movie, n_windows: int, backbone: ImageBackbone, frames_per_window: int = 2, window_s: float = 2.0
) -> StimulusFeatures:
    """Encoding-model features of each ``window_s`` window of ``movie``, averaged over sampled frames.

    :func:`brainbench.world.features.compute_features` runs on ``frames_per_window`` evenly spaced frames of
    every window; a frame's captions and categories are its shot's. Each shot's captions are encoded once (on
    its first sampled frame) and shared by its other frames.

    Returns:
        Features with ``n_windows`` rows; embeddings re-normalised after averaging.
    """
    per_window = int(round(window_s * movie.fps))
    offsets = ((np.arange(frames_per_window) + 0.5) * per_window / frames_per_window).astype(np.int64)
    frame_ids = (np.arange(n_windows)[:, None] * per_window + offsets).ravel()
    shot_ids = movie.shot_of_frame()[frame_ids]
    first = np.concatenate([[True], shot_ids[1:] != shot_ids[:-1]])
    frames = StimulusSet(
        images=movie.frames[frame_ids],
        captions=[list(movie.shots[s].captions) if f else [] for s, f in zip(shot_ids, first, strict=True)],
        categories=[movie.shots[s].categories for s in shot_ids],
        category_names=list(CATEGORY_NAMES),
    )
    feats = compute_features(frames, np.arange(len(frame_ids)), backbone)
    caption_row = np.maximum.accumulate(np.where(first, np.arange(len(frame_ids)), 0))

    def mean(x: np.ndarray) -> np.ndarray:
        return x.reshape(n_windows, frames_per_window, *x.shape[1:]).mean(axis=1)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-8)

    return StimulusFeatures(
        lowlevel=mean(feats.lowlevel),
        mid_tokens=mean(feats.mid_tokens),
        image_embedding=unit(mean(feats.image_embedding)),
        caption_embedding=unit(mean(feats.caption_embedding[caption_row])),
        domain_counts=mean(feats.domain_counts),
    )
