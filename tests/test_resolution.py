"""Working-size resizing, mapping δ back to native pixels, and 8-bit rounding."""

from __future__ import annotations

import numpy as np
import torch

from protect import resolution

EPSILON = 8 / 255


def test_auto_size_uses_native_cifar_size() -> None:
    assert resolution.auto_size([32] * 10) == 32


def test_auto_size_caps_photos() -> None:
    assert resolution.auto_size([400, 533, 711]) == resolution.MAX_AUTO_SIZE


def test_auto_size_floor_for_icons() -> None:
    assert resolution.auto_size([8, 9, 12]) == resolution.MIN_SIZE


def test_to_working_shape_and_range() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (533, 400, 3), dtype=np.uint8)
    x = resolution.to_working(rgb, 64)
    assert x.shape == (3, 64, 64)
    assert float(x.min()) >= 0
    assert float(x.max()) <= 1


def test_upscaled_delta_stays_within_budget() -> None:
    delta = (torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1) * EPSILON
    native = resolution.to_native(delta, 533, 400)
    assert native.shape == (3, 533, 400)
    assert float(native.abs().max()) <= EPSILON


def test_downscaled_delta_stays_within_budget() -> None:
    delta = torch.full((3, 64, 64), EPSILON)
    delta[:, ::2] = -EPSILON
    native = resolution.to_native(delta, 20, 30)
    assert float(native.abs().max()) <= EPSILON


def test_rounding_keeps_both_signs() -> None:
    rgb = np.full((2, 2, 3), 100, dtype=np.uint8)
    delta = torch.zeros(3, 2, 2)
    delta[:, 0, 0] = 0.6 / 255
    delta[:, 1, 1] = -0.6 / 255
    out = resolution.apply_delta(rgb, delta, gray=False).astype(int)
    assert out[0, 0, 0] == 101  # truncation would give 100
    assert out[1, 1, 0] == 99


def test_rounding_at_budget_stays_within() -> None:
    rgb = np.full((4, 4, 3), 37, dtype=np.uint8)
    out = resolution.apply_delta(rgb, torch.full((3, 4, 4), EPSILON), gray=False)
    assert int(out.max()) == 45


def test_gray_image_stays_gray() -> None:
    rgb = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10, 3, axis=2)
    delta = (torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1) * EPSILON
    out = resolution.apply_delta(rgb, delta, gray=True)
    assert np.array_equal(out[..., 0], out[..., 1])
    assert np.array_equal(out[..., 0], out[..., 2])
    assert int(np.abs(out.astype(int) - rgb.astype(int)).max()) <= 8
