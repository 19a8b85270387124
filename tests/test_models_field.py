"""The field's networks (issue 19): PreAct ResNet-18, WideResNet-34-10 and WideResNet-28-10.

Parameter counts are those of the reference network — backbone plus linear classifier, without bench's SRAT
projection head (a separate module that only SRAT's loss reads). The equivalence tests transcribe the reference
modules here (Rice et al.'s ``preactresnet.py``; TRADES' ``models/wideresnet.py``, unused ``sub_block1``
included), copy their weights into bench's models in order and compare the logits, in eval and in train mode.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench import catalog
from bench.models import MODELS, Classifier, build_model

FIELD_MODELS = ("preact-resnet18", "wrn-34-10", "wrn-28-10")
COUNTS = {"preact-resnet18": 11_172_170, "wrn-34-10": 46_160_474, "wrn-28-10": 36_479_194}
QUOTED_MILLIONS = {"preact-resnet18": 11.17, "wrn-34-10": 46.16, "wrn-28-10": 36.48}  # issue 19


def reference_parameters(model: Classifier) -> int:
    """Backbone + classifier: what the reference network holds (no projection head)."""
    return sum(p.numel() for part in (model.backbone, model.classifier) for p in part.parameters())


# -- references, transcribed ----------------------------------------------------------------------------------


class RefPreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride,
                                                    bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out += shortcut
        return out


class RefPreActResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.bn = nn.BatchNorm2d(512 * block.expansion)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class RefWideBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride,
                                                                padding=0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class RefNetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, block, stride):
        super().__init__()
        self.layer = nn.Sequential(*[block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1)
                                     for i in range(int(nb_layers))])

    def forward(self, x):
        return self.layer(x)


class RefWideResNet(nn.Module):
    def __init__(self, depth=34, num_classes=10, widen_factor=10):
        super().__init__()
        nChannels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) / 6
        self.conv1 = nn.Conv2d(3, nChannels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = RefNetworkBlock(n, nChannels[0], nChannels[1], RefWideBlock, 1)
        self.sub_block1 = RefNetworkBlock(n, nChannels[0], nChannels[1], RefWideBlock, 1)  # never called
        self.block2 = RefNetworkBlock(n, nChannels[1], nChannels[2], RefWideBlock, 2)
        self.block3 = RefNetworkBlock(n, nChannels[2], nChannels[3], RefWideBlock, 2)
        self.bn1 = nn.BatchNorm2d(nChannels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(nChannels[3], num_classes)
        self.nChannels = nChannels[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.nChannels))


def _copy_reference_into(reference: nn.Module, model: Classifier, skip: str = "") -> None:
    """Reference parameters and BN buffers, in registration order, into bench's backbone then classifier."""
    ref = [(k, v) for k, v in reference.state_dict().items() if not (skip and k.startswith(skip))]
    ours = [(k, v) for k, v in model.state_dict().items() if k.startswith(("backbone.", "classifier."))]
    assert len(ref) == len(ours)
    with torch.no_grad():
        for (rk, rv), (ok, ov) in zip(ref, ours):
            assert rv.shape == ov.shape, (rk, ok)
            assert rk.rsplit(".", 1)[-1] == ok.rsplit(".", 1)[-1], (rk, ok)
            ov.copy_(rv)


def _same_logits(reference: nn.Module, model: Classifier, x: torch.Tensor) -> None:
    for train in (False, True):
        reference.train(train)
        model.train(train)
        with torch.no_grad():
            assert torch.allclose(model(x), reference(x), rtol=1e-4, atol=1e-5), f"train={train}"


# -- tests ----------------------------------------------------------------------------------------------------


def test_declared_and_registered_in_order():
    assert set(FIELD_MODELS) <= set(catalog.MODEL_NAMES)
    assert list(MODELS) == list(catalog.MODEL_NAMES)
    for name in FIELD_MODELS:
        assert MODELS.get(name).__doc__.strip()  # `bench list models` shows the first line


@pytest.mark.parametrize("name", FIELD_MODELS)
def test_parameter_counts_are_the_references(name):
    model = build_model(name, 10, (3, 32, 32))
    count = reference_parameters(model)
    assert count == COUNTS[name]
    assert round(count / 1e6, 2) == QUOTED_MILLIONS[name]
    # the whole module adds only bench's SRAT projection head, Linear(F, F) → ReLU → Linear(F, 128)
    f = model.feature_dim
    assert sum(p.numel() for p in model.parameters()) == count + (f * f + f) + (f * 128 + 128)


