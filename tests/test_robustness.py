"""The transformation pool behind --robustness, and the engine's use of it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protect import engine, robustness
from tests.conftest import CIFAR


def cifar_batch(count: int = 32) -> torch.Tensor:
    paths = sorted(CIFAR.rglob("*.jpg"))[:count]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255)


def pillow_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for array in (x * 255).round().byte().permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255)


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_jpeg_approximation_tracks_pillow(quality: int) -> None:
    # Noise makes the sample differ from the JPEG it was decoded from.
    x = (cifar_batch() + 0.03 * torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    codec = pillow_jpeg(x, quality)
    ours = robustness.jpeg(x, torch.full((32,), float(quality)))
    codec_change = float((codec - x).abs().mean()) * 255
    our_error = float((ours - codec).abs().mean()) * 255
    assert our_error < codec_change / 2, (our_error, codec_change)


def test_jpeg_has_a_gradient() -> None:
    x = cifar_batch(4).requires_grad_(True)
    robustness.jpeg(x, torch.full((4,), 75.0)).square().sum().backward()
    assert float(x.grad.abs().sum()) > 0


def test_jpeg_handles_sizes_not_multiple_of_16() -> None:
    x = torch.rand(2, 3, 20, 27)
    assert robustness.jpeg(x, torch.tensor([30.0, 90.0])).shape == x.shape


def test_grayscale_equalises_channels() -> None:
    y = robustness.grayscale(torch.rand(2, 3, 8, 8))
    assert torch.equal(y[:, 0], y[:, 1])
    assert torch.equal(y[:, 1], y[:, 2])


def test_random_transform_keeps_each_image_in_its_row() -> None:
    # Flat gray images pass every operation of the pool nearly unchanged, so
    # a row that moved would show up as another image's value.
    values = torch.linspace(0.1, 0.9, 24)
    x = values.view(-1, 1, 1, 1).expand(24, 3, 32, 32).contiguous()
    y = robustness.random_transform(x, robustness.Pool(), torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert torch.allclose(y.mean(dim=(1, 2, 3)), values, atol=0.01)


def test_random_transform_changes_textured_images() -> None:
    x = cifar_batch(24)
    y = robustness.random_transform(x, robustness.Pool(), torch.Generator().manual_seed(0))
    changed = (y - x).abs().flatten(1).amax(1) > 1 / 255
    assert 0 < int(changed.sum()) < 24  # identity draws leave some images as they were


def test_pool_draws_only_its_operations() -> None:
    x = cifar_batch(12)
    gray_only = robustness.Pool(operations=("grayscale",))
    assert torch.equal(robustness.random_transform(x, gray_only, torch.Generator().manual_seed(0)),
                       robustness.grayscale(x))
    jpeg_only = robustness.Pool(operations=("jpeg",))
    y = robustness.random_transform(x, jpeg_only, torch.Generator().manual_seed(0))
    assert bool(((y - x).abs().flatten(1).amax(1) > 1 / 255).all())  # no image is left as it was


def test_pool_rejects_unknown_operation() -> None:
    with pytest.raises(ValueError, match="invalid pool operations \\('jpeg', 'sharpen'\\)"):
        robustness.Pool(operations=("jpeg", "sharpen"))


def test_achromatic_steps_give_gray_delta() -> None:
    x = cifar_batch(24)
    labels = torch.arange(24) % 3
    schedule = engine.with_robustness(engine.dataclasses.replace(engine.FAST, max_epochs=2), "standard")
    delta = engine.craft(x, labels, epsilon=8 / 255, schedule=schedule, seed=0).delta
    inside = ((x + delta) > 0.02) & ((x + delta) < 0.98)  # away from the clamps at 0 and 1
    spread = (delta.amax(1) - delta.amin(1))[inside.all(1)]
    assert float(spread.median()) < 2 / 255


def test_unknown_robustness_preset_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown robustness preset 'extreme'"):
        engine.with_robustness(engine.FAST, "extreme")


def test_robust_presets_craft_a_class_pattern() -> None:
    x = cifar_batch(24)
    labels = torch.arange(24) % 3
    for preset, share in (("standard", 0.5), ("strong", 0.75)):
        schedule = engine.with_robustness(engine.dataclasses.replace(engine.FAST, max_epochs=2), preset)
        assert schedule.max_epochs == 2  # presets change what δ meets, not how long crafting runs
        pattern = engine.craft(x, labels, epsilon=8 / 255, schedule=schedule, seed=0).pattern
        assert pattern is not None
        assert pattern.shape == (3, 3, 32, 32)
        assert float(pattern.abs().max()) > 0
        assert float(pattern.abs().max()) <= share * 8 / 255 + 1e-7
    off = engine.with_robustness(engine.dataclasses.replace(engine.FAST, max_epochs=1), "off")
    assert engine.craft(x, labels, epsilon=8 / 255, schedule=off, seed=0).pattern is None
