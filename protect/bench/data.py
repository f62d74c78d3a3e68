"""Read benchmark folders: class subfolders of images, as tensors at one size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from protect import files, resolution


class BenchDataError(ValueError):
    """A training or test folder cannot serve as benchmark data."""


def class_names(train: Path, test: Path) -> list[str]:
    """Return the class subfolder names shared by both folders; raise BenchDataError otherwise."""
    names = {}
    for role, folder in (("training", train), ("test", test)):
        if not folder.is_dir():
            raise BenchDataError(f"{role} folder not found: {folder}")
        names[role] = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(names[role]) < 2:
            raise BenchDataError(
                f"{role} folder {folder} needs at least two class subfolders, found {len(names[role])}"
            )
    if names["training"] != names["test"]:
        only_train = sorted(set(names["training"]) - set(names["test"]))
        only_test = sorted(set(names["test"]) - set(names["training"]))
        raise BenchDataError(
            f"training and test folders must have the same class subfolders; only in {train}: "
            f"{', '.join(only_train) or 'none'}; only in {test}: {', '.join(only_test) or 'none'}"
        )
    return names["training"]


def select(folder: Path, classes: list[str], per_class: int | None) -> list[files.ImageFile]:
    """Return the images of each class subfolder, the first `per_class` by name when given."""
    found = files.discover(folder).images
    chosen = []
    for name in classes:
        members = sorted((i for i in found if i.label == name), key=lambda i: str(i.relative))
        if not members:
            raise BenchDataError(f"class folder {folder / name} contains no images; add images or remove the folder")
        chosen += members if per_class is None else members[:per_class]
    return chosen


def fingerprint(images: list[files.ImageFile]) -> str:
    """Return a SHA-256 over the images' relative paths and bytes: the identity of a data set."""
    digest = hashlib.sha256()
    for image in sorted(images, key=lambda i: str(i.relative)):
        digest.update(str(image.relative).encode() + b"\0")
        digest.update(hashlib.sha256(image.path.read_bytes()).digest())
    return digest.hexdigest()


def load(root: Path, images: list[files.ImageFile], classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Load `images`, read from `root` by relative path, as (N, 3, size, size) in [0, 1] with class indices.

    Each image is squeezed to size x size with antialiased bilinear
    resampling, the resize a scraper's data loader applies.
    """
    position = {name: i for i, name in enumerate(classes)}
    x = torch.empty((len(images), 3, size, size))
    for row, image in enumerate(images):
        x[row] = resolution.to_working(files.read_rgb(root / image.relative), size)
    y = torch.tensor([position[i.label] for i in images], dtype=torch.int64)
    return x, y
