"""The MI-UE engine on real CIFAR-10 sample images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from protect import engine, resolution
from tests.conftest import CIFAR

EPSILON = 8 / 255
# Two outer epochs of three steps keep each test to a few seconds on a CPU.
QUICK = dataclasses.replace(engine.FAST, max_epochs=2, steps=3, craft_batch=64)


def load_cifar(classes: int = 4, per_class: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, folder in enumerate(sorted(CIFAR.iterdir())[:classes]):
        for path in sorted(folder.iterdir())[:per_class]:
            rgb = np.array(Image.open(path).convert("RGB"))
            images.append(resolution.to_working(rgb, 32))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def crafted() -> tuple[torch.Tensor, torch.Tensor, engine.CraftResult]:
    images, labels = load_cifar()
    return images, labels, engine.craft(images, labels, epsilon=EPSILON, schedule=QUICK, seed=5)


def test_objective_prefers_collapsed_classes() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    collapsed = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], [0.01, 1.0]])
    assert engine.mi_ue_objective(collapsed, labels) < engine.mi_ue_objective(mixed, labels)


def test_objective_decreases_over_steps(crafted) -> None:
    _, _, result = crafted
    for stats in result.history:
        assert stats.objective_end < stats.objective_start, stats


def test_delta_stays_within_epsilon(crafted) -> None:
    images, _, result = crafted
    assert result.delta.abs().max() <= EPSILON + 1e-7
    protected = images + result.delta
    assert protected.min() >= 0
    assert protected.max() <= 1


def test_delta_uses_both_signs(crafted) -> None:
    _, _, result = crafted
    assert (result.delta > 0.5 / 255).any()
    assert (result.delta < -0.5 / 255).any()


def test_same_seed_gives_same_delta(crafted) -> None:
    images, labels, result = crafted
    again = engine.craft(images, labels, epsilon=EPSILON, schedule=QUICK, seed=5)
    assert torch.equal(result.delta, again.delta)


def test_other_seed_gives_other_delta(crafted) -> None:
    images, labels, result = crafted
    other = engine.craft(images, labels, epsilon=EPSILON, schedule=QUICK, seed=6)
    assert not torch.equal(result.delta, other.delta)


def test_em_method_lowers_cross_entropy() -> None:
    images, labels = load_cifar(classes=3, per_class=8)
    result = engine.craft(images, labels, epsilon=EPSILON, schedule=QUICK, method="em", seed=1)
    assert result.history[-1].objective_end < result.history[-1].objective_start


def test_batches_cover_every_index_once() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    batches = engine.class_balanced_batches(labels, 32, torch.Generator().manual_seed(0))
    everything = torch.cat(batches).sort().values
    assert torch.equal(everything, torch.arange(100))


def test_batches_hold_every_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    batches = engine.class_balanced_batches(labels, 32, torch.Generator().manual_seed(0))
    assert len(batches) == 4
    for batch in batches:
        assert set(labels[batch].tolist()) == {0, 1, 2}


def test_craft_rejects_single_class() -> None:
    images, _ = load_cifar(classes=1, per_class=4)
    with pytest.raises(ValueError, match="two classes"):
        engine.craft(images, torch.zeros(4, dtype=torch.int64), epsilon=EPSILON, schedule=QUICK)


def test_craft_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, S, S\)"):
        engine.craft(torch.rand(4, 32, 32), torch.tensor([0, 1, 0, 1]), epsilon=EPSILON)


def test_reference_schedule_runs_one_epoch() -> None:
    images, labels = load_cifar(classes=2, per_class=4)
    schedule = dataclasses.replace(engine.REFERENCE, max_epochs=1, steps=1)
    result = engine.craft(images, labels, epsilon=EPSILON, schedule=schedule, seed=0)
    assert result.delta.abs().max() <= EPSILON + 1e-7
    assert len(result.history) == 1


def test_warm_start_begins_with_tighter_classes() -> None:
    from protect import encoder

    images, labels = load_cifar()
    one_epoch = dataclasses.replace(QUICK, max_epochs=1)
    state = encoder.load_encoder().model.state_dict()

    cold = engine.craft(images, labels, epsilon=EPSILON, schedule=one_epoch, seed=5)
    warm = engine.craft(images, labels, epsilon=EPSILON, schedule=one_epoch, seed=5, initial_state=state)

    # Trained features already group CIFAR classes, so the objective starts lower.
    assert warm.history[0].objective_start < cold.history[0].objective_start


def test_warm_start_rejects_other_architecture() -> None:
    from protect import encoder, models

    images, labels = load_cifar(classes=2, per_class=4)
    state = models.build("vgg-cnn", 10).state_dict()
    with pytest.raises(encoder.WeightsError, match="missing keys: backbone"):
        engine.craft(images, labels, epsilon=EPSILON, schedule=QUICK, seed=0, initial_state=state)


def test_class_pattern_is_shared_within_class() -> None:
    images, labels = load_cifar(classes=3, per_class=8)
    schedule = dataclasses.replace(QUICK, class_share=0.5)
    result = engine.craft(images, labels, epsilon=EPSILON, schedule=schedule, seed=3)

    assert result.pattern is not None
    assert result.pattern.shape == (3, *images.shape[1:])
    assert result.pattern.abs().max() <= EPSILON * 0.5 + 1e-7
    assert result.pattern.abs().max() > 0
    assert result.delta.abs().max() <= EPSILON + 1e-7
    protected = images + result.delta
    assert protected.min() >= 0
    assert protected.max() <= 1

    # Away from the pixel range's ends, each image's δ minus its class's
    # pattern is its own part, which stays within the other half of ε.
    own = result.delta - result.pattern[labels]
    inside = ((images > 0.1) & (images < 0.9)).expand_as(own)
    assert own[inside].abs().max() <= EPSILON * 0.5 + 1e-6


def test_craft_rejects_class_share_of_one() -> None:
    images, labels = load_cifar(classes=2, per_class=2)
    with pytest.raises(ValueError, match="class_share"):
        engine.craft(images, labels, epsilon=EPSILON, schedule=dataclasses.replace(QUICK, class_share=1.0))
