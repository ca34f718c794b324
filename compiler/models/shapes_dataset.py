"""Procedural captioned images for the built-in pipeline: coloured shapes at named positions.

Each image is a 64x64 RGB picture of one shape (circle, square, triangle, cross) in one of six saturated
colours, near one of five anchor positions (left, right, top, bottom, center), on a dark grey background
that is either plain or softly striped. The caption names exactly what the picture shows, for example
"a red circle on the left" or "a blue cross at the top, striped background".

Shapes are rasterised from signed distance functions with one pixel of anti-aliasing (numpy only, no
drawing library), so a seed fully determines an image and rendering 20,000 images takes seconds.
Grey backgrounds and saturated shapes keep the prompt check (`fusionc.models.shapes_check`) simple:
a pixel belongs to the shape when its chroma is high.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SIZE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "yellow": (235, 215, 45),
    "green": (45, 195, 70),
    "cyan": (40, 205, 215),
    "blue": (55, 85, 235),
    "purple": (160, 65, 215),
}
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS: dict[str, tuple[float, float]] = {  # name -> anchor (x, y) in pixels of a 64x64 image
    "left": (16.0, 32.0),
    "right": (48.0, 32.0),
    "top": (32.0, 16.0),
    "bottom": (32.0, 48.0),
    "center": (32.0, 32.0),
}
PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
           "center": "in the center"}
BACKGROUNDS = ("plain", "striped")
WORDS = sorted({"a", "on", "the", "at", "in", "background", *COLOURS, *SHAPES, *PHRASES, *BACKGROUNDS,
                *" ".join(PHRASES.values()).split()})


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: str
    background: str = "plain"

    @property
    def caption(self) -> str:
        text = f"a {self.colour} {self.shape} {PHRASES[self.position]}"
        return text + (", striped background" if self.background == "striped" else "")


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    return np.mgrid[0:size, 0:size].astype(np.float32) + 0.5


def shape_sdf(shape: str, cx: float, cy: float, r: float, size: int = SIZE) -> np.ndarray:
    """Signed distance in pixels (negative inside) of `shape` centred at (cx, cy) with half-size r."""
    ys, xs = _grid(size)
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return np.hypot(dx, dy) - r
    if shape == "square":
        h = r * 0.85
        qx, qy = np.abs(dx) - h, np.abs(dy) - h
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":  # pointing up, equilateral, centroid at (cx, cy)
        k = np.sqrt(3.0)
        s = r * 1.15
        px, py = np.abs(dx) / s, -(dy) / s
        px, py = px - 1.0, py + 1.0 / k
        flip = px + k * py > 0
        px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
        px = px - np.clip(px, -2.0, 0.0)
        return -np.hypot(px, py) * np.sign(py) * s
    if shape == "cross":
        arm, half = r, r * 0.36
        ax, ay = np.abs(dx), np.abs(dy)

        def box(bx: float, by: float) -> np.ndarray:
            qx, qy = ax - bx, ay - by
            return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)

        return np.minimum(box(arm, half), box(half, arm))
    raise ValueError(f"unknown shape {shape}")


def background(scene: Scene, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """The plain or striped background of `scene` (random shade, stripe period, phase and angle), float32 [H, W, 3]."""
    grey = rng.uniform(25, 85)
    image = np.full((size, size, 3), grey, np.float32)
    if scene.background == "striped":
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        period, phase = rng.uniform(10, 16), rng.uniform(0, 2 * np.pi)
        angle = rng.choice([0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4])
        wave = np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period + phase)
        image += (np.where(wave > 0, 1.0, -1.0) * rng.uniform(12, 20))[..., None]
    return image


def render(scene: Scene, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Draw `scene` with random jitter (position, size, shade) from rng; returns uint8 [size, size, 3]."""
    image = background(scene, rng, size)
    ax, ay = POSITIONS[scene.position]
    scale = size / SIZE
    cx, cy = (ax + rng.uniform(-3, 3)) * scale, (ay + rng.uniform(-3, 3)) * scale
    r = rng.uniform(9.5, 12.5) * scale
    colour = np.clip(np.array(COLOURS[scene.colour], np.float32) + rng.uniform(-12, 12, 3), 0, 255)
    cover = np.clip(0.5 - shape_sdf(scene.shape, cx, cy, r, size), 0.0, 1.0)[..., None]
    image = image * (1 - cover) + colour * cover
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def random_scene(rng: np.random.Generator, striped_fraction: float = 0.3) -> Scene:
    return Scene(
        colour=str(rng.choice(list(COLOURS))), shape=str(rng.choice(SHAPES)),
        position=str(rng.choice(list(POSITIONS))),
        background="striped" if rng.random() < striped_fraction else "plain",
    )


def make_dataset(n: int, seed: int = 0, size: int = SIZE) -> tuple[np.ndarray, list[str]]:
    """n seeded images (uint8 [n, size, size, 3]) and their captions."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    images = np.stack([render(s, rng, size) for s in scenes])
    return images, [s.caption for s in scenes]


def check_prompts(n: int, seed: int = 1234) -> list[Scene]:
    """The seeded prompt set of the prompt check: every colour, shape and position, plain backgrounds."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng, striped_fraction=0.0) for _ in range(n)]
