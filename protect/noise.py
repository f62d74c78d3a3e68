"""Uniform random noise inside the L∞ budget.

It is the engine's random start and, on its own, the baseline that every
protection method must beat: noise of the same budget that carries no pattern
a model could learn as a shortcut.
"""

from __future__ import annotations

import torch

CHUNK = 4096  # images per draw, so that a file-backed δ is never materialised in memory at once


def fill_uniform(delta: torch.Tensor, images: torch.Tensor, epsilon: float, generator: torch.Generator) -> None:
    """Fill δ with uniform noise in [-ε, ε], cut so that images + δ stays in [0, 1].

    Draws come from `generator` chunk by chunk in order, so a seed gives the
    same δ whatever holds it in memory.
    """
    for start in range(0, images.shape[0], CHUNK):
        rows = slice(start, start + CHUNK)
        noise = (torch.rand(delta[rows].shape, generator=generator) * 2 - 1) * epsilon
        delta[rows] = (images[rows] + noise).clamp(0, 1) - images[rows]
