"""Protect a folder of images: read, craft, write, in that order.

`protect_images` is what the `protect images` command runs once it has checked
its arguments. Full-size pixels are never all held at once: reading keeps only
the working-size copy of each image, and writing decodes each source again.
Results come back as one `Outcome` per input; nothing here prints.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from protect import __version__, engine, files, labels, noise, resolution, state

ProgressFn = Callable[[str, int, int], None]

PROTECTED, FAILED, SKIPPED = "protected", "failed", "skipped"

# Settings.method value for uniform noise in place of a crafted δ: a baseline
# for benchmarks, not offered by `protect images` because it protects nothing.
RANDOM = "random"


@dataclass
class Settings:
    """Run settings, as chosen on the command line."""

    epsilon: int  # L∞ budget in 8-bit levels
    size: int | None  # working size in pixels; None picks one from the images
    schedule: engine.Schedule
    method: str
    device: torch.device
    seed: int
    metadata: str = "keep"  # "keep", "strip-gps" or "strip"; see files.encode
    force: bool = False  # protect files that already carry the tool's marker
    max_pixels: int = files.DEFAULT_MAX_PIXELS  # larger images are rejected unread
    # Start the surrogate from the shipped encoder's weights.
    # NOTE: off because its effect on protection has not been measured yet.
    warm_start: bool = False


@dataclass
class Outcome:
    """Result for one input file."""

    source: Path
    output: Path | None
    label: str
    status: str = PROTECTED
    error: str | None = None
    reason: str | None = None  # short category of the error, for summaries
    linf: int | None = None  # largest change of any channel after reload, in 8-bit levels
    energy_retained: float | None = None  # share of δ's energy left after lossy encoding


@dataclass
class ClusterSummary:
    """The clusters that stood in for labels: how many, why, their sizes and members."""

    k: int
    rule: str  # how k was chosen
    sizes: dict[str, int]  # cluster name -> images
    assignment: dict[str, str]  # relative path (forward slashes) -> cluster name


@dataclass
class RunResult:
    outcomes: list[Outcome]
    size: int
    classes: dict[str, int]
    craft: engine.CraftResult | None
    clusters: ClusterSummary | None = None


class ResumeMismatch(RuntimeError):
    """--resume found a saved run whose settings or sources differ from this one."""


class ForeignOutput(RuntimeError):
    """Error: files that this tool did not write are where its outputs would go."""


def check_outputs(images: list[files.ImageFile], destination: Path) -> None:
    """Raise ForeignOutput when any output path contains a file this tool did not write.

    Outputs of an earlier run carry the tool's marker, so they are replaced.
    Any other file there is the user's, and replacing it would lose it.
    """
    targets = (destination / image.relative for image in images)
    foreign = [target for target in targets if target.exists() and not files.is_output(target)]
    if foreign:
        count = f"{len(foreign)} files" if len(foreign) > 1 else "1 file"
        raise ForeignOutput(
            f"{count} in {destination} would be replaced but were not written by protect, "
            f"for example {foreign[0]}: move them away or choose another --out"
        )


def settings_record(settings: Settings) -> dict:
    """Return the settings that decide δ, as JSON-ready values (the device is left out)."""
    return {
        "epsilon": settings.epsilon,
        "size": settings.size,
        "schedule": dataclasses.asdict(settings.schedule),
        "method": settings.method,
        "seed": settings.seed,
        "metadata": settings.metadata,
        "force": settings.force,
        "max_pixels": settings.max_pixels,
        "warm_start": settings.warm_start,
        "version": __version__,
    }


class OutputCheckError(RuntimeError):
    """A written file failed its reload check; the run must not claim it protected."""


def working_size(images: list[files.ImageFile]) -> int:
    sides = []
    for image in images:
        try:
            with Image.open(image.path) as im:  # reads the header only
                sides.append(min(im.size))
        except (OSError, ValueError, SyntaxError):
            continue  # reported when the file is decoded
    return resolution.auto_size(sides) if sides else resolution.MAX_AUTO_SIZE


def _read_all(
    images: list[files.ImageFile], size: int, settings: Settings, store: "_DiskTensors", progress: ProgressFn
) -> tuple[torch.Tensor, list[int], list[Outcome]]:
    """Decode every image to working size into a file-backed (K, 3, S, S) tensor.

    Returns that tensor (one row per readable image, in order), the input
    positions of those K images, and one outcome per input.
    """
    working = store.allocate((len(images), 3, size, size))
    kept, outcomes = [], []
    for i, image in enumerate(images):
        outcome = Outcome(image.path, None, image.label)
        try:
            picture = files.read_image(image.path, settings.max_pixels)
            if picture.marked and not settings.force:
                raise files.AlreadyProtected(
                    "already protected by this tool (its marker is in the metadata); "
                    "pass --force to perturb it again"
                )
            working[len(kept)] = resolution.to_working(picture.rgb, size)
            kept.append(i)
        except (files.ImageReadError, files.ImageTooLarge) as error:
            outcome.status, outcome.error, outcome.reason = FAILED, str(error), error.reason
        except files.UnsupportedImage as error:
            outcome.status, outcome.error, outcome.reason = SKIPPED, str(error), error.reason
        outcomes.append(outcome)
        progress("read", i + 1, len(images))
    return working[: len(kept)], kept, outcomes


class _DiskTensors:
    """float32 tensors backed by memory-mapped files in a temporary folder.

    Working copies and δ grow with the number of images: 12 KiB per image at
    32 pixels, 48 KiB at 64. On disk they leave memory use bounded by the
    batch, because only the pages of the current batch are resident.
    """

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="protect-")
        self._count = 0

    def allocate(self, shape: tuple[int, ...]) -> torch.Tensor:
        self._count += 1
        path = Path(self._folder.name) / f"tensor{self._count}.f32"
        if 0 in shape:
            return torch.empty(shape)
        array = np.memmap(path, dtype=np.float32, mode="w+", shape=shape)
        return torch.from_numpy(array)

    def close(self) -> None:
        self._folder.cleanup()


def _measure(source_rgb: np.ndarray, intended: np.ndarray, written: Path) -> tuple[int, float]:
    """Reload `written`; return its L∞ change in levels and the share of δ energy kept.

    The share is the energy of the written difference's projection onto the
    intended difference, over the intended energy, in [0, 1]: 1.0 for lossless
    formats, lower where a codec removed part of δ. Codec noise orthogonal to δ
    does not count as retained. For JPEG the L∞ change includes the codec's own
    re-encoding error, so it can exceed the budget.
    """
    reloaded = files.read_rgb(written).astype(np.int32)
    source = source_rgb.astype(np.int32)
    if reloaded.shape != source.shape:
        raise OutputCheckError(f"written size {reloaded.shape} differs from source {source.shape}")
    actual = reloaded - source
    wanted = intended.astype(np.int32) - source
    linf = int(np.abs(actual).max())
    # Each product is at most 255 * 255, so int32 products and int64 sums are exact.
    energy = int((wanted * wanted).sum(dtype=np.int64))
    if energy == 0:
        return linf, 1.0
    along = int((actual * wanted).sum(dtype=np.int64)) / energy
    # Codec noise that happens to line up with δ can push the projection past
    # 1; the share is capped there.
    return linf, min(1.0, max(0.0, along)) ** 2


def _write_one(
    image: files.ImageFile,
    delta: torch.Tensor,
    destination: Path,
    settings: Settings,
    in_place: bool,
    outcome: Outcome,
) -> Path | None:
    """Write one protected image; return the temporary path when `in_place`."""
    picture = files.read_image(image.path, settings.max_pixels)
    height, width = picture.rgb.shape[:2]
    native = resolution.to_native(delta, height, width)
    protected = resolution.apply_delta(picture.rgb, native, picture.gray)
    pil = files.to_pil(picture, protected)

    def write(handle) -> None:
        files.encode(pil, picture, handle, settings.metadata)

    # In place, the output keeps the original's permission bits.
    mode = stat.S_IMODE(image.path.stat().st_mode) if in_place else None
    temporary = files.write_temporary(destination, write, mode)
    try:
        outcome.linf, outcome.energy_retained = _measure(picture.rgb, protected, temporary)
        if picture.format not in files.LOSSY_FORMATS and outcome.linf > settings.epsilon:
            raise OutputCheckError(
                f"reloaded output differs by {outcome.linf} levels, more than --epsilon {settings.epsilon}"
            )
        if in_place:
            return temporary
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return None


@contextlib.contextmanager
def _deferred_interrupt():
    """Hold Ctrl-C until the current write ends; yield a check that raises it then.

    Only the main thread may set signal handlers; elsewhere Ctrl-C acts at once.
    """
    requested = []

    def note(signum, frame) -> None:
        requested.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, note)
    except ValueError:
        yield lambda: None
        return

    def check() -> None:
        if requested:
            raise KeyboardInterrupt

    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


def protect_images(
    images: list[files.ImageFile],
    source: Path,
    destination: Path | None,
    settings: Settings,
    progress: ProgressFn,
    resume: bool = False,
    plan: labels.LabelPlan | None = None,
) -> RunResult:
    """Protect `images` (found under `source`) and write them.

    `plan` gives the labels (see protect.labels); by default the first-level
    subfolders are the classes.

    With `destination` None the originals are replaced in two phases. First
    every protected file is written beside its original under a hidden
    temporary name. Only when all writes have finished does each one replace
    its original by an atomic rename. An error or interrupt before
    then removes the temporary files and leaves every original as it was.
    With a `destination`, δ and each finished output are saved in its state
    folder (see protect.state). `resume` reuses them when settings and sources
    match and raises ResumeMismatch when they differ. Raises ForeignOutput,
    before any work, when an output would replace a file that this tool did
    not write. Raises labels.LabelError
    when the readable images form fewer than two classes.
    """
    plan = plan or labels.plan_labels(images, labels.FOLDERS)
    record = settings_record(settings) | {"labels": plan.record()}
    saved = None
    if destination is not None:
        check_outputs(images, destination)
        saved = state.RunState(destination)
        key = state.run_key(record, images)
        if resume and saved.saved_settings() is not None and not saved.matches(key):
            raise ResumeMismatch(
                f"the interrupted run in {destination} used other settings or sources; "
                "rerun without --resume to start over"
            )
        if not (resume and saved.matches(key)):
            saved.start(key, record)
        saved.remove_temporaries()

    size = settings.size or working_size(images)
    store = _DiskTensors()
    try:
        return _craft_and_write(images, destination, settings, progress, resume, saved, size, store, plan)
    finally:
        store.close()


def group_images(
    images: list[files.ImageFile],
    kept: list[int],
    working: torch.Tensor,
    plan: labels.LabelPlan,
    settings: Settings,
    progress: ProgressFn,
) -> tuple[labels.Grouping, ClusterSummary | None]:
    """Label the readable images: the plan's labels, and clusters where it has none.

    `working` contains the K = len(kept) readable images (K, 3, S, S) in
    [0, 1], in the order of `kept`. Raises labels.LabelError when they form fewer than
    two classes, and encoder.WeightsError when clustering cannot load the encoder.
    """
    names: list[str | None] = [plan.labels[i] for i in kept]
    rows = [n for n, name in enumerate(names) if name is None]
    summary = None
    if rows:
        from protect import clusters, encoder

        if plan.clusters is not None and plan.clusters > len(rows):
            raise labels.LabelError(f"--clusters {plan.clusters} is more than the {len(rows)} readable images to cluster")
        model = encoder.load_encoder(device=settings.device)
        clustering = clusters.cluster_images(
            working, rows, model, settings.device, settings.seed, plan.clusters, progress
        )
        cluster_names = clustering.names()
        clash = set(cluster_names) & set(names)
        if clash:
            raise labels.LabelError(f"the manifest uses the label {sorted(clash)[0]}, a name reserved for clusters; rename it")
        for n, name in zip(rows, cluster_names):
            names[n] = name
        summary = ClusterSummary(
            k=clustering.k,
            rule=clustering.rule,
            sizes=dict(sorted(collections.Counter(cluster_names).items())),
            assignment={images[kept[n]].relative.as_posix(): name for n, name in zip(rows, cluster_names)},
        )

    if len(set(names)) < 2:
        raise labels.LabelError(
            f"the readable images form one class ({names[0]}), but protection needs at least two classes"
        )
    return labels.Grouping.from_labels(names), summary


def plan_groups(
    images: list[files.ImageFile],
    plan: labels.LabelPlan,
    settings: Settings,
    progress: ProgressFn,
) -> tuple[labels.Grouping | None, ClusterSummary | None, list[Outcome]]:
    """Read the images and group them as a run would, without crafting (for --dry-run).

    Images are decoded only when clustering needs their pixels. Returns the
    grouping of the readable images (None when none is readable), the clusters
    and one outcome per input, whose label is the image's class.
    """
    if not plan.clustered:
        outcomes = [Outcome(image.path, None, label or "") for image, label in zip(images, plan.labels)]
        grouping = labels.Grouping.from_labels([label or "" for label in plan.labels])
        return grouping, None, outcomes

    size = settings.size or working_size(images)
    store = _DiskTensors()
    try:
        working, kept, outcomes = _read_all(images, size, settings, store, progress)
        if not kept:
            return None, None, outcomes
        grouping, clusters = group_images(images, kept, working, plan, settings, progress)
    finally:
        store.close()
    for n, i in enumerate(kept):
        outcomes[i].label = grouping.label_of(n)
    return grouping, clusters, outcomes


def _initial_state(settings: Settings) -> dict[str, torch.Tensor] | None:
    """Return the shipped encoder's weights when the run starts warm, else None."""
    if not settings.warm_start:
        return None
    from protect import encoder

    loaded = encoder.load_encoder()
    if loaded.architecture != settings.schedule.surrogate:
        raise encoder.WeightsError(
            f"the encoder in {loaded.path} is a {loaded.architecture}, but the {settings.schedule.name} schedule's "
            f"surrogate is a {settings.schedule.surrogate}; pass --no-warm-start"
        )
    return loaded.model.state_dict()


