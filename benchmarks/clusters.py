"""Measure protection with clusters in place of labels, against true labels and no protection.

    python benchmarks/clusters.py --photos PATH/clothing-photos --results results/clusters
    python benchmarks/clusters.py --photos PATH/clothing-photos --results results/clusters --clusters 10 20

--photos is a folder with one subfolder per class. The script protects it
with `protect images` in a subprocess twice with the same seed: once with
the subfolders as labels (`--labels folders`), once with the labels hidden
(`--labels cluster`, once per value of --clusters, or with the automatic k).
The cluster purity (the share of images whose cluster's most common true
class is their own) comes from each run's report. Then, for each split seed,
every class is split 80/20 as `protect verify`'s probe does. A fresh vgg-cnn
victim trains with the TRUE labels on the train part of each version (clean,
true-label protected, cluster protected) and is tested on the clean test part. It prints a Markdown table of mean final and peak accuracies
and writes JSON to --results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from protect import files, probe, resolution, training


def run_protect(source: Path, out: Path, report: Path, seed: int, *extra: str) -> float:
    """Run `protect images` in a subprocess; return its wall time in seconds."""
    command = [sys.executable, "-m", "protect", "images", str(source), "--out", str(out),
               "--report", str(report), "--seed", str(seed), *extra]
    print("$", " ".join(command), file=sys.stderr, flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    return time.monotonic() - started


def purity(report: dict) -> float:
    """Return the share of clustered images whose cluster's majority class (the top folder) is theirs."""
    members: dict[str, Counter] = {}
    for relative, cluster in report["clusters"]["assignment"].items():
        members.setdefault(cluster, Counter())[relative.split("/")[0]] += 1
    return sum(c.most_common(1)[0][1] for c in members.values()) / sum(sum(c.values()) for c in members.values())


def load(paths: list[Path], size: int) -> torch.Tensor:
    """Load images as (N, 3, size, size) floats in [0, 1], resized as the engine does."""
    return torch.stack([resolution.to_working(files.read_rgb(p), size) for p in paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="folder with one subfolder per class")
    parser.add_argument("--results", type=Path, required=True, help="folder for outputs, reports and JSON")
    parser.add_argument("--clusters", type=int, nargs="*", default=[], help="values of --clusters to test (default: automatic k)")
    parser.add_argument("--seed", type=int, default=0, help="protection seed")
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2], help="seeds of the 80/20 split and the victim")
    parser.add_argument("--epochs", type=int, default=20, help="victim training epochs")
    parser.add_argument("--size", type=int, default=64, help="victim input size in pixels")
    parser.add_argument("--protect-args", default="", help="extra options for protect images, space-separated")
    parser.add_argument("--cluster-args", nargs="+", default=[""],
                        help="extra options for the clustered runs only, such as '--robustness standard'; "
                        "each value is one more clustered run per k ('' for none). A '--labels FILE' "
                        "here replaces the clusters with a manifest, because the last --labels wins")
    parser.add_argument("--reuse", action="store_true",
                        help="skip protect images for a condition whose output and report already exist in --results")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    extra = args.protect_args.split()

    conditions = {"true labels": ["--labels", "folders"]}
    for k in args.clusters or [None]:
        for cluster_args in args.cluster_args:
            name = "clusters" if k is None else f"clusters k={k}"
            if cluster_args:
                name += f" ({cluster_args})"
            conditions[name] = ["--labels", "cluster"] + ([] if k is None else ["--clusters", str(k)]) + cluster_args.split()

    found = files.discover(args.photos).images
    relatives = [image.relative for image in found]
    class_names = sorted({image.label for image in found})
    labels = [class_names.index(image.label) for image in found]
    record: dict = {"photos": len(found), "classes": len(class_names), "conditions": {}}
    versions = {"clean": load([image.path for image in found], args.size)}
    for name, options in conditions.items():
        slug = "".join(c for c in name.replace(" ", "-") if c.isalnum() or c in "-.")
        out, report_path = args.results / slug, args.results / f"{slug}.json"
        if args.reuse and report_path.exists() and out.is_dir():
            print(f"reusing {out}", file=sys.stderr, flush=True)
            seconds = None
        else:
            seconds = run_protect(args.photos, out, report_path, args.seed, *options, *extra)
        report = json.loads(report_path.read_text())
        entry = {"options": options, "seconds": None if seconds is None else round(seconds, 1), "classes": len(report["classes"])}
        if report["clusters"] is not None:
            entry |= {"k": report["clusters"]["k"], "rule": report["clusters"]["rule"],
                      "purity": round(purity(report), 4), "sizes": list(report["clusters"]["sizes"].values())}
        record["conditions"][name] = entry
        versions[name] = load([out / r for r in relatives], args.size)

    y = torch.tensor(labels)
    scores: dict[str, list[dict]] = {name: [] for name in versions}
    for split_seed in args.splits:
        train, test = probe.split(labels, split_seed)
        for name, images in versions.items():
            result = training.train_victim(
                images[train], y[train], versions["clean"][test], y[test], epochs=args.epochs, seed=split_seed
            )
            scores[name].append({"split": split_seed, "final": result.final, "peak": result.peak})
            print(f"split {split_seed} {name}: final {result.final:.1%}, peak {result.peak:.1%}",
                  file=sys.stderr, flush=True)
    record["victims"] = scores

    clean = statistics.mean(s["final"] for s in scores["clean"])
    true_drop = clean - statistics.mean(s["final"] for s in scores["true labels"])
    print(f"| version | final accuracy (mean of {len(args.splits)} splits) | per split | peak | drop | share of the true-label drop |")
    print("|---|---|---|---|---|---|")
    for name, runs in scores.items():
        final = statistics.mean(s["final"] for s in runs)
        peak = statistics.mean(s["peak"] for s in runs)
        drop = clean - final
        share = "" if name == "clean" or true_drop <= 0 else f"{drop / true_drop:.2f}"
        per_split = ", ".join(f"{s['final']:.1%}" for s in runs)
        print(f"| {name} | {final:.1%} | {per_split} | {peak:.1%} | {drop * 100:+.1f} | {share} |")
    for name, entry in record["conditions"].items():
        if "purity" in entry:
            print(f"{name}: k {entry['k']} ({entry['rule']}), purity {entry['purity']:.1%}, sizes {entry['sizes']}")
    (args.results / "clusters.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
