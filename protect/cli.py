"""The `protect` command line.

    protect images ./photos --out ./safe

Results and the closing summary go to stdout; progress bars and diagnostics go
to stderr. Exit codes: 0 every image protected; 1 some inputs failed or were
skipped and all the others were written; 2 invalid arguments; 3 no images found;
130 interrupted by Ctrl-C (after the current write finishes).
torch is imported only when a command runs, so `protect --help` is instant.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from protect import __version__
from protect.bench import command as bench_command

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_NO_IMAGES = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # the shell convention for a Ctrl-C: 128 + SIGINT

app = typer.Typer(
    help="Make images unlearnable before you publish them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap keeps each message on one line, so scripts can grep it.
stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


class ScheduleName(str, Enum):
    fast = "fast"
    reference = "reference"


class MethodName(str, Enum):
    mi_ue = "mi-ue"
    em = "em"


class RobustnessName(str, Enum):
    off = "off"
    standard = "standard"
    strong = "strong"


class UnlabelledChoice(str, Enum):
    error = "error"
    cluster = "cluster"


class DeviceName(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"protect {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Make images unlearnable before you publish them."""


def _check_paths(source: Path, out: Optional[Path], in_place: bool) -> Optional[Path]:
    """Return the output folder (None for in place) or raise typer.Exit(2)."""
    if not source.exists():
        raise _fail(f"source folder {source} does not exist")
    if not source.is_dir():
        raise _fail(f"source {source} is a file, not a folder: give the folder that contains the images")
    if in_place and out is not None:
        raise _fail("give either --out DST or --in-place, not both")
    if not in_place and out is None:
        raise _fail("missing --out DST: name a folder for the protected copies, or pass --in-place")
    if in_place:
        return None
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise _fail(
            f"--out {out} is the source folder or inside it; choose a folder outside {source}, "
            "or pass --in-place to replace the originals"
        )
    if dst.exists() and not dst.is_dir():
        raise _fail(f"--out {out} exists and is not a folder")
    return out


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
    )


def _write_report(
    path: Path, result, settings, seconds: float, ignored: list[Path], labels_source: str, robustness: str
) -> None:
    entries = [
        {
            "source": str(o.source),
            "output": str(o.output) if o.output else None,
            "label": o.label,
            "status": o.status,
            "error": o.error,
            "reason": o.reason,
            "linf": o.linf,
            "energy_retained": None if o.energy_retained is None else round(o.energy_retained, 4),
        }
        for o in result.outcomes
    ]
    report = {
        "version": __version__,
        "settings": {
            "epsilon": settings.epsilon,
            "size": result.size,
            "schedule": settings.schedule.name,
            "method": settings.method,
            "device": str(settings.device),
            "seed": settings.seed,
            "robustness": robustness,
            "outer_epochs": settings.schedule.max_epochs,
            "warm_start": settings.warm_start,
        },
        "labels": labels_source,
        "classes": result.classes,
        "clusters": None if result.clusters is None else {
            "k": result.clusters.k,
            "rule": result.clusters.rule,
            "sizes": result.clusters.sizes,
            "assignment": result.clusters.assignment,
        },
        "seconds": round(seconds, 2),
        "images": entries,
        "ignored": [str(p) for p in ignored],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _plan_labels(images, spec: Optional[str], unlabelled: str, clusters: Optional[int]):
    """Check the label options together and return the LabelPlan, or raise typer.Exit(2)."""
    from protect import labels, manifest

    spec = spec or labels.default_mode(images)
    is_manifest = spec not in labels.MODES
    if is_manifest and not Path(spec).exists() and Path(spec).suffix.lower() not in manifest.SUFFIXES:
        raise _fail(f"invalid --labels {spec}: use one of {', '.join(labels.MODES)}, "
                    f"or the path of a {' or '.join(manifest.SUFFIXES)} manifest")
    if unlabelled == "cluster" and not is_manifest:
        raise _fail(f"--unlabelled applies to a manifest; --labels {spec} has no unlabelled images")
    clusters_everything = spec in (labels.FLAT, labels.CLUSTER)
    if clusters is not None and not (clusters_everything or (is_manifest and unlabelled == "cluster")):
        raise _fail(
            f"--clusters applies only when images are clustered: with --labels cluster or flat, "
            f"or with a manifest and --unlabelled cluster (here: --labels {spec})"
        )
    if clusters is not None and clusters_everything and clusters < 2:
        raise _fail(f"--clusters {clusters}: clustering every image needs at least 2 clusters to form two classes")
    try:
        return labels.plan_labels(images, spec, unlabelled, clusters)
    except labels.LabelError as error:
        raise _fail(str(error)) from None


def _check_warm_start(schedule) -> None:
    """Raise typer.Exit(2) unless the shipped encoder can start this schedule's surrogate."""
    from protect import encoder

    try:
        architecture = encoder.read_metadata(encoder.weights_path())["architecture"]
    except encoder.WeightsError as error:
        raise _fail(str(error)) from None
    if architecture != schedule.surrogate:
        raise _fail(
            f"--warm-start needs a {schedule.surrogate} encoder for the {schedule.name} schedule, "
            f"but the encoder weights are a {architecture}; pass --no-warm-start"
        )


def _describe_clusters(clusters) -> str:
    sizes = ", ".join(str(n) for n in clusters.sizes.values())
    return f"{clusters.k} clusters (k: {clusters.rule}), sizes {sizes}"


def _phase_progress(bars: Progress):
    """Return a progress(phase, done, total) callback that keeps one bar per phase."""
    tasks: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)

    return progress


