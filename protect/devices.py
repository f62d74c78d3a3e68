"""Pick the torch device that crafting runs on.

`auto` prefers CUDA, then Apple MPS, then the CPU. A device that is named but
missing, or that fails to run a tiny kernel, raises `DeviceError` rather than
hanging or silently falling back.
"""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(RuntimeError):
    """The requested device is not available on this machine."""


def _works(device: torch.device) -> bool:
    # A driver can report a GPU that then fails at the first kernel launch.
    try:
        probe = torch.ones(2, device=device)
        return float((probe + probe).sum().item()) == 4.0
    except RuntimeError:
        return False


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def select_device(name: str = "auto") -> torch.device:
    """Return the device for `name` (one of DEVICE_CHOICES)."""
    if name not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {name!r}: use one of {', '.join(DEVICE_CHOICES)}")

    if name == "auto":
        if torch.cuda.is_available() and _works(torch.device("cuda")):
            return torch.device("cuda")
        if _mps_available() and _works(torch.device("mps")):
            return torch.device("mps")
        return torch.device("cpu")

    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA GPU is visible to torch; use --device auto or cpu")
    if name == "mps" and not _mps_available():
        raise DeviceError("--device mps: Apple MPS is not available; use --device auto or cpu")

    device = torch.device(name)
    if not _works(device):
        raise DeviceError(f"--device {name}: the device failed a test kernel; use --device cpu")
    return device
