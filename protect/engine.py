"""MI-UE crafting engine: per-image perturbations that make a set unlearnable.

MI-UE (Zhu, Miao, Dong, Gao, "Why Do Unlearnable Examples Work: A Novel
Perspective of Mutual Information", ICLR 2026, arXiv 2603.03725) crafts δ so
that a surrogate's features of protected images collapse within each class.
Tight classes lower the mutual information between clean and protected
features, and a model trained on the protected set fails on clean data.

The loop is bi-level ("min-min"): each outer epoch trains the surrogate for one
epoch of cross-entropy on the current protected images, then freezes it and
takes signed-gradient descent steps on δ against the objective.

The robust presets split δ into two parts: each image's own, and a pattern
shared by every image of its class, each with its share of ε. Both take the
same steps. A shared pattern is a shortcut that survives re-encoding better
than per-image detail, and it is folded into each image's δ before δ is
returned, so callers see one perturbation per image.

Shapes and ranges: images are float (N, 3, S, S) in [0, 1] at the working size
S; δ has the same shape and stays in [-ε, ε] with x + δ in [0, 1]. The engine
keeps δ outside the model, one row per image, so images can later be sharded
across processes. Library code: it reports progress through a callback and
never prints.

Measured cost (2 CPU cores, torch 2.14.1, 32x32 images): the `fast` schedule's
small CNN trains at about 1,000 images/s and takes input-gradient steps at
about 1,150 images/s, so one outer epoch (one training epoch, 5 steps) on
5,000 images takes about 21 s, and the 20-epoch run about 7 minutes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from protect import augment, models, noise, robustness

METHODS = ("mi-ue", "em")
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # BT.601, as grayscale conversion weighs channels


@dataclass(frozen=True)
class Schedule:
    """How long and how hard to craft. Step sizes are in 8-bit levels (1/255)."""

    name: str
    surrogate: str
    max_epochs: int
    steps: int
    step_start: float
    step_end: float
    lr: float
    weight_decay: float
    cosine_lr: bool
    # Augmentation of both phases: "flip", or "crop-flip" (4-pixel shifts too).
    augmentation: str = "flip"
    train_batch: int = 128
    craft_batch: int = 512
    # Expectation over transformation: when set, each δ step passes every image
    # through one random draw of this pool (JPEG, grayscale, blur, resizing).
    transforms: robustness.Pool | None = None
    draws: int = 1  # draws averaged per step; cost grows with it
    transform_training: bool = False  # the surrogate also trains on transformed images
    # Achromatic δ: one signed step for all three channels, taken along the
    # luma-weighted gradient, so δ survives grayscale conversion and JPEG's
    # chroma subsampling untouched.
    achromatic: bool = False
    # Share of ε given to one pattern shared by every image of a class (or
    # cluster), added to each image's own δ, which keeps the rest. 0 crafts
    # per-image δ only. A shared pattern is a shortcut that a victim can
    # learn wherever the classes line up with its own labels.
    class_share: float = 0.0


# The authors' CIFAR-10 recipe: ResNet-18 (CIFAR stem), 100 outer epochs of one
# training epoch plus 10 steps per batch, step size 0.2 -> 0.4 levels, SGD with
# weight decay 1e-4 and a cosine learning rate. About 1,100 forward-backward
# passes per image: a GPU job.
REFERENCE = Schedule(
    name="reference",
    surrogate="resnet18",
    max_epochs=100,
    steps=10,
    step_start=0.2,
    step_end=0.4,
    lr=0.1,
    weight_decay=1e-4,
    cosine_lr=True,
)

# The CPU default. Alternating more often helps more than stepping harder: on
# 5,000 CIFAR-10 images (2 CPU cores), 20 epochs of 5 steps took 417 s and left
# a fresh victim at 13.1 % clean accuracy, while 10 epochs of 10 steps took
# 396 s and left it at 22.9 %. Crops in the augmentation match what a victim's
# trainer does (22.9 % against 24.5 % with flips alone, 10 x 10).
FAST = Schedule(
    name="fast",
    surrogate="small-cnn",
    max_epochs=20,
    steps=5,
    step_start=0.5,
    step_end=1.0,
    lr=0.1,
    weight_decay=5e-4,
    cosine_lr=False,
    augmentation="crop-flip",
)

SCHEDULES = {s.name: s for s in (FAST, REFERENCE)}

# Robustness presets: how δ is made to survive what platforms and trainers do.
# "off" crafts against the augmented images only. "standard" passes each image
# of each δ step through one random draw of JPEG (quality 30-95), grayscale or
# nothing, takes achromatic steps, and gives half of ε to one pattern per
# class. "strong" draws from the whole pool (blur, resizing and crops too) and
# gives three quarters of ε to the class pattern, for trainers who compress
# hard or blur. Both cost about what "off" does.
# Measured on 5,000 CIFAR-10 images (BENCHMARKS.md): the whole pool with
# per-image δ only left a victim at 31 % on untouched files, against 19 % for
# "standard". Blur, resizing and crops in the pool are what hold protection
# under JPEG at quality 10. Coarse (2x2-block) δ, the surrogate training on the
# pool, and more outer epochs did worse or gained little, so none is a preset.
# NOTE: with labels from clustering, each cluster gets its own pattern; that
# case was measured only without the pool, where the pattern did not help.
_PLATFORM_POOL = robustness.Pool(operations=("identity", "jpeg", "grayscale"))
ROBUSTNESS = {
    "off": {"transforms": None},
    "standard": {"transforms": _PLATFORM_POOL, "achromatic": True, "class_share": 0.5},
    "strong": {"transforms": robustness.Pool(), "achromatic": True, "class_share": 0.75},
}
DEFAULT_ROBUSTNESS = "standard"


def with_robustness(schedule: Schedule, preset: str) -> Schedule:
    """Return `schedule` with the transformation settings of robustness `preset`."""
    if preset not in ROBUSTNESS:
        raise ValueError(f"unknown robustness preset {preset!r}: use one of {', '.join(ROBUSTNESS)}")
    return dataclasses.replace(schedule, **ROBUSTNESS[preset])


@dataclass
class EpochStats:
    """Measurements of one outer epoch."""

    epoch: int
    train_accuracy: float  # surrogate accuracy on protected images while training
    objective_start: float  # mean objective over the sweep before the first step
    objective_end: float  # mean objective over the sweep after the last step


@dataclass
class CraftResult:
    """Perturbations (N, 3, S, S) in [-ε, ε] and the per-epoch history."""

    delta: torch.Tensor
    history: list[EpochStats] = field(default_factory=list)
    pattern: torch.Tensor | None = None  # (classes, 3, S, S) shared part, already folded into delta


ProgressFn = Callable[[str, int, int], None]


def mi_ue_objective(features: torch.Tensor, labels: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Supervised-contrastive loss over a whole batch, diagonal included.

    features: (B, D) surrogate features; labels: (B,). Returns a scalar that is
    low when each image's features are close (in cosine) to its own class and
    far from the others. Every row has at least itself as a positive, so the
    log-ratio is always finite.
    """
    unit = F.normalize(features, dim=1)
    logits = unit @ unit.T / tau  # (B, B)
    same_class = labels[:, None] == labels[None, :]
    positive = logits.masked_fill(~same_class, float("-inf")).logsumexp(dim=1)
    return (logits.logsumexp(dim=1) - positive).mean()


