"""The `protect` command line.

    protect images ./photos --out ./safe

Results and the closing summary go to stdout; progress bars and diagnostics go
to stderr. Exit codes: 0 every image protected; 1 some inputs failed or were
skipped and all the others were written; 2 invalid arguments; 3 no images found.
torch is imported only when a command runs, so `protect --help` is instant.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from protect import __version__

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_NO_IMAGES = 0, 1, 2, 3

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


def _write_report(path: Path, result, settings, seconds: float, ignored: list[Path]) -> None:
    entries = [
        {
            "source": str(o.source),
            "output": str(o.output) if o.output else None,
            "label": o.label,
            "status": o.status,
            "error": o.error,
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
        },
        "classes": result.classes,
        "seconds": round(seconds, 2),
        "images": entries,
        "ignored": [str(p) for p in ignored],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _summary(result, settings, seconds: float, ignored: int) -> Table:
    counts = {"protected": 0, "failed": 0, "skipped": 0}
    for outcome in result.outcomes:
        counts[outcome.status] += 1
    table = Table(title="protect images", show_header=False)
    table.add_row("protected", str(counts["protected"]))
    table.add_row("failed", str(counts["failed"]))
    table.add_row("skipped", str(counts["skipped"]))
    table.add_row("ignored", f"{ignored} (hidden or not images)")
    table.add_row("time", f"{seconds:.1f} s")
    table.add_row("device", str(settings.device))
    table.add_row("epsilon", f"{settings.epsilon}/255")
    table.add_row("working size", f"{result.size} px")
    table.add_row("seed", str(settings.seed))
    return table


@app.command()
def images(
    source: Annotated[Path, typer.Argument(help="Folder of images, one subfolder per class.", metavar="SOURCE", show_default=False)],
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
    device: Annotated[DeviceName, typer.Option("--device", help="auto tries cuda, then mps, then cpu.")] = DeviceName.auto,
    seed: Annotated[
        Optional[int], typer.Option("--seed", min=0, help="Seed for a reproducible run; drawn and printed when absent.")
    ] = None,
    report: Annotated[
        Optional[Path], typer.Option("--report", help="Write a JSON report with one entry per input to this file.")
    ] = None,
) -> None:
    """Protect every image under SOURCE and write the results to --out (or in place)."""
    destination = _check_paths(source, out, in_place)

    from protect import devices, engine, files, labels, pipeline

    found = files.discover(source, exclude=destination)
    if not found.images:
        raise _fail(f"no images found under {source} ({len(found.ignored)} other files ignored)", EXIT_NO_IMAGES)

    try:
        labels.folder_labels(found.images)  # fail before any slow work
    except labels.LabelError as error:
        raise _fail(str(error)) from None
    try:
        chosen = devices.select_device(device.value)
    except devices.DeviceError as error:
        raise _fail(str(error)) from None
    if seed is None:
        seed = secrets.randbelow(2**31)
    chosen_schedule = engine.SCHEDULES[schedule.value]
    if epochs is not None:
        chosen_schedule = dataclasses.replace(chosen_schedule, max_epochs=epochs)
    settings = pipeline.Settings(
        epsilon=epsilon,
        size=size,
        schedule=chosen_schedule,
        method=method.value,
        device=chosen,
        seed=seed,
    )
    stderr.print(
        f"protect: {len(found.images)} images, device {chosen}, seed {seed}, "
        f"epsilon {epsilon}/255, schedule {schedule.value} ({chosen_schedule.max_epochs} epochs), method {method.value}",
        highlight=False,
    )

    started = time.monotonic()
    with _progress() as bars:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=total)
            bars.update(tasks[phase], completed=done, total=total)

        try:
            result = pipeline.protect_images(found.images, source, destination, settings, progress)
        except labels.LabelError as error:
            raise _fail(str(error)) from None
    seconds = time.monotonic() - started

    for outcome in result.outcomes:
        if outcome.status != pipeline.PROTECTED:
            stderr.print(f"[yellow]{outcome.status}:[/] {outcome.source}: {outcome.error}", highlight=False)
    stdout.print(_summary(result, settings, seconds, len(found.ignored)))
    if report is not None:
        _write_report(report, result, settings, seconds, found.ignored)

    if all(o.status == pipeline.PROTECTED for o in result.outcomes):
        raise typer.Exit(EXIT_OK)
    raise typer.Exit(EXIT_SOME_FAILED)

