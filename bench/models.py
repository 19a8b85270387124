"""Models as registered plug-ins. Every model gives features ``h`` and logits, and carries SRAT's projection head.

``model(x)`` returns logits (what attacks and evaluation see); ``model.forward_features(x)`` returns
``(logits, h)``; the logits are ``logit_scale · classifier(h) + logit_bias`` (buffers: ``1`` and ``0`` while training,
set afterwards to a method's inference-time adjustment, :meth:`Classifier.set_inference`), so every prediction and
every attack of the trained model sees the adjusted logits and ``final.pt`` carries them; ``model.project(h)`` is the head
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
    """Normalised linear classifier: logits are cosines between ``h`` and class weights (LDAM paper's head).

    ``gamma`` > 0 is RoBal's CosPlus head (``basic_classifiers.CosPlus_Classifier``, γ 0.03125): the class weights
    are divided by ``‖w‖ + γ`` instead of ``‖w‖``, so a class's weight norm still scales its logit a little.
    The initial weights are U(±1/√F) either way (kaiming_uniform with a = √5 is that bound, as the reference's).
    """

    def __init__(self, in_features: int, num_classes: int, gamma: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.gamma = gamma
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(h, dim=1) @ normalized_class_weights(self.weight, self.gamma, dim=1).T


def normalized_class_weights(w: torch.Tensor, gamma: float, dim: int) -> torch.Tensor:
    """The cosine head's class weights: ``w / ‖w‖`` (``gamma`` 0), else CosPlus' ``w / (‖w‖ + γ)``."""
    if gamma == 0:
        return F.normalize(w, dim=dim)
    return w / (torch.linalg.vector_norm(w, dim=dim, keepdim=True) + gamma)


COSPLUS_GAMMA = 0.03125  # the reference's CosPlus gamma (configs/*_robal_*: classifier_opt.gamma)


def _identity_for_missing_inference(module, state_dict, prefix, *_args) -> None:
    """Weights saved before models carried an inference bias or scale had none: zero and one are exactly what
    they computed, so an older ``final.pt`` or checkpoint still loads (strictly) and predicts as it did."""
    state_dict.setdefault(prefix + "logit_bias", torch.zeros_like(module.logit_bias))
    state_dict.setdefault(prefix + "logit_scale", torch.ones_like(module.logit_scale))


class Classifier(nn.Module):
    """A backbone producing ``F``-dimensional features, a classifier head and the projection head."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, classifier: str = "linear") -> None:
        super().__init__()
        self.backbone = backbone
        heads: dict[str, Callable[[], nn.Module]] = {
            "linear": lambda: nn.Linear(feature_dim, num_classes),
            "cosine": lambda: CosineClassifier(feature_dim, num_classes),
            "cosplus": lambda: CosineClassifier(feature_dim, num_classes, gamma=COSPLUS_GAMMA),
        }
        self.classifier = heads[classifier]()
        self.head = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, PROJECTION_DIM)
        )
        self.feature_dim = feature_dim
        self.register_buffer("logit_bias", torch.zeros(num_classes))
        self.register_buffer("logit_scale", torch.ones(()))
        self.register_load_state_dict_pre_hook(_identity_for_missing_inference)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return self.classifier(h) * self.logit_scale + self.logit_bias, h  # × 1.0 is exact: training is unchanged

    def set_inference(self, scale: float = 1.0, bias: torch.Tensor | None = None) -> None:
        """Predict ``scale · logits + bias`` from now on (``bias`` ``[C]``; the defaults: no adjustment)."""
        with torch.no_grad():
            self.logit_scale.fill_(float(scale))
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


# -- the field's architectures (issue 19): PreAct ResNet-18 and WideResNet, as the reference repositories build them

