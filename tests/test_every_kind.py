"""One folder with one input of every kind that real photo folders contain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from typer.testing import CliRunner

from protect.cli import app
from tests.conftest import CIFAR, PHOTOS

runner = CliRunner()

# relative path -> expected status; every other file is expected to be ignored
EXPECTED = {
    "photos/photo.jpg": "protected",
    "photos/rotated exif 6.jpg": "protected",
    "photos/mirrored exif 5.png": "protected",
    "photos/ünïcode näme.v2.final.png": "protected",
    "photos/deep/a/b/c/nested.png": "protected",
    "photos/tiny icon.png": "protected",
    "photos/linked-inside.png": "protected",
    "graphics/rgba.png": "protected",
    "graphics/gray-alpha.png": "protected",
    "graphics/palette-transparent.png": "protected",
    "graphics/gray.png": "protected",
    "graphics/cifar.jpg": "protected",
    "graphics/cmyk.jpg": "skipped",
    "graphics/sixteen-bit.png": "skipped",
    "graphics/one-bit.png": "skipped",
    "graphics/animated.gif": "skipped",
    "graphics/empty.jpg": "failed",
    "graphics/truncated.jpg": "failed",
    "graphics/png-named.jpg": "failed",
    "graphics/photo.heic": "failed",
}
IGNORED = {".DS_Store", "Thumbs.db", "photo.xmp", "notes.txt", ".hidden.png", "linked-outside.png"}


def exif(orientation: int) -> bytes:
    data = Image.Exif()
    data[0x0112] = orientation
    return data.tobytes()


def build(root: Path, outside: Path) -> None:
    photos, graphics = root / "photos", root / "graphics"
    (photos / "deep" / "a" / "b" / "c").mkdir(parents=True)
    graphics.mkdir()
    (root / "empty-subfolder").mkdir()
    source = sorted(next(PHOTOS.iterdir()).iterdir())[0]
    shutil.copy(source, photos / "photo.jpg")
    rgb = Image.open(source).convert("RGB")
    rgb.save(photos / "rotated exif 6.jpg", exif=exif(6), quality=92)
    rgb.resize((120, 90)).save(photos / "mirrored exif 5.png", exif=exif(5))
    rgb.resize((64, 64)).save(photos / "ünïcode näme.v2.final.png")
    rgb.resize((48, 40)).save(photos / "deep" / "a" / "b" / "c" / "nested.png")
    rgb.resize((9, 7)).save(photos / "tiny icon.png")
    (photos / "linked-inside.png").symlink_to(photos / "ünïcode näme.v2.final.png")
    rgb.resize((40, 40)).save(outside)
    (photos / "linked-outside.png").symlink_to(outside)

    rgba = np.array(rgb.resize((50, 40)).convert("RGBA"))
    rgba[..., 3] = np.arange(50 * 40).reshape(40, 50) % 256
    Image.fromarray(rgba, "RGBA").save(graphics / "rgba.png")
    Image.new("LA", (30, 30), (100, 50)).save(graphics / "gray-alpha.png")
    palette = rgb.resize((40, 40)).convert("P")
    palette.info["transparency"] = 0
    palette.save(graphics / "palette-transparent.png", transparency=0)
    rgb.resize((40, 30)).convert("L").save(graphics / "gray.png")
    shutil.copy(sorted(next(CIFAR.iterdir()).iterdir())[0], graphics / "cifar.jpg")
    rgb.resize((40, 40)).convert("CMYK").save(graphics / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(graphics / "sixteen-bit.png")
    rgb.resize((40, 40)).convert("1").save(graphics / "one-bit.png")
    frames = [rgb.resize((30, 30)).convert("P"), rgb.resize((30, 30)).rotate(90).convert("P")]
    frames[0].save(graphics / "animated.gif", save_all=True, append_images=frames[1:])
    (graphics / "empty.jpg").write_bytes(b"")
    (graphics / "truncated.jpg").write_bytes(source.read_bytes()[:2000])
    rgb.resize((40, 40)).save(graphics / "png-named.jpg", format="PNG")
    (graphics / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")

    (photos / ".DS_Store").write_bytes(b"\x00\x01")
    (photos / "Thumbs.db").write_bytes(b"\x00")
    (photos / "photo.xmp").write_text("<x:xmpmeta/>")
    (graphics / "notes.txt").write_text("captions")
    rgb.resize((20, 20)).save(photos / ".hidden.png")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_every_kind_of_input(tmp_path: Path) -> None:
    source = tmp_path / "src"
    build(source, tmp_path / "outside.png")
    before = snapshot(source)
    out = tmp_path / "out"
    report = tmp_path / "report.json"

    result = runner.invoke(app, ["images", str(source), "--out", str(out), "--seed", "1", "--epochs", "2",
                                 "--report", str(report)])

    assert result.exit_code == 1, result.output
    assert snapshot(source) == before  # no original modified
    data = json.loads(report.read_text())
    statuses = {str(Path(e["source"]).relative_to(source)): e["status"] for e in data["images"]}
    assert statuses == EXPECTED
    for entry in data["images"]:
        if entry["status"] != "protected":
            assert entry["error"], entry  # every problem file has its reason
            assert entry["reason"], entry
    assert {Path(p).name for p in data["ignored"]} == IGNORED

    for relative, status in EXPECTED.items():
        if status != "protected":
            assert not (out / relative).exists(), relative
            continue
        with Image.open(source / relative) as a, Image.open(out / relative) as b:
            assert b.size == a.size, relative
            assert b.mode == (a.mode if a.mode != "P" else "RGBA"), relative
            assert b.getexif().get(0x0112) == a.getexif().get(0x0112), relative
            if "A" in b.mode:
                assert np.array_equal(np.array(a.convert(b.mode))[..., -1], np.array(b)[..., -1]), relative
            shown_a = np.array(ImageOps.exif_transpose(a).convert("RGB")).astype(int)
            shown_b = np.array(ImageOps.exif_transpose(b).convert("RGB")).astype(int)
        assert shown_a.shape == shown_b.shape, relative
