"""Saved progress of a run into an output folder, so `--resume` can finish it.

Crafting treats the whole folder at once, so an interrupted run keeps two
things in DST/.protect/: the crafted δ (a safetensors file, written once
crafting ends) and a journal with one line per finished output, holding that
output's SHA-256. A resumed run reuses δ and skips every output whose file
still has the journaled hash. Both are tied to a key over the settings and the
sources' content hashes, so a changed source or setting is never mixed in.
The folder is removed when a run finishes writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from protect import files

FOLDER = ".protect"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_key(settings: dict, images: list[files.ImageFile]) -> str:
    """Hash the settings and every source's relative path and content."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for image in images:
        digest.update(str(image.relative).encode() + b"\0" + sha256(image.path).encode())
    return digest.hexdigest()


class RunState:
    """The state folder of one output folder."""

    def __init__(self, destination: Path) -> None:
        self.folder = destination / FOLDER
        self.settings_path = self.folder / "run.json"
        self.delta_path = self.folder / "delta.safetensors"
        self.journal_path = self.folder / "done.jsonl"

    def saved_settings(self) -> dict | None:
        """Return the settings of an interrupted run, or None when there is none."""
        if not self.settings_path.exists():
            return None
        return json.loads(self.settings_path.read_text())["settings"]

    def start(self, key: str, settings: dict) -> None:
        """Begin a fresh run: forget any older state."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        data = json.dumps({"key": key, "settings": settings}).encode()
        files.atomic_write(self.settings_path, lambda handle: handle.write(data))

    def matches(self, key: str) -> bool:
        return self.settings_path.exists() and json.loads(self.settings_path.read_text())["key"] == key

    def save_delta(self, delta: torch.Tensor, relatives: list[str]) -> None:
        temporary = self.delta_path.with_suffix(".tmp")
        save_file({"delta": delta.contiguous()}, str(temporary), metadata={"relatives": json.dumps(relatives)})
        os.replace(temporary, self.delta_path)

    def load_delta(self, relatives: list[str]) -> torch.Tensor | None:
        """Return the saved δ when it covers exactly `relatives`, else None."""
        if not self.delta_path.exists():
            return None
        from safetensors import safe_open

        with safe_open(str(self.delta_path), framework="pt") as handle:
            saved = json.loads(handle.metadata()["relatives"])
        if saved != relatives:
            return None
        return load_file(str(self.delta_path))["delta"]

    def finished(self) -> dict[str, str]:
        """Return {relative path: output SHA-256} of outputs journaled as complete."""
        if not self.journal_path.exists():
            return {}
        done = {}
        for line in self.journal_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            done[entry["relative"]] = entry["sha256"]
        return done

    def record(self, relative: str, output: Path) -> None:
        line = json.dumps({"relative": relative, "sha256": sha256(output)}) + "\n"
        with open(self.journal_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def remove_temporaries(self) -> None:
        """Delete temporary files that a killed run left beside its outputs."""
        for leftover in self.folder.parent.rglob(f"*{files.TEMPORARY_SUFFIX}"):
            leftover.unlink(missing_ok=True)
