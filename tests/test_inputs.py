"""Awkward inputs and run options: orientation, metadata, markers, limits, dry runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from protect.cli import app

runner = CliRunner()
GPS = 0x8825
ORIENTATION = 0x0112


def protect(*args) -> object:
    return runner.invoke(app, ["images", *map(str, args), "--epochs", "2", "--seed", "1"])


def exif_block(orientation: int = 1, gps: bool = True) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "TestCam"  # Make
    if gps:
        exif[GPS] = {1: "N", 2: (52.0, 22.0, 0.0)}
    return exif.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_displays_same_way_up(cifar_png: Path, tmp_path: Path, orientation: int) -> None:
    source = cifar_png / "airplane" / "oriented.png"
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:10, :10] = 255  # a bright corner shows which way is up
    Image.fromarray(pixels).save(source, exif=exif_block(orientation))
    out = tmp_path / "out"

    result = protect(cifar_png, "--out", out)

    assert result.exit_code == 0, result.output
    with Image.open(source) as a, Image.open(out / "airplane" / "oriented.png") as b:
        assert b.getexif().get(ORIENTATION) == orientation
        shown_a = np.array(ImageOps.exif_transpose(a)).astype(int)
        shown_b = np.array(ImageOps.exif_transpose(b)).astype(int)
    assert shown_b.shape == shown_a.shape
    assert np.abs(shown_b - shown_a).max() <= 8


def test_strip_gps_keeps_other_exif(photo_folder: Path, tmp_path: Path) -> None:
    target = next(photo_folder.rglob("*.jpg"))
    Image.open(target).save(target, exif=exif_block(), quality=95)
    out = tmp_path / "out"

    result = protect(photo_folder, "--out", out, "--strip-gps")

    assert result.exit_code == 0, result.output
    exif = Image.open(out / target.relative_to(photo_folder)).getexif()
    assert exif.get(0x010F) == "TestCam"
    assert GPS not in exif


def test_metadata_kept_by_default(photo_folder: Path, tmp_path: Path) -> None:
    target = next(photo_folder.rglob("*.jpg"))
    Image.open(target).save(target, exif=exif_block(), quality=95)
    out = tmp_path / "out"
    protect(photo_folder, "--out", out)
    exif = Image.open(out / target.relative_to(photo_folder)).getexif()
    assert exif.get_ifd(GPS)[1] == "N"


def test_strip_metadata_removes_exif(photo_folder: Path, tmp_path: Path) -> None:
    target = next(photo_folder.rglob("*.jpg"))
    Image.open(target).save(target, exif=exif_block(), quality=95)
    out = tmp_path / "out"
    result = protect(photo_folder, "--out", out, "--strip-metadata")
    assert result.exit_code == 0, result.output
    assert len(Image.open(out / target.relative_to(photo_folder)).getexif()) == 0


def test_own_output_is_rejected(cifar_png: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    protect(cifar_png, "--out", first)
    report = tmp_path / "report.json"

    result = protect(first, "--out", tmp_path / "second", "--report", report)

    assert result.exit_code == 1
    entries = json.loads(report.read_text())["images"]
    assert all(e["status"] == "skipped" for e in entries)
    assert "--force" in entries[0]["error"]


def test_force_protects_own_output_again(cifar_png: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    protect(cifar_png, "--out", first)
    result = protect(first, "--out", tmp_path / "second", "--force")
    assert result.exit_code == 0, result.output


def test_dry_run_writes_nothing(cifar_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = protect(cifar_png, "--out", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert not out.exists()
    assert "24 images in 3 classes" in result.output


def test_image_over_pixel_limit_is_rejected(cifar_png: Path, tmp_path: Path) -> None:
    big = cifar_png / "airplane" / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    report = tmp_path / "report.json"

    result = protect(cifar_png, "--out", tmp_path / "out", "--max-pixels", 5000, "--report", report)

    assert result.exit_code == 1
    entry = next(e for e in json.loads(report.read_text())["images"] if e["source"].endswith("big.png"))
    assert entry["status"] == "failed"
    assert "--max-pixels" in entry["error"]
    assert not (tmp_path / "out" / "airplane" / "big.png").exists()


def test_symlink_outside_source_is_ignored(cifar_png: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(outside)
    (cifar_png / "airplane" / "link-out.png").symlink_to(outside)
    (cifar_png / "airplane" / "link-in.png").symlink_to(next((cifar_png / "automobile").iterdir()))
    out = tmp_path / "out"

    result = protect(cifar_png, "--out", out)

    assert result.exit_code == 0, result.output
    assert not (out / "airplane" / "link-out.png").exists()
    assert (out / "airplane" / "link-in.png").exists()


def test_symlinked_folder_loop_is_walked_once(cifar_png: Path, tmp_path: Path) -> None:
    (cifar_png / "airplane" / "loop").symlink_to(cifar_png / "airplane")
    result = protect(cifar_png, "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "24 images" in result.output


def test_extension_that_lies_is_reported(cifar_png: Path, tmp_path: Path) -> None:
    liar = cifar_png / "airplane" / "actually-png.jpg"
    Image.new("RGB", (32, 32)).save(liar, format="PNG")
    report = tmp_path / "report.json"

    result = protect(cifar_png, "--out", tmp_path / "out", "--report", report)

    assert result.exit_code == 1
    entry = next(e for e in json.loads(report.read_text())["images"] if e["source"].endswith("actually-png.jpg"))
    assert entry["status"] == "failed"
    assert "PNG data" in entry["error"]


def test_image_smaller_than_working_size(cifar_png: Path, tmp_path: Path) -> None:
    icon = cifar_png / "airplane" / "icon.png"
    Image.new("RGB", (9, 7), (120, 130, 140)).save(icon)
    out = tmp_path / "out"

    result = protect(cifar_png, "--out", out)

    assert result.exit_code == 0, result.output
    written = np.array(Image.open(out / "airplane" / "icon.png")).astype(int)
    assert written.shape == (7, 9, 3)
    assert np.abs(written - np.array(Image.open(icon)).astype(int)).max() <= 8


@pytest.mark.parametrize("fmt", ["WEBP", "TIFF"])
def test_marker_in_webp_and_tiff(tmp_path: Path, fmt: str) -> None:
    from tests.conftest import copy_cifar

    source = tmp_path / "src"
    copy_cifar(source, classes=2, per_class=3, fmt="PNG")
    for path in list(source.rglob("*.png")):
        Image.open(path).save(path.with_suffix("." + fmt.lower()), format=fmt)
        path.unlink()
    first = tmp_path / "first"
    assert protect(source, "--out", first).exit_code == 0
    report = tmp_path / "report.json"

    result = protect(first, "--out", tmp_path / "second", "--report", report)

    assert result.exit_code == 1
    assert {e["reason"] for e in json.loads(report.read_text())["images"]} == {"already protected"}
