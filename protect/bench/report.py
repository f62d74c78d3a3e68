"""Write the benchmark's results: JSON, a Markdown page and a PNG chart.

The page states where MI-UE loses as plainly as where it wins: for each
victim and defence it names every method that left a lower accuracy, and each
defence under which MI-UE's victim gets back above chance + 10 points.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from protect.bench.harness import Results, VictimResult, split_method

RECOVERY_MARGIN = 0.10  # accuracy above chance + this counts as protection lost, as in protect verify
MAIN_METHOD = "mi-ue"  # with or without a robustness preset, as in mi-ue:off


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}"


def _groups(results: Results) -> list[tuple[str, int]]:
    """Return the (victim, size) pairs in the order they ran."""
    seen: list[tuple[str, int]] = []
    for v in results.victims:
        if (v.victim, v.size) not in seen:
            seen.append((v.victim, v.size))
    return seen


def _lookup(results: Results) -> dict[tuple[str, str, int, str], VictimResult]:
    return {(v.method, v.victim, v.size, v.defence): v for v in results.victims}


def accuracy_table(results: Results) -> str:
    """Return Markdown tables of final (peak) clean-test accuracy, one per victim and size."""
    table = _lookup(results)
    defences = list(dict.fromkeys(v.defence for v in results.victims))
    methods = list(dict.fromkeys(v.method for v in results.victims))
    blocks = []
    for victim, size in _groups(results):
        lines = [
            f"**{victim} at {size} px**: final (peak) clean-test accuracy, %; chance is {results.chance * 100:.0f} %.",
            "",
            "| method | " + " | ".join(defences) + " |",
            "|---|" + "---:|" * len(defences),
        ]
        for method in methods:
            cells = []
            for defence in defences:
                v = table.get((method, victim, size, defence))
                cells.append("" if v is None else f"{_percent(v.final)} ({_percent(v.peak)})")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def cost_table(results: Results) -> str:
    """Return a Markdown table of crafting cost and image quality per method."""
    lines = [
        "| method | images | protect wall time (s) | images/s | PSNR (dB) | SSIM | L∞ (levels) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results.sets:
        if s.method == "clean":
            continue
        lines.append(
            f"| {s.method} | {s.images} | {s.seconds} | {s.images_per_second} | {s.psnr_mean} | "
            f"{s.ssim_mean} | {s.linf_max} |"
        )
    return "\n".join(lines)


def findings(results: Results) -> list[str]:
    """Return plain sentences on where MI-UE wins and loses, from the numbers alone."""
    table = _lookup(results)
    ceiling = results.chance + RECOVERY_MARGIN
    sentences = []
    for victim, size in _groups(results):
        control = table.get(("clean", victim, size, "none"))
        if control is not None and control.final <= ceiling:
            sentences.append(
                f"{victim} at {size} px: the clean control reaches only {_percent(control.final)} %, within "
                f"{RECOVERY_MARGIN * 100:.0f} points of chance, so this run cannot judge protection. "
                "Train longer (--epochs) or on more images."
            )
    ours_labels = [m for m in dict.fromkeys(v.method for v in results.victims) if split_method(m)[0] == MAIN_METHOD]
    for victim, size in _groups(results):
        for defence in dict.fromkeys(v.defence for v in results.victims):
            for label in ours_labels:
                ours = table.get((label, victim, size, defence))
                if ours is not None:
                    sentences += _compare(table, ours, ceiling)
    return sentences


def _compare(table: dict[tuple[str, str, int, str], VictimResult], ours: VictimResult, ceiling: float) -> list[str]:
    """Return the sentences on one MI-UE result: lower methods, and recovery above the ceiling."""
    sentences = []
    where = f"{ours.victim} at {ours.size} px, defence {ours.defence}"
    name = "MI-UE" if ours.method == MAIN_METHOD else ours.method
    better = [
        v for (m, vi, si, d), v in table.items()
        if (vi, si, d) == (ours.victim, ours.size, ours.defence)
        and split_method(m)[0] not in (MAIN_METHOD, "clean") and v.final < ours.final
    ]
    for other in sorted(better, key=lambda v: v.final):
        sentences.append(f"{where}: {other.method} leaves {_percent(other.final)} %, lower than {name}'s {_percent(ours.final)} %.")
    if ours.final > ceiling:
        clean = table.get(("clean", ours.victim, ours.size, ours.defence))
        against = "" if clean is None else f" (clean training under the same defence: {_percent(clean.final)} %)"
        if ours.defence == "none":
            verdict = "so the protection is weak even on files that reach the trainer untouched"
        else:
            verdict = "so this defence removes much of the protection"
        sentences.append(
            f"{where}: {name}'s victim reaches {_percent(ours.final)} %, above chance + "
            f"{RECOVERY_MARGIN * 100:.0f} points, {verdict}{against}."
        )
    return sentences


def markdown(results: Results, header: str = "") -> str:
    """Return the results page as Markdown."""
    parts = [header] if header else []
    parts += ["## Accuracy", accuracy_table(results), "## Cost and image quality", cost_table(results)]
    found = findings(results)
    parts += ["## Where MI-UE loses", "\n".join(f"- {s}" for s in found) if found else "- Nowhere in this run."]
    return "\n\n".join(parts) + "\n"


def chart(results: Results, path: Path) -> None:
    """Draw grouped bars of final accuracy: one panel per victim and size, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display is needed or assumed
    import matplotlib.pyplot as plt

    table = _lookup(results)
    groups = _groups(results)
    defences = list(dict.fromkeys(v.defence for v in results.victims))
    methods = list(dict.fromkeys(v.method for v in results.victims))
    figure, axes = plt.subplots(len(groups), 1, figsize=(max(6, 1.2 * len(defences) + 2), 3.2 * len(groups)),
                                squeeze=False)
    width = 0.8 / max(1, len(methods))
    for axis, (victim, size) in zip(axes[:, 0], groups):
        for i, method in enumerate(methods):
            heights = [
                100 * table[(method, victim, size, d)].final if (method, victim, size, d) in table else 0
                for d in defences
            ]
            axis.bar([x + i * width for x in range(len(defences))], heights, width, label=method)
        axis.axhline(100 * results.chance, color="black", linestyle="--", linewidth=1, label="chance")
        axis.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(defences))], defences)
        axis.set_ylabel("clean-test accuracy (%)")
        axis.set_ylim(0, 100)
        axis.set_title(f"{victim} at {size} px (lower is better protection)")
        axis.legend(fontsize="small", ncol=len(methods) + 1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(results: Results, folder: Path, header: str = "", draw: bool = True) -> None:
    """Write results.json, results.md and, when `draw`, chart.png into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(dataclasses.asdict(results), indent=1) + "\n")
    (folder / "results.md").write_text(markdown(results, header))
    if draw:
        chart(results, folder / "chart.png")
