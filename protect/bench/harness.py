"""Run the benchmark plan: protect, train victims, collect the figures.

Every protected set goes through `protect images`' own write path
(pipeline.protect_images): files are written to disk and the victims load
them back from there. Sets live under RESULTS/sets/, and each result is stored
under RESULTS/cache/ by a key of its inputs (see protect.bench.cache).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from protect import checks, engine, files, pipeline, training
from protect.bench import cache, data

# Methods in the order they appear on the page. "clean" writes nothing: its
# victims train on the original files.
METHODS = ("clean", "random", "em", "mi-ue", "mi-ue-reference")
DEFAULT_METHODS = ("clean", "random", "em", "mi-ue")
DEFAULT_VICTIM = "vgg-cnn"
# Victim epochs: 28 trainings of vgg-cnn on 5,000 CIFAR-10 images must fit two
# hours on 2 CPU cores beside the crafting.
DEFAULT_EPOCHS = 10

LogFn = Callable[[str], None]


@dataclass
class Plan:
    """The benchmark's settings, as chosen on the command line."""

    train: Path
    test: Path
    results: Path
    methods: list[str]
    victims: list[str]
    defences: list[str]
    sizes: list[int] | None  # victim input sizes, or None for the working size
    epochs: int = DEFAULT_EPOCHS
    per_class: int | None = None  # training images per class, the first by file name
    test_per_class: int | None = None
    epsilon: int = 8
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reference_epochs: int | None = None  # outer epochs of the reference schedule, or None for its 100
    craft_epochs: int | None = None  # overrides the default schedule's outer epochs for em and mi-ue
    robustness: str = engine.DEFAULT_ROBUSTNESS  # preset of em and mi-ue unless a method names its own


@dataclass
class SetResult:
    """A protected training set and what making it cost."""

    method: str
    key: str  # the cache key, or the data's fingerprint for "clean"
    folder: str  # where the victims read it
    images: int
    seconds: float | None = None  # wall time of protect_images: reading, crafting and writing
    images_per_second: float | None = None
    psnr_mean: float | None = None  # dB, against the originals
    ssim_mean: float | None = None
    linf_max: int | None = None  # 8-bit levels, including the codec's own error for JPEG outputs
    working_size: int | None = None
    cached: bool = False


@dataclass
class VictimResult:
    """One victim trained on one set under one defence, tested on the clean test set."""

    method: str
    victim: str
    defence: str
    size: int
    epochs: int
    final: float  # clean-test accuracy after the last epoch, in [0, 1]
    peak: float  # best clean-test accuracy over the epochs
    curve: list[float]
    seconds: float
    cached: bool = False


@dataclass
class Results:
    plan: dict
    classes: list[str]
    chance: float
    sets: list[SetResult] = field(default_factory=list)
    victims: list[VictimResult] = field(default_factory=list)


def split_method(label: str) -> tuple[str, str | None]:
    """Split a method label such as "mi-ue:off" into the method and its robustness preset."""
    method, _, preset = label.partition(":")
    return method, preset or None


def _schedule(label: str, plan: Plan) -> engine.Schedule | None:
    method, preset = split_method(label)
    if method in ("em", "mi-ue"):
        schedule = engine.with_robustness(engine.FAST, preset or plan.robustness)
        if plan.craft_epochs is None:
            return schedule
        return dataclasses.replace(schedule, max_epochs=plan.craft_epochs)
    if method == "mi-ue-reference":
        if plan.reference_epochs is None:
            return engine.REFERENCE
        return dataclasses.replace(engine.REFERENCE, max_epochs=plan.reference_epochs)
    return None


def _engine_method(label: str) -> str:
    return {"random": pipeline.RANDOM, "em": "em"}.get(split_method(label)[0], "mi-ue")


def _image_metrics(originals: Path, protected: Path, images: list[files.ImageFile]) -> tuple[float, float, int]:
    """Return mean PSNR (dB), mean SSIM and max L∞ (levels) of the protected files."""
    psnrs, ssims, linf = [], [], 0
    for image in images:
        a = files.read_rgb(originals / image.relative)
        b = files.read_rgb(protected / image.relative)
        psnrs.append(min(checks.psnr(a, b), 100.0))  # identical images give inf; 100 dB caps them
        ssims.append(checks.ssim(a, b))
        linf = max(linf, int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()))
    return float(np.mean(psnrs)), float(np.mean(ssims)), linf


