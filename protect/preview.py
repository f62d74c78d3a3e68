"""A picture for people: originals, protected images and amplified δ side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from protect import files

TILE = 160  # pixels per tile side


def _tile(rgb: np.ndarray) -> Image.Image:
    image = Image.fromarray(rgb)
    image.thumbnail((TILE, TILE))
    canvas = Image.new("RGB", (TILE, TILE), (255, 255, 255))
    canvas.paste(image, ((TILE - image.width) // 2, (TILE - image.height) // 2))
    return canvas


def write_preview(pairs: list[tuple[Path, Path]], destination: Path, epsilon: int) -> None:
    """Write a PNG grid with one row per pair: original, protected, δ amplified to full range.

    δ is shown as 128 + difference * 127 / epsilon, so ±ε maps to black and white.
    """
    rows = []
    for original_path, protected_path in pairs:
        original = files.read_rgb(original_path).astype(np.int32)
        protected = files.read_rgb(protected_path).astype(np.int32)
        if original.shape != protected.shape:
            continue
        amplified = np.clip(128 + (protected - original) * 127 / epsilon, 0, 255).astype(np.uint8)
        rows.append([_tile(original.astype(np.uint8)), _tile(protected.astype(np.uint8)), _tile(amplified)])
    grid = Image.new("RGB", (3 * TILE, max(1, len(rows)) * TILE), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            grid.paste(tile, (c * TILE, r * TILE))
    destination.parent.mkdir(parents=True, exist_ok=True)
    grid.save(destination, format="PNG")
