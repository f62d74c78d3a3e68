"""Measure the crafting time of each robustness preset against `off`.

    python benchmarks/robustness_cost.py --train PATH/cifar10/train
    python benchmarks/robustness_cost.py --train PATH/cifar10/train --per-class 100 --epochs 3 --presets off standard strong

--train is a folder of class subfolders. The first --per-class images of
each class (by file name) are crafted in-process with the `fast` schedule,
shortened to --epochs outer epochs, once per preset, one after another. The
time of one outer epoch grows with the number of images and does not depend
on the epoch, so the ratio to `off` carries over to full runs. Run it on
otherwise idle cores: it prints a Markdown table of seconds and ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from protect import engine
from protect.bench import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True, help="folder with one subfolder per class")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3, help="outer crafting epochs per preset")
    parser.add_argument("--presets", nargs="+", default=list(engine.ROBUSTNESS))
    parser.add_argument("--size", type=int, default=32, help="working size in pixels")
    args = parser.parse_args()

    classes = sorted(p.name for p in args.train.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, labels = data.load(args.train, data.select(args.train, classes, args.per_class), classes, args.size)
    # A short untimed run first, so that torch's one-time set-up is not billed to the first preset.
    warm_up = dataclasses.replace(engine.FAST, max_epochs=1)
    sample = slice(None, None, max(1, images.shape[0] // 64))  # images are grouped by class, so take a spread
    engine.craft(images[sample], labels[sample], epsilon=8 / 255, schedule=warm_up, seed=0)

    seconds = {}
    for preset in args.presets:
        schedule = dataclasses.replace(engine.with_robustness(engine.FAST, preset), max_epochs=args.epochs)
        started = time.monotonic()
        engine.craft(images, labels, epsilon=8 / 255, schedule=schedule, seed=0)
        seconds[preset] = time.monotonic() - started

    base = seconds.get("off")
    print(f"{images.shape[0]} images at {args.size} px, outer epochs per preset: {args.epochs}\n")
    print("| preset | crafting (s) | relative to off |")
    print("|---|---:|---:|")
    for preset, value in seconds.items():
        ratio = "–" if base is None else f"{value / base:.2f}×"
        print(f"| {preset} | {value:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
