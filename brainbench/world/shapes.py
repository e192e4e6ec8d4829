"""The embedded world's object categories: one silhouette drawer per category name.

Each drawer paints a binary mask (``255`` = object, ``0`` = background, so holes such as eyes or windows show
the background) on a Pillow ``ImageDraw`` around a centre ``(cx, cy)`` with radius ``r`` in pixels. Colour and
texture are applied afterwards by :mod:`brainbench.world.stimuli`, so every category can take every
attribute. Categories are grouped into *domains* that mirror the category-selective regions of the visual
cortex (faces, places, bodies, words) so that the simulated floc ROIs have something to prefer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import ImageDraw, ImageFont

Drawer = Callable[[ImageDraw.ImageDraw, float, float, float], None]

_ON, _OFF = 255, 0


def _regular_polygon(n: int, rotation: float = -90.0) -> Drawer:
    def draw(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
        d.regular_polygon((cx, cy, r), n, rotation=rotation, fill=_ON)

    return draw


def _poly(points: list[tuple[float, float]]) -> Drawer:
    """A polygon given in unit coordinates (-1..1, y down)."""

    def draw(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
        d.polygon([(cx + x * r, cy + y * r) for x, y in points], fill=_ON)

    return draw


def _star(n_points: int, inner: float) -> Drawer:
    pts = []
    for k in range(2 * n_points):
        rad = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + k * math.pi / n_points
        pts.append((rad * math.cos(a), rad * math.sin(a)))
    return _poly(pts)


def _box(
    d: ImageDraw.ImageDraw,
    cx: float,
    cy: float,
    r: float,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    fill: int = _ON,
) -> None:
    d.rectangle((cx + x0 * r, cy + y0 * r, cx + x1 * r, cy + y1 * r), fill=fill)


def _oval(
    d: ImageDraw.ImageDraw,
    cx: float,
    cy: float,
    r: float,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    fill: int = _ON,
) -> None:
    d.ellipse((cx + x0 * r, cy + y0 * r, cx + x1 * r, cy + y1 * r), fill=fill)


def _line(
    d: ImageDraw.ImageDraw,
    cx: float,
    cy: float,
    r: float,
    pts: list[tuple[float, float]],
    width: float,
    fill: int = _ON,
) -> None:
    d.line(
        [(cx + x * r, cy + y * r) for x, y in pts], fill=fill, width=max(1, round(width * r)), joint="curve"
    )


def _glyph(text: str) -> Drawer:
    def draw(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
        font = ImageFont.load_default(size=max(8, round(2.2 * r)))
        d.text((cx, cy), text, fill=_ON, font=font, anchor="mm")

    return draw


# --- generic shapes -------------------------------------------------------------------------------------
def _circle(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -1, 1, 1)


def _ellipse(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -0.55, 1, 0.55)


def _ring(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -1, 1, 1)
    _oval(d, cx, cy, r, -0.55, -0.55, 0.55, 0.55, fill=_OFF)


def _crescent(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -1, 1, 1)
    _oval(d, cx, cy, r, -0.45, -1.05, 1.35, 0.85, fill=_OFF)


def _semicircle(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.pieslice((cx - r, cy - r * 0.6, cx + r, cy + r * 1.4), 180, 360, fill=_ON)


def _heart(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -0.85, 0.05, 0.2)
    _oval(d, cx, cy, r, -0.05, -0.85, 1, 0.2)
    d.polygon([(cx - 0.97 * r, cy - 0.2 * r), (cx + 0.97 * r, cy - 0.2 * r), (cx, cy + r)], fill=_ON)


def _cross(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -0.3, -1, 0.3, 1)
    _box(d, cx, cy, r, -1, -0.3, 1, 0.3)


def _bar(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -1, -0.3, 1, 0.3)


def _teardrop(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -0.7, -0.3, 0.7, 1)
    d.polygon([(cx - 0.68 * r, cy + 0.25 * r), (cx + 0.68 * r, cy + 0.25 * r), (cx, cy - r)], fill=_ON)


# --- objects --------------------------------------------------------------------------------------------
def _fish(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -0.9, -0.5, 0.5, 0.5)
    d.polygon([(cx + 0.35 * r, cy), (cx + r, cy - 0.55 * r), (cx + r, cy + 0.55 * r)], fill=_ON)
    _oval(d, cx, cy, r, -0.6, -0.2, -0.42, -0.02, fill=_OFF)


def _flower(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    for k in range(6):
        a = k * math.pi / 3
        px, py = 0.55 * math.cos(a), 0.55 * math.sin(a)
        _oval(d, cx, cy, r, px - 0.42, py - 0.42, px + 0.42, py + 0.42)
    _oval(d, cx, cy, r, -0.22, -0.22, 0.22, 0.22, fill=_OFF)


def _sun(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -0.55, -0.55, 0.55, 0.55)
    for k in range(8):
        a = k * math.pi / 4
        _line(d, cx, cy, r, [(0.65 * math.cos(a), 0.65 * math.sin(a)), (math.cos(a), math.sin(a))], 0.16)


def _cloud(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -0.1, -0.1, 0.6)
    _oval(d, cx, cy, r, -0.55, -0.6, 0.35, 0.4)
    _oval(d, cx, cy, r, 0.05, -0.35, 1, 0.6)
    _box(d, cx, cy, r, -0.6, 0.1, 0.6, 0.6)


def _umbrella(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.pieslice((cx - r, cy - 0.9 * r, cx + r, cy + 0.9 * r), 180, 360, fill=_ON)
    _line(d, cx, cy, r, [(0, 0), (0, 0.85), (-0.25, 0.95)], 0.12)


def _key(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -0.4, -0.2, 0.4)
    _oval(d, cx, cy, r, -0.75, -0.15, -0.45, 0.15, fill=_OFF)
    _box(d, cx, cy, r, -0.25, -0.1, 1, 0.1)
    _box(d, cx, cy, r, 0.55, 0.05, 0.7, 0.4)
    _box(d, cx, cy, r, 0.8, 0.05, 0.95, 0.35)


def _cup(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.polygon(
        [
            (cx - 0.7 * r, cy - 0.7 * r),
            (cx + 0.5 * r, cy - 0.7 * r),
            (cx + 0.35 * r, cy + 0.8 * r),
            (cx - 0.55 * r, cy + 0.8 * r),
        ],
        fill=_ON,
    )
    d.arc(
        (cx + 0.2 * r, cy - 0.45 * r, cx + r, cy + 0.35 * r), 270, 90, fill=_ON, width=max(1, round(0.15 * r))
    )


def _bottle(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -0.4, -0.2, 0.4, 1)
    d.polygon(
        [
            (cx - 0.4 * r, cy - 0.2 * r),
            (cx + 0.4 * r, cy - 0.2 * r),
            (cx + 0.15 * r, cy - 0.55 * r),
            (cx - 0.15 * r, cy - 0.55 * r),
        ],
        fill=_ON,
    )
    _box(d, cx, cy, r, -0.15, -1, 0.15, -0.5)


def _boat(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.polygon(
        [
            (cx - r, cy + 0.3 * r),
            (cx + r, cy + 0.3 * r),
            (cx + 0.6 * r, cy + 0.8 * r),
            (cx - 0.6 * r, cy + 0.8 * r),
        ],
        fill=_ON,
    )
    d.polygon(
        [(cx - 0.05 * r, cy - r), (cx - 0.05 * r, cy + 0.2 * r), (cx - 0.8 * r, cy + 0.2 * r)], fill=_ON
    )
    d.polygon(
        [(cx + 0.05 * r, cy - 0.7 * r), (cx + 0.05 * r, cy + 0.2 * r), (cx + 0.6 * r, cy + 0.2 * r)], fill=_ON
    )


def _car(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -1, -0.1, 1, 0.45)
    d.polygon(
        [
            (cx - 0.55 * r, cy - 0.1 * r),
            (cx - 0.3 * r, cy - 0.55 * r),
            (cx + 0.35 * r, cy - 0.55 * r),
            (cx + 0.6 * r, cy - 0.1 * r),
        ],
        fill=_ON,
    )
    _oval(d, cx, cy, r, -0.8, 0.25, -0.35, 0.7, fill=_OFF)
    _oval(d, cx, cy, r, 0.35, 0.25, 0.8, 0.7, fill=_OFF)
    _oval(d, cx, cy, r, -0.7, 0.35, -0.45, 0.6)
    _oval(d, cx, cy, r, 0.45, 0.35, 0.7, 0.6)


def _leaf(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.chord((cx - r, cy - 1.6 * r, cx + 0.6 * r, cy + 0.6 * r), 0, 180, fill=_ON)
    _line(d, cx, cy, r, [(-0.9, -0.2), (0.5, -0.6)], 0.06, fill=_OFF)


def _mushroom(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.pieslice((cx - r, cy - 0.9 * r, cx + r, cy + 0.9 * r), 180, 360, fill=_ON)
    _box(d, cx, cy, r, -0.25, 0, 0.25, 0.9)


def _bell(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.pieslice((cx - 0.6 * r, cy - 0.9 * r, cx + 0.6 * r, cy + 0.3 * r), 180, 360, fill=_ON)
    d.polygon(
        [
            (cx - 0.6 * r, cy - 0.3 * r),
            (cx + 0.6 * r, cy - 0.3 * r),
            (cx + r, cy + 0.6 * r),
            (cx - r, cy + 0.6 * r),
        ],
        fill=_ON,
    )
    _oval(d, cx, cy, r, -0.18, 0.55, 0.18, 0.9)


def _clock(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -1, 1, 1)
    _oval(d, cx, cy, r, -0.8, -0.8, 0.8, 0.8, fill=_OFF)
    _line(d, cx, cy, r, [(0, -0.6), (0, 0), (0.45, 0.2)], 0.12)


# --- places ---------------------------------------------------------------------------------------------
def _house(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.polygon([(cx - r, cy - 0.1 * r), (cx, cy - r), (cx + r, cy - 0.1 * r)], fill=_ON)
    _box(d, cx, cy, r, -0.75, -0.1, 0.75, 1)
    _box(d, cx, cy, r, -0.2, 0.4, 0.2, 1, fill=_OFF)
    _box(d, cx, cy, r, -0.6, 0.1, -0.35, 0.35, fill=_OFF)
    _box(d, cx, cy, r, 0.35, 0.1, 0.6, 0.35, fill=_OFF)


def _tower(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -0.35, -0.6, 0.35, 1)
    d.polygon([(cx - 0.5 * r, cy - 0.6 * r), (cx, cy - r), (cx + 0.5 * r, cy - 0.6 * r)], fill=_ON)
    for y in (-0.3, 0.1, 0.5):
        _box(d, cx, cy, r, -0.1, y, 0.1, y + 0.2, fill=_OFF)


def _bridge(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -1, -0.4, 1, 0.6)
    d.pieslice((cx - 0.6 * r, cy - 0.1 * r, cx + 0.6 * r, cy + 1.3 * r), 180, 360, fill=_OFF)
    _box(d, cx, cy, r, -0.6, 0.6, 0.6, 0.61, fill=_OFF)


def _tree(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -0.15, 0.2, 0.15, 1)
    _oval(d, cx, cy, r, -0.75, -1, 0.75, 0.4)


def _mountain(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.polygon(
        [
            (cx - r, cy + 0.8 * r),
            (cx - 0.3 * r, cy - 0.8 * r),
            (cx + 0.1 * r, cy),
            (cx + 0.45 * r, cy - 0.4 * r),
            (cx + r, cy + 0.8 * r),
        ],
        fill=_ON,
    )


def _tent(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.polygon([(cx - r, cy + 0.8 * r), (cx, cy - 0.9 * r), (cx + r, cy + 0.8 * r)], fill=_ON)
    d.polygon([(cx - 0.3 * r, cy + 0.8 * r), (cx, cy + 0.1 * r), (cx + 0.3 * r, cy + 0.8 * r)], fill=_OFF)


def _castle(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -0.9, -0.2, 0.9, 1)
    for x in (-0.9, -0.45, 0.0, 0.45):
        _box(d, cx, cy, r, x, -0.6, x + 0.25, -0.2)
    _box(d, cx, cy, r, -0.25, 0.4, 0.25, 1, fill=_OFF)


def _door(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -0.55, -0.5, 0.55, 1)
    d.pieslice((cx - 0.55 * r, cy - r, cx + 0.55 * r, cy), 180, 360, fill=_ON)
    _oval(d, cx, cy, r, 0.2, 0.25, 0.38, 0.43, fill=_OFF)


# --- faces ----------------------------------------------------------------------------------------------
def _face_base(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -1, -1, 1, 1)
    _oval(d, cx, cy, r, -0.5, -0.45, -0.2, -0.15, fill=_OFF)
    _oval(d, cx, cy, r, 0.2, -0.45, 0.5, -0.15, fill=_OFF)


def _smiling_face(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _face_base(d, cx, cy, r)
    d.arc(
        (cx - 0.55 * r, cy - 0.35 * r, cx + 0.55 * r, cy + 0.6 * r),
        20,
        160,
        fill=_OFF,
        width=max(1, round(0.14 * r)),
    )


def _sad_face(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _face_base(d, cx, cy, r)
    d.arc(
        (cx - 0.5 * r, cy + 0.25 * r, cx + 0.5 * r, cy + 1.0 * r),
        200,
        340,
        fill=_OFF,
        width=max(1, round(0.14 * r)),
    )


def _cat_face(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.polygon([(cx - 0.9 * r, cy - r), (cx - 0.2 * r, cy - 0.6 * r), (cx - 0.85 * r, cy - 0.2 * r)], fill=_ON)
    d.polygon([(cx + 0.9 * r, cy - r), (cx + 0.2 * r, cy - 0.6 * r), (cx + 0.85 * r, cy - 0.2 * r)], fill=_ON)
    _oval(d, cx, cy, r, -0.9, -0.75, 0.9, 0.95)
    _oval(d, cx, cy, r, -0.5, -0.3, -0.2, 0.0, fill=_OFF)
    _oval(d, cx, cy, r, 0.2, -0.3, 0.5, 0.0, fill=_OFF)
    d.polygon([(cx - 0.12 * r, cy + 0.2 * r), (cx + 0.12 * r, cy + 0.2 * r), (cx, cy + 0.35 * r)], fill=_OFF)


def _owl_face(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -0.9, -0.9, 0.9, 1)
    _oval(d, cx, cy, r, -0.75, -0.55, -0.05, 0.15, fill=_OFF)
    _oval(d, cx, cy, r, 0.05, -0.55, 0.75, 0.15, fill=_OFF)
    _oval(d, cx, cy, r, -0.5, -0.3, -0.3, -0.1)
    _oval(d, cx, cy, r, 0.3, -0.3, 0.5, -0.1)
    d.polygon([(cx - 0.15 * r, cy + 0.25 * r), (cx + 0.15 * r, cy + 0.25 * r), (cx, cy + 0.6 * r)], fill=_OFF)


def _robot_face(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _box(d, cx, cy, r, -0.85, -0.7, 0.85, 0.9)
    _box(d, cx, cy, r, -0.05, -1, 0.05, -0.7)
    _box(d, cx, cy, r, -0.55, -0.35, -0.2, -0.05, fill=_OFF)
    _box(d, cx, cy, r, 0.2, -0.35, 0.55, -0.05, fill=_OFF)
    _box(d, cx, cy, r, -0.5, 0.35, 0.5, 0.55, fill=_OFF)


# --- bodies ---------------------------------------------------------------------------------------------
def _stick_figure(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -0.28, -1, 0.28, -0.45)
    _line(d, cx, cy, r, [(0, -0.45), (0, 0.35)], 0.16)
    _line(d, cx, cy, r, [(-0.7, -0.3), (0, -0.15), (0.7, -0.3)], 0.14)
    _line(d, cx, cy, r, [(-0.55, 1), (0, 0.35), (0.55, 1)], 0.14)


def _hand(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -0.6, -0.1, 0.6, 1)
    for k, x in enumerate((-0.5, -0.2, 0.1, 0.4)):
        _box(d, cx, cy, r, x - 0.08, -0.9 + 0.1 * abs(k - 1.5), x + 0.12, 0.3)
    _line(d, cx, cy, r, [(-0.5, 0.5), (-0.95, 0.05)], 0.2)


def _footprint(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -0.45, -0.45, 0.45, 1)
    for k, x in enumerate((-0.45, -0.2, 0.05, 0.28)):
        s = 0.2 - 0.03 * k
        _oval(d, cx, cy, r, x - s / 2, -0.85 + 0.06 * k, x + s, -0.85 + 0.06 * k + s * 1.5)


def _snowman(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    _oval(d, cx, cy, r, -0.65, -0.1, 0.65, 1)
    _oval(d, cx, cy, r, -0.42, -0.8, 0.42, 0.05)
    _box(d, cx, cy, r, -0.3, -1, 0.3, -0.75)
    _oval(d, cx, cy, r, -0.2, -0.55, -0.08, -0.43, fill=_OFF)
    _oval(d, cx, cy, r, 0.08, -0.55, 0.2, -0.43, fill=_OFF)


CATEGORIES: dict[str, tuple[str, Drawer]] = {
    # name: (domain, drawer)
    "circle": ("shape", _circle),
    "square": ("shape", _regular_polygon(4, rotation=45)),
    "triangle": ("shape", _regular_polygon(3)),
    "pentagon": ("shape", _regular_polygon(5)),
    "hexagon": ("shape", _regular_polygon(6)),
    "octagon": ("shape", _regular_polygon(8, rotation=22.5)),
    "diamond": ("shape", _poly([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)])),
    "star": ("shape", _star(5, 0.45)),
    "sparkle": ("shape", _star(4, 0.3)),
    "cross": ("shape", _cross),
    "ring": ("shape", _ring),
    "crescent": ("shape", _crescent),
    "heart": ("shape", _heart),
    "arrow": (
        "shape",
        _poly([(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)]),
    ),
    "semicircle": ("shape", _semicircle),
    "trapezoid": ("shape", _poly([(-0.5, -0.6), (0.5, -0.6), (1, 0.6), (-1, 0.6)])),
    "bar": ("shape", _bar),
    "ellipse": ("shape", _ellipse),
    "lightning bolt": (
        "shape",
        _poly([(0.2, -1), (-0.6, 0.15), (-0.05, 0.15), (-0.3, 1), (0.6, -0.2), (0.05, -0.2), (0.35, -1)]),
    ),
    "teardrop": ("shape", _teardrop),
    "fish": ("object", _fish),
    "flower": ("object", _flower),
    "sun": ("object", _sun),
    "cloud": ("object", _cloud),
    "umbrella": ("object", _umbrella),
    "key": ("object", _key),
    "cup": ("object", _cup),
    "bottle": ("object", _bottle),
    "boat": ("object", _boat),
    "car": ("object", _car),
    "leaf": ("object", _leaf),
    "mushroom": ("object", _mushroom),
    "bell": ("object", _bell),
    "clock": ("object", _clock),
    "house": ("place", _house),
    "tower": ("place", _tower),
    "bridge": ("place", _bridge),
    "tree": ("place", _tree),
    "mountain": ("place", _mountain),
    "tent": ("place", _tent),
    "castle": ("place", _castle),
    "door": ("place", _door),
    "smiling face": ("face", _smiling_face),
    "sad face": ("face", _sad_face),
    "cat face": ("face", _cat_face),
    "owl face": ("face", _owl_face),
    "robot face": ("face", _robot_face),
    "stick figure": ("body", _stick_figure),
    "hand": ("body", _hand),
    "footprint": ("body", _footprint),
    "snowman": ("body", _snowman),
    "letter A": ("word", _glyph("A")),
    "letter E": ("word", _glyph("E")),
    "letter K": ("word", _glyph("K")),
    "letter R": ("word", _glyph("R")),
    "digit 3": ("word", _glyph("3")),
    "digit 7": ("word", _glyph("7")),
}

CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
DOMAINS: tuple[str, ...] = ("shape", "object", "place", "face", "body", "word")


def category_domain(name: str) -> str:
    """The cortical domain of a category: face, place, body, word, object or shape."""
    return CATEGORIES[name][0]
