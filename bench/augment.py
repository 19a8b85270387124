"""Training-time augmentation of a batch, on the batch's device, every random choice drawn from the cell's generator.

A cell's ``augment`` is one of :data:`bench.catalog.AUGMENTATIONS` or several joined by ``+``, applied left to
right (``"randaugment+crop-flip"`` is AT-BSL's pipeline: RandAugment, then random crop and horizontal flip):

* ``crop`` — random crop with 4-pixel zero padding; ``flip`` — horizontal flip with probability 1/2;
  ``crop-flip`` — both (one draw each, crop first).
* ``randaugment`` — torchvision's ``v2.RandAugment(num_ops=2, magnitude=8)`` (AT-BSL's ``--aug ra``): per image,
  2 operations drawn uniformly from its 14 (Identity included), each at magnitude bin 8 of 31, signed operations
  negated with probability 1/2.
* ``autoaugment`` — torchvision's ``v2.AutoAugment(AutoAugmentPolicy.CIFAR10)`` (AT-BSL's ``--aug aua``): per
  image one of the 25 CIFAR-10 sub-policies, each of its two operations applied with its probability.

The policies are torchvision's own: its operation table (``_AUGMENTATION_SPACE``), its sub-policies
(``_policies``) and its per-operation arithmetic (``_apply_image_or_video_transform``, nearest interpolation,
zero fill), called on uint8 tensors. Only the drawing is batched: each image gets its own draws, exactly the
distribution of the transform applied image by image (as the reference's data loader does), and the images that
drew the same operation at the same magnitude are transformed together. The reference applies the policies to PIL
images; torchvision's tensor kernels match its PIL kernels up to rounding in a few operations.

Float images: the policies work in the uint8 range the reference's PIL images live in. A float batch with bounds
``(lo, hi)`` is mapped to ``round(255·(x − lo)/(hi − lo))``, transformed, and mapped back; an image whose draws
were all no-ops (Identity, or no AutoAugment operation applied) is returned bit for bit unchanged. CIFAR-10's
pixels are multiples of 1/255, so the round trip is exact for them; other data (digits' multiples of 1/16) are
rounded to the nearest of 256 levels where an operation acts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from bench.catalog import AUGMENTATIONS, declared
from bench.registry import Registry

Augment = Callable[[torch.Tensor, torch.Generator, tuple[float, float], int], torch.Tensor]
AUGMENTS: Registry[Augment] = Registry("augmentation")
RANDAUGMENT = {"num_ops": 2, "magnitude": 8}  # AT-BSL's v2.RandAugment(2, 8)


def register_augment(name: str):
    """Decorator: register ``fn(x, generator, bounds, padding)`` under a name :data:`AUGMENTATIONS` declares."""
    return AUGMENTS.register(declared("augmentation", name, AUGMENTATIONS))


def augment(x: torch.Tensor, kind: str, generator: torch.Generator, padding: int = 4,
            bounds: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """``x`` augmented by ``kind`` (one name or several joined by ``+``, applied in order); inputs that are not
    images ``[N, C, H, W]`` are returned unchanged."""
    if kind == "none" or x.dim() != 4:
        return x
    for part in kind.split("+"):
        x = AUGMENTS.get(part)(x, generator, bounds, padding)
    return x


def _crop(x: torch.Tensor, generator: torch.Generator, padding: int) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=x.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@register_augment("none")
def _none(x, generator, bounds, padding):
    return x


@register_augment("crop")
def _crop_only(x, generator, bounds, padding):
    """Random crop with zero padding: a window of the padded image, per sample."""
    return _crop(x, generator, padding)


@register_augment("flip")
def _flip_only(x, generator, bounds, padding):
    """Horizontal flip with probability 1/2, per sample."""
    return _flip(x, generator)


@register_augment("crop-flip")
def _crop_flip(x, generator, bounds, padding):
    """Random crop, then horizontal flip (the CIFAR recipe)."""
    return _flip(_crop(x, generator, padding), generator)


def _transform(name: str):
    from torchvision.transforms import v2

    if name == "randaugment":
        return v2.RandAugment(**RANDAUGMENT)
    return v2.AutoAugment(policy=v2.AutoAugmentPolicy.CIFAR10)


def _magnitude(transform, op: str, bin_count: int, index: int | None, negate: bool, h: int, w: int) -> float:
    """torchvision's magnitude of ``op`` at bin ``index`` (0 for operations without one), negated if drawn so."""
    magnitudes_fn, signed = transform._AUGMENTATION_SPACE[op]
    magnitudes = magnitudes_fn(bin_count, h, w)
    if magnitudes is None or index is None:
        return 0.0
    magnitude = float(magnitudes[index])
    return -magnitude if signed and negate else magnitude