def _dry_run(found, destination: Optional[Path], plan, settings, seed_drawn: bool) -> None:
    """Print each image's class and output, then exit 0 (2 when the grouping is invalid)."""
    from protect import encoder, labels, pipeline

    with _progress() as bars:
        progress = _phase_progress(bars)

        try:
            grouping, clusters, outcomes = pipeline.plan_groups(found.images, plan, settings, progress)
        except (labels.LabelError, encoder.WeightsError) as error:
            raise _fail(str(error)) from None

    table = Table(title="protect images --dry-run")
    table.add_column("source")
    table.add_column("label")
    table.add_column("output")
    for image, outcome in zip(found.images, outcomes):
        target = "in place" if destination is None else str(destination / image.relative)
        label = outcome.label if outcome.status == pipeline.PROTECTED else f"({outcome.status}: {outcome.reason})"
        table.add_row(str(image.path), label, target)
    stdout.print(table)
    if grouping is None:
        raise _fail("none of the images could be read", EXIT_NO_IMAGES)
    sizes = ", ".join(f"{name} {count}" for name, count in grouping.sizes().items())
    stdout.print(f"{len(found.images)} images in {len(grouping.names)} classes ({sizes}); "
                 f"{len(found.ignored)} other files ignored; nothing was written", highlight=False)
    if clusters is not None:
        stdout.print(f"labels from clustering: {_describe_clusters(clusters)}", highlight=False)
        if seed_drawn:
            # k-means starts from the seed, so another seed can group the images differently.
            stdout.print(f"the clusters depend on the seed: pass --seed {settings.seed} to the real run to keep them",
                         highlight=False)
    raise typer.Exit(EXIT_OK)


def _summary(result, settings, seconds: float, ignored: int) -> Table:
    counts = {"protected": 0, "failed": 0, "skipped": 0}
    reasons: dict[str, dict[str, int]] = {"failed": {}, "skipped": {}}
    for outcome in result.outcomes:
        counts[outcome.status] += 1
        if outcome.reason:
            by_reason = reasons[outcome.status]
            by_reason[outcome.reason] = by_reason.get(outcome.reason, 0) + 1
    table = Table(title="protect images", show_header=False)
    table.add_row("protected", str(counts["protected"]))
    for status in ("failed", "skipped"):
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons[status].items()))
        table.add_row(status, f"{counts[status]} ({detail})" if detail else str(counts[status]))
    table.add_row("ignored", f"{ignored} (hidden or not images)")
    table.add_row("time", f"{seconds:.1f} s")
    table.add_row("device", str(settings.device))
    table.add_row("epsilon", f"{settings.epsilon}/255")
    table.add_row("working size", f"{result.size} px")
    table.add_row("seed", str(settings.seed))
    table.add_row("classes", str(len(result.classes)))
    if result.clusters is not None:
        table.add_row("clusters", _describe_clusters(result.clusters))
    return table


