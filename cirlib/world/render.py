"""Render symbolic scenes to small RGB images.

Each render draws at 2x resolution and downsamples (anti-aliasing), with a small seeded jitter of
positions, colours and texture phase: two renders of the same scene are the same content but not
the same pixels, as two photos of the same thing are. The jitter seed is part of the image id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from cirlib.config import progress_bar
from cirlib.world.scene import GRID, Obj, Scene

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 165, 45),
    "blue": (35, 70, 225),
    "yellow": (240, 215, 30),
    "purple": (140, 45, 185),
    "orange": (250, 135, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUND_BASE = (168, 168, 160)
BACKGROUND_INK = (128, 128, 122)
SIZE_RADIUS = {"small": 0.26, "large": 0.43}  # as a fraction of a grid cell
SUPERSAMPLE = 2


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = 0.82 * r
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [
            (cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.68 * r, cy), (cx, cy + r), (cx - 0.68 * r, cy)]
    if shape == "star":
        points = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else 0.45 * r
            points.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return points
    if shape == "cross":
        w = 0.36 * r
        return [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
            (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
            (cx - r, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    if shape == "heart":
        points = []
        for i in range(32):
            t = 2 * math.pi * i / 32
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((cx + r * x / 17, cy - r * (y + 2.5) / 17))
        return points
    raise ValueError(f"no drawing for shape {shape!r}")


def _background(draw: ImageDraw.ImageDraw, kind: str, size: int, rng: np.random.Generator) -> None:
    ink = BACKGROUND_INK
    phase = int(rng.integers(0, 8)) * SUPERSAMPLE
    step = 8 * SUPERSAMPLE
    if kind == "plain":
        return
    if kind == "striped":
        for x in range(-size, 2 * size, step):
            draw.line([(x + phase, 0), (x + phase + size, size)], fill=ink, width=2 * SUPERSAMPLE)
    elif kind == "dotted":
        for y in range(phase // 2, size, step):
            for x in range(phase // 2, size, step):
                draw.ellipse([x, y, x + 2 * SUPERSAMPLE, y + 2 * SUPERSAMPLE], fill=ink)
    elif kind == "checkered":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if ((x + y) // step) % 2 == 0:
                    draw.rectangle(
                        [x + phase, y + phase, x + phase + step - 1, y + phase + step - 1], fill=ink
                    )
    elif kind == "wavy":
        for y0 in range(phase, size + step, step):
            pts = [
                (x, y0 + 2.5 * SUPERSAMPLE * math.sin(x / (3.0 * SUPERSAMPLE))) for x in range(0, size + 1, 2)
            ]
            draw.line(pts, fill=ink, width=SUPERSAMPLE + 1)
    else:
        raise ValueError(f"no drawing for background {kind!r}")


def _jittered(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in rgb)  # type: ignore[return-value]


def render(scene: Scene, image_size: int = 64, jitter_seed: int = 0, jitter: bool = True) -> np.ndarray:
    """Render a scene to a uint8 array [image_size, image_size, 3].

    ``jitter_seed`` chooses the small nuisance variation (object offsets of up to ~4% of the image,
    colour shifts, texture phase); ``jitter=False`` gives the canonical render."""
    rng = np.random.default_rng(jitter_seed)
    big = image_size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), _jittered(BACKGROUND_BASE, rng, 10 if jitter else 0))
    draw = ImageDraw.Draw(image)
    _background(draw, scene.background, big, rng if jitter else np.random.default_rng(0))
    cell = big / GRID
    max_offset = 0.12 * cell if jitter else 0.0
    for obj in scene.objects:
        cx = (obj.col + 0.5) * cell + (rng.uniform(-max_offset, max_offset) if jitter else 0.0)
        cy = (obj.row + 0.5) * cell + (rng.uniform(-max_offset, max_offset) if jitter else 0.0)
        r = SIZE_RADIUS[obj.size] * cell * (rng.uniform(0.93, 1.07) if jitter else 1.0)
        color = _jittered(RGB[obj.color], rng, 14) if jitter else RGB[obj.color]
        _draw_object(draw, obj, cx, cy, r, color)
    return np.asarray(image.resize((image_size, image_size), Image.Resampling.BOX), dtype=np.uint8)


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, cx: float, cy: float, r: float, color) -> None:
    outline = (40, 40, 40) if obj.color != "black" else (90, 90, 90)
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color, outline=outline, width=SUPERSAMPLE)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r), fill=color, outline=outline, width=SUPERSAMPLE)


def render_many(
    scenes: Sequence[Scene],
    image_size: int = 64,
    jitter_seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Render a list of scenes to uint8 [N, H, W, 3]; ``jitter_seeds`` default to 0..N-1."""
    seeds = range(len(scenes)) if jitter_seeds is None else jitter_seeds
    out = np.empty((len(scenes), image_size, image_size, 3), dtype=np.uint8)
    iterator = zip(scenes, seeds, strict=True)
    for i, (scene, seed) in enumerate(
        progress_bar(iterator, total=len(scenes), desc="render", show=progress and len(scenes) >= 2000)
    ):
        out[i] = render(scene, image_size, int(seed))
    return out


def object_box(obj: Obj) -> tuple[float, float, float, float]:
    """The box ``(x0, y0, x1, y1)`` in [0, 1] (y down) that :func:`render` draws ``obj`` in, without
    jitter: the grounding box a layout-to-image generator is trained with."""
    cell = 1.0 / GRID
    cx, cy, r = (obj.col + 0.5) * cell, (obj.row + 0.5) * cell, SIZE_RADIUS[obj.size] * cell
    return (round(cx - r, 4), round(cy - r, 4), round(cx + r, 4), round(cy + r, 4))