def class_balanced_batches(
    labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Split all indices into batches that each hold a share of every class.

    Each class is shuffled and cut into as many nearly equal parts as there are
    batches; batch b takes part b of every class. Every index appears once.
    """
    count = labels.numel()
    batches = max(1, math.ceil(count / batch_size))
    parts: list[list[torch.Tensor]] = [[] for _ in range(batches)]
    for value in labels.unique():
        members = (labels == value).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        for b, chunk in enumerate(torch.tensor_split(members, batches)):
            parts[b].append(chunk)
    return [torch.cat(p) for p in parts if sum(c.numel() for c in p) > 0]


def _augment(x: torch.Tensor, schedule: Schedule, generator: torch.Generator) -> torch.Tensor:
    if schedule.augmentation == "crop-flip":
        return augment.random_crop_flip(x, generator)
    return augment.random_flip(x, generator)


def _objective(model: models.Classifier, x: torch.Tensor, y: torch.Tensor, method: str) -> torch.Tensor:
    if method == "mi-ue":
        return mi_ue_objective(model.features(x), y)
    return F.cross_entropy(model(x), y)


def _sweep_loss(model: models.Classifier, x: torch.Tensor, y: torch.Tensor, method: str,
                schedule: Schedule, generator: torch.Generator) -> torch.Tensor:
    """Return the objective on protected images x, averaged over the schedule's transformation draws."""
    if schedule.transforms is None:
        return _objective(model, _augment(x, schedule, generator), y, method)
    total = 0.0
    for _ in range(schedule.draws):
        seen = robustness.random_transform(x, schedule.transforms, generator)
        total = total + _objective(model, _augment(seen, schedule, generator), y, method)
    return total / schedule.draws


def _train_epoch(
    model: models.Classifier,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    delta: torch.Tensor,
    labels: torch.Tensor,
    schedule: Schedule,
    device: torch.device,
    generator: torch.Generator,
    pattern: torch.Tensor | None = None,
) -> float:
    """Train the surrogate one epoch on clip(x + δ); return its accuracy."""
    model.train()
    order = torch.randperm(images.shape[0], generator=generator)
    correct = 0
    for idx in order.split(schedule.train_batch):
        if idx.numel() < 2:  # batch norm needs two samples
            continue
        y = labels[idx].to(device)
        own = delta[idx].to(device)
        if pattern is not None:
            own = own + pattern[y]
        x = (images[idx].to(device) + own).clamp(0, 1)
        if schedule.transform_training and schedule.transforms is not None:
            x = robustness.random_transform(x, schedule.transforms, generator)
        logits = model(_augment(x, schedule, generator))
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        correct += int((logits.argmax(1) == y).sum())
    return correct / images.shape[0]


def _direction(grad: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Return the sign of the step direction: per channel, or one luma-weighted sign for all three."""
    if schedule.achromatic:
        grad = (grad * _LUMA.to(grad.device)).sum(1, keepdim=True).expand_as(grad)
    return grad.sign()


def _perturb_sweep(
    model: models.Classifier,
    images: torch.Tensor,
    delta: torch.Tensor,
    labels: torch.Tensor,
    method: str,
    steps: int,
    step_size: float,
    epsilon: float,
    schedule: Schedule,
    device: torch.device,
    generator: torch.Generator,
    on_batch: Callable[[], None],
    pattern: torch.Tensor | None = None,
) -> tuple[float, float, torch.Tensor | None]:
    """Take `steps` signed descent steps on δ for every image, batch by batch.

    Updates `delta` in place and returns the mean objective before the first
    and after the last step, weighted by batch size, and the updated class
    pattern. With a pattern (classes, 3, S, S), each image's perturbation is
    its own δ plus its class's pattern, and both take steps.
    """
    model.eval()
    own_limit = epsilon * (1 - schedule.class_share)
    shared_limit = epsilon * schedule.class_share
    first_total = last_total = 0.0
    for idx in class_balanced_batches(labels, schedule.craft_batch, generator):
        x = images[idx].to(device)
        y = labels[idx].to(device)
        d = delta[idx].to(device)
        for step in range(steps + 1):
            d.requires_grad_(True)
            if pattern is not None:
                pattern.requires_grad_(True)
            shared = 0.0 if pattern is None else pattern[y]
            loss = _sweep_loss(model, (x + d + shared).clamp(0, 1), y, method, schedule, generator)
            if step == 0:
                first_total += loss.item() * idx.numel()
            if step == steps:
                last_total += loss.item() * idx.numel()
                break
            if pattern is None:
                (grad,) = torch.autograd.grad(loss, d)
            else:
                grad, pattern_grad = torch.autograd.grad(loss, (d, pattern))
            with torch.no_grad():
                d = (d - step_size * _direction(grad, schedule)).clamp(-own_limit, own_limit)
                if pattern is not None:
                    pattern = (pattern - step_size * _direction(pattern_grad, schedule)).clamp(-shared_limit, shared_limit)
                    shared = pattern[y]
                # Keep x + δ a valid image. The sum of both parts stays within ε.
                d = (x + d + shared).clamp(0, 1) - x - shared
        delta[idx] = d.detach().to(delta.device)
        on_batch()
    count = images.shape[0]
    return first_total / count, last_total / count, None if pattern is None else pattern.detach()


def _load_backbone(model: models.Classifier, state: dict[str, torch.Tensor]) -> None:
    """Copy every tensor except the head's from `state`; raise encoder.WeightsError on a mismatch."""
    from protect import encoder

    def body(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value for key, value in tensors.items() if not key.startswith("head.")}

    expected = body(model.state_dict())
    provided = body(state)
    encoder.check_state(expected, provided, "the initial surrogate state")
    model.load_state_dict(provided, strict=False)


def craft(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    schedule: Schedule = FAST,
    method: str = "mi-ue",
    device: torch.device | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[EpochStats, torch.Tensor], None] | None = None,
    allocate: Callable[[tuple[int, ...]], torch.Tensor] | None = None,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> CraftResult:
    """Craft one δ per image.

    images: (N, 3, S, S) float in [0, 1] on the CPU; labels: (N,) int64 with at
    least two distinct values; epsilon: the L∞ budget on the [0, 1] scale.
    progress(phase, done, total) is called after each crafting batch, and
    on_epoch(stats, delta) after each outer epoch with the current δ (with
    a class pattern, the images' own part only).
    allocate(shape) returns the float32 tensor that holds δ, for example one
    backed by a memory-mapped file; by default δ is an ordinary tensor.
    initial_state contains trained weights of the surrogate's architecture,
    such as the shipped encoder's. Every tensor but the linear head's is
    loaded, and the head starts fresh because the classes differ.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, S, S), got {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    if labels.unique().numel() < 2:
        raise ValueError("crafting needs at least two classes")
    if not 0 <= schedule.class_share < 1:
        raise ValueError(f"invalid class_share {schedule.class_share}: use a value in [0, 1)")

    device = device or torch.device("cpu")
    torch.manual_seed(seed)  # surrogate initialisation
    generator = torch.Generator().manual_seed(seed)

    _, classes = labels.unique(return_inverse=True)
    class_count = int(classes.max()) + 1
    model = models.build(schedule.surrogate, class_count)
    if initial_state is not None:
        _load_backbone(model, initial_state)
    model = model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=schedule.lr, momentum=0.9, weight_decay=schedule.weight_decay
    )
    lr_schedule = None
    if schedule.cosine_lr:
        lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=schedule.max_epochs, eta_min=1e-6
        )

    # Random start inside the budget.
    delta = torch.empty(images.shape) if allocate is None else allocate(tuple(images.shape))
    noise.fill_uniform(delta, images, epsilon, generator)
    if schedule.achromatic:
        # Start gray too: the red channel's draw for all three channels.
        for start in range(0, images.shape[0], noise.CHUNK):
            rows = slice(start, start + noise.CHUNK)
            gray = delta[rows][:, :1].expand(-1, 3, -1, -1)
            delta[rows] = (images[rows] + gray).clamp(0, 1) - images[rows]
    pattern = None
    if schedule.class_share > 0:
        # The own part starts within its smaller range, and the shared part at zero.
        for start in range(0, images.shape[0], noise.CHUNK):
            delta[start:start + noise.CHUNK] *= 1 - schedule.class_share
        pattern = torch.zeros((class_count, *images.shape[1:]), device=device)

    batches = math.ceil(images.shape[0] / schedule.craft_batch)
    total = batches * schedule.max_epochs
    done = 0
    result = CraftResult(delta=delta)

    for epoch in range(schedule.max_epochs):
        accuracy = _train_epoch(
            model, optimizer, images, delta, classes, schedule, device, generator, pattern
        )
        if lr_schedule is not None:
            lr_schedule.step()

        # The step size grows linearly over the planned epochs, in 1/255 units.
        fraction = epoch / max(1, schedule.max_epochs - 1)
        step_size = (schedule.step_start + fraction * (schedule.step_end - schedule.step_start)) / 255

        for p in model.parameters():
            p.requires_grad_(False)

        def on_batch() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress("craft", done, total)

        start, end, pattern = _perturb_sweep(
            model, images, delta, classes, method, schedule.steps, step_size,
            epsilon, schedule, device, generator, on_batch, pattern,
        )
        for p in model.parameters():
            p.requires_grad_(True)

        stats = EpochStats(epoch + 1, accuracy, start, end)
        result.history.append(stats)
        if on_epoch is not None:
            on_epoch(stats, delta)

    if pattern is not None:
        # Fold each class's pattern into its images' δ, which is what callers write.
        shared = pattern.cpu()
        for start in range(0, images.shape[0], noise.CHUNK):
            rows = slice(start, start + noise.CHUNK)
            composed = images[rows] + delta[rows] + shared[classes[rows]]
            delta[rows] = composed.clamp(0, 1) - images[rows]
        result.pattern = shared
    return result
