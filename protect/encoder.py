"""The shipped image encoder: weights of the `small-cnn` network in safetensors.

Clustering embeds images with it (its pooled features), and the crafting
surrogate can start from its convolutions instead of from random weights. The
file is `weights/small-cnn-cifar10.safetensors` in the repository, installed
as `protect/weights/` by pip. The environment variable PROTECT_WEIGHTS names
another file to use instead. Nothing is downloaded.

Every file carries metadata: architecture, input size, normalisation, classes,
training data, accuracy, package version and the git commit of the training
script (`scripts/train_encoder.py`). Loading is strict: a file whose tensors
do not match the architecture's raises WeightsError naming the missing,
unexpected or misshapen keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from protect import models

WEIGHTS_NAME = "small-cnn-cifar10.safetensors"
ENVIRONMENT_VARIABLE = "PROTECT_WEIGHTS"
FORMAT = "protect-encoder/1"
REQUIRED_METADATA = ("format", "architecture", "input_size", "classes", "normalization")
_LISTED = 5  # keys named in a mismatch message before "and N more"

# A wheel installs the top-level weights/ folder as protect/weights/ (see
# pyproject.toml); a source checkout or editable install keeps it beside the package.
_CANDIDATES = (
    Path(__file__).resolve().parent / "weights" / WEIGHTS_NAME,
    Path(__file__).resolve().parent.parent / "weights" / WEIGHTS_NAME,
)


class WeightsError(RuntimeError):
    """The encoder's weight file is missing, unreadable or does not match its architecture."""


@dataclass
class Encoder:
    """A loaded encoder: the network in eval mode, its file and its metadata."""

    model: models.Classifier
    path: Path
    metadata: dict[str, str]

    @property
    def architecture(self) -> str:
        return self.metadata["architecture"]

    @property
    def input_size(self) -> int:
        """Side in pixels of the square images the encoder was trained on."""
        return int(self.metadata["input_size"])


def weights_path() -> Path:
    """Return the weight file to use: $PROTECT_WEIGHTS when set, else the shipped file."""
    override = os.environ.get(ENVIRONMENT_VARIABLE)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise WeightsError(f"{ENVIRONMENT_VARIABLE}={override} is not a file; point it at a .safetensors file or unset it")
        return path
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"the encoder weights {WEIGHTS_NAME} are missing from the installation (looked in "
        f"{', '.join(str(c.parent) for c in _CANDIDATES)}); reinstall protect or set {ENVIRONMENT_VARIABLE}"
    )


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return shown if len(keys) <= _LISTED else f"{shown} and {len(keys) - _LISTED} more"


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise WeightsError unless `found` has exactly the keys and shapes of `expected`."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshapen = sorted(
        f"{key} {tuple(found[key].shape)} (expected {tuple(expected[key].shape)})"
        for key in set(expected) & set(found)
        if found[key].shape != expected[key].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if misshapen:
        problems.append(f"wrong shapes: {_listed(misshapen)}")
    if problems:
        raise WeightsError(f"{source} does not match its architecture. " + ". ".join(problems))


def read_metadata(path: Path) -> dict[str, str]:
    """Return the file's metadata; raise WeightsError when it is unreadable or incomplete."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own SafetensorError and OSError
        raise WeightsError(f"cannot read {path} as safetensors: {error}") from None
    absent = [key for key in REQUIRED_METADATA if key not in metadata]
    if absent:
        raise WeightsError(f"{path} lacks the metadata {', '.join(absent)}; it is not a protect encoder file")
    if metadata["format"] != FORMAT:
        raise WeightsError(f"{path} has format {metadata['format']!r}; this version of protect reads {FORMAT!r}")
    if metadata["architecture"] not in models.ARCHITECTURES:
        raise WeightsError(
            f"{path} names architecture {metadata['architecture']!r}; known: {', '.join(models.ARCHITECTURES)}"
        )
    return metadata


def load_encoder(path: Path | None = None, device: torch.device | None = None) -> Encoder:
    """Load the encoder strictly, in eval mode on `device` (the CPU by default)."""
    path = path or weights_path()
    metadata = read_metadata(path)
    model = models.build(metadata["architecture"], int(metadata["classes"]))
    state = load_file(str(path))
    check_state(model.state_dict(), state, str(path))
    model.load_state_dict(state, strict=True)
    model.eval()
    return Encoder(model.to(device or torch.device("cpu")), path, metadata)


def save_encoder(model: models.Classifier, path: Path, metadata: dict[str, object]) -> None:
    """Write the model's state and metadata (values stored as strings, dicts as JSON)."""
    text = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    text["format"] = FORMAT
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=text)