def protect_set(plan: Plan, method: str, images: list[files.ImageFile], fingerprint: str,
                store: cache.Store, versions: dict[str, str], log: LogFn) -> SetResult:
    """Write `method`'s protected copy of the training images, or reuse the stored one."""
    if method == "clean":
        return SetResult(method, fingerprint, str(plan.train), len(images))
    schedule = _schedule(method, plan)
    record = {
        "method": method,
        "schedule": None if schedule is None else dataclasses.asdict(schedule),
        "epsilon": plan.epsilon,
        "seed": plan.seed,
        "data": fingerprint,
        "code": versions["craft" if schedule is not None else "write"],
    }
    name = f"{method}-{cache.key(record)[:16]}"
    folder = plan.results / "sets" / name
    stored = store.get("sets", name)
    if stored is not None and folder.is_dir():
        log(f"{method}: reusing the protected set in {folder}")
        return dataclasses.replace(SetResult(**stored), cached=True)

    shutil.rmtree(folder, ignore_errors=True)  # a set left half-written by an interrupted run
    settings = pipeline.Settings(
        epsilon=plan.epsilon,
        size=None,
        schedule=schedule or engine.FAST,  # unused by random noise, recorded only
        method=_engine_method(method),
        device=plan.device,
        seed=plan.seed,
    )
    log(f"{method}: protecting {len(images)} images into {folder}")
    started = time.monotonic()
    run = pipeline.protect_images(images, plan.train, folder, settings, lambda *_: None)
    seconds = time.monotonic() - started
    failed = [o for o in run.outcomes if o.status != pipeline.PROTECTED]
    if failed:
        listed = "; ".join(f"{o.source}: {o.error}" for o in failed[:5])
        raise data.BenchDataError(f"{len(failed)} training images could not be protected ({listed})")

    psnr, ssim, linf = _image_metrics(plan.train, folder, images)
    result = SetResult(method, name, str(folder), len(images), round(seconds, 1),
                       round(len(images) / seconds, 2), round(psnr, 2), round(ssim, 4), linf, run.size)
    store.put("sets", name, dataclasses.asdict(result))
    log(f"{method}: {seconds:.0f} s, PSNR {psnr:.1f} dB, SSIM {ssim:.3f}, L∞ {linf}")
    return result


def train_one(plan: Plan, set_result: SetResult, victim: str, defence: str, size: int,
              train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
              test_fingerprint: str, store: cache.Store, versions: dict[str, str]) -> VictimResult:
    """Train one victim, or return its stored result when nothing it depends on changed."""
    record = {
        "set": set_result.key,
        "victim": victim,
        "defence": defence,
        "size": size,
        "epochs": plan.epochs,
        "seed": plan.seed,
        "test": test_fingerprint,
        "code": versions["victim"],
    }
    name = cache.key(record)
    stored = store.get("victims", name)
    if stored is not None:
        return dataclasses.replace(VictimResult(**stored), cached=True)

    started = time.monotonic()
    outcome = training.train_victim(
        *train, *test, architecture=victim, epochs=plan.epochs, device=plan.device,
        seed=plan.seed, defence=defence,
    )
    result = VictimResult(
        set_result.method, victim, defence, size, plan.epochs, outcome.final, outcome.peak,
        outcome.test_accuracy, round(time.monotonic() - started, 1),
    )
    store.put("victims", name, dataclasses.asdict(result))
    return result


def run(plan: Plan, log: LogFn, on_result: Callable[[Results], None] | None = None) -> Results:
    """Run every (method, victim, defence, size) of `plan`; call on_result after each victim."""
    classes = data.class_names(plan.train, plan.test)
    train_images = data.select(plan.train, classes, plan.per_class)
    test_images = data.select(plan.test, classes, plan.test_per_class)
    store = cache.Store(plan.results / "cache")
    # Hashed once, at the start, so that editing a file during a long run cannot
    # file a result under a version of the code that did not compute it.
    versions = cache.versions()
    train_fingerprint = data.fingerprint(train_images)
    test_fingerprint = data.fingerprint(test_images)
    record = {k: str(v) if isinstance(v, (Path, torch.device)) else v for k, v in dataclasses.asdict(plan).items()}
    results = Results(record, classes, 1 / len(classes))

    for method in plan.methods:
        results.sets.append(protect_set(plan, method, train_images, train_fingerprint, store, versions, log))
    sizes = plan.sizes or [pipeline.working_size(train_images)]

    total = len(plan.methods) * len(plan.victims) * len(plan.defences) * len(sizes)
    done = 0
    for size in sizes:
        test = data.load(plan.test, test_images, classes, size)
        for set_result in results.sets:
            train = data.load(Path(set_result.folder), train_images, classes, size)
            for victim in plan.victims:
                for defence in plan.defences:
                    result = train_one(plan, set_result, victim, defence, size, train, test,
                                       test_fingerprint, store, versions)
                    done += 1
                    timing = "stored" if result.cached else f"{result.seconds:.0f} s"
                    log(f"[{done}/{total}] {result.method}, {victim} at {size} px, {defence}: "
                        f"final {result.final:.1%}, peak {result.peak:.1%} ({timing})")
                    results.victims.append(result)
                    if on_result is not None:
                        on_result(results)
    return results
