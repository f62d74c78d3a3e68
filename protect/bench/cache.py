"""Key benchmark results by their inputs, so that a rerun recomputes only what changed.

A key is the SHA-256 of a JSON record of everything that decides a result:
settings, the data's fingerprint and the source code of the modules that
compute it. Changing the engine therefore changes the keys of crafted sets and
of the victims trained on them, while the clean and random-noise results,
which do not run the engine, keep theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import ModuleType

# Modules behind each stage. Every protected set depends on the write path, a
# crafted set also on the engine, and a victim's result on the trainer.
from protect import augment, engine, files, labels, models, noise, pipeline, resolution, robustness, training, defences
from protect.bench import data

WRITE_MODULES = (pipeline, files, labels, noise, resolution)
CRAFT_MODULES = (engine, models, augment, robustness)
VICTIM_MODULES = (training, defences, models, augment, resolution, data, files)


def code_hash(modules: tuple[ModuleType, ...]) -> str:
    """Return a SHA-256 over the source files of `modules`."""
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        digest.update(module.__name__.encode() + b"\0")
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Return the code hashes of each stage: writing, crafting (with writing) and victims."""
    return {
        "write": code_hash(WRITE_MODULES),
        "craft": code_hash(WRITE_MODULES + CRAFT_MODULES),
        "victim": code_hash(VICTIM_MODULES),
    }


def key(record: dict) -> str:
    """Return the SHA-256 of `record` as canonical JSON."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class Store:
    """JSON records under a folder, one file per key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, kind: str, name: str) -> Path:
        return self.folder / kind / f"{name}.json"

    def get(self, kind: str, name: str) -> dict | None:
        path = self.path(kind, name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # a record cut short by a crash is recomputed

    def put(self, kind: str, name: str, record: dict) -> None:
        path = self.path(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(temporary, path)  # a reader sees the old record or the new one, never half
