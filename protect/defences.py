"""Defences that a scraper's trainer may apply against unlearnable examples.

A protection test is only as strong as the trainer it faces, so the victim
trainer (protect.training) can apply each of these. There are three kinds:

- preprocessing, applied once to every training image before training:
  grayscale, JPEG re-encoding through Pillow, Gaussian blur;
- batch augmentations, applied to each training batch: cutout, mixup;
- adversarial training with PGD, which replaces each batch by its worst case.

Test images are never changed, because the question is how well the trained
model does on clean data, as in the field's protocol (image shortcut
squeezing, Liu et al. 2023; APBench, Qin et al. 2023).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ITU-R BT.601 luma weights, the ones Pillow's "L" mode and torchvision use.
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

CUTOUT_SHARE = 0.5  # square side over image side: 16 px on 32-px CIFAR-10 (DeVries & Taylor, 2017)
PGD_EPSILON = 4 / 255
PGD_STEPS = 5
PGD_STEP_SIZE = 1 / 255
BLUR_SIGMA = 1.0  # pixels at 32 px; scaled with the image side


@dataclass(frozen=True)
class Defence:
    name: str
    kind: str  # "none", "preprocess", "batch" or "adversarial"
    description: str
    costly: bool = False  # run only when asked for by name or flag


DEFENCES = {
    d.name: d
    for d in (
        Defence("none", "none", "standard training"),
        Defence("grayscale", "preprocess", "training images converted to grayscale (BT.601 luma)"),
        Defence("jpeg75", "preprocess", "training images re-encoded as JPEG at quality 75 (Pillow, 4:2:0)"),
        Defence("jpeg10", "preprocess", "training images re-encoded as JPEG at quality 10 (Pillow, 4:2:0)"),
        Defence("blur", "preprocess", "Gaussian blur, sigma 1 px at 32 px, scaled with size"),
        Defence("cutout", "batch", "one zeroed square, half the image side, per training image"),
        Defence("mixup", "batch", "mixup of image pairs and their labels, Beta(1, 1)"),
        Defence("adversarial", "adversarial", "PGD adversarial training, 4/255, 5 steps of 1/255", costly=True),
    )
}
CHEAP = [name for name, d in DEFENCES.items() if not d.costly]


def get(name: str) -> Defence:
    """Return the defence called `name`; raise ValueError naming the choices otherwise."""
    if name not in DEFENCES:
        raise ValueError(f"unknown defence {name!r}: use one of {', '.join(DEFENCES)}")
    return DEFENCES[name]


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encode (N, 3, H, W) images in [0, 1] as JPEG at `quality` with Pillow and decode them."""
    out = []
    for array in _to_uint8(images):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(np.asarray(decoded.convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Replace each pixel by its luma, repeated in all three channels."""
    return (images * _LUMA).sum(1, keepdim=True).expand_as(images).contiguous()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur with a Gaussian of `sigma` pixels; the kernel spans ±2 sigma, edges reflect."""
    radius = max(1, math.ceil(2 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    cols = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, rows, groups=channels)
    return F.conv2d(x, cols, groups=channels)


def preprocess(name: str, images: torch.Tensor) -> torch.Tensor:
    """Apply a preprocessing defence to (N, 3, H, W) images in [0, 1]; others return them as they are."""
    if name == "grayscale":
        return grayscale(images)
    if name in ("jpeg75", "jpeg10"):
        return jpeg(images, int(name[4:]))
    if name == "blur":
        return gaussian_blur(images, BLUR_SIGMA * images.shape[-1] / 32)
    return images


def cutout(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Zero one square per image, its side CUTOUT_SHARE of the image's, centred anywhere."""
    n, _, height, width = x.shape
    side = max(1, round(CUTOUT_SHARE * min(height, width)))
    cy = torch.randint(0, height, (n,), generator=generator)
    cx = torch.randint(0, width, (n,), generator=generator)
    ys = torch.arange(height).view(1, -1, 1)
    xs = torch.arange(width).view(1, 1, -1)
    # The square may run off the edge, where it is clipped, as in the original recipe.
    inside_y = (ys >= (cy - side // 2).view(-1, 1, 1)) & (ys < (cy - side // 2 + side).view(-1, 1, 1))
    inside_x = (xs >= (cx - side // 2).view(-1, 1, 1)) & (xs < (cx - side // 2 + side).view(-1, 1, 1))
    keep = ~(inside_y & inside_x)
    return x * keep.unsqueeze(1).to(x.dtype)


def mixup(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix each image with another of the batch; return the mix, the partner order and the weight λ."""
    # λ ~ Beta(1, 1), the uniform distribution on [0, 1], as in the CIFAR-10 recipe of
    # Zhang et al. (2018); drawn from the seeded generator so that runs repeat.
    lam = float(torch.rand((), generator=generator))
    partner = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[partner], partner, lam


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Return the PGD adversarial version of batch x within PGD_EPSILON (Madry et al., 2018)."""
    noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * PGD_EPSILON
    adversarial = (x + noise).clamp(0, 1)
    for _ in range(PGD_STEPS):
        adversarial.requires_grad_(True)
        loss = F.cross_entropy(model(adversarial), y)
        (grad,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            adversarial = adversarial + PGD_STEP_SIZE * grad.sign()
            adversarial = (x + (adversarial - x).clamp(-PGD_EPSILON, PGD_EPSILON)).clamp(0, 1)
    return adversarial.detach()
