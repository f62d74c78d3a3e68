"""Group images into the classes that MI-UE's objective pulls together.

Labels come from one of four sources (`protect images --labels`):

- `folders`: each image's first-level subfolder name. Images directly in
  the source folder form one more class, named ROOT_LABEL. This is the
  default when any image lies in a subfolder.
- `cluster`: no labels are given. Every image is embedded with the shipped
  encoder and grouped by k-means (see protect.clusters); each cluster is a
  class. This is the default when all images lie directly in the source.
- `flat`: the folder tree carries no labels: subfolders are ignored and all
  images are clustered as one collection, which gives the same grouping as
  `cluster`. It is for trees sorted by date, place or camera, not by subject.
- a manifest (CSV or JSON, see protect.manifest): labels per relative path.
  Images it leaves out are an error unless `unlabelled="cluster"`, which
  clusters them into extra classes beside the manifest's.

A LabelPlan fixes the known labels before any pixels are read, so argument
errors come before slow work. Clustering fills in the rest once the images
have been decoded.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from protect.files import ImageFile

ROOT_LABEL = "(top level)"
FOLDERS, FLAT, CLUSTER = "folders", "flat", "cluster"
MODES = (FOLDERS, FLAT, CLUSTER)
UNLABELLED_CHOICES = ("error", "cluster")
_LISTED = 5  # paths named in an error before "and N more"


class LabelError(ValueError):
    """The images cannot be grouped into at least two classes, or their labels are invalid."""


@dataclass
class Grouping:
    """Class names and one class index per image, in the images' order."""

    names: list[str]
    indices: torch.Tensor  # (N,) int64

    @classmethod
    def from_labels(cls, labels: list[str]) -> Grouping:
        """Number the distinct labels in sorted order."""
        names = sorted(set(labels))
        position = {name: i for i, name in enumerate(names)}
        return cls(names, torch.tensor([position[label] for label in labels], dtype=torch.int64))

    def sizes(self) -> dict[str, int]:
        counts = Counter(self.indices.tolist())
        return {name: counts[i] for i, name in enumerate(self.names)}

    def label_of(self, position: int) -> str:
        return self.names[int(self.indices[position])]


@dataclass
class LabelPlan:
    """The labels known before reading pixels: one per image, None where clustering decides."""

    source: str  # "folders", "flat", "cluster" or the manifest's path
    labels: list[str | None]
    clusters: int | None = None  # the requested number of clusters; None lets a rule choose
    manifest_sha256: str | None = None

    @property
    def clustered(self) -> list[int]:
        """Positions of the images whose label clustering decides."""
        return [i for i, label in enumerate(self.labels) if label is None]

    def record(self) -> dict:
        """Return what decides the grouping, as JSON-ready values (for --resume's key)."""
        return {"source": self.source, "clusters": self.clusters, "manifest_sha256": self.manifest_sha256}


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown if len(items) <= _LISTED else f"{shown} and {len(items) - _LISTED} more"


def default_mode(images: list[ImageFile]) -> str:
    """Return `folders` when any image lies in a subfolder, else `cluster`."""
    return FOLDERS if any(image.label for image in images) else CLUSTER


def folder_labels(images: list[ImageFile]) -> Grouping:
    """Label each image by its first-level subfolder; raise LabelError below two classes."""
    labels = [image.label or ROOT_LABEL for image in images]
    names = sorted(set(labels))
    if len(names) < 2:
        only = names[0] if names else "none"
        raise LabelError(
            f"found one class ({only}), but protection needs at least two classes: sort the images "
            "into one subfolder per subject or class, such as photos/cats and photos/dogs"
        )
    return Grouping.from_labels(labels)


def _manifest_plan(images: list[ImageFile], path: Path, unlabelled: str, clusters: int | None) -> LabelPlan:
    from protect import manifest

    listed = manifest.read_manifest(path)
    relatives = [image.relative.as_posix() for image in images]
    present = set(relatives)
    absent = sorted(p for p in listed if p not in present)
    if absent:
        raise manifest.ManifestError(
            f"{path} names {len(absent)} {'entry' if len(absent) == 1 else 'entries'} that are not images "
            f"under SOURCE: {_listed(absent)}; "
            "fix or remove those entries (paths are relative to SOURCE and case-sensitive)"
        )

    labels: list[str | None] = [listed.get(relative) for relative in relatives]
    missing = [relative for relative, label in zip(relatives, labels) if label is None]
    if missing and unlabelled != "cluster":
        raise LabelError(
            f"{len(missing)} images under SOURCE have no label in {path}: {_listed(missing)}; "
            "add entries for them, or pass --unlabelled cluster to group them by clustering"
        )
    known = {label for label in labels if label is not None}
    if len(known) + (1 if missing else 0) < 2:
        raise LabelError(f"{path} gives one class ({', '.join(known)}), but protection needs at least two classes")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LabelPlan(str(path), labels, clusters if missing else None, digest)


def plan_labels(
    images: list[ImageFile],
    spec: str,
    unlabelled: str = "error",
    clusters: int | None = None,
) -> LabelPlan:
    """Fix every label that is known without pixels; raise LabelError on invalid labels.

    `spec` is one of MODES or the path of a manifest. `clusters` is the number
    of clusters to make (None lets protect.clusters choose it).
    """
    if spec == FOLDERS:
        try:
            grouping = folder_labels(images)
        except LabelError as error:
            raise LabelError(f"{error}, or pass --labels cluster to group them by clustering") from None
        return LabelPlan(FOLDERS, [grouping.label_of(i) for i in range(len(images))])
    if spec in (FLAT, CLUSTER):
        if len(images) < 2:
            raise LabelError("clustering needs at least two images")
        if clusters is not None and clusters > len(images):
            raise LabelError(f"--clusters {clusters} is more than the {len(images)} images to cluster")
        return LabelPlan(spec, [None] * len(images), clusters)
    return _manifest_plan(images, Path(spec), unlabelled, clusters)
