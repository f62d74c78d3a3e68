"""The `protect bench` command: compare protection methods under trainers' defences.

torch and the harness are imported only when the command runs, so
`protect --help` stays instant.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

stderr = Console(stderr=True, soft_wrap=True)
EXIT_USAGE = 2


def _split(value: str, option: str, choices: tuple[str, ...] | list[str]) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        stderr.print(f"error: {option} {value!r}: use a comma-separated list of {', '.join(choices)}", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    return list(dict.fromkeys(names))


def _methods(value: str, presets: list[str]) -> list[str]:
    """Parse --methods: names from clean, random, em and mi-ue; em and mi-ue may add ":PRESET"."""
    labels = [v.strip() for v in value.split(",") if v.strip()]
    for label in labels:
        method, _, preset = label.partition(":")
        valid = method in ("clean", "random", "em", "mi-ue") and (
            not preset or (method in ("em", "mi-ue") and preset in presets)
        )
        if not valid:
            stderr.print(
                f"error: --methods {value!r}: {label!r} is not a method. Use a comma-separated list of clean, "
                f"random, em and mi-ue, where em and mi-ue may name a robustness preset ({', '.join(presets)}), "
                "as in mi-ue:off",
                highlight=False,
            )
            raise typer.Exit(EXIT_USAGE)
    if not labels:
        stderr.print("error: --methods is empty: name at least one of clean, random, em, mi-ue", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    return list(dict.fromkeys(labels))


def _sizes(value: Optional[str]) -> list[int] | None:
    if value is None:
        return None
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 16 or s > 512 for s in sizes):
        stderr.print(f"error: --victim-size {value!r}: use pixel sizes from 16 to 512, such as 64,128", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    return sizes


def _header(command: str, device: str) -> str:
    import torch

    today = datetime.date.today().isoformat()
    return (
        f"Command: `{command}`\n\n"
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), device {device}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, Python {platform.python_version()}. "
        f"Date: {today}."
    )


def bench(
    train: Annotated[Path, typer.Argument(help="Labelled training folder, one subfolder per class.", metavar="TRAIN", show_default=False)],
    test: Annotated[Path, typer.Argument(help="Clean test folder with the same class subfolders.", metavar="TEST", show_default=False)],
    results: Annotated[Path, typer.Option("--results", "-r", help="Folder for protected sets, cached results, the table and the chart.")] = Path("bench-results"),
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: clean, random, em, mi-ue. em and mi-ue take --robustness, or a preset of their own as in mi-ue:off. clean always runs, as the ceiling of each defence.")] = "clean,random,em,mi-ue",
    reference: Annotated[bool, typer.Option("--reference", help="Also run MI-UE with the reference schedule (ResNet-18, 100 epochs: hours on a CPU).")] = False,
    reference_epochs: Annotated[Optional[int], typer.Option("--reference-epochs", min=1, help="Shorten the reference schedule to this many outer epochs.")] = None,
    craft_epochs: Annotated[Optional[int], typer.Option("--craft-epochs", min=1, help="Outer crafting epochs of em and mi-ue. Default: the fast schedule's 20.")] = None,
    robustness: Annotated[Optional[str], typer.Option("--robustness", help="Robustness preset of em and mi-ue: off, standard or strong. Default: protect images' default.", show_default=False)] = None,
    victims: Annotated[str, typer.Option("--victims", help="Comma-separated victim architectures: vgg-cnn, resnet20, resnet18, small-cnn.")] = "vgg-cnn",
    defences: Annotated[Optional[str], typer.Option("--defences", help="Comma-separated trainer defences: none, grayscale, jpeg75, jpeg10, blur, cutout, mixup, adversarial; jpeg90, jpeg50, jpeg30, jpeg75-gray, blur2, down-half, down-chain. 'sweep' runs the JPEG, blur and resize sweep. Default: none and the six cheap defences.")] = None,
    adversarial: Annotated[bool, typer.Option("--adversarial", help="Also run PGD adversarial training at 4/255 (about 6x the cost of a victim).")] = False,
    victim_size: Annotated[Optional[str], typer.Option("--victim-size", help="Comma-separated pixel sizes victims train and test at. Default: the working size.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=500, help="Training epochs of each victim.")] = 10,
    per_class: Annotated[Optional[int], typer.Option("--per-class", min=1, help="Use the first N training images of each class, by file name.")] = None,
    test_per_class: Annotated[Optional[int], typer.Option("--test-per-class", min=1, help="Use the first N test images of each class.")] = None,
    epsilon: Annotated[int, typer.Option("--epsilon", min=1, max=32, help="L-infinity budget in 8-bit levels.")] = 8,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of crafting and of every victim.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Protect a training set with each method, train fresh victims under each defence, test on clean images."""
    from protect import defences as defence_list, devices, engine, models
    from protect.bench import data, harness, report

    chosen_methods = _methods(methods, list(engine.ROBUSTNESS))
    if "clean" not in chosen_methods:
        # Every defence also costs clean accuracy, so clean training under the
        # same defence is the ceiling that each protected result is read against.
        chosen_methods.insert(0, "clean")
    if reference:
        chosen_methods.append("mi-ue-reference")
    chosen_victims = _split(victims, "--victims", list(models.ARCHITECTURES))
    if defences == "sweep":
        chosen_defences = list(defence_list.SWEEP)
    elif defences is None:
        chosen_defences = list(defence_list.CHEAP)
    else:
        chosen_defences = _split(defences, "--defences", list(defence_list.DEFENCES))
    if adversarial and "adversarial" not in chosen_defences:
        chosen_defences = [*chosen_defences, "adversarial"]
    try:
        chosen_device = devices.select_device(device)
    except devices.DeviceError as error:
        stderr.print(f"error: {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        import matplotlib  # noqa: F401  (checked before hours of work, not after)
    except ImportError:
        stderr.print("error: the chart needs matplotlib: pip install 'protect[bench]'", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None

    plan = harness.Plan(
        train=train, test=test, results=results, methods=chosen_methods, victims=chosen_victims,
        defences=chosen_defences, sizes=_sizes(victim_size), epochs=epochs, per_class=per_class,
        test_per_class=test_per_class, epsilon=epsilon, seed=seed, device=chosen_device,
        reference_epochs=reference_epochs, craft_epochs=craft_epochs,
        robustness=(engine.DEFAULT_ROBUSTNESS if robustness is None
                    else _split(robustness, "--robustness", list(engine.ROBUSTNESS))[0]),
    )
    command = "protect " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = "# Benchmark results\n\n" + _header(command, str(chosen_device))

    def save(partial: harness.Results) -> None:
        report.write(partial, results, header, draw=False)

    try:
        outcome = harness.run(plan, lambda line: stderr.print(line, highlight=False), save)
    except data.BenchDataError as error:
        stderr.print(f"error: {error}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    report.write(outcome, results, header)
    print(report.markdown(outcome, header))
    stderr.print(f"results: {results / 'results.md'}, {results / 'chart.png'}, {results / 'results.json'}", highlight=False)