def _craft_and_write(
    images: list[files.ImageFile],
    destination: Path | None,
    settings: Settings,
    progress: ProgressFn,
    resume: bool,
    saved: state.RunState | None,
    size: int,
    store: _DiskTensors,
    plan: labels.LabelPlan,
) -> RunResult:
    working, kept, outcomes = _read_all(images, size, settings, store, progress)
    if not kept:
        return RunResult(outcomes, size, {}, None)

    grouping, clusters = group_images(images, kept, working, plan, settings, progress)
    for n, i in enumerate(kept):
        outcomes[i].label = grouping.label_of(n)
    relatives = [str(images[i].relative) for i in kept]
    delta = saved.load_delta(relatives) if resume and saved is not None else None
    craft = None
    if delta is None and settings.method == RANDOM:
        delta = store.allocate(tuple(working.shape))
        noise.fill_uniform(delta, working, settings.epsilon / 255, torch.Generator().manual_seed(settings.seed))
        if saved is not None:
            saved.save_delta(delta, relatives)
    elif delta is None:
        craft = engine.craft(
            working,
            grouping.indices,
            epsilon=settings.epsilon / 255,
            schedule=settings.schedule,
            method=settings.method,
            device=settings.device,
            seed=settings.seed,
            progress=progress,
            allocate=store.allocate,
            initial_state=_initial_state(settings),
        )
        delta = craft.delta
        if saved is not None:
            saved.save_delta(delta, relatives)
    done = saved.finished() if resume and saved is not None else {}

    pending: list[tuple[Path, Path]] = []
    try:
        with _deferred_interrupt() as check_interrupt:
            _write_all(images, kept, outcomes, delta, destination, settings, saved, done, pending,
                       progress, check_interrupt)
    except BaseException:
        for temporary, _ in pending:
            temporary.unlink(missing_ok=True)
        raise

    for temporary, target in pending:
        os.replace(temporary, target)
    if saved is not None:
        saved.remove()
    return RunResult(outcomes, size, grouping.sizes(), craft, clusters)


