"""Measure whether an image shows what its shapes-dataset prompt asks for: colour, shape and position.

The dataset draws one saturated shape on a grey background, so the shape's pixels are the high-chroma ones.
The largest high-chroma connected component is the shape; its mean hue names the colour (nearest palette
hue), its centroid names the position (nearest anchor), and the shape is the template (rendered from the
dataset's own signed distance functions, centred on the centroid, size searched) with the highest IoU.
A tiny rule-based checker instead of a trained classifier: it cannot share the generator's mistakes.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fusionc.models.shapes_dataset import COLOURS, POSITIONS, SHAPES, Scene, shape_sdf

CHROMA_MIN = 60.0
AREA_MIN = 40


@dataclass(frozen=True)
class Detection:
    colour: str | None
    shape: str | None
    position: str | None
    area: int = 0
    iou: float = 0.0


def _hue(rgb: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, np.float64) / 255.0))[0] * 360.0


PALETTE_HUES = {name: _hue(np.array(rgb)) for name, rgb in COLOURS.items()}


def parse_prompt(prompt: str) -> Scene | None:
    """The Scene a prompt names, or None if it lacks a colour, a shape or a position word."""
    words = prompt.lower().replace(",", " ").split()
    pick = lambda options: next((w for w in words if w in options), None)  # noqa: E731
    colour, shape, position = pick(COLOURS), pick(SHAPES), pick(POSITIONS)
    if not (colour and shape and position):
        return None
    return Scene(colour, shape, position, "striped" if "striped" in words else "plain")


def detect(image: np.ndarray) -> Detection:
    """Find the shape in a uint8 HxWx3 image (any size; geometry is judged at 64x64)."""
    rgb = image.astype(np.float32)
    size = image.shape[0]
    chroma = rgb.max(-1) - rgb.min(-1)
    labels, count = ndimage.label(chroma > CHROMA_MIN)
    if count == 0:
        return Detection(None, None, None)
    areas = ndimage.sum(np.ones_like(chroma), labels, index=range(1, count + 1))
    mask = labels == (int(np.argmax(areas)) + 1)
    area = int(mask.sum())
    if area < AREA_MIN * (size / 64) ** 2:
        return Detection(None, None, None, area)
    hue = _hue(rgb[mask].mean(0))
    colour = min(PALETTE_HUES, key=lambda c: min(abs(hue - PALETTE_HUES[c]), 360 - abs(hue - PALETTE_HUES[c])))
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) * 64 / size, (ys.mean() + 0.5) * 64 / size
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    small = mask if size == 64 else _resize_mask(mask, 64)
    best, best_iou = None, -1.0
    for shape in SHAPES:
        for r in np.arange(0.8, 1.45, 0.05) * np.sqrt(small.sum() / np.pi):  # template sizes of the same area
            template = shape_sdf(shape, cx, cy, float(r)) < 0
            iou = float((template & small).sum() / max((template | small).sum(), 1))
            if iou > best_iou:
                best, best_iou = shape, iou
    return Detection(colour, best, position, area, best_iou)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    zoom = size / mask.shape[0]
    return ndimage.zoom(mask.astype(np.float32), zoom, order=1) > 0.5


def check(prompt: str, image: np.ndarray) -> dict[str, object]:
    """Per-attribute agreement of image with prompt; `ok` is true when colour, shape and position all agree."""
    want = parse_prompt(prompt)
    if want is None:
        raise ValueError(f"prompt {prompt!r} does not name a colour, a shape and a position")
    got = detect(image)
    result: dict[str, object] = {
        "prompt": prompt, "colour": got.colour, "shape": got.shape, "position": got.position,
        "colour_ok": got.colour == want.colour, "shape_ok": got.shape == want.shape,
        "position_ok": got.position == want.position, "iou": round(got.iou, 3),
    }
    result["ok"] = bool(result["colour_ok"] and result["shape_ok"] and result["position_ok"])
    return result
