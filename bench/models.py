"""Models as registered plug-ins. Every model gives features ``h`` and logits, and carries SRAT's projection head.

``model(x)`` returns logits (what attacks and evaluation see); ``model.forward_features(x)`` returns
``(logits, h)``; the logits include the buffer ``logit_bias`` ``[C]``, zero while training and set afterwards to a
method's inference-time adjustment (:meth:`Classifier.set_logit_bias`), so every prediction and every attack of
the trained model sees the adjusted logits and ``final.pt`` carries them; ``model.project(h)`` is the head
``Linear(F, F) → ReLU → Linear(F, 128)`` followed by L2 normalisation (methods.md §2). The head is built last,
after the backbone and classifier, so every method at one seed starts from the same backbone weights whether or
not it uses the head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.catalog import MODEL_NAMES, declared
from bench.registry import Registry

PROJECTION_DIM = 128


class CosineClassifier(nn.Module):
    """Normalised linear classifier: logits are cosines between ``h`` and class weights (LDAM paper's head)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(h, dim=1) @ F.normalize(self.weight, dim=1).T


class Classifier(nn.Module):
    """A backbone producing ``F``-dimensional features, a classifier head and the projection head."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, classifier: str = "linear") -> None:
        super().__init__()
        self.backbone = backbone
        heads: dict[str, Callable[[], nn.Module]] = {
            "linear": lambda: nn.Linear(feature_dim, num_classes),
            "cosine": lambda: CosineClassifier(feature_dim, num_classes),
        }
        self.classifier = heads[classifier]()
        self.head = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, PROJECTION_DIM)
        )
        self.feature_dim = feature_dim
        self.register_buffer("logit_bias", torch.zeros(num_classes))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return self.classifier(h) + self.logit_bias, h

    def set_logit_bias(self, bias: torch.Tensor | None) -> None:
        """Add ``bias`` ``[C]`` to every logit from now on (``None`` = no adjustment)."""
        with torch.no_grad():
            if bias is None:
                self.logit_bias.zero_()
            else:
                self.logit_bias.copy_(torch.as_tensor(bias, dtype=self.logit_bias.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(h), dim=1)


ModelFactory = Callable[..., Classifier]
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a factory under ``name``, which :data:`bench.catalog.MODEL_NAMES` must declare (the
    suite validates ``model`` against that torch-free list)."""
    return MODELS.register(declared("model", name, MODEL_NAMES))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """CIFAR ResNet: 3×3 stem, stride 1, no max-pool, stages 64/128/256/512, global average pool."""

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@register_model("resnet18")
def resnet18(num_classes: int, input_shape: tuple[int, ...], classifier: str = "linear") -> Classifier:
    """CIFAR ResNet-18 (11.2 M parameters), 512-d features."""
    return Classifier(ResNetBackbone((2, 2, 2, 2), input_shape[0]), 512, num_classes, classifier)


class SmallCNN(nn.Module):
    """Three 3×3 conv layers with batch norm for 8×8 inputs: 8×8×16 → 4×4×32 → 2×2×64 → 64-d features.

    Kept this small so the quick suite (66 adversarially trained cells) fits in minutes on 2 CPU cores.
    """

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("cnn-small")
def cnn_small(num_classes: int, input_shape: tuple[int, ...], classifier: str = "linear") -> Classifier:
    """Small CNN sized for 8×8 digits (≈ 24 k parameters), 64-d features."""
    return Classifier(SmallCNN(input_shape[0]), 64, num_classes, classifier)


@register_model("linear")
def linear(num_classes: int, input_shape: tuple[int, ...], classifier: str = "linear") -> Classifier:
    """A linear classifier on the raw input (Section 3's Gaussian data): features are the input itself."""
    dim = 1
    for size in input_shape:
        dim *= size
    return Classifier(nn.Flatten(), dim, num_classes, classifier)


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], classifier: str = "linear") -> Classifier:
    return MODELS.get(name)(num_classes, tuple(input_shape), classifier)
