"""Move images to the engine's working size and bring δ back to native pixels.

The engine crafts at one square working size S. Each image is squeezed to
S x S (aspect ratio not kept, so δ covers every pixel), and its δ is enlarged
back to the image's own H x W with bilinear interpolation. Bilinear weights
are non-negative and sum to one, so every native δ value lies between working
δ values and the L∞ budget holds on native pixels too. Rounding to 8 bits then
keeps it: the source is a whole number of levels and the budget is a whole
number of levels, so the nearest level to a value within budget is within it.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
import torch.nn.functional as F

# Working size when none is given: the folder's median short side, capped here.
# 64 pixels keeps a photo's coarse structure for the surrogate while crafting
# costs about 4x that of 32x32 CIFAR-size images.
MAX_AUTO_SIZE = 64
MIN_SIZE = 16  # the surrogates pool three times, so smaller inputs vanish


def auto_size(short_sides: list[int]) -> int:
    """Choose the working size from the images' short sides (pixels).

    The median short side, rounded down to a multiple of 8 and clamped to
    [MIN_SIZE, MAX_AUTO_SIZE]: a CIFAR folder works at its native 32, photos at 64.
    """
    median = int(statistics.median(short_sides))
    return max(MIN_SIZE, min(MAX_AUTO_SIZE, median // 8 * 8))


def to_working(rgb: np.ndarray, size: int) -> torch.Tensor:
    """Resize (H, W, 3) uint8 to a (3, size, size) float tensor in [0, 1]."""
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)  # (3, H, W)
    if x.shape[1:] == (size, size):
        return x
    x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp(0, 1)


def to_native(delta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Enlarge or shrink δ (3, S, S) to (3, height, width), staying within its range."""
    if delta.shape[1:] == (height, width):
        return delta
    antialias = height < delta.shape[1] or width < delta.shape[2]
    out = F.interpolate(
        delta[None], size=(height, width), mode="bilinear", antialias=antialias, align_corners=False
    )[0]
    # Antialiased shrinking can overshoot by float rounding; the budget is exact.
    bound = float(delta.abs().max())
    return out.clamp(-bound, bound)


def apply_delta(rgb: np.ndarray, delta: torch.Tensor, gray: bool) -> np.ndarray:
    """Add native δ (3, H, W) to (H, W, 3) uint8 pixels; return rounded uint8.

    For a gray image one luminance δ (ITU-R BT.601 weights, which sum to one)
    is added to all three equal channels, so the result stays gray and within
    the budget.
    """
    # float32 represents every level in [0, 255] with about 1e-5 to spare, enough to
    # round exactly, at half the memory of float64 on a 24-megapixel photo.
    d = delta.permute(1, 2, 0).numpy().astype(np.float32) * 255  # (H, W, 3), in levels
    if gray:
        luma = d @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        d = np.repeat(luma[..., None], 3, axis=2)
    d += rgb
    np.rint(d, out=d)  # round half to even, never truncate
    return np.clip(d, 0, 255).astype(np.uint8)
