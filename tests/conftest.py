"""Shared fixtures: small real image folders copied from tests/data and examples/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CIFAR = REPO / "tests" / "data" / "cifar"
PHOTOS = REPO / "examples" / "clothing"


def copy_cifar(target: Path, classes: int, per_class: int, fmt: str = "PNG") -> Path:
    """Copy CIFAR-10 sample images into target/<class>/, re-saved in `fmt`."""
    suffix = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "WEBP": ".webp"}[fmt]
    for folder in sorted(CIFAR.iterdir())[:classes]:
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for source in sorted(folder.iterdir())[:per_class]:
            with Image.open(source) as im:
                im.convert("RGB").save(target / folder.name / (source.stem + suffix), format=fmt)
    return target


@pytest.fixture
def cifar_png(tmp_path: Path) -> Path:
    """Three classes of eight 32x32 PNG images."""
    return copy_cifar(tmp_path / "src", classes=3, per_class=8)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Two classes of three real JPEG photos (about 400x533) from the example folder."""
    target = tmp_path / "photos"
    for folder in sorted(PHOTOS.iterdir())[:2]:
        shutil.copytree(folder, target / folder.name, ignore=lambda d, names: sorted(names)[3:])
    return target
