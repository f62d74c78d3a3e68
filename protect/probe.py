"""Learnability probe: does a model trained on the protected files learn the classes?

The originals of each class are split into a train part (80 %) and a test
part. One fresh model trains on the protected counterparts of the train part,
a control trains on the clean train part, and both are tested on the clean
test part. Protection works when the protected model stays near chance while
the control learns. Training uses the victim trainer in `protect.training`.

Mutual information: for each model, the features of the clean test images and
of their protected counterparts are reduced by PCA to a few dimensions, and
I(clean; protected) is estimated under a Gaussian assumption:
0.5 * (log det Σ_clean + log det Σ_protected - log det Σ_joint), in nats.
A model that learned the images' content maps both versions alike (high MI);
a model that learned the perturbation's shortcut does not (low MI).

Measured cost (2 CPU cores, torch 2.14.1): two 20-epoch trainings of the
vgg-cnn victim on 4,000 images of 32x32 take about 5 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from protect import files, models, resolution, training

MIN_PER_CLASS = 10  # below this the test part is too small for an accuracy to mean much
PASS_MARGIN = 0.10  # protected accuracy must stay within 10 points of chance
PCA_DIMENSIONS = 8
# Below this many test images one image moves accuracy by over 2.5 points,
# too coarse to judge a 10-point margin.
MIN_TEST_IMAGES = 40
# The MI estimate fits the covariance of a (2 x PCA_DIMENSIONS)-dimensional
# joint. With fewer than 10 samples per dimension it reflects the sample
# noise and the ridge more than the models, so it is not reported.
MIN_MI_SAMPLES = 10 * 2 * PCA_DIMENSIONS


@dataclass
class ProbeResult:
    """Accuracies in [0, 1] on the clean test part, and MI estimates in nats (None: too few test images)."""

    protected_accuracy: float
    clean_accuracy: float
    chance: float
    mi_protected_model: float | None
    mi_clean_model: float | None
    train_images: int
    test_images: int
    size: int

    @property
    def conclusive(self) -> bool:
        """Whether the probe can judge: enough test images, and a control that learned."""
        return self.inconclusive_reason is None

    @property
    def inconclusive_reason(self) -> str | None:
        """Return why the probe cannot judge, or None when it can."""
        reasons = []
        if self.test_images < MIN_TEST_IMAGES:
            reasons.append(f"only {self.test_images} test images, fewer than {MIN_TEST_IMAGES}")
        if self.clean_accuracy <= self.chance + PASS_MARGIN:
            reasons.append(f"the clean control did not beat chance + {PASS_MARGIN * 100:.0f} points either")
        if not reasons:
            return None
        # The test part is a fifth of each class, so MIN_TEST_IMAGES needs about five times as many images.
        return "; ".join(reasons) + f"; use at least {5 * MIN_TEST_IMAGES} images, more for many classes"

    @property
    def passed(self) -> bool:
        return self.protected_accuracy <= self.chance + PASS_MARGIN

    @property
    def rule(self) -> str:
        return f"protected accuracy <= chance + {PASS_MARGIN * 100:.0f} points"


def skip_reason(class_sizes: dict[str, int]) -> str | None:
    """Return why the probe cannot run on these classes, or None when it can."""
    if len(class_sizes) < 2:
        return "the probe needs at least two class subfolders"
    small = [name for name, count in class_sizes.items() if count < MIN_PER_CLASS]
    if small:
        return f"the probe needs at least {MIN_PER_CLASS} images per class; too few in: {', '.join(small)}"
    return None


def split(labels: list[int], seed: int, test_share: float = 0.2) -> tuple[list[int], list[int]]:
    """Split positions into train and test parts per class, at least one test image each."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for value in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == value]
        order = torch.randperm(len(members), generator=generator).tolist()
        cut = max(1, round(len(members) * test_share))
        test += [members[i] for i in order[:cut]]
        train += [members[i] for i in order[cut:]]
    return sorted(train), sorted(test)


def _load(paths: list[Path], size: int) -> torch.Tensor:
    return torch.stack([resolution.to_working(files.read_rgb(p), size) for p in paths])


@torch.no_grad()
def _features(model: models.Classifier, images: torch.Tensor, device: torch.device) -> np.ndarray:
    model.eval()
    chunks = [model.features(batch.to(device)).cpu() for batch in images.split(500)]
    return torch.cat(chunks).double().numpy()


def gaussian_mi(a: np.ndarray, b: np.ndarray, dimensions: int = PCA_DIMENSIONS) -> float:
    """Estimate I(a; b) in nats for paired samples (N, D), after PCA of each to `dimensions`."""
    def reduce(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        k = min(dimensions, vt.shape[0], x.shape[0] - 1)
        return x @ vt[:k].T

    ra, rb = reduce(a), reduce(b)
    k = ra.shape[1]
    joint = np.cov(np.concatenate([ra, rb], axis=1), rowvar=False)
    ridge = 1e-6 * np.eye(2 * k) * max(1e-12, float(np.trace(joint)) / (2 * k))
    joint = joint + ridge
    _, logdet_joint = np.linalg.slogdet(joint)
    _, logdet_a = np.linalg.slogdet(joint[:k, :k])
    _, logdet_b = np.linalg.slogdet(joint[k:, k:])
    return max(0.0, 0.5 * (logdet_a + logdet_b - logdet_joint))


def run_probe(
    originals: list[Path],
    protected: list[Path],
    labels: list[int],
    *,
    epochs: int = 20,
    size: int | None = None,
    device: torch.device | None = None,
    seed: int = 0,
    on_epoch: Callable[[str, int, float], None] | None = None,
) -> ProbeResult:
    """Train the protected model and the clean control; test both on clean held-out originals.

    originals[i] and protected[i] are the two versions of one image with class labels[i].
    """
    device = device or torch.device("cpu")
    if size is None:
        size = resolution.auto_size([min(files.read_rgb(p).shape[:2]) for p in originals[:200]])
    train, test = split(labels, seed)
    y = torch.tensor(labels)
    test_clean = _load([originals[i] for i in test], size)
    test_protected = _load([protected[i] for i in test], size)
    chance = 1 / len(set(labels))

    scores, mi = {}, {}
    for name, sources in (("protected", protected), ("clean", originals)):
        train_x = _load([sources[i] for i in train], size)
        result = training.train_victim(
            train_x, y[train], test_clean, y[test], epochs=epochs, device=device, seed=seed,
            on_epoch=None if on_epoch is None else (lambda e, a, n=name: on_epoch(n, e, a)),
            keep_model=True,
        )
        scores[name] = result.final
        mi[name] = None
        if len(test) >= MIN_MI_SAMPLES:
            mi[name] = gaussian_mi(
                _features(result.model, test_clean, device), _features(result.model, test_protected, device)
            )
    return ProbeResult(
        protected_accuracy=scores["protected"],
        clean_accuracy=scores["clean"],
        chance=chance,
        mi_protected_model=mi["protected"],
        mi_clean_model=mi["clean"],
        train_images=len(train),
        test_images=len(test),
        size=size,
    )
