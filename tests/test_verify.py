"""`protect verify` on folders written by `protect images`, intact and tampered with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from protect import checks, probe
from protect.cli import app

runner = CliRunner()


def verify(*args) -> object:
    return runner.invoke(app, ["verify", *map(str, args)])


@pytest.fixture
def protected_png(cifar_png: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    result = runner.invoke(app, ["images", str(cifar_png), "--out", str(out), "--seed", "1", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    return cifar_png, out


@pytest.fixture
def protected_photos(photo_folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "photos-out"
    result = runner.invoke(app, ["images", str(photo_folder), "--out", str(out), "--seed", "1", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    return photo_folder, out


def test_intact_output_passes(protected_png) -> None:
    originals, out = protected_png
    result = verify(originals, out, "--no-probe")
    assert result.exit_code == 0, result.output


def test_region_beyond_epsilon_fails(protected_png) -> None:
    originals, out = protected_png
    target = sorted(out.rglob("*.png"))[3]
    pixels = np.array(Image.open(target)).astype(int)
    pixels[4:12, 4:12] = np.clip(np.array(Image.open(originals / target.relative_to(out)))[4:12, 4:12].astype(int) + 20, 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(target)

    result = verify(originals, out, "--no-probe")

    assert result.exit_code == 1
    assert target.name in result.output
    assert "exceeds the budget" in result.output


def test_jpeg_region_beyond_epsilon_fails(protected_photos) -> None:
    originals, out = protected_photos
    target = sorted(out.rglob("*.jpg"))[0]
    source = np.array(Image.open(originals / target.relative_to(out))).astype(int)
    pixels = np.array(Image.open(target)).astype(int)
    pixels[100:164, 100:164] = np.clip(source[100:164, 100:164] + 24, 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(target, quality=95, subsampling=0)

    result = verify(originals, out, "--no-probe")

    assert result.exit_code == 1
    assert target.name in result.output
    assert "8x8 block" in result.output


def test_intact_jpeg_output_passes(protected_photos) -> None:
    originals, out = protected_photos
    result = verify(originals, out, "--no-probe")
    assert result.exit_code == 0, result.output
    # The summary explains why the pixel L-inf of JPEG outputs may exceed ε.
    assert "8x8 block means" in result.output
    assert "max codec L-inf (levels)" in result.output


def test_png_summary_omits_codec_note(protected_png) -> None:
    originals, out = protected_png
    result = verify(originals, out, "--no-probe")
    assert "max L-inf (levels)" in result.output
    assert "8x8 block means" not in result.output


def test_missing_output_fails(protected_png) -> None:
    originals, out = protected_png
    target = sorted(out.rglob("*.png"))[0]
    target.unlink()
    result = verify(originals, out, "--no-probe")
    assert result.exit_code == 1
    assert target.name in result.output
    assert "missing" in result.output


def test_rotated_photo_fails(protected_photos) -> None:
    originals, out = protected_photos
    target = sorted(out.rglob("*.jpg"))[1]
    Image.open(target).rotate(90, expand=True).save(target, quality=95)
    result = verify(originals, out, "--no-probe")
    assert result.exit_code == 1
    assert target.name in result.output
    assert "size" in result.output


def test_rotated_square_image_fails(protected_png) -> None:
    originals, out = protected_png
    target = sorted(out.rglob("*.png"))[2]
    Image.open(target).rotate(90).save(target)
    result = verify(originals, out, "--no-probe")
    assert result.exit_code == 1
    assert target.name in result.output


def test_json_output_parses(protected_png, tmp_path: Path) -> None:
    originals, out = protected_png
    preview = tmp_path / "preview.png"
    result = runner.invoke(app, ["verify", str(originals), str(out), "--no-probe", "--json", "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert report["summary"]["pairs"] == 24
    assert all(0 < p["ssim"] <= 1 for p in report["pairs"])
    with Image.open(preview) as im:
        assert im.width == 3 * 160


def test_probe_skipped_for_small_classes(protected_png) -> None:
    originals, out = protected_png
    result = verify(originals, out)
    assert result.exit_code == 0, result.output
    assert "probe skipped" in result.output
    assert "at least 10 images per class" in result.output


def test_no_probe_names_itself_as_reason(protected_png) -> None:
    originals, out = protected_png
    result = verify(originals, out, "--no-probe")
    assert result.exit_code == 0, result.output
    assert "probe skipped: --no-probe was given" in result.output
    assert "at least 10 images per class" not in result.output


def test_probe_requested_but_impossible_is_usage_error(protected_png) -> None:
    originals, out = protected_png
    result = verify(originals, out, "--probe")
    assert result.exit_code == 2


def test_usage_error_for_missing_folder(tmp_path: Path) -> None:
    result = verify(tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 2


def test_psnr_of_known_difference() -> None:
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    b = np.full((4, 4, 3), 1, dtype=np.uint8)
    assert checks.psnr(a, b) == pytest.approx(48.13, abs=0.01)


def test_ssim_of_identical_images_is_one() -> None:
    a = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    assert checks.ssim(a, a) == pytest.approx(1.0)


def test_gaussian_mi_higher_for_dependent_features() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 16))
    assert probe.gaussian_mi(a, a + 0.1 * rng.normal(size=a.shape)) > probe.gaussian_mi(a, rng.normal(size=a.shape)) + 1


def test_split_keeps_test_images_in_every_class() -> None:
    labels = [0] * 10 + [1] * 12 + [2] * 15
    train, test = probe.split(labels, seed=0)
    assert sorted(train + test) == list(range(len(labels)))
    assert {labels[i] for i in test} == {0, 1, 2}


def test_probe_reports_accuracies_and_mi(tmp_path: Path) -> None:
    from tests.conftest import copy_cifar

    originals = copy_cifar(tmp_path / "src", classes=2, per_class=12)
    out = tmp_path / "out"
    runner.invoke(app, ["images", str(originals), "--out", str(out), "--seed", "1", "--epochs", "2"])

    result = runner.invoke(app, ["verify", str(originals), str(out), "--probe-epochs", "2", "--json"])

    report = json.loads(result.stdout)
    assert report["probe"]["test_images"] == 4
    assert report["probe"]["chance"] == 0.5
    assert 0 <= report["probe"]["protected_accuracy"] <= 1
    # 4 test images are far too few for the 16-dimensional MI estimate.
    assert report["probe"]["mi_clean_model"] is None
    assert report["probe"]["mi_protected_model"] is None
    assert report["probe"]["rule"] == "protected accuracy <= chance + 10 points"
    assert "only 4 test images" in report["probe"]["inconclusive_reason"]


def test_probe_reason_names_weak_control() -> None:
    weak = probe.ProbeResult(0.2, 0.15, 0.1, 1.0, 2.0, train_images=800, test_images=200, size=32)
    assert weak.inconclusive_reason is not None
    assert "clean control" in weak.inconclusive_reason
    assert "test images" not in weak.inconclusive_reason

    able = probe.ProbeResult(0.2, 0.6, 0.1, 1.0, 2.0, train_images=800, test_images=200, size=32)
    assert able.inconclusive_reason is None
    assert able.conclusive


def test_unprotected_copy_fails(cifar_png: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cifar_png, copy)
    result = verify(cifar_png, copy, "--no-probe")
    assert result.exit_code == 1
    assert "not protected" in result.output


def test_json_has_no_infinity(cifar_png: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cifar_png, copy)
    result = runner.invoke(app, ["verify", str(cifar_png), str(copy), "--no-probe", "--json"])

    def reject(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    report = json.loads(result.stdout, parse_constant=reject)
    assert report["pairs"][0]["psnr"] is None
    assert report["summary"]["probe"] == "skipped"
