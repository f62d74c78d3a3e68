"""Group images into the classes that MI-UE's objective pulls together.

A label is the image's first-level subfolder name. Images directly in the
source folder form one more class, named ROOT_LABEL, when subfolders exist.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from protect.files import ImageFile

ROOT_LABEL = "(top level)"


class LabelError(ValueError):
    """The images cannot be grouped into at least two classes."""


@dataclass
class Grouping:
    """Class names and one class index per image, in the images' order."""

    names: list[str]
    indices: torch.Tensor  # (N,) int64

    def sizes(self) -> dict[str, int]:
        counts = Counter(self.indices.tolist())
        return {name: counts[i] for i, name in enumerate(self.names)}


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
    position = {name: i for i, name in enumerate(names)}
    return Grouping(names, torch.tensor([position[label] for label in labels], dtype=torch.int64))
