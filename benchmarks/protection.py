"""Measure speed and memory of `protect images` on real data.

    python benchmarks/protection.py cifar  --data PATH/cifar10-jpg.tar.gz
    python benchmarks/protection.py photos --data PATH/clothing-photos
    python benchmarks/protection.py reference --data PATH/cifar10-jpg.tar.gz --per-class 30 --reference-epochs 5

`cifar` takes the first 500 training images of each CIFAR-10 class (sorted by
file name) and protects them with `protect images` in a subprocess. `photos`
protects a photo folder at native size. How well the written files protect is
measured by `protect bench` (see BENCHMARKS.md), which trains victims on them. `reference` times the reference schedule against the default on a few
images per class, scaling a shortened reference run up to its 100 epochs. Each prints a Markdown summary and writes JSON to --results.
Peak memory is the largest resident set of the `protect` subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch


def extract_cifar(archive: Path, target: Path, per_class: int) -> tuple[Path, Path]:
    """Unpack the first `per_class` training images of each class and every test image."""
    train, test = target / "train", target / "test"
    if train.exists() and test.exists():
        return train, test
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        by_class: dict[str, list[str]] = {}
        for member in members:
            split, label, _ = Path(member.name).parts[-3:]
            if split == "train":
                by_class.setdefault(label, []).append(member.name)
        chosen = {name for names in by_class.values() for name in sorted(names)[:per_class]}
        # Archive order, because seeking backwards in a gzip stream decompresses it again.
        for member in members:
            split, label, name = Path(member.name).parts[-3:]
            if split == "test" or member.name in chosen:
                folder = target / split / label
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(tar.extractfile(member).read())
    return train, test


def run_protect(source: Path, out: Path, report: Path, *extra: str) -> dict:
    """Run `protect images` in a subprocess; return wall seconds and peak memory."""
    command = [sys.executable, "-m", "protect", "images", str(source), "--out", str(out),
               "--report", str(report), *extra]
    print("$", " ".join(command), file=sys.stderr, flush=True)
    started = time.monotonic()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)  # resource usage of this child alone
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"protect images exited with {os.waitstatus_to_exitcode(status)}")
    data = json.loads(report.read_text())
    retained = [e["energy_retained"] for e in data["images"] if e["energy_retained"] is not None]
    linf = [e["linf"] for e in data["images"] if e["linf"] is not None]
    return {
        "images": len(data["images"]),
        "seconds": round(seconds, 1),
        "seconds_per_image": round(seconds / len(data["images"]), 4),
        "peak_memory_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        "energy_retained_mean": round(float(np.mean(retained)), 4),
        "linf_max": max(linf),
        "working_size": data["settings"]["size"],
        "seed": data["settings"]["seed"],
    }


def cifar(args: argparse.Namespace) -> dict:
    work = args.work / "cifar"
    train, _ = extract_cifar(args.data, work / "data", args.per_class)
    protected = work / "protected"
    stats = run_protect(train, protected, work / "report.json", "--seed", str(args.seed), *args.protect_args)

    return {"protect": stats}


def photos(args: argparse.Namespace) -> dict:
    work = args.work / "photos"
    return {"protect": run_protect(args.data, work / "protected", work / "report.json",
                                   "--seed", str(args.seed), *args.protect_args)}


def reference(args: argparse.Namespace) -> dict:
    work = args.work / "reference"
    train, _ = extract_cifar(args.data, work / "data", args.per_class)
    results = {"fast": run_protect(train, work / "fast", work / "fast.json", "--seed", str(args.seed))}

    # The full reference schedule (100 epochs) takes hours on a CPU, so it may
    # be run for fewer epochs and its cost per image scaled up linearly.
    epochs = args.reference_epochs
    stats = run_protect(train, work / "reference", work / "reference.json", "--seed", str(args.seed),
                        "--schedule", "reference", "--epochs", str(epochs))
    stats["epochs_run"] = epochs
    stats["seconds_per_image_100_epochs_estimate"] = round(stats["seconds_per_image"] * 100 / epochs, 3)
    results["reference"] = stats
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["cifar", "photos", "reference"])
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 JPEG archive, or a photo folder")
    parser.add_argument("--work", type=Path, default=Path("results"), help="folder for data, outputs and results")
    parser.add_argument("--per-class", type=int, default=500, help="training images per CIFAR-10 class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-epochs", type=int, default=100,
                        help="outer epochs of the reference schedule to run (its full length is 100)")
    parser.add_argument("protect_args", nargs="*", help="extra arguments for protect images, after --")
    args = parser.parse_args()

    results = {"cifar": cifar, "photos": photos, "reference": reference}[args.task](args)
    results["command"] = " ".join(sys.argv)
    results["torch"] = torch.__version__
    results["threads"] = torch.get_num_threads()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"{args.task}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
