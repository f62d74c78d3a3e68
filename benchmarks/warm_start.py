"""Measure whether starting the surrogate from the shipped encoder protects as well, sooner.

    python benchmarks/warm_start.py --data PATH/cifar10 --results results/warm-start
    python benchmarks/warm_start.py --data PATH/cifar10 --results results/warm-start --runs cold:20 warm:10

--data is CIFAR-10 as JPEG files in train/<class>/ and test/<class>/ (the
unpacked cifar10-jpg archive). The first --per-class training images of each
class (sorted by name) are protected in-process with the engine's `fast`
schedule and the --robustness preset (default: the CLI's), once per run: `cold:N` starts the surrogate from random weights,
`warm:N` from the shipped encoder, N being the outer epochs. The protected
images are rounded to 8 bits, as a lossless file keeps them, and a fresh
vgg-cnn victim trains on them for 20 epochs and is tested on the first
--test-per-class test images of each class. Prints a Markdown table and
writes JSON to --results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from protect import encoder, engine, training


def load(folder: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the first `per_class` images of each class as (N, 3, H, W) in [0, 1] and (N,) labels."""
    pixels, labels = [], []
    for index, name in enumerate(sorted(p.name for p in folder.iterdir() if p.is_dir())):
        for path in sorted((folder / name).iterdir())[:per_class]:
            with Image.open(path) as im:
                pixels.append(np.asarray(im.convert("RGB")))
            labels.append(index)
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div(255), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with train/<class>/ and test/<class>/")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--runs", nargs="+", default=["cold:20", "warm:10", "warm:20"],
                        help="cold:N or warm:N, N outer epochs; the clean victim runs last")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--victim-epochs", type=int, default=20)
    parser.add_argument("--robustness", choices=sorted(engine.ROBUSTNESS), default=engine.DEFAULT_ROBUSTNESS)
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)

    train_x, train_y = load(args.data / "train", args.per_class)
    test_x, test_y = load(args.data / "test", args.test_per_class)
    state = encoder.load_encoder().model.state_dict()
    rows = []

    for run in args.runs:
        start, epochs = run.split(":")
        schedule = dataclasses.replace(engine.with_robustness(engine.FAST, args.robustness), max_epochs=int(epochs))
        started = time.monotonic()
        crafted = engine.craft(
            train_x, train_y, epsilon=8 / 255, schedule=schedule, seed=args.seed,
            initial_state=state if start == "warm" else None,
        )
        seconds = time.monotonic() - started
        protected = ((train_x + crafted.delta).clamp(0, 1) * 255).round() / 255  # as an 8-bit file stores it
        victim = training.train_victim(protected, train_y, test_x, test_y, epochs=args.victim_epochs, seed=args.seed)
        rows.append({
            "run": run, "robustness": args.robustness, "seconds": round(seconds, 1), "final": victim.final, "peak": victim.peak,
            "surrogate_accuracy": [round(h.train_accuracy, 4) for h in crafted.history],
        })
        print(f"{run}: crafting {seconds:.0f} s, victim final {victim.final:.1%}, peak {victim.peak:.1%}",
              file=sys.stderr, flush=True)
        (args.results / "warm_start.json").write_text(json.dumps(rows, indent=2) + "\n")

    clean = training.train_victim(train_x, train_y, test_x, test_y, epochs=args.victim_epochs, seed=args.seed)
    rows.append({"run": "clean (no protection)", "seconds": 0.0, "final": clean.final, "peak": clean.peak})
    print(f"clean: final {clean.final:.1%}, peak {clean.peak:.1%}", file=sys.stderr, flush=True)

    print("| run | crafting (s) | victim final | victim peak |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['seconds']:.0f} | {row['final']:.1%} | {row['peak']:.1%} |")
    (args.results / "warm_start.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