def wrn_count(depth: int, k: int, classes: int) -> int:
    """WideResNet parameters counted by hand: stem, 3 stages of (depth − 4) / 6 blocks, final BN, classifier."""
    n, widths = (depth - 4) // 6, (16, 16 * k, 32 * k, 64 * k)

    def block(i: int, o: int) -> int:  # BN(i), conv 3×3 i→o, BN(o), conv 3×3 o→o, 1×1 shortcut when i ≠ o
        return 2 * i + 9 * i * o + 2 * o + 9 * o * o + (i * o if i != o else 0)

    stages = sum(block(widths[s], widths[s + 1]) + (n - 1) * block(widths[s + 1], widths[s + 1]) for s in range(3))
    return 3 * 16 * 9 + stages + 2 * widths[3] + widths[3] * classes + classes


def test_wrn_counts_follow_depth_and_width():
    """6n + 4 layers at widths 16k/32k/64k; the counts quoted for WRN-34-10 and WRN-28-10 are the formula's."""
    from bench.models import WideResNetBackbone

    assert wrn_count(34, 10, 10) == COUNTS["wrn-34-10"] and wrn_count(28, 10, 10) == COUNTS["wrn-28-10"]
    small = WideResNetBackbone(16, 2)
    assert sum(p.numel() for p in small.parameters()) == wrn_count(16, 2, 0)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNetBackbone(30, 10)
    assert reference_parameters(build_model("wrn-28-10", 100, (3, 32, 32))) == COUNTS["wrn-28-10"] + 90 * 641


def test_preact_resnet18_is_rice_et_al_network():
    torch.manual_seed(0)
    reference = RefPreActResNet(RefPreActBlock, [2, 2, 2, 2])
    model = build_model("preact-resnet18", 10, (3, 32, 32))
    _copy_reference_into(reference, model)
    x = torch.rand(4, 3, 32, 32)
    _same_logits(reference, model, x)


@pytest.mark.parametrize("depth, widen", [(16, 2), (10, 4)])
def test_wide_resnet_is_the_trades_network(depth, widen):
    from bench.models import _wide_resnet

    torch.manual_seed(0)
    reference = RefWideResNet(depth, 10, widen)
    model = _wide_resnet(depth, widen, 10, (3, 32, 32), "linear")
    _copy_reference_into(reference, model, skip="sub_block1.")
    _same_logits(reference, model, torch.rand(4, 3, 32, 32))


def test_wide_resnet_initialisation_is_the_references():
    torch.manual_seed(0)
    model = build_model("wrn-28-10", 10, (3, 32, 32))
    assert torch.count_nonzero(model.classifier.bias) == 0
    conv = model.backbone.blocks[-1].conv2  # 640 → 640, 3×3: N(0, 2 / (9 · 640))
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / (9 * 640))) < 2e-4
    bn = model.backbone.bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.count_nonzero(bn.bias) == 0
    assert build_model("wrn-28-10", 10, (3, 32, 32), "cosine").classifier.weight.shape == (10, 640)


@pytest.mark.parametrize("name", FIELD_MODELS)
def test_forward_backward_on_a_cifar_batch(name):
    torch.manual_seed(0)
    model = build_model(name, 10, (3, 32, 32)).train()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([3, 7])
    start = time.perf_counter()
    logits, h = model.forward_features(x)
    assert logits.shape == (2, 10) and h.shape == (2, model.feature_dim)
    assert model.project(h).shape == (2, 128)
    F.cross_entropy(logits, y).backward()
    assert time.perf_counter() - start < 30  # WRN-34-10: ~5 s on one CPU core
    first_conv = model.backbone.conv1.weight
    assert first_conv.grad is not None and float(first_conv.grad.abs().sum()) > 0
    assert torch.isfinite(model.classifier.weight.grad).all()


def test_preact_resnet18_takes_tiny_imagenet_inputs():
    model = build_model("preact-resnet18", 200, (3, 64, 64)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 200)
    assert reference_parameters(model) == COUNTS["preact-resnet18"] + 190 * 513
