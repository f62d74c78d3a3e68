"""Train a fresh classifier from scratch and test it: the victim of a protection test.

A victim plays a scraper: it trains on the (protected) training images and is
then tested on clean images. Low clean-test accuracy means the protection works.
The recipe follows the field's protocol: SGD with momentum 0.9, weight decay
5e-4, batch 128, random crop with 4 pixels of padding and horizontal flips,
and a cosine learning rate.

Measured cost (2 CPU cores, torch 2.14.1): the default `vgg-cnn` victim trains
at about 600 images/s at 32x32, so 20 epochs on 5,000 images take about 3 min.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from protect import defences, models
from protect.augment import random_crop_flip


@dataclass
class TrainResult:
    """Clean-test accuracy after each epoch, in [0, 1]."""

    test_accuracy: list[float] = field(default_factory=list)
    model: models.Classifier | None = None  # the trained model, when requested

    @property
    def final(self) -> float:
        return self.test_accuracy[-1]

    @property
    def peak(self) -> float:
        return max(self.test_accuracy)


@torch.no_grad()
def evaluate(model: models.Classifier, images: torch.Tensor, labels: torch.Tensor,
             device: torch.device, batch: int = 500) -> float:
    """Return top-1 accuracy of `model` on (N, 3, H, W) images in [0, 1]."""
    model.eval()
    correct = 0
    for x, y in zip(images.split(batch), labels.split(batch)):
        correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
    return correct / images.shape[0]


def train_victim(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    architecture: str = "vgg-cnn",
    epochs: int = 20,
    lr: float = 0.05,
    batch: int = 128,
    device: torch.device | None = None,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    keep_model: bool = False,
    defence: str = "none",
) -> TrainResult:
    """Train `architecture` from scratch on the training set, testing after each epoch.

    Images are (N, 3, H, W) float in [0, 1]; labels are int64 class indices
    shared by both sets. `defence` names one of protect.defences.DEFENCES,
    applied to the training images only. on_epoch(epoch, test_accuracy) is
    called after each epoch.
    """
    kind = defences.get(defence).kind
    device = device or torch.device("cpu")
    train_images = defences.preprocess(defence, train_images)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    model = models.build(architecture, classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = -(-train_images.shape[0] // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )

    result = TrainResult()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(train_images.shape[0], generator=generator)
        for idx in order.split(batch):
            if idx.numel() < 2:
                continue
            x = random_crop_flip(train_images[idx], generator)
            y = train_labels[idx].to(device)
            if defence == "cutout":
                x = defences.cutout(x, generator)
            x = x.to(device)
            if kind == "adversarial":
                x = defences.pgd(model, x, y, generator)
            if defence == "mixup":
                x, partner, lam = defences.mixup(x, generator)
                logits = model(x)
                loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[partner])
            else:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        accuracy = evaluate(model, test_images, test_labels, device)
        result.test_accuracy.append(accuracy)
        if on_epoch is not None:
            on_epoch(epoch + 1, accuracy)
    if keep_model:
        result.model = model
    return result