def _write_all(
    images: list[files.ImageFile],
    kept: list[int],
    outcomes: list[Outcome],
    delta: torch.Tensor,
    destination: Path | None,
    settings: Settings,
    saved: state.RunState | None,
    done: dict[str, str],
    pending: list[tuple[Path, Path]],
    progress: ProgressFn,
    check_interrupt: Callable[[], None],
) -> None:
    """Write every crafted image; a Ctrl-C takes effect between two files."""
    for n, i in enumerate(kept):
        image, outcome = images[i], outcomes[i]
        target = image.path if destination is None else destination / image.relative
        outcome.output = target
        relative = str(image.relative)
        if relative in done and target.exists() and state.sha256(target) == done[relative]:
            progress("write", n + 1, len(kept))  # complete before the interruption
            continue
        try:
            temporary = _write_one(image, delta[n], target, settings, destination is None, outcome)
            if temporary is not None:
                pending.append((temporary, target))
            elif saved is not None:
                saved.record(relative, target)
        except (
            OSError, files.ImageReadError, files.ImageTooLarge, files.UnsupportedImage, OutputCheckError
        ) as error:
            outcome.status, outcome.error, outcome.reason = FAILED, f"write failed: {error}", "write failed"
            outcome.output = None
        progress("write", n + 1, len(kept))
        check_interrupt()
