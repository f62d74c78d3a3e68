"""Convolutional networks used as crafting surrogates and as test victims.

Every model maps images (B, 3, H, W) in [0, 1] to logits (B, classes) and
exposes `features(x)`: the global-average-pooled penultimate activations
(B, D) that MI-UE's objective works on. Pooling makes them accept any input
size of at least 16 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

# Per-channel statistics of CIFAR-10; any fixed normalisation works, these
# keep first-layer activations near unit scale on natural photos.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class _Normalize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Classifier(nn.Module):
    """A backbone that ends in pooled features, then a linear head."""

    def __init__(self, backbone: nn.Module, width: int, classes: int) -> None:
        super().__init__()
        self.normalize = _Normalize()
        self.backbone = backbone
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, 3, H, W) images in [0, 1] to (B, D) pooled features."""
        fmap = self.backbone(self.normalize(x))  # (B, D, h, w)
        return fmap.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_cnn(classes: int) -> Classifier:
    """Four 3x3 convolutions (32-64-128-256), each followed by 2x2 pooling.

    About 15 M multiply-adds per 32x32 image; the default crafting surrogate.
    """
    backbone = nn.Sequential(
        _conv_bn(3, 32), nn.MaxPool2d(2),
        _conv_bn(32, 64), nn.MaxPool2d(2),
        _conv_bn(64, 128), nn.MaxPool2d(2),
        _conv_bn(128, 256),
    )
    return Classifier(backbone, 256, classes)


def vgg_cnn(classes: int) -> Classifier:
    """Six 3x3 convolutions in three pooled stages (32, 64, 128 channels).

    About 40 M multiply-adds per 32x32 image; the default test victim. It is
    deliberately not the surrogate's architecture, so protection measured on it
    includes transfer from one model to another.
    """
    backbone = nn.Sequential(
        _conv_bn(3, 32), _conv_bn(32, 32), nn.MaxPool2d(2),
        _conv_bn(32, 64), _conv_bn(64, 64), nn.MaxPool2d(2),
        _conv_bn(64, 128), _conv_bn(128, 128), nn.MaxPool2d(2),
    )
    return Classifier(backbone, 128, classes)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet18(classes: int) -> Classifier:
    """ResNet-18 with the CIFAR stem: a 3x3 first convolution and no max-pool."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
        cin = cout
    return Classifier(nn.Sequential(*layers), 512, classes)


def resnet20(classes: int) -> Classifier:
    """ResNet-20 for CIFAR (He et al., 2016): three stages of 16, 32 and 64 channels, three blocks each.

    About 41 M multiply-adds per 32x32 image, like vgg-cnn, but residual: a
    second family of victim for testing whether protection transfers across
    architectures at CPU cost. Its shortcuts use 1x1 projections where shapes change.
    """
    layers: list[nn.Module] = [_conv_bn(3, 16)]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1), _BasicBlock(cout, cout, 1)]
        cin = cout
    return Classifier(nn.Sequential(*layers), 64, classes)


ARCHITECTURES = {
    "small-cnn": small_cnn,
    "vgg-cnn": vgg_cnn,
    "resnet18": resnet18,
    "resnet20": resnet20,
}


def build(name: str, classes: int) -> Classifier:
    """Build the architecture called `name` (a key of ARCHITECTURES)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: use one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](classes)
