"""`protect bench` and the trainer's defences, on the committed CIFAR-10 sample."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from protect import defences, training
from protect.bench import cache, harness, report
from protect.cli import app
from tests.conftest import CIFAR

runner = CliRunner()


@pytest.fixture
def split(tmp_path: Path) -> tuple[Path, Path]:
    """Three classes: the first eight images of each to train on, the other four to test on."""
    train, test = tmp_path / "train", tmp_path / "test"
    for folder in sorted(CIFAR.iterdir())[:3]:
        names = sorted(folder.iterdir())
        for target, chosen in ((train, names[:8]), (test, names[8:])):
            (target / folder.name).mkdir(parents=True)
            for path in chosen:
                shutil.copy(path, target / folder.name / path.name)
    return train, test


def bench(train: Path, test: Path, results: Path, *extra: str):
    # One crafting epoch and one victim epoch keep a run to seconds.
    args = ["bench", str(train), str(test), "--results", str(results), "--craft-epochs", "1", "--epochs", "1", *extra]
    return runner.invoke(app, args)


def test_bench_writes_table_chart_and_json(split, tmp_path: Path) -> None:
    results = tmp_path / "results"
    outcome = bench(*split, results, "--defences", "none,jpeg10")
    assert outcome.exit_code == 0, outcome.output

    data = json.loads((results / "results.json").read_text())
    assert len(data["victims"]) == 4 * 2  # clean, random, em, mi-ue under two defences
    assert {v["method"] for v in data["victims"]} == {"clean", "random", "em", "mi-ue"}
    page = (results / "results.md").read_text()
    assert "| mi-ue |" in page
    assert "jpeg10" in page
    assert (results / "chart.png").read_bytes().startswith(b"\x89PNG")

    sets = {s["method"]: s for s in data["sets"]}
    for method in ("random", "em", "mi-ue"):
        folder = Path(sets[method]["folder"])
        assert len(list(folder.rglob("*.jpg"))) == 24  # real files on disk, same names as the sources
        assert sets[method]["psnr_mean"] > 25
        assert 0 < sets[method]["ssim_mean"] <= 1


def test_bench_rerun_reuses_stored_results(split, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert bench(*split, results, "--methods", "clean,random", "--defences", "none").exit_code == 0
    again = bench(*split, results, "--methods", "clean,random", "--defences", "none")
    assert again.exit_code == 0, again.output
    assert "reusing the protected set" in again.output
    assert again.output.count("(stored)") == 2

    longer = bench(*split, results, "--methods", "clean,random", "--defences", "none", "--epochs", "2")
    assert longer.exit_code == 0, longer.output
    assert "reusing the protected set" in longer.output  # a victim setting does not touch the set
    assert longer.output.count("(stored)") == 0


def test_bench_victim_size_trains_at_that_size(split, tmp_path: Path) -> None:
    results = tmp_path / "results"
    outcome = bench(*split, results, "--methods", "clean", "--defences", "none", "--victim-size", "16,48")
    assert outcome.exit_code == 0, outcome.output
    sizes = [v["size"] for v in json.loads((results / "results.json").read_text())["victims"]]
    assert sizes == [16, 48]


def test_bench_rejects_mismatched_classes(split, tmp_path: Path) -> None:
    train, test = split
    shutil.rmtree(next(test.iterdir()))
    outcome = bench(train, test, tmp_path / "results")
    assert outcome.exit_code == 2
    assert "same class subfolders" in outcome.output
    assert str(train) in outcome.output


def test_bench_rejects_unknown_method(split, tmp_path: Path) -> None:
    outcome = bench(*split, tmp_path / "results", "--methods", "mi-ue,magic")
    assert outcome.exit_code == 2
    assert "--methods" in outcome.output
    assert "magic" in outcome.output


def test_code_hash_follows_module_source(tmp_path: Path) -> None:
    source = tmp_path / "engine_copy.py"
    source.write_text("STEP = 1\n")
    module = types.ModuleType("engine_copy")
    module.__file__ = str(source)
    before = cache.code_hash((module,))
    source.write_text("STEP = 2\n")
    assert cache.code_hash((module,)) != before


def test_findings_name_where_mi_ue_loses() -> None:
    def victim(method: str, defence: str, final: float) -> harness.VictimResult:
        return harness.VictimResult(method, "vgg-cnn", defence, 32, 10, final, final, [final], 1.0)

    results = harness.Results(plan={}, classes=list("abcdefghij"), chance=0.1)
    results.victims = [
        victim("clean", "none", 0.70), victim("em", "none", 0.30), victim("mi-ue", "none", 0.15),
        victim("clean", "jpeg10", 0.60), victim("em", "jpeg10", 0.40), victim("mi-ue", "jpeg10", 0.55),
    ]
    found = report.findings(results)
    assert any("jpeg10" in s and "em leaves 40.0 %" in s for s in found)
    assert any("jpeg10" in s and "above chance" in s and "60.0 %" in s for s in found)
    assert not any("defence none" in s for s in found)


def test_findings_weak_without_defence() -> None:
    def victim(method: str, final: float) -> harness.VictimResult:
        return harness.VictimResult(method, "vgg-cnn", "none", 32, 10, final, final, [final], 1.0)

    results = harness.Results(plan={}, classes=list("abcdefghij"), chance=0.1)
    results.victims = [victim("clean", 0.60), victim("mi-ue", 0.31)]
    found = report.findings(results)
    assert any("31.0 %" in s and "weak even on files that reach the trainer untouched" in s for s in found)
    assert not any("this defence removes" in s for s in found)


def test_jpeg_defence_changes_pixels_within_range() -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = defences.preprocess("jpeg10", x)
    assert y.shape == x.shape
    assert float((y - x).abs().mean()) > 0.05  # quality 10 removes most of uniform noise's detail
    assert float(y.min()) >= 0
    assert float(y.max()) <= 1


def test_grayscale_defence_equalises_channels() -> None:
    y = defences.preprocess("grayscale", torch.rand(2, 3, 8, 8))
    assert torch.equal(y[:, 0], y[:, 1])
    assert torch.equal(y[:, 1], y[:, 2])


def test_blur_defence_keeps_flat_images() -> None:
    flat = torch.full((1, 3, 16, 16), 0.25)
    assert torch.allclose(defences.preprocess("blur", flat), flat, atol=1e-6)


def test_cutout_zeroes_one_square() -> None:
    x = defences.cutout(torch.ones(64, 3, 32, 32), torch.Generator().manual_seed(0))
    zeroed = (x[:, 0] == 0).sum(dim=(1, 2))
    assert int(zeroed.max()) == 16 * 16  # a square fully inside the image
    assert int(zeroed.min()) > 0  # every image loses part of one
    assert torch.equal(x[:, 0] == 0, x[:, 2] == 0)  # all channels of the same pixels


def test_pgd_stays_within_its_budget() -> None:
    model = training.models.build("small-cnn", 3)
    x = torch.rand(4, 3, 16, 16)
    adversarial = defences.pgd(model, x, torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0))
    assert float((adversarial - x).abs().max()) <= defences.PGD_EPSILON + 1e-6


@pytest.mark.parametrize("name", list(defences.DEFENCES))
def test_victim_trains_under_each_defence(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 3, 16, 16, generator=generator), torch.arange(12) % 3
    result = training.train_victim(x, y, x, y, architecture="small-cnn", epochs=1, batch=6, defence=name)
    assert len(result.test_accuracy) == 1
    assert 0 <= result.final <= 1


def test_unknown_defence_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown defence 'sharpen'"):
        defences.get("sharpen")


def test_findings_cover_mi_ue_with_a_preset() -> None:
    def victim(method: str, final: float) -> harness.VictimResult:
        return harness.VictimResult(method, "vgg-cnn", "jpeg75", 32, 10, final, final, [final], 1.0)

    results = harness.Results(plan={}, classes=list("abcdefghij"), chance=0.1)
    results.victims = [victim("clean", 0.60), victim("em", 0.20), victim("mi-ue:off", 0.45)]
    found = report.findings(results)
    assert any("em leaves 20.0 %, lower than mi-ue:off's 45.0 %" in s for s in found)
    assert any("mi-ue:off's victim reaches 45.0 %" in s and "60.0 %" in s for s in found)


def test_bench_always_trains_the_clean_ceiling(split, tmp_path: Path) -> None:
    results = tmp_path / "results"
    outcome = bench(*split, results, "--methods", "random", "--defences", "jpeg75")
    assert outcome.exit_code == 0, outcome.output
    methods = [v["method"] for v in json.loads((results / "results.json").read_text())["victims"]]
    assert methods == ["clean", "random"]


def test_findings_flag_a_control_near_chance() -> None:
    results = harness.Results(plan={}, classes=list("abcd"), chance=0.25)
    results.victims = [
        harness.VictimResult("clean", "vgg-cnn", "none", 32, 2, 0.25, 0.25, [0.25], 1.0),
        harness.VictimResult("mi-ue", "vgg-cnn", "none", 32, 2, 0.25, 0.25, [0.25], 1.0),
    ]
    found = report.findings(results)
    assert any("cannot judge protection" in s for s in found)