@app.command()
def images(
    source: Annotated[Path, typer.Argument(help="Folder of images, one subfolder per class, or unsorted (see --labels).", metavar="SOURCE", show_default=False)],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Folder for the protected copies (same relative paths).")
    ] = None,
    in_place: Annotated[bool, typer.Option("--in-place", help="Replace the originals, each by an atomic rename.")] = False,
    epsilon: Annotated[
        int, typer.Option("--epsilon", min=1, max=32, help="L-infinity budget in 8-bit levels: 8 means 8/255.")
    ] = 8,
    size: Annotated[
        Optional[int],
        typer.Option("--size", min=16, max=1024, help="Working size in pixels. Default: the median short side, at most 64."),
    ] = None,
    schedule: Annotated[
        ScheduleName, typer.Option("--schedule", help="fast: CPU default. reference: the authors' 100-epoch ResNet-18 recipe (GPU).")
    ] = ScheduleName.fast,
    epochs: Annotated[
        Optional[int],
        typer.Option("--epochs", min=1, max=1000, help="Outer crafting epochs; overrides the schedule's (fast: 20, reference: 100)."),
    ] = None,
    method: Annotated[
        MethodName, typer.Option("--method", help="mi-ue: feature-collapse objective. em: error-minimizing (cross-entropy).")
    ] = MethodName.mi_ue,
    robustness: Annotated[
        RobustnessName,
        typer.Option("--robustness", help="What the perturbation is made to survive. off: files that reach a trainer "
                     "untouched only; a JPEG re-encode or grayscale removes much of it. standard: JPEG re-encoding "
                     "as upload platforms do it and grayscale, with part of it shared by each label's images. "
                     "strong: also blur, resizing and JPEG at low quality, at some cost on untouched files. "
                     "All three take about the same crafting time."),
    ] = RobustnessName.standard,
    device: Annotated[DeviceName, typer.Option("--device", help="auto tries cuda, then mps, then cpu.")] = DeviceName.auto,
    seed: Annotated[
        Optional[int], typer.Option("--seed", min=0, help="Seed for a reproducible run; drawn and printed when absent.")
    ] = None,
    report: Annotated[
        Optional[Path], typer.Option("--report", help="Write a JSON report with one entry per input to this file.")
    ] = None,
    strip_metadata: Annotated[bool, typer.Option("--strip-metadata", help="Write no EXIF or ICC metadata.")] = False,
    strip_gps: Annotated[bool, typer.Option("--strip-gps", help="Keep EXIF but remove its GPS location.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Also protect files that this tool already protected (its marker is in their metadata).")
    ] = False,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", min=1, help="Reject images with more pixels than this (decompression bomb guard).")
    ] = 178_956_970,
    labels_spec: Annotated[
        Optional[str],
        typer.Option(
            "--labels",
            metavar="folders|flat|cluster|PATH",
            help="Where class labels come from. folders: first-level subfolder names (default when SOURCE has "
            "subfolders). cluster: group all images by k-means on the shipped encoder's features (default "
            "otherwise). flat: ignore subfolders and cluster, as cluster does. PATH: a .csv (columns path,label) "
            "or .json manifest of paths relative to SOURCE, with forward slashes.",
            show_default=False,
        ),
    ] = None,
    clusters: Annotated[
        Optional[int],
        typer.Option(
            "--clusters",
            min=1,
            max=10_000,
            help="Number of k-means clusters. Default: round(sqrt(N / 2)) for N images to cluster, clamped to 2..50.",
            show_default=False,
        ),
    ] = None,
    unlabelled: Annotated[
        UnlabelledChoice,
        typer.Option(
            "--unlabelled",
            help="Images a manifest leaves out: error lists them and stops; cluster groups them into extra classes.",
        ),
    ] = UnlabelledChoice.error,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start/--no-warm-start",
            help="Start the model that crafts the perturbation from the shipped encoder's weights instead of random "
            "ones (fast schedule only). Not recommended: in tests it protected less at the same crafting time.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List each image, its class and its output, then exit. Clustering reads the images.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish an interrupted run into --out, keeping the outputs it completed.")
    ] = False,
) -> None:
    """Protect every image under SOURCE and write the results to --out (or in place)."""
    destination = _check_paths(source, out, in_place)

    from protect import devices, encoder, engine, files, labels, pipeline

    found = files.discover(source, exclude=destination)
    if not found.images:
        raise _fail(f"no images found under {source} ({len(found.ignored)} other files ignored)", EXIT_NO_IMAGES)

    plan = _plan_labels(found.images, labels_spec, unlabelled.value, clusters)  # fail before any slow work
    if strip_metadata and strip_gps:
        raise _fail("give either --strip-metadata or --strip-gps, not both")

    try:
        chosen = devices.select_device(device.value)
    except devices.DeviceError as error:
        raise _fail(str(error)) from None
    if resume and destination is None:
        raise _fail("--resume works with --out only; an interrupted --in-place run left every original intact")
    if seed is None and resume:
        from protect import state

        saved = state.RunState(destination).saved_settings()
        seed = None if saved is None else saved["seed"]
    seed_drawn = seed is None
    if seed_drawn:
        seed = secrets.randbelow(2**31)
    metadata = "keep"
    if strip_metadata:
        metadata = "strip"
    elif strip_gps:
        metadata = "strip-gps"
    chosen_schedule = engine.with_robustness(engine.SCHEDULES[schedule.value], robustness.value)
    if epochs is not None:
        chosen_schedule = dataclasses.replace(chosen_schedule, max_epochs=epochs)
    if warm_start:
        _check_warm_start(chosen_schedule)
    settings = pipeline.Settings(
        epsilon=epsilon,
        size=size,
        schedule=chosen_schedule,
        method=method.value,
        device=chosen,
        seed=seed,
        metadata=metadata,
        force=force,
        max_pixels=max_pixels,
        warm_start=warm_start,
    )
    stderr.print(
        f"protect: {len(found.images)} images, labels {plan.source}, device {chosen}, seed {seed}, "
        f"epsilon {epsilon}/255, schedule {schedule.value} ({chosen_schedule.max_epochs} epochs), method {method.value}, "
        f"robustness {robustness.value}",
        highlight=False,
    )
    if plan.clustered:
        stderr.print(
            f"note: {len(plan.clustered)} images are grouped by clustering, which protects far less than true labels "
            "(see Known limits in the README); give them labels by folders or a manifest where you can",
            highlight=False,
        )
    if dry_run:
        if destination is not None:
            # A real run makes this check inside protect_images, before any work.
            try:
                pipeline.check_outputs(found.images, destination)
            except pipeline.ForeignOutput as error:
                raise _fail(str(error)) from None
        _dry_run(found, destination, plan, settings, seed_drawn=seed_drawn)

    started = time.monotonic()
    with _progress() as bars:
        progress = _phase_progress(bars)

        try:
            result = pipeline.protect_images(found.images, source, destination, settings, progress, resume, plan)
        except (labels.LabelError, pipeline.ResumeMismatch, pipeline.ForeignOutput, encoder.WeightsError) as error:
            raise _fail(str(error)) from None
        except KeyboardInterrupt:
            if destination is None:
                stderr.print("interrupted: every original is intact", highlight=False)
            else:
                stderr.print("interrupted: finished outputs are complete; run the same command "
                             "with --resume to finish", highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    seconds = time.monotonic() - started

    for outcome in result.outcomes:
        if outcome.status != pipeline.PROTECTED:
            stderr.print(f"[yellow]{outcome.status}:[/] {outcome.source}: {outcome.error}", highlight=False)
    stdout.print(_summary(result, settings, seconds, len(found.ignored)))
    if report is not None:
        _write_report(report, result, settings, seconds, found.ignored, plan.source, robustness.value)

    if all(o.status == pipeline.PROTECTED for o in result.outcomes):
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_SOME_FAILED)



