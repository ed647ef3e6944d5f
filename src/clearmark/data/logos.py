"""Logo shapes the synthetic generators draw, one drawer per shape name.

Each drawer paints 255 on a (supersampled) ``L`` layer, inside the circle of ``radius``
around (centre, centre); ``ring_width`` is the stroke of outlined variants.  A drawer's
random draws are part of the generators' reproducibility: change one and the images change.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import ImageDraw

def _draw_disc(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    draw.ellipse([centre - radius, centre - radius * rng.uniform(0.6, 1.0), centre + radius, centre + radius], fill=255)


def _draw_ring(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], outline=255, width=ring_width)


def _draw_star(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    draw.polygon(_star_points(centre, radius, int(rng.integers(5, 9)), float(rng.uniform(0.4, 0.6))), fill=255)


def _draw_badge(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    _draw_ring(draw, rng, centre, radius, ring_width)
    _draw_star(draw, rng, centre, radius - ring_width * 1.6, ring_width)


def _draw_rounded_rect(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    box = [centre - radius, centre - radius * rng.uniform(0.5, 1.0), centre + radius, centre + radius * rng.uniform(0.5, 1.0)]
    corner = int(radius * rng.uniform(0.1, 0.5))
    if rng.random() < 0.5:
        draw.rounded_rectangle(box, radius=corner, fill=255)
    else:
        draw.rounded_rectangle(box, radius=corner, outline=255, width=ring_width)


def _draw_polygon(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    draw.regular_polygon((centre, centre, radius), int(rng.integers(3, 9)), rotation=float(rng.uniform(0, 360)), fill=255)


def _draw_cross(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    arm = radius * rng.uniform(0.16, 0.3)  # half the bar thickness
    draw.rectangle([centre - radius, centre - arm, centre + radius, centre + arm], fill=255)
    draw.rectangle([centre - arm, centre - radius, centre + arm, centre + radius], fill=255)


def _draw_crescent(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], fill=255)
    cut = radius * rng.uniform(0.75, 0.95)  # a smaller disc, shifted towards a random side, is cut out
    angle = rng.uniform(0, 2 * math.pi)
    shift = radius * rng.uniform(0.3, 0.55)
    x, y = centre + shift * math.cos(angle), centre + shift * math.sin(angle)
    draw.ellipse([x - cut, y - cut, x + cut, y + cut], fill=0)


def _draw_arrow(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    shaft = radius * rng.uniform(0.18, 0.3)  # half the shaft thickness
    head = radius * rng.uniform(0.7, 1.0)  # head length
    barb = radius * rng.uniform(0.6, 0.9)  # half the head width
    outline = [(-radius, -shaft), (radius - head, -shaft), (radius - head, -barb), (radius, 0.0), (radius - head, barb), (radius - head, shaft), (-radius, shaft)]
    draw.polygon(_turned(outline, centre, math.pi / 2 * int(rng.integers(4))), fill=255)


def _draw_heart(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    # The classic parametric heart, x in [-16, 16] and y in [-17, 12] before scaling.
    scale = radius / 17
    steps = [2 * math.pi * k / 96 for k in range(96)]
    outline = [(16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)) - 2.5) for t in steps]
    points = [(centre + x * scale, centre + y * scale) for x, y in outline]
    if rng.random() < 0.7:
        draw.polygon(points, fill=255)
    else:
        draw.polygon(points, outline=255, width=ring_width)


def _draw_shield(draw: ImageDraw.ImageDraw, rng: np.random.Generator, centre: float, radius: float, ring_width: int) -> None:
    half_width = radius * rng.uniform(0.65, 0.85)
    shoulder = radius * rng.uniform(-0.1, 0.3)  # where the straight sides start curving to the tip
    steps = [k / 24 for k in range(25)]
    # Vertical where the straight sides end, meeting at an angle at the bottom tip.
    right = [(half_width * math.cos(math.pi / 2 * t), shoulder + (radius - shoulder) * t) for t in steps]
    outline = [(-half_width, -radius), (half_width, -radius), *right, *[(-x, y) for x, y in reversed(right)]]
    points = [(centre + x, centre + y) for x, y in outline]
    if rng.random() < 0.6:
        draw.polygon(points, fill=255)
    else:
        draw.polygon(points, outline=255, width=ring_width)


LOGO_DRAWERS = {
    "disc": _draw_disc,
    "ring": _draw_ring,
    "star": _draw_star,
    "badge": _draw_badge,
    "rounded_rect": _draw_rounded_rect,
    "polygon": _draw_polygon,
    "cross": _draw_cross,
    "crescent": _draw_crescent,
    "arrow": _draw_arrow,
    "heart": _draw_heart,
    "shield": _draw_shield,
}


def _star_points(centre: float, radius: float, points: int, inner_ratio: float) -> list[tuple[float, float]]:
    vertices = []
    for k in range(points * 2):
        r = radius if k % 2 == 0 else radius * inner_ratio
        angle = math.pi * k / points - math.pi / 2
        vertices.append((centre + r * math.cos(angle), centre + r * math.sin(angle)))
    return vertices


def _turned(outline: list[tuple[float, float]], centre: float, angle: float) -> list[tuple[float, float]]:
    """``outline`` (relative to the centre) rotated by ``angle`` and moved to (centre, centre)."""
    cos, sin = math.cos(angle), math.sin(angle)
    return [(centre + x * cos - y * sin, centre + x * sin + y * cos) for x, y in outline]
