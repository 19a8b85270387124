"""Training recipe pieces (methods.md §2): the LR schedule, augmentation, and the models."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.models import CosineClassifier, PROJECTION_DIM, SmallCNN, build_model
from bench.train import augment, lr_at



# --------------------------------------------------------------------------------------------- lr schedule

RECIPE = {"lr": 0.1, "warmup_epochs": 5, "milestones": [160, 180], "lr_decay": 0.01}


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 0.02), (1, 0.04), (2, 0.06), (3, 0.08), (4, 0.1), (5, 0.1), (100, 0.1), (159, 0.1),
     (160, 1e-3), (179, 1e-3), (180, 1e-5), (199, 1e-5)],
)
def test_lr_at_recipe(epoch, expected):
    assert lr_at(epoch, RECIPE) == pytest.approx(expected, rel=1e-12)


def test_lr_at_without_warmup_and_other_decay():
    config = {"lr": 0.1, "warmup_epochs": 0, "milestones": [16, 18], "lr_decay": 0.1}
    assert [lr_at(e, config) for e in (0, 15, 16, 17, 18, 19)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3])


# --------------------------------------------------------------------------------------------- augment


def _batch(n=6, c=3, h=32, w=32, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_augment_none_is_identity():
    x = _batch()
    out = augment(x, "none", torch.Generator().manual_seed(0))
    assert torch.equal(out, x)
    flat = torch.rand(5, 10)  # non-image inputs are never augmented
    assert torch.equal(augment(flat, "crop-flip", torch.Generator().manual_seed(0)), flat)


def test_augment_flip_is_self_or_mirror():
    x = _batch(n=32)
    out = augment(x, "flip", torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)  # 32 fair coins: both outcomes occur


def _windows(image: torch.Tensor, padding: int):
    """All (dy, dx) windows of the zero-padded image, keyed by offset."""
    _, h, w = image.shape
    padded = nn.functional.pad(image, (padding,) * 4)
    return {(dy, dx): padded[:, dy:dy + h, dx:dx + w]
            for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)}


@pytest.mark.parametrize("h, w", [(32, 32), (8, 10)])
def test_augment_crop_is_a_window_of_the_padded_image(h, w):
    x = _batch(n=6, h=h, w=w, seed=1)
    out = augment(x, "crop", torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets = []
    for o, i in zip(out, x):
        windows = _windows(i, 4)
        assert len(windows) == 81
        hits = [k for k, win in windows.items() if torch.equal(o, win)]
        assert hits, "crop output is not a window of the 4-pixel zero-padded image"
        offsets.append(hits[0])
    assert len(set(offsets)) > 1  # offsets are drawn per image
    # deterministic for a given generator state
    again = augment(x, "crop", torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    other = augment(x, "crop", torch.Generator().manual_seed(4))
    assert not torch.equal(out, other)


def test_augment_crop_flip_is_a_window_or_its_mirror():
    x = _batch(n=8, seed=2)
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    out = augment(x, "crop-flip", gen)
    for o, i in zip(out, x):
        windows = _windows(i, 4).values()
        assert any(torch.equal(o, win) or torch.equal(o, win.flip(-1)) for win in windows)
    gen.set_state(state)
    assert torch.equal(augment(x, "crop-flip", gen), out)


# --------------------------------------------------------------------------------------------- models


def test_resnet18_shapes_and_projection():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, (3, 32, 32))
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, h = model.forward_features(x)
        z = model.project(h)
        plain = model(x)
    assert logits.shape == (2, 10) and h.shape == (2, 512) and model.feature_dim == 512
    assert torch.equal(plain, logits)
    assert z.shape == (2, PROJECTION_DIM) == (2, 128)
    assert torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)
    assert isinstance(model.classifier, nn.Linear)
    assert [m.out_features for m in model.head if isinstance(m, nn.Linear)] == [512, 128]
    # CIFAR stem: 3x3, stride 1, no max-pool
    assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    n_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    assert 11.1e6 < n_params < 11.3e6


def test_cnn_small_and_linear_shapes():
    torch.manual_seed(0)
    cnn = build_model("cnn-small", 10, (1, 8, 8)).eval()
    logits, h = cnn.forward_features(torch.rand(4, 1, 8, 8))
    assert logits.shape == (4, 10) and h.shape == (4, 64)
    z = cnn.project(h)
    assert z.shape == (4, 128) and torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    lin = build_model("linear", 2, (10,))
    x = torch.randn(4, 10)
    logits, h = lin.forward_features(x)
    assert logits.shape == (4, 2) and torch.equal(h, x)
    assert torch.allclose(logits, x @ lin.classifier.weight.T + lin.classifier.bias)
    assert lin.project(h).shape == (4, 128)


@pytest.mark.parametrize("name, shape", [("linear", (10,)), ("cnn-small", (1, 8, 8))])
def test_cosine_classifier_logits_are_cosines(name, shape):
    torch.manual_seed(0)
    model = build_model(name, 5, shape, classifier="cosine").eval()
    assert isinstance(model.classifier, CosineClassifier)
    x = 10 * torch.randn(16, *shape)
    with torch.no_grad():
        logits, h = model.forward_features(x)
    assert logits.shape == (16, 5)
    assert float(logits.abs().max()) <= 1.0 + 1e-6
    w = model.classifier.weight
    expected = (h / h.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    assert torch.allclose(logits, expected, atol=1e-5)


def test_cosplus_head_is_the_references_formula():
    """RoBal's CosPlus (``basic_classifiers.CosPlus_Classifier``, scale 1, gamma 0.03125, bias 0):
    ``(x/‖x‖)·(w/(‖w‖ + γ))ᵀ`` — below the plain cosines, by a factor ‖w‖/(‖w‖ + γ) per class."""
    torch.manual_seed(0)
    model = build_model("linear", 5, (10,), classifier="cosplus").eval()
    x = 10 * torch.randn(16, 10)
    with torch.no_grad():
        logits, h = model.forward_features(x)
        w = model.classifier.weight.double()
        h = h.double()
        expected = (h / h.norm(dim=1, keepdim=True)) @ (w / (w.norm(dim=1, keepdim=True) + 0.03125)).T
    torch.testing.assert_close(logits.double(), expected, rtol=0, atol=1e-6)
    plain = (h / h.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    assert (expected.abs() < plain.abs()).all()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name, shape", [("cnn-small", (1, 8, 8)), ("resnet18", (3, 32, 32))])
def test_same_seed_same_weights(name, shape):
    torch.manual_seed(123)
    a = _state(build_model(name, 10, shape))
    torch.manual_seed(123)
    b = _state(build_model(name, 10, shape))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(124)
    c = _state(build_model(name, 10, shape))
    assert not torch.equal(a["classifier.weight"], c["classifier.weight"])


@pytest.mark.parametrize("classifier", ["linear", "cosine"])
def test_projection_head_is_built_last(classifier):
    """Backbone and classifier weights do not depend on the head: it draws from the RNG after them."""
    torch.manual_seed(7)
    model = build_model("cnn-small", 10, (1, 8, 8), classifier=classifier)
    after_model = torch.rand(3)
    torch.manual_seed(7)
    backbone = SmallCNN(1)
    head_free = nn.Linear(64, 10) if classifier == "linear" else CosineClassifier(64, 10)
    for (k, v), (k2, v2) in zip(model.backbone.state_dict().items(), backbone.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    for (k, v), (k2, v2) in zip(model.classifier.state_dict().items(), head_free.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # the head is the last thing drawn: building it next brings the RNG to the same place
    head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 128))
    assert torch.equal(head[0].weight, model.head[0].weight) and torch.equal(head[2].weight, model.head[2].weight)
    assert torch.equal(torch.rand(3), after_model)
    assert [name for name, _ in model.named_children()] == ["backbone", "classifier", "head"]


def test_using_the_head_does_not_change_logits_or_weights():
    torch.manual_seed(0)
    model = build_model("cnn-small", 10, (1, 8, 8)).eval()
    x = torch.rand(4, 1, 8, 8)
    before = _state(model)
    logits, h = model.forward_features(x)
    model.project(h)
    assert torch.equal(model(x), logits)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
