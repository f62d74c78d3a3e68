"""Differentiable versions of what platforms and trainers do to images.

The engine averages its objective's gradient over random draws of these
(expectation over transformation, Athalye et al. 2018), so that δ keeps
working after a platform re-encodes a photo as JPEG, or a trainer converts it
to grayscale, blurs it or resizes it. Every function takes and returns image
batches (B, 3, H, W) in [0, 1], is differentiable with respect to them, and
draws its randomness from the generator it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Quantisation tables of the JPEG standard (ITU-T T.81, Annex K), at quality 50.
_LUMA_TABLE = torch.tensor([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=torch.float32).view(8, 8)
_CHROMA_TABLE = torch.tensor([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
], dtype=torch.float32).view(8, 8)


def _dct_matrix() -> torch.Tensor:
    """Return the orthonormal 8-point DCT-II matrix D, so that D @ block @ D.T is the 2-D DCT."""
    k = torch.arange(8, dtype=torch.float32).view(-1, 1)
    n = torch.arange(8, dtype=torch.float32).view(1, -1)
    d = torch.cos(math.pi * (2 * n + 1) * k / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


_DCT = _dct_matrix()


def _scaled_table(table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Scale a table to each quality in (B,) as libjpeg does; return (B, 8, 8)."""
    q = quality.clamp(1, 100).view(-1, 1, 1)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    scaled = torch.floor((table.to(q.device) * scale + 50) / 100).clamp(1, 255)
    return scaled


def _soft_round(x: torch.Tensor) -> torch.Tensor:
    """Round to integers in the forward pass with a useful gradient: round(x) + (x - round(x))^3.

    The cubic term (Shin and Song, 2017) keeps the value within 0.125 of
    round(x) while its gradient, 3 (x - round(x))^2, is not zero almost everywhere.
    """
    r = torch.round(x)
    return r + (x - r) ** 3


# The 64 DCT basis images as 8x8 convolution filters: a stride-8 convolution
# computes every block's coefficients at once, and the transposed convolution
# inverts it, because the basis is orthonormal. Convolutions run far faster
# than batches of tiny 8x8 matrix products.
_BASIS = torch.einsum("ki,lj->klij", _DCT, _DCT).reshape(64, 1, 8, 8)


def _blockwise(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT, quantise, dequantise and invert each 8x8 block of (B, C, H, W) planes, H and W multiples of 8."""
    b, c, h, w = plane.shape
    basis = _BASIS.to(plane.device, plane.dtype)
    coefficients = F.conv2d(plane.reshape(b * c, 1, h, w), basis, stride=8)  # (B*C, 64, h/8, w/8)
    steps = table.reshape(-1, 64, 1, 1).repeat_interleave(c, dim=0)  # (B*C, 64, 1, 1)
    restored = _soft_round(coefficients / steps) * steps
    return F.conv_transpose2d(restored, basis, stride=8).reshape(b, c, h, w)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Approximate a JPEG round trip at each image's quality (B,), with 4:2:0 chroma, differentiably.

    Follows baseline JPEG: BT.601 YCbCr, chroma averaged over 2x2 pixels,
    8x8 DCT, the standard tables scaled by quality, rounding, and back. It
    differs from Pillow's codec in its chroma upsampling (bilinear) and in
    rounding only the DCT coefficients.
    """
    b, _, h, w = x.shape
    pad_h, pad_w = (-h) % 16, (-w) % 16
    rgb = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") * 255
    r, g, bl = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl
    chroma = F.avg_pool2d(torch.cat([cb, cr], 1), 2)

    y = _blockwise(y - 128, _scaled_table(_LUMA_TABLE, quality)) + 128
    chroma = _blockwise(chroma, _scaled_table(_CHROMA_TABLE, quality))
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = chroma[:, 0:1], chroma[:, 1:2]

    out = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1) / 255
    return out[:, :, :h, :w].clamp(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Replace each pixel by its BT.601 luma in all three channels."""
    luma = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return luma.expand_as(x)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of `sigma` pixels, kernel radius ceil(2 sigma), reflected edges."""
    radius = max(1, math.ceil(2 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1)
    cols = kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1)
    return F.conv2d(F.conv2d(padded, rows, groups=3), cols, groups=3)


def down_up(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Shrink by `scale` (antialiased bilinear) and enlarge back, as a resize to a smaller size does."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(8, round(h * scale)), max(8, round(w * scale))),
                          mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def resized_crop(x: torch.Tensor, generator: torch.Generator, min_area: float = 0.5) -> torch.Tensor:
    """Cut a random square of min_area to all of each image and enlarge it back to full size."""
    b = x.shape[0]
    side = torch.sqrt(min_area + (1 - min_area) * torch.rand(b, generator=generator))  # share of the image side
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - side)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - side)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = side, side
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


OPERATIONS = ("identity", "jpeg", "grayscale", "blur", "down-up", "crop")


@dataclass(frozen=True)
class Pool:
    """The transformations drawn from, and their ranges.

    Each image in a batch gets one draw, with equal chances, from
    `operations`: a JPEG quality from [jpeg_min, jpeg_max], grayscale, a blur
    of sigma up to blur_max pixels (scaled from 32-pixel images), a
    down-and-up resize to down_min..0.9 of its side, a resized crop, or
    nothing ("identity"). Flips and shifts stay with the engine's augmentation.
    """

    jpeg_min: float = 30
    jpeg_max: float = 95
    blur_max: float = 1.0
    down_min: float = 0.5
    crop_area_min: float = 0.5
    operations: tuple[str, ...] = OPERATIONS

    def __post_init__(self) -> None:
        unknown = [name for name in self.operations if name not in OPERATIONS]
        if unknown or not self.operations:
            raise ValueError(f"invalid pool operations {self.operations}: use some of {', '.join(OPERATIONS)}")
        if not 1 <= self.jpeg_min <= self.jpeg_max <= 100:
            raise ValueError(
                f"invalid JPEG qualities {self.jpeg_min}, {self.jpeg_max}: "
                "use 1 <= jpeg_min <= jpeg_max <= 100"
            )


def random_transform(x: torch.Tensor, pool: Pool, generator: torch.Generator) -> torch.Tensor:
    """Apply one operation of the pool, drawn per image, to each image of the batch."""
    b = x.shape[0]
    choice = torch.randint(0, len(pool.operations), (b,), generator=generator)
    parts = []
    order = []
    for index, name in enumerate(pool.operations):
        members = (choice == index).nonzero().flatten()
        if members.numel() == 0:
            continue
        part = x[members.to(x.device)]
        size_share = x.shape[-1] / 32
        if name == "jpeg":
            quality = pool.jpeg_min + (pool.jpeg_max - pool.jpeg_min) * torch.rand(members.numel(), generator=generator)
            part = jpeg(part, quality.round().to(x.device))
        elif name == "grayscale":
            part = grayscale(part)
        elif name == "blur":
            sigma = 0.3 + (pool.blur_max - 0.3) * float(torch.rand((), generator=generator))
            part = blur(part, sigma * size_share)
        elif name == "down-up":
            part = down_up(part, pool.down_min + (0.9 - pool.down_min) * float(torch.rand((), generator=generator)))
        elif name == "crop":
            part = resized_crop(part, generator, pool.crop_area_min)
        parts.append(part)
        order.append(members)
    out = torch.cat(parts)
    inverse = torch.empty(b, dtype=torch.long)
    inverse[torch.cat(order)] = torch.arange(b)
    return out[inverse.to(x.device)]