class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., 2016) as in Rice et al.'s ``preactresnet.py`` and AT-BSL's
    ``ti_preact_resnet.py``: BN → ReLU → conv3×3 → BN → ReLU → conv3×3, plus the shortcut — the identity, or a 1×1
    convolution (no BN) of the *pre-activated* input when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNetBackbone(nn.Module):
    """PreAct ResNet: 3×3 stem (stride 1, no BN), four stages 64/128/256/512 of :class:`PreActBlock`, then
    BN → ReLU → global average pool. PyTorch's default initialisation, as in the references."""

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        layers, in_planes = [], 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            for j in range(n):
                layers.append(PreActBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


@register_model("preact-resnet18")
def preact_resnet18(num_classes: int, input_shape: tuple[int, ...], classifier: str = "linear") -> Classifier:
    """PreAct ResNet-18 (11.17 M parameters with 10 classes), 512-d features; Rice et al. / AT-BSL's network.

    Rice et al.'s CIFAR file pools with ``avg_pool2d(out, 4)`` and AT-BSL's Tiny-ImageNet file
    (``ti_preact_resnet``) with an adaptive pool; both are this global average pool at their input sizes (32×32 and
    64×64), so one network serves CIFAR and Tiny-ImageNet.
    """
    return Classifier(PreActResNetBackbone((2, 2, 2, 2), input_shape[0]), 512, num_classes, classifier)


class WideBlock(nn.Module):
    """WideResNet basic block as in TRADES' / MART's ``wideresnet.py``: BN → ReLU → conv3×3 → BN → ReLU → conv3×3.

    Where the width changes (the first block of a stage), the pre-activation is shared: the 1×1 shortcut
    convolution takes BN → ReLU of the input, as the reference does (``x = relu1(bn1(x))``); otherwise the shortcut
    is the raw input. ``drop_rate`` is the reference's ``dropRate`` (0 in every reference run).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.shortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride,
                                                                 padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return (x if self.shortcut is None else self.shortcut(pre)) + out


class WideResNetBackbone(nn.Module):
    """WideResNet-``depth``-``widen`` (Zagoruyko & Komodakis) as TRADES / MART build it for CIFAR:
    ``WideResNet(depth, num_classes, widen_factor, dropRate=0)``.

    3×3 stem with 16 channels, three stages of ``(depth − 4) / 6`` :class:`WideBlock` at widths 16k/32k/64k
    (strides 1, 2, 2), BN → ReLU → global average pool (the reference's ``avg_pool2d(out, 8)`` at 32×32).
    Initialisation as the reference: convolutions ``N(0, 2 / (k·k·out_channels))``, BN weight 1 and bias 0 (the
    classifier's bias is zeroed by the factory). The reference file also builds a ``sub_block1`` that its
    ``forward`` never calls (2.1 M parameters for WRN-34-10 that only receive weight decay); it is left out, which
    changes no output and gives the parameter counts the field quotes (46.16 M and 36.48 M with 10 classes).
    """

    def __init__(self, depth: int, widen: int, in_channels: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        stages = []
        for i, stride in enumerate((1, 2, 2)):
            stages += [WideBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1], stride if j == 0 else 1,
                                 drop_rate) for j in range(n)]
        self.blocks = nn.Sequential(*stages)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.out_channels = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.blocks(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def _wide_resnet(depth: int, widen: int, num_classes: int, input_shape: tuple[int, ...],
                 classifier: str) -> Classifier:
    backbone = WideResNetBackbone(depth, widen, input_shape[0])
    model = Classifier(backbone, backbone.out_channels, num_classes, classifier)
    if isinstance(model.classifier, nn.Linear):
        nn.init.zeros_(model.classifier.bias)  # the reference zeroes the fc bias (its weight keeps torch's init)
    return model


@register_model("wrn-34-10")
def wrn_34_10(num_classes: int, input_shape: tuple[int, ...], classifier: str = "linear") -> Classifier:
    """WideResNet-34-10 (46.16 M parameters with 10 classes), 640-d features; TRADES / MART / AT-BSL's network."""
    return _wide_resnet(34, 10, num_classes, input_shape, classifier)


@register_model("wrn-28-10")
def wrn_28_10(num_classes: int, input_shape: tuple[int, ...], classifier: str = "linear") -> Classifier:
    """WideResNet-28-10 (36.48 M parameters with 10 classes), 640-d features; the same blocks, 4 per stage."""
    return _wide_resnet(28, 10, num_classes, input_shape, classifier)


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], classifier: str = "linear") -> Classifier:
    return MODELS.get(name)(num_classes, tuple(input_shape), classifier)
