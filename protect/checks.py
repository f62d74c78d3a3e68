"""Check protected files against their originals: pairing, integrity and budget.

Each original is paired with the protected file at the same relative path.
A pair passes when dimensions, mode, alpha and metadata are kept and no pixel
of a lossless output moved further than the budget. A JPEG output cannot meet
a per-pixel bound, because re-encoding alone moves pixels. Its check applies
the budget to 8x8 block means instead. The codec's own part, measured by
re-encoding the original with the settings that `protect images` uses, is
reported beside the total.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from protect import files


@dataclass
class PairCheck:
    """Checks of one original and its protected counterpart."""

    relative: str
    problems: list[str] = field(default_factory=list)
    linf: int | None = None  # largest change of any channel, in 8-bit levels
    codec_linf: int | None = None  # largest change from re-encoding alone (lossy formats)
    psnr: float | None = None  # dB
    ssim: float | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Pairing:
    """Relative paths present on both sides, and those present on one side only."""

    common: list[Path]
    missing: list[Path]  # original without a protected file
    extra: list[Path]  # protected file without an original


def pair(originals: Path, protected: Path) -> Pairing:
    """Match the images of two folders by relative path."""
    left = {i.relative for i in files.discover(originals).images}
    right = {i.relative for i in files.discover(protected).images}
    return Pairing(sorted(left & right), sorted(left - right), sorted(right - left))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 arrays, in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two (H, W, 3) uint8 images.

    Gaussian window of 11 pixels with sigma 1.5 and constants K1 = 0.01,
    K2 = 0.03, per channel, averaged (Wang et al., 2004).
    """
    x = torch.from_numpy(a).permute(2, 0, 1).float()[:, None]  # (3, 1, H, W)
    y = torch.from_numpy(b).permute(2, 0, 1).float()[:, None]
    size = min(11, x.shape[-1], x.shape[-2])
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    # The Gaussian window is separable: a row pass then a column pass.
    rows, cols = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, rows), cols)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def _codec_linf(original: files.Picture) -> int:
    """L∞ change, in levels, from re-encoding the original unchanged."""
    buffer = io.BytesIO()
    files.encode(files.to_pil(original, original.rgb), original, buffer)
    buffer.seek(0)
    with Image.open(buffer) as im:
        again = np.array(im.convert("RGB")).astype(np.int32)
    return int(np.abs(again - original.rgb.astype(np.int32)).max())


# JPEG's error is high-frequency noise that nearly cancels over its 8x8 blocks,
# while a change beyond the budget shifts a block's mean. Block means may move
# by this many levels from the coarse quantisation of each block's average.
BLOCK_TOLERANCE = 2.0


def _block_mean_linf(difference: np.ndarray) -> float:
    """Largest absolute mean of (H, W, C) differences over JPEG's 8x8 blocks."""
    h, w = difference.shape[0] // 8 * 8, difference.shape[1] // 8 * 8
    if h == 0 or w == 0:
        return float(np.abs(difference.mean(axis=(0, 1))).max())
    blocks = difference[:h, :w].reshape(h // 8, 8, w // 8, 8, -1).mean(axis=(1, 3))
    return float(np.abs(blocks).max())


def _orientation(path: Path) -> int:
    with Image.open(path) as im:
        return int(im.getexif().get(0x0112, 1))


def check_pair(
    original_path: Path, protected_path: Path, relative: str, epsilon: int, allow_stripped: bool
) -> PairCheck:
    """Compare one pair, listing every problem found; a size mismatch skips the pixel checks."""
    result = PairCheck(relative)
    try:
        original = files.read_image(original_path)
        protected = files.read_image(protected_path)
    except (files.ImageReadError, files.ImageTooLarge, files.UnsupportedImage) as error:
        result.problems.append(f"unreadable: {error}")
        return result

    if original.rgb.shape != protected.rgb.shape:
        h, w = original.rgb.shape[:2]
        ph, pw = protected.rgb.shape[:2]
        result.problems.append(f"size {pw}x{ph} differs from the original's {w}x{h}")
        return result
    if _orientation(original_path) != _orientation(protected_path):
        result.problems.append("EXIF orientation differs from the original's")
    if original.mode != protected.mode:
        result.problems.append(f"mode {protected.mode} differs from the original's {original.mode}")
    if original.alpha is not None and (
        protected.alpha is None or not np.array_equal(original.alpha, protected.alpha)
    ):
        result.problems.append("alpha channel differs from the original's")
    if not allow_stripped:
        if original.exif and not protected.exif:
            result.problems.append("EXIF metadata was removed (pass --allow-stripped if on purpose)")
        if original.icc_profile and protected.icc_profile != original.icc_profile:
            result.problems.append("ICC colour profile differs or was removed")

    difference = np.abs(protected.rgb.astype(np.int32) - original.rgb.astype(np.int32))
    result.linf = int(difference.max())
    if result.linf == 0:
        result.problems.append("pixels are identical to the original: this file is not protected")
    result.psnr = psnr(original.rgb, protected.rgb)
    result.ssim = ssim(original.rgb, protected.rgb)
    if protected.format in files.LOSSY_FORMATS:
        result.codec_linf = _codec_linf(original)
        block_linf = _block_mean_linf(protected.rgb.astype(np.int32) - original.rgb.astype(np.int32))
        if block_linf > epsilon + BLOCK_TOLERANCE:
            result.problems.append(
                f"mean change over an 8x8 block is {block_linf:.1f} levels, beyond the budget of {epsilon} "
                f"(+{BLOCK_TOLERANCE} for the codec)"
            )
    elif result.linf > epsilon:
        result.problems.append(f"L-infinity change {result.linf} exceeds the budget of {epsilon} levels")
    return result
