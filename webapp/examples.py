"""The Space's example images, drawn procedurally at start-up.

Generated here from fixed formulas, so their licence is ours (CC0) and no photograph or face is
ever shown or redistributed by the Space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_example_images(directory: str | Path, size: int = 384) -> list[Path]:
    """Write three procedural PNGs (landscape, tiles, marble) into ``directory``; returns paths.

    Drawn by this function from fixed formulas (no randomness from outside, no third-party
    pictures), so the Space may show and redistribute them: CC0.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    pictures = {
        "sunset_hills": _landscape(x, y),
        "mosaic_tiles": _tiles(x, y),
        "blue_marble": _marble(x, y),
    }
    paths = []
    for name, array in pictures.items():
        path = directory / f"{name}.png"
        Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path, format="PNG")
        paths.append(path)
    return paths


def _landscape(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sky = np.stack([0.95 - 0.3 * y, 0.55 + 0.2 * y, 0.35 + 0.5 * y], axis=-1)
    sun = np.exp(-((x - 0.7) ** 2 + (y - 0.3) ** 2) / 0.004)[..., None] * np.array([1.0, 0.8, 0.3])
    far = y > 0.55 + 0.08 * np.sin(9 * x) + 0.03 * np.sin(23 * x + 1)
    near = y > 0.7 + 0.06 * np.sin(5 * x + 2) + 0.02 * np.sin(31 * x)
    image = sky + sun
    image[far] = np.array([0.35, 0.3, 0.45]) + 0.1 * y[far, None]
    image[near] = np.array([0.15, 0.35, 0.18]) + 0.15 * np.sin(60 * x[near] + 40 * y[near])[:, None] * 0.3
    return image


def _tiles(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cells = 6
    cx, cy = np.floor(x * cells), np.floor(y * cells)
    hue = ((cx * 0.37 + cy * 0.61) % 1.0)[..., None]
    base = 0.5 + 0.45 * np.cos(2 * np.pi * (hue + np.array([0.0, 0.33, 0.67])))
    u, v = (x * cells) % 1.0, (y * cells) % 1.0
    grout = ((u < 0.06) | (v < 0.06))[..., None]
    disc = (((u - 0.5) ** 2 + (v - 0.5) ** 2) < 0.08)[..., None]
    return np.where(grout, 0.9, np.where(disc, 1.0 - base, base))


def _marble(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    turbulence = sum(np.sin((2**k) * 7 * (x + 0.3 * y) + k * 1.7) / 2**k for k in range(5))
    veins = 0.5 + 0.5 * np.sin(12 * x + 6 * y + 3 * turbulence)
    return np.stack([0.2 + 0.5 * veins, 0.35 + 0.5 * veins, 0.6 + 0.4 * veins], axis=-1)


EXAMPLE_CREDIT = "Example images: drawn procedurally by FastProtect at start-up (CC0); no photographs, no faces."
