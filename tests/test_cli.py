"""`protect images` end to end on real image files, through the command line."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin
from typer.testing import CliRunner

from protect import files
from protect.cli import app
from tests.conftest import copy_cifar

runner = CliRunner()


def protect(*args: str, epochs: int = 2):
    # Two outer epochs instead of the default 20 keep each run to seconds.
    return runner.invoke(app, ["images", *map(str, args), "--epochs", str(epochs)])


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im).astype(int)


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_png_output_within_epsilon_after_reload(cifar_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = protect(cifar_png, "--out", out, "--seed", 1)
    assert result.exit_code == 0, result.output
    for source in cifar_png.rglob("*.png"):
        difference = pixels(out / source.relative_to(cifar_png)) - pixels(source)
        assert np.abs(difference).max() <= 8, source.name


def test_png_output_has_both_signs(cifar_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    protect(cifar_png, "--out", out, "--seed", 1)
    differences = np.concatenate([
        (pixels(out / s.relative_to(cifar_png)) - pixels(s)).ravel() for s in cifar_png.rglob("*.png")
    ])
    assert (differences > 0).mean() > 0.2
    assert (differences < 0).mean() > 0.2


def test_smaller_epsilon_is_respected(cifar_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = protect(cifar_png, "--out", out, "--seed", 1, "--epsilon", 3)
    assert result.exit_code == 0, result.output
    for source in cifar_png.rglob("*.png"):
        assert np.abs(pixels(out / source.relative_to(cifar_png)) - pixels(source)).max() <= 3


def test_names_sizes_and_formats_kept(photo_folder: Path, tmp_path: Path) -> None:
    copy_cifar(photo_folder, classes=2, per_class=3, fmt="PNG")
    copy_cifar(photo_folder / "webp", classes=1, per_class=2, fmt="WEBP")
    copy_cifar(photo_folder / "bmp", classes=1, per_class=2, fmt="BMP")
    odd = photo_folder / "airplane" / "a name with spaces.v2.png"
    Image.new("RGB", (50, 17), (200, 30, 30)).save(odd)
    out = tmp_path / "out"

    result = protect(photo_folder, "--out", out, "--seed", 2)

    assert result.exit_code == 0, result.output
    sources = sorted(p.relative_to(photo_folder) for p in photo_folder.rglob("*") if p.is_file())
    outputs = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert outputs == sources
    for relative in sources:
        with Image.open(photo_folder / relative) as a, Image.open(out / relative) as b:
            assert b.size == a.size, relative
            assert b.format == a.format, relative
            assert b.mode == a.mode, relative


def test_gray_and_alpha_kept(cifar_png: Path, tmp_path: Path) -> None:
    gray_source = cifar_png / "airplane" / "gray.png"
    alpha_source = cifar_png / "airplane" / "alpha.png"
    Image.open(next(cifar_png.rglob("*.png"))).convert("L").save(gray_source)
    rgba = np.array(Image.open(next(cifar_png.rglob("*.png"))).convert("RGBA"))
    rgba[..., 3] = np.arange(32 * 32).reshape(32, 32) % 256
    Image.fromarray(rgba, mode="RGBA").save(alpha_source)
    out = tmp_path / "out"

    result = protect(cifar_png, "--out", out, "--seed", 2)

    assert result.exit_code == 0, result.output
    with Image.open(out / "airplane" / "gray.png") as gray:
        assert gray.mode == "L"
        assert np.abs(np.array(gray).astype(int) - pixels(gray_source)).max() <= 8
    written = pixels(out / "airplane" / "alpha.png")
    assert np.array_equal(written[..., 3], rgba[..., 3].astype(int))
    assert np.abs(written[..., :3] - rgba[..., :3].astype(int)).max() <= 8


def test_jpeg_written_with_full_chroma(photo_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    protect(photo_folder, "--out", out, "--seed", 3)
    written = next(out.rglob("*.jpg"))
    with Image.open(written) as im:
        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4


def test_report_lists_every_input(photo_folder: Path, tmp_path: Path) -> None:
    (photo_folder / "hat" / "broken.jpg").write_bytes(b"")
    report = tmp_path / "report.json"

    result = protect(photo_folder, "--out", tmp_path / "out", "--seed", 4, "--report", report)

    assert result.exit_code == 1, result.output
    entries = json.loads(report.read_text())["images"]
    assert len(entries) == 7
    broken = [e for e in entries if e["source"].endswith("broken.jpg")]
    assert broken[0]["status"] == "failed"
    assert "empty" in broken[0]["error"]
    protected = [e for e in entries if e["status"] == "protected"]
    assert len(protected) == 6
    assert all(0 < e["energy_retained"] <= 1 for e in protected)
    assert {e["label"] for e in protected} == {p.name for p in photo_folder.iterdir()}
    settings = json.loads(report.read_text())["settings"]
    assert settings["robustness"] == "standard"
    assert settings["outer_epochs"] == 2  # the helper passes --epochs 2
    assert settings["warm_start"] is False


def test_same_seed_same_bytes(cifar_png: Path, tmp_path: Path) -> None:
    protect(cifar_png, "--out", tmp_path / "a", "--seed", 9)
    protect(cifar_png, "--out", tmp_path / "b", "--seed", 9)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_drawn_seed_is_printed(cifar_png: Path, tmp_path: Path) -> None:
    result = protect(cifar_png, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "seed" in result.output


def test_exit_3_when_no_images(tmp_path: Path) -> None:
    (tmp_path / "empty" / "docs").mkdir(parents=True)
    (tmp_path / "empty" / "docs" / "notes.txt").write_text("not an image")
    result = protect(tmp_path / "empty", "--out", tmp_path / "out")
    assert result.exit_code == 3
    assert "no images found" in result.output


def test_exit_2_when_out_inside_source(cifar_png: Path) -> None:
    result = protect(cifar_png, "--out", cifar_png / "safe")
    assert result.exit_code == 2
    assert "inside" in result.output


def test_exit_2_when_out_is_source(cifar_png: Path) -> None:
    result = protect(cifar_png, "--out", cifar_png)
    assert result.exit_code == 2


def test_exit_2_without_out_or_in_place(cifar_png: Path) -> None:
    result = protect(cifar_png)
    assert result.exit_code == 2
    assert "--out" in result.output


def test_exit_2_for_missing_source(tmp_path: Path) -> None:
    result = protect(tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_exit_2_for_single_class(tmp_path: Path) -> None:
    source = copy_cifar(tmp_path / "src", classes=1, per_class=4)
    result = protect(source, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "two classes" in result.output


def test_exit_2_for_epsilon_out_of_range(cifar_png: Path, tmp_path: Path) -> None:
    result = protect(cifar_png, "--out", tmp_path / "out", "--epsilon", 0)
    assert result.exit_code == 2


def test_exit_2_for_missing_cuda(cifar_png: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = protect(cifar_png, "--out", tmp_path / "out", "--device", "cuda")
    assert result.exit_code == 2
    assert "CUDA" in result.output


def test_in_place_replaces_originals(cifar_png: Path) -> None:
    before = snapshot(cifar_png)
    result = protect(cifar_png, "--in-place", "--seed", 1)
    assert result.exit_code == 0, result.output
    after = snapshot(cifar_png)
    assert after.keys() == before.keys()
    assert all(after[name] != before[name] for name in before)


def test_in_place_keeps_originals_when_a_write_fails(cifar_png: Path, monkeypatch) -> None:
    before = snapshot(cifar_png)
    real_encode = files.encode
    calls = {"count": 0}

    def failing_encode(image, picture, handle, *options) -> None:
        calls["count"] += 1
        if calls["count"] == 5:
            handle.write(b"partial")
            raise OSError(28, "No space left on device")
        real_encode(image, picture, handle, *options)

    monkeypatch.setattr(files, "encode", failing_encode)
    result = protect(cifar_png, "--in-place", "--seed", 1)

    assert result.exit_code == 1, result.output
    after = snapshot(cifar_png)
    assert after.keys() == before.keys()  # no temporary file left behind
    unchanged = [name for name in before if after[name] == before[name]]
    assert len(unchanged) == 1
    with Image.open(cifar_png / unchanged[0]) as im:
        im.load()  # the failed file's original still decodes


def test_in_place_interrupted_keeps_every_original(cifar_png: Path, monkeypatch) -> None:
    before = snapshot(cifar_png)
    real_encode = files.encode
    calls = {"count": 0}

    def interrupted_encode(image, picture, handle, *options) -> None:
        calls["count"] += 1
        if calls["count"] == 10:
            raise KeyboardInterrupt
        real_encode(image, picture, handle, *options)

    monkeypatch.setattr(files, "encode", interrupted_encode)
    result = protect(cifar_png, "--in-place", "--seed", 1)

    assert result.exit_code != 0
    assert snapshot(cifar_png) == before


def test_exit_2_for_source_file(cifar_png: Path, tmp_path: Path) -> None:
    result = protect(next(cifar_png.rglob("*.png")), "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "is a file" in result.output


def test_outputs_readable_by_others(cifar_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    old_umask = os.umask(0o022)
    try:
        result = protect(cifar_png, "--out", out, "--seed", 1)
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.output
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*.png")}
    assert modes == {0o644}


def test_in_place_keeps_permissions(cifar_png: Path) -> None:
    originals = sorted(cifar_png.rglob("*.png"))
    for path in originals:
        path.chmod(0o444)
    result = protect(cifar_png, "--in-place", "--seed", 1)
    assert result.exit_code == 0, result.output
    assert {stat.S_IMODE(p.stat().st_mode) for p in originals} == {0o444}


def test_report_lists_ignored_files(cifar_png: Path, tmp_path: Path) -> None:
    (cifar_png / "airplane" / "notes.txt").write_text("caption")
    report = tmp_path / "report.json"
    result = protect(cifar_png, "--out", tmp_path / "out", "--seed", 1, "--report", report)
    assert result.exit_code == 0, result.output
    ignored = json.loads(report.read_text())["ignored"]
    assert [Path(p).name for p in ignored] == ["notes.txt"]
    assert "ignored" in result.output


def test_exit_2_for_foreign_file_in_out(cifar_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = next(iter(sorted(cifar_png.rglob("*.png"))))
    theirs = out / first.relative_to(cifar_png)
    theirs.parent.mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(theirs)
    before = snapshot(out)

    result = protect(cifar_png, "--out", out, "--seed", 1)
    assert result.exit_code == 2
    assert "1 file in" in result.output
    assert "were not written by protect" in result.output
    assert first.name in result.output
    assert snapshot(out) == before  # nothing written, nothing replaced


def test_rerun_replaces_its_own_outputs(cifar_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert protect(cifar_png, "--out", out, "--seed", 1).exit_code == 0
    first = snapshot(out)
    result = protect(cifar_png, "--out", out, "--seed", 2)
    assert result.exit_code == 0, result.output
    second = snapshot(out)
    assert first.keys() == second.keys()
    assert any(first[name] != second[name] for name in first)


def test_dry_run_names_foreign_file_in_out(cifar_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = next(iter(sorted(cifar_png.rglob("*.png"))))
    theirs = out / first.relative_to(cifar_png)
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"not an image written by protect")

    result = protect(cifar_png, "--out", out, "--dry-run")
    assert result.exit_code == 2
    assert "were not written by protect" in result.output
    assert theirs.read_bytes() == b"not an image written by protect"