def _finite(value):
    """Replace infinite floats (the PSNR of identical images) with None, which JSON can hold."""
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# Row names of verify's summary table; the JSON output keeps the keys.
_SUMMARY_LABELS = {
    "missing_outputs": "missing outputs",
    "extra_files": "extra files",
    "max_linf_levels": "max L-inf (levels)",
    "max_codec_linf_levels": "max codec L-inf (levels)",
    "mean_psnr_db": "mean PSNR (dB)",
    "mean_ssim": "mean SSIM",
    "epsilon_levels": "budget ε (levels)",
}


def _verify_table(checks, pairing, summary: dict, probe_result, show_all: bool) -> None:
    from protect.probe import MIN_MI_SAMPLES

    rows = [c for c in checks if show_all or not c.passed]
    if rows:
        table = Table(title="pairs" if show_all else "failing pairs")
        for column in ("file", "L-inf", "codec L-inf", "PSNR dB", "SSIM", "problems"):
            table.add_column(column)
        for c in rows:
            table.add_row(
                c.relative,
                "-" if c.linf is None else str(c.linf),
                "-" if c.codec_linf is None else str(c.codec_linf),
                "-" if c.psnr is None else f"{c.psnr:.1f}",
                "-" if c.ssim is None else f"{c.ssim:.4f}",
                "; ".join(c.problems) or "ok",
            )
        stdout.print(table)

    table = Table(title="protect verify", show_header=False)
    for key, value in summary.items():
        table.add_row(_SUMMARY_LABELS.get(key, key.replace("_", " ")), str(value))
    stdout.print(table)
    if summary.get("max_codec_linf_levels"):
        stdout.print(
            f"JPEG outputs are checked on 8x8 block means against {summary['epsilon_levels']} levels: "
            f"re-encoding alone moved single pixels by up to {summary['max_codec_linf_levels']} levels, "
            "so their per-pixel L-inf can exceed the budget.",
            highlight=False,
        )
    for path in pairing.missing:
        stdout.print(f"[red]missing output:[/] {path}", highlight=False)
    for path in pairing.extra:
        stdout.print(f"[yellow]extra file without an original:[/] {path}", highlight=False)
    if probe_result is not None:
        verdict = "[green]pass[/]" if probe_result.passed else "[red]fail[/]"
        if not probe_result.conclusive:
            verdict = f"[yellow]inconclusive[/] ({probe_result.inconclusive_reason})"
        gap = probe_result.clean_accuracy - probe_result.protected_accuracy
        stdout.print(
            f"probe: accuracy on clean test images after training on protected files {probe_result.protected_accuracy:.1%}, "
            f"on clean files {probe_result.clean_accuracy:.1%}, chance {probe_result.chance:.1%}, "
            f"protection lowered it by {gap * 100:.1f} points; rule: {probe_result.rule}: {verdict}",
            highlight=False,
        )
        if probe_result.mi_protected_model is None:
            stdout.print(
                f"mutual information: not estimated from {probe_result.test_images} test images "
                f"(it needs at least {MIN_MI_SAMPLES})",
                highlight=False,
            )
        else:
            stdout.print(
                f"mutual information (nats, clean vs protected features): model trained on protected files "
                f"{probe_result.mi_protected_model:.2f}, clean control {probe_result.mi_clean_model:.2f}",
                highlight=False,
            )


