"""Labels from folders, manifests and clusters, and the shipped encoder's weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from protect import clusters, encoder, files, labels, manifest, models, resolution
from protect.cli import app
from tests.conftest import CIFAR, copy_cifar

runner = CliRunner()


def protect(*args: object, epochs: int = 1):
    # One outer epoch keeps each run to a few seconds; grouping does not depend on it.
    return runner.invoke(app, ["images", *map(str, args), "--epochs", str(epochs)])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "path,label") -> Path:
    path.write_text("\n".join([header] + [f"{p},{label}" for p, label in rows]) + "\n", encoding="utf-8")
    return path


def folder_rows(source: Path) -> list[tuple[str, str]]:
    return [(image.relative.as_posix(), image.label) for image in files.discover(source).images]


def flatten(source: Path, target: Path) -> Path:
    """Copy every image of `source` into one folder, with its class hidden from the name."""
    target.mkdir(parents=True)
    for n, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        shutil.copy(path, target / f"{n:03d}{path.suffix}")
    return target


# Manifests drive the same protection as folders.

def test_csv_manifest_matches_folders(cifar_png: Path, tmp_path: Path) -> None:
    manifest_path = write_csv(tmp_path / "labels.csv", folder_rows(cifar_png))

    by_folder = protect(cifar_png, "--out", tmp_path / "folders", "--seed", 3)
    by_manifest = protect(cifar_png, "--out", tmp_path / "manifest", "--seed", 3, "--labels", manifest_path)

    assert by_folder.exit_code == 0, by_folder.output
    assert by_manifest.exit_code == 0, by_manifest.output
    assert snapshot(tmp_path / "manifest") == snapshot(tmp_path / "folders")


def test_json_manifest_matches_folders(photo_folder: Path, tmp_path: Path) -> None:
    manifest_path = tmp_path / "labels.json"
    manifest_path.write_text(json.dumps([{"path": p, "label": label} for p, label in folder_rows(photo_folder)]))

    by_folder = protect(photo_folder, "--out", tmp_path / "folders", "--seed", 4)
    by_manifest = protect(photo_folder, "--out", tmp_path / "manifest", "--seed", 4, "--labels", manifest_path)

    assert by_folder.exit_code == 0, by_folder.output
    assert by_manifest.exit_code == 0, by_manifest.output
    assert snapshot(tmp_path / "manifest") == snapshot(tmp_path / "folders")


def test_manifest_labels_flat_folder(cifar_png: Path, tmp_path: Path) -> None:
    flat = flatten(cifar_png, tmp_path / "flat")
    rows = [(f"{n:03d}.png", "even" if n % 2 == 0 else "odd") for n in range(24)]
    manifest_path = write_csv(tmp_path / "labels.csv", rows)

    result = protect(flat, "--out", tmp_path / "out", "--labels", manifest_path, "--dry-run")

    assert result.exit_code == 0, result.output
    assert "2 classes (even 12, odd 12)" in result.output


# Manifest errors: exit 2 with the file, the place and the fix.

def test_manifest_with_missing_files_lists_them(cifar_png: Path, tmp_path: Path) -> None:
    ghosts = [(f"ghost/{n}.png", "ghost") for n in range(8)]
    manifest_path = write_csv(tmp_path / "labels.csv", folder_rows(cifar_png) + ghosts)

    result = protect(cifar_png, "--out", tmp_path / "out", "--labels", manifest_path)

    assert result.exit_code == 2
    assert "names 8 entries that are not images under SOURCE" in result.output
    assert "ghost/0.png" in result.output
    assert "and 3 more" in result.output
    assert not (tmp_path / "out").exists()


def test_manifest_with_unlabelled_images_lists_them(cifar_png: Path, tmp_path: Path) -> None:
    rows = folder_rows(cifar_png)
    manifest_path = write_csv(tmp_path / "labels.csv", rows[:17])

    result = protect(cifar_png, "--out", tmp_path / "out", "--labels", manifest_path)

    assert result.exit_code == 2
    assert "7 images under SOURCE have no label" in result.output
    assert rows[17][0] in result.output
    assert "and 2 more" in result.output
    assert "--unlabelled cluster" in result.output


def test_unlabelled_cluster_adds_cluster_classes(cifar_png: Path, tmp_path: Path) -> None:
    rows = folder_rows(cifar_png)
    manifest_path = write_csv(tmp_path / "labels.csv", rows[:16])  # two classes of eight
    report = tmp_path / "run.json"

    result = protect(cifar_png, "--out", tmp_path / "out", "--labels", manifest_path,
                     "--unlabelled", "cluster", "--clusters", 2, "--seed", 5, "--report", report)

    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert sorted(data["clusters"]["assignment"]) == sorted(p for p, _ in rows[16:])
    assert data["clusters"]["k"] == 2
    assert set(data["classes"]) == {"airplane", "automobile", "(cluster 1)", "(cluster 2)"}
    labelled = {Path(entry["source"]).relative_to(cifar_png).as_posix(): entry["label"] for entry in data["images"]}
    assert all(labelled[p] == label for p, label in rows[:16])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file,class\na.png,cat\n", "line 1: the header row must name the columns path and label"),
        ("path,label\na.png,cat\nb.png,dog\na.png,dog\n", "line 4: 'a.png' is listed again (first at"),
        ("path,label\n/home/me/a.png,cat\n", "line 2: '/home/me/a.png' is an absolute path"),
        ("path,label\nC:/photos/a.png,cat\n", "line 2: 'C:/photos/a.png' is an absolute path"),
        ("path,label\ncats/../../a.png,cat\n", "line 2: 'cats/../../a.png' points outside SOURCE"),
        ("path,label\ncats\\a.png,cat\n", "line 2: 'cats\\\\a.png' contains a backslash"),
        ("path,label\na.png,\n", "line 2: 'a.png' has an empty label"),
        ("path,label\n", "lists no images"),
    ],
)
def test_invalid_csv_manifest_names_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(manifest.ManifestError) as caught:
        manifest.read_manifest(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a.png": "cat",\n "b.png": "dog"\n "c.png": "cat"}', "line 3 column 2: invalid JSON"),
        ('{"a.png": "cat", "a.png": "dog"}', "the key 'a.png' appears twice"),
        ('[{"path": "a.png", "label": "cat"}, {"path": "./a.png", "label": "dog"}]', "entry 2: 'a.png' is listed again"),
        ('[{"path": "a.png"}]', 'entry 1: expected an object with "path" and "label"'),
        ('"a.png"', "expected an object mapping paths to labels"),
        ('{"a.png": ["cat"]}', "a label must be a string or an integer"),
    ],
)
def test_invalid_json_manifest_names_place(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "labels.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(manifest.ManifestError) as caught:
        manifest.read_manifest(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_manifest_accepts_bom_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("\ufeffLabel,notes,Path\ncat,striped,./cats//a.png\n", encoding="utf-8")
    assert manifest.read_manifest(path) == {"cats/a.png": "cat"}


def test_exit_2_for_invalid_manifest(cifar_png: Path, tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("a.png cat\n")
    result = protect(cifar_png, "--out", tmp_path / "out", "--labels", path)
    assert result.exit_code == 2
    assert "must end in .csv or .json" in result.output


def test_exit_2_for_misspelt_labels_mode(cifar_png: Path, tmp_path: Path) -> None:
    result = protect(cifar_png, "--out", tmp_path / "out", "--labels", "folder")
    assert result.exit_code == 2
    assert "invalid --labels folder: use one of folders, flat, cluster" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "options",
    [
        ["--clusters", "3"],  # folders do not cluster
        ["--unlabelled", "cluster"],  # no manifest
        ["--labels", "cluster", "--clusters", "1"],
        ["--labels", "cluster", "--clusters", "25"],  # more than the 24 images
    ],
)
def test_exit_2_for_conflicting_label_options(cifar_png: Path, tmp_path: Path, options: list[str]) -> None:
    result = protect(cifar_png, "--out", tmp_path / "out", *options)
    assert result.exit_code == 2, result.output


# Clustering.

def test_flat_folder_defaults_to_clusters_in_report(cifar_png: Path, tmp_path: Path) -> None:
    flat = flatten(cifar_png, tmp_path / "flat")
    report = tmp_path / "run.json"

    result = protect(flat, "--out", tmp_path / "out", "--seed", 6, "--report", report)

    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["labels"] == "cluster"
    assignment = data["clusters"]["assignment"]
    assert sorted(assignment) == sorted(p.name for p in flat.iterdir())
    assert data["clusters"]["k"] == clusters.auto_clusters(24)
    assert sum(data["clusters"]["sizes"].values()) == 24
    assert all(entry["label"] == assignment[Path(entry["source"]).name] for entry in data["images"])
    assert "clusters" in result.output
    assert "grouped by clustering, which protects far less" in result.output


def test_dry_run_clusters_print_drawn_seed(cifar_png: Path, tmp_path: Path) -> None:
    drawn = protect(cifar_png, "--out", tmp_path / "out", "--labels", "flat", "--clusters", 4, "--dry-run")
    seeded = protect(cifar_png, "--out", tmp_path / "out", "--labels", "flat", "--clusters", 4, "--seed", 3, "--dry-run")

    assert drawn.exit_code == 0, drawn.output
    assert "pass --seed " in drawn.output
    assert seeded.exit_code == 0, seeded.output
    assert "pass --seed" not in seeded.output


def test_labels_flat_ignores_subfolders(cifar_png: Path, tmp_path: Path) -> None:
    result = protect(cifar_png, "--out", tmp_path / "out", "--labels", "flat", "--clusters", 4, "--seed", 0, "--dry-run")

    assert result.exit_code == 0, result.output
    assert "in 4 classes ((cluster 1)" in result.output
    assert "airplane " not in result.output.split("classes (")[1]


def test_clustering_is_deterministic() -> None:
    images = torch.stack([resolution.to_working(files.read_rgb(p), 32) for p in sorted(CIFAR.rglob("*.jpg"))])
    model = encoder.load_encoder()
    rows = list(range(images.shape[0]))

    first = clusters.cluster_images(images, rows, model, torch.device("cpu"), seed=7)
    second = clusters.cluster_images(images, rows, model, torch.device("cpu"), seed=7)

    assert np.array_equal(first.assignment, second.assignment)
    assert first.sizes() == sorted(first.sizes(), reverse=True)


def test_clusters_follow_cifar_classes() -> None:
    paths = sorted(CIFAR.rglob("*.jpg"))
    truth = np.array([sorted({p.parent.name for p in paths}).index(p.parent.name) for p in paths])
    images = torch.stack([resolution.to_working(files.read_rgb(p), 32) for p in paths])
    k = len(set(truth.tolist()))

    found = clusters.cluster_images(images, list(range(len(paths))), encoder.load_encoder(), torch.device("cpu"), 0, k)

    purity = sum(np.bincount(truth[found.assignment == c]).max() for c in range(k)) / len(paths)
    assert purity > 0.5  # k-means on random features scores about 1 / k plus small-sample luck


def test_auto_clusters_rule() -> None:
    assert [clusters.auto_clusters(n) for n in (2, 3, 24, 341, 2000, 100_000)] == [2, 2, 3, 13, 32, 50]


# The shipped weights.

def test_shipped_weights_load_strictly() -> None:
    loaded = encoder.load_encoder()
    assert loaded.path.stat().st_size <= 20 * 1024 * 1024
    assert loaded.architecture == "small-cnn"
    assert loaded.input_size == 32
    for key in ("training_data", "normalization", "version", "script_commit", "test_accuracy"):
        assert key in loaded.metadata, key


def test_mismatched_weights_name_the_keys(tmp_path: Path) -> None:
    model = models.build("small-cnn", 10)
    state = model.state_dict()
    state["backbone.extra.weight"] = state.pop("head.weight")
    path = tmp_path / "broken.safetensors"
    from safetensors.torch import save_file

    metadata = encoder.read_metadata(encoder.weights_path())
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)

    with pytest.raises(encoder.WeightsError) as caught:
        encoder.load_encoder(path)
    assert "missing keys: head.weight" in str(caught.value)
    assert "unexpected keys: backbone.extra.weight" in str(caught.value)


def test_weights_with_wrong_shape_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "wide.safetensors"
    metadata = dict(encoder.read_metadata(encoder.weights_path()))
    encoder.save_encoder(models.build("small-cnn", 7), path, metadata)  # the metadata still gives 10 classes
    with pytest.raises(encoder.WeightsError, match=r"wrong shapes: head.bias \(7,\) \(expected \(10,\)\)"):
        encoder.load_encoder(path)


def test_environment_variable_overrides_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    fresh = models.build("small-cnn", 10)
    path = tmp_path / "other.safetensors"
    encoder.save_encoder(fresh, path, dict(encoder.read_metadata(encoder.weights_path())))
    monkeypatch.setenv(encoder.ENVIRONMENT_VARIABLE, str(path))

    loaded = encoder.load_encoder()

    assert loaded.path == path
    assert torch.equal(loaded.model.head.weight, fresh.head.weight)


def test_environment_variable_to_missing_file_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(encoder.ENVIRONMENT_VARIABLE, str(tmp_path / "absent.safetensors"))
    with pytest.raises(encoder.WeightsError, match="is not a file"):
        encoder.weights_path()


def test_exit_2_when_weights_do_not_load(cifar_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    monkeypatch.setenv(encoder.ENVIRONMENT_VARIABLE, str(bad))
    result = protect(cifar_png, "--out", tmp_path / "out", "--labels", "cluster")
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_exit_2_for_warm_start_with_reference(cifar_png: Path, tmp_path: Path) -> None:
    result = protect(cifar_png, "--out", tmp_path / "out", "--schedule", "reference", "--warm-start")
    assert result.exit_code == 2
    assert "--warm-start needs a resnet18 encoder" in result.output