def _apply_groups(x: torch.Tensor, bounds: tuple[float, float] | None, transform,
                  slots: list[dict[tuple[str, float], list[int]]]) -> torch.Tensor:
    """Apply each slot's ``(operation, magnitude) → images`` groups in turn on the uint8 image of ``x``."""
    if bounds is None:
        raise ValueError("image augmentation policies need bounded inputs (a dataset with a pixel range)")
    lo, hi = float(bounds[0]), float(bounds[1])
    u = ((x - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
    touched = torch.zeros(x.shape[0], dtype=torch.bool)
    for groups in slots:
        for (op, magnitude), images in groups.items():
            if op == "Identity":
                continue
            idx = torch.tensor(images, dtype=torch.long)
            idx_dev = idx.to(x.device)
            u[idx_dev] = transform._apply_image_or_video_transform(
                u[idx_dev], op, magnitude, interpolation=transform.interpolation, fill=transform._fill)
            touched[idx] = True
    back = u.to(x.dtype) / 255 * (hi - lo) + lo
    return torch.where(touched.to(x.device)[:, None, None, None], back, x)


@register_augment("randaugment")
def _randaugment(x, generator, bounds, padding):
    """RandAugment(2, 8) per image (torchvision v2, AT-BSL's ``ra``)."""
    transform = _transform("randaugment")
    ops = list(transform._AUGMENTATION_SPACE)
    n, _, h, w = x.shape
    k = transform.num_ops
    drawn = torch.randint(0, len(ops), (k, n), generator=generator, device=x.device)
    negate = torch.rand((k, n), generator=generator, device=x.device) <= 0.5
    drawn, negate = drawn.cpu().tolist(), negate.cpu().tolist()  # one host sync per batch
    slots = []
    for layer in range(k):
        groups: dict[tuple[str, float], list[int]] = defaultdict(list)
        for i in range(n):
            op = ops[drawn[layer][i]]
            magnitude = _magnitude(transform, op, transform.num_magnitude_bins, transform.magnitude,
                                   negate[layer][i], h, w)
            groups[(op, magnitude)].append(i)
        slots.append(groups)
    return _apply_groups(x, bounds, transform, slots)


@register_augment("autoaugment")
def _autoaugment(x, generator, bounds, padding):
    """AutoAugment's CIFAR-10 policy per image (torchvision v2, AT-BSL's ``aua``)."""
    transform = _transform("autoaugment")
    policies = transform._policies
    n, _, h, w = x.shape
    chosen = torch.randint(0, len(policies), (n,), generator=generator, device=x.device)
    applied = torch.rand((2, n), generator=generator, device=x.device)
    negate = torch.rand((2, n), generator=generator, device=x.device) <= 0.5
    chosen, applied, negate = chosen.cpu().tolist(), applied.cpu().tolist(), negate.cpu().tolist()
    slots = []
    for slot in range(2):
        groups: dict[tuple[str, float], list[int]] = defaultdict(list)
        for i in range(n):
            op, probability, index = policies[chosen[i]][slot]
            if not applied[slot][i] <= probability:
                continue
            groups[(op, _magnitude(transform, op, 10, index, negate[slot][i], h, w))].append(i)
        slots.append(groups)
    return _apply_groups(x, bounds, transform, slots)