@app.command()
def verify(
    originals: Annotated[Path, typer.Argument(help="Folder of original images.", metavar="ORIGINALS", show_default=False)],
    protected: Annotated[Path, typer.Argument(help="Folder that protect images wrote.", metavar="PROTECTED", show_default=False)],
    epsilon: Annotated[int, typer.Option("--epsilon", min=1, max=32, help="Budget in 8-bit levels that the run used.")] = 8,
    probe: Annotated[
        Optional[bool],
        typer.Option("--probe/--no-probe", help="Train a model on the protected files to test learnability. Default: on when there are class subfolders with enough images."),
    ] = None,
    probe_epochs: Annotated[int, typer.Option("--probe-epochs", min=1, max=200, help="Training epochs of each probe model.")] = 20,
    allow_stripped: Annotated[bool, typer.Option("--allow-stripped", help="Accept outputs whose EXIF or ICC metadata was removed on purpose.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout instead of tables.")] = False,
    preview: Annotated[Optional[Path], typer.Option("--preview", help="Write a PNG grid of original, protected and amplified difference.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List every pair, not only failing ones (up to 30 pairs are always listed).")] = False,
    device: Annotated[DeviceName, typer.Option("--device", help="Device for the probe.")] = DeviceName.auto,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the probe's split and training.")] = 0,
) -> None:
    """Check protected files against their originals: pairing, integrity, budget and learnability."""
    for name, folder in (("ORIGINALS", originals), ("PROTECTED", protected)):
        if not folder.is_dir():
            raise _fail(f"{name} folder {folder} does not exist or is not a folder")

    from protect import checks, devices, files, labels, probe as probing, preview as previews

    pairing = checks.pair(originals, protected)
    if not pairing.common and not pairing.missing:
        raise _fail(f"no images found under {originals}", EXIT_NO_IMAGES)

    results = []
    with _progress() as bars:
        task = bars.add_task("check", total=len(pairing.common))
        for relative in pairing.common:
            results.append(checks.check_pair(originals / relative, protected / relative, str(relative), epsilon, allow_stripped))
            bars.advance(task)

    finite = [c.psnr for c in results if c.psnr is not None and c.psnr != float("inf")]
    summary = {
        "pairs": len(pairing.common),
        "passed": sum(c.passed for c in results),
        "failed": sum(not c.passed for c in results),
        "missing_outputs": len(pairing.missing),
        "extra_files": len(pairing.extra),
        "max_linf_levels": max((c.linf for c in results if c.linf is not None), default=0),
        "max_codec_linf_levels": max((c.codec_linf for c in results if c.codec_linf is not None), default=0),
        "mean_psnr_db": round(sum(finite) / len(finite), 2) if finite else None,
        "mean_ssim": round(sum(c.ssim for c in results if c.ssim is not None) / max(1, len(results)), 4),
        "epsilon_levels": epsilon,
    }

    probe_result, probe_note = None, None
    paired = set(pairing.common)
    found = [i for i in files.discover(originals).images if i.relative in paired]
    grouping = None
    if not found:
        probe_note = "no original has a protected counterpart to train on"
    else:
        try:
            grouping = labels.folder_labels(found)
            probe_note = probing.skip_reason(grouping.sizes())
        except labels.LabelError as error:
            probe_note = str(error)
    if probe is False:
        probe_note = "--no-probe was given"
    if probe is None:
        probe = probe_note is None
    elif probe and probe_note is not None:
        raise _fail(f"--probe cannot run: {probe_note}")
    if probe:
        chosen = devices.select_device(device.value)
        stderr.print(f"probe: training two models on {len(found)} images, device {chosen}", highlight=False)
        with _progress() as bars:
            task = bars.add_task("probe", total=2 * probe_epochs)
            probe_result = probing.run_probe(
                [i.path for i in found], [protected / i.relative for i in found], grouping.indices.tolist(),
                epochs=probe_epochs, device=chosen, seed=seed,
                on_epoch=lambda name, e, a: bars.advance(task),
            )
    elif probe_note is not None:
        stderr.print(f"probe skipped: {probe_note}", highlight=False)

    failed = [c for c in results if not c.passed]
    # A probe that cannot judge (too few test images, or a control that
    # learned nothing) cannot show a failure.
    probe_failed = probe_result is not None and probe_result.conclusive and not probe_result.passed
    if probe_result is None:
        summary["probe"] = "skipped"
    elif not probe_result.conclusive:
        summary["probe"] = "inconclusive"
    else:
        summary["probe"] = "passed" if probe_result.passed else "failed"
    if preview is not None:
        # Failing pairs first, so the picture shows what went wrong.
        ranked = [c.relative for c in results if not c.passed] + [c.relative for c in results if c.passed]
        previews.write_preview([(originals / r, protected / r) for r in ranked[:6]], preview, epsilon)
        stderr.print(f"preview written to {preview}", highlight=False)

    if json_output:
        report = {
            "summary": summary,
            "pairs": [c.__dict__ | {"passed": c.passed} for c in results],
            "missing": [str(p) for p in pairing.missing],
            "extra": [str(p) for p in pairing.extra],
            "probe": None if probe_result is None else probe_result.__dict__ | {
                "passed": probe_result.passed, "conclusive": probe_result.conclusive, "rule": probe_result.rule,
                "inconclusive_reason": probe_result.inconclusive_reason,
            },
            "probe_skipped": None if probe else probe_note,
            "passed": not failed and not pairing.missing and not probe_failed,
        }
        sys.stdout.write(json.dumps(_finite(report), indent=2, default=str, allow_nan=False) + "\n")
    else:
        # A short listing costs little to read, so up to 30 pairs are always shown.
        _verify_table(results, pairing, summary, probe_result, show_all or len(results) <= 30)

    for c in failed:
        stderr.print(f"[red]failed:[/] {c.relative}: {'; '.join(c.problems)}", highlight=False)
    for path in pairing.missing:
        stderr.print(f"[red]failed:[/] {path}: missing output", highlight=False)
    if probe_failed:
        stderr.print(f"[red]failed:[/] probe: {probe_result.rule} does not hold", highlight=False)
    raise typer.Exit(EXIT_SOME_FAILED if failed or pairing.missing or probe_failed else EXIT_OK)


# The benchmark lives with its harness; registering it here keeps one entry point.
app.command("bench")(bench_command.bench)
