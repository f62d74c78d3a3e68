"""Pseudo-labels for unlabelled images: embed with the shipped encoder, then k-means.

MI-UE pulls the features of each class together, so it needs a grouping.
Without labels, clusters of visually similar images stand in for classes.
Each image (B, 3, S, S) in [0, 1] is resized to the encoder's input size and
mapped to its pooled features. The features are L2-normalised, because MI-UE
compares features by cosine, and grouped by scikit-learn's KMeans with a fixed
seed. Clusters are numbered by size (largest first), so the same inputs and
seed give the same names on the same device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from protect.encoder import Encoder

ProgressFn = Callable[[str, int, int], None]

MIN_AUTO_CLUSTERS, MAX_AUTO_CLUSTERS = 2, 50
_KMEANS_RESTARTS = 10  # k-means++ starts; the best inertia wins


@dataclass
class Clustering:
    """One cluster index per image (0 is the largest cluster) and how k was chosen."""

    assignment: np.ndarray  # (N,) int64 in [0, k)
    k: int
    rule: str

    def names(self) -> list[str]:
        """Return each image's cluster name, such as "(cluster 03)"."""
        width = len(str(self.k))
        return [f"(cluster {i + 1:0{width}d})" for i in self.assignment.tolist()]

    def sizes(self) -> list[int]:
        return np.bincount(self.assignment, minlength=self.k).tolist()


def auto_clusters(count: int) -> int:
    """Return k for `count` images: round(sqrt(count / 2)), clamped to [2, 50] and to count."""
    k = round(math.sqrt(count / 2))
    return min(count, max(MIN_AUTO_CLUSTERS, min(MAX_AUTO_CLUSTERS, k)))


@torch.no_grad()
def embed(
    images: torch.Tensor,
    rows: list[int],
    encoder: Encoder,
    device: torch.device,
    batch: int = 256,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Map images[rows] ((N, 3, S, S) in [0, 1]) to (len(rows), D) unit-length float64 features.

    Rows are read a batch at a time, so a file-backed `images` is never loaded whole.
    """
    size = encoder.input_size
    model = encoder.model.to(device).eval()
    chunks = []
    for start in range(0, len(rows), batch):
        x = images[rows[start:start + batch]].to(device)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        # The mirror image gets the same embedding, so a flipped duplicate lands in the same cluster.
        features = model.features(x) + model.features(x.flip(-1))  # (B, D)
        chunks.append(F.normalize(features, dim=1).cpu())
        if progress is not None:
            progress("embed", min(start + batch, len(rows)), len(rows))
    return torch.cat(chunks).double().numpy()


def _renumber_by_size(assignment: np.ndarray, k: int) -> np.ndarray:
    sizes = np.bincount(assignment, minlength=k)
    first = np.array([np.flatnonzero(assignment == c).min() if sizes[c] else len(assignment) for c in range(k)])
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[assignment]


def kmeans(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Group (N, D) features into k clusters; return (N,) cluster indices, largest cluster first."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=_KMEANS_RESTARTS, random_state=seed)
    assignment = model.fit_predict(features).astype(np.int64)
    return _renumber_by_size(assignment, k)


def cluster_images(
    images: torch.Tensor,
    rows: list[int],
    encoder: Encoder,
    device: torch.device,
    seed: int,
    clusters: int | None = None,
    progress: ProgressFn | None = None,
) -> Clustering:
    """Embed images[rows] and group them into `clusters` clusters (None: auto_clusters(len(rows)))."""
    count = len(rows)
    if clusters is None:
        k, rule = auto_clusters(count), f"round(sqrt({count} / 2)) clamped to [{MIN_AUTO_CLUSTERS}, {MAX_AUTO_CLUSTERS}]"
    else:
        k, rule = clusters, "--clusters"
    if not 1 <= k <= count:
        raise ValueError(f"cannot make {k} clusters of {count} images")
    features = embed(images, rows, encoder, device, progress=progress)
    return Clustering(kmeans(features, k, seed), k, rule)
