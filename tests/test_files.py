"""Discovery, decoding and atomic writing of image files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from protect import files, labels


def make_tree(root: Path) -> None:
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "puppies").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cats" / "a.png")
    Image.new("RGB", (8, 8)).save(root / "dogs" / "puppies" / "b.jpg")
    Image.new("RGB", (8, 8)).save(root / ".hidden" / "c.png")
    Image.new("RGB", (8, 8)).save(root / "top.png")
    (root / "cats" / ".DS_Store").write_bytes(b"\0")
    (root / "cats" / "notes.txt").write_text("text")


def test_discover_finds_images_with_labels(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = files.discover(tmp_path)
    assert [(str(i.relative), i.label) for i in found.images] == [
        ("top.png", ""),
        ("cats/a.png", "cats"),
        ("dogs/puppies/b.jpg", "dogs"),
    ]


def test_discover_ignores_hidden_and_other_files(tmp_path: Path) -> None:
    make_tree(tmp_path)
    ignored = {p.name for p in files.discover(tmp_path).ignored}
    assert ignored == {".DS_Store", "notes.txt"}


def test_discover_skips_excluded_folder(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = files.discover(tmp_path, exclude=tmp_path / "dogs")
    assert all(i.label != "dogs" for i in found.images)


def test_folder_labels_count_top_level_as_class(tmp_path: Path) -> None:
    make_tree(tmp_path)
    grouping = labels.folder_labels(files.discover(tmp_path).images)
    assert grouping.sizes() == {labels.ROOT_LABEL: 1, "cats": 1, "dogs": 1}


def test_folder_labels_reject_one_class(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cats" / "a.png")
    with pytest.raises(labels.LabelError, match="at least two"):
        labels.folder_labels(files.discover(tmp_path).images)


def test_read_empty_file_names_reason(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(files.ImageReadError, match="empty"):
        files.read_image(path)


def test_read_text_with_image_name_fails(tmp_path: Path) -> None:
    path = tmp_path / "fake.png"
    path.write_text("this is not a picture")
    with pytest.raises(files.ImageReadError, match="not a readable image"):
        files.read_image(path)


def test_read_gif_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "palette.gif"
    Image.new("P", (8, 8)).save(path)
    with pytest.raises(files.UnsupportedImage, match="GIF"):
        files.read_image(path)


def test_read_gray_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (5, 3), 77).save(path)
    picture = files.read_image(path)
    assert picture.mode == "L"
    assert picture.rgb.shape == (3, 5, 3)


def test_read_rgba_splits_alpha(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    pixels = np.zeros((4, 6, 4), dtype=np.uint8)
    pixels[..., 3] = np.arange(24, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(pixels, mode="RGBA").save(path)
    picture = files.read_image(path)
    assert np.array_equal(picture.alpha, pixels[..., 3])


def test_to_pil_restores_mode_and_alpha(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("LA", (4, 4), (90, 200)).save(path)
    picture = files.read_image(path)
    image = files.to_pil(picture, picture.rgb)
    assert image.mode == "LA"
    assert image.getpixel((0, 0)) == (90, 200)


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"original")

    def broken(handle: io.BufferedWriter) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        files.atomic_write(target, broken)
    assert target.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_atomic_write_replaces_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    files.atomic_write(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"new"
