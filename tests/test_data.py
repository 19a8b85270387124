"""Datasets, imbalance profiles and the training subset (methods.md §1).

Expected counts are the table of methods.md §1, written out literally. The torchvision loaders (CIFAR-10/100,
SVHN) run on tiny fake files in the real on-disk format; only torchvision's md5 check is replaced (by a plain
"file exists" check), so the real loading code path runs and a missing file is still missing.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from bench.data import DATASETS, PROFILE_FORMS, class_counts, derived_seed, parse_profile, prepare, select_subset
from bench.data.subset import subset_hash
from bench.errors import BenchError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]



# --------------------------------------------------------------------------------------------- profiles


@pytest.mark.parametrize(
    "profile, expected, total",
    [
        ("step-10", [5000, 5000, 5000, 5000, 5000, 500, 500, 500, 500, 500], 27_500),
        ("step-100", [5000, 5000, 5000, 5000, 5000, 50, 50, 50, 50, 50], 25_250),
        ("exp-10", [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500], 20_431),
        ("exp-100", [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], 12_406),
    ],
)
def test_cifar10_counts_match_spec_table(profile, expected, total):
    counts = class_counts(profile, 10, 5000)
    assert counts == expected
    assert sum(counts) == total
    assert all(isinstance(c, int) for c in counts)


def test_cifar100_exp10_counts():
    counts = class_counts("exp-10", 100, 500)
    assert counts[:5] == [500, 488, 477, 466, 455]
    assert len(counts) == 100 and counts[-1] == 50
    assert sum(counts) == 19_573
    assert counts == sorted(counts, reverse=True)  # class 0 is the most frequent


def test_balanced_counts_and_binary_forms():
    assert class_counts("balanced", 10, 5000) == [5000] * 10
    assert class_counts("counts:7,6,5", 3, 100) == [7, 6, 5]
    assert class_counts("binary:cat,horse:5000,50", 2, 5000) == [5000, 50]
    p = parse_profile("binary:3,7:5000,50")
    assert p.kind == "binary" and p.classes == ("3", "7") and p.counts == (5000, 50)
    p = parse_profile(" step-10 ")
    assert p.kind == "step" and p.factor == 10.0
    p = parse_profile("exp-2.5")
    assert p.kind == "exp" and p.factor == 2.5


def test_step_one_and_exp_one_are_balanced():
    assert class_counts("step-1", 10, 40) == [40] * 10
    assert class_counts("exp-1", 10, 40) == [40] * 10


@pytest.mark.parametrize("bad", ["exp-", "foo", "step-", "binary:3:100", "binary:3,4:10",
                                 "step-x", ""])
def test_unknown_profile_forms_list_valid_forms(bad):
    with pytest.raises(BenchError) as info:
        class_counts(bad, 10, 5000)
    message = str(info.value)
    assert "valid forms" in message
    assert "step-K" in message and "exp-K" in message and "balanced" in message
    assert "counts:" in message and "binary:" in message


# The brief asks that *every* bad profile's message list the valid forms. These two are rejected with a
# BenchError, but the message names only the specific problem, not the forms (see the report).
@pytest.mark.parametrize("bad, num_classes", [("step-0.5", 10), ("counts:1,2,3", 10)])
def test_bad_profile_values_raise_bench_error(bad, num_classes):
    with pytest.raises(BenchError) as info:
        class_counts(bad, num_classes, 5000)
    assert bad.split(":")[0] in str(info.value) or bad in str(info.value)



@pytest.mark.parametrize("bad, num_classes", [("step-0.5", 10), ("counts:1,2,3", 10)])
def test_bad_profile_values_message_lists_valid_forms(bad, num_classes):
    with pytest.raises(BenchError) as info:
        class_counts(bad, num_classes, 5000)
    assert PROFILE_FORMS in str(info.value)


def test_bad_count_values_raise():
    for bad in ("counts:1,0,3", "counts:a,b", "counts:", "binary:3,7:10,0"):
        with pytest.raises(BenchError):
            parse_profile(bad)


# --------------------------------------------------------------------------------------------- subset


def test_select_subset_counts_and_errors():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 5)
    kept = select_subset(labels, [4, 3, 1], seed=1)
    assert np.array_equal(np.bincount(labels[kept], minlength=3), [4, 3, 1])
    assert np.array_equal(kept, np.sort(kept)) and len(set(kept.tolist())) == kept.size
    assert np.array_equal(kept, select_subset(labels, [4, 3, 1], seed=1))
    with pytest.raises(BenchError, match="class 1"):
        select_subset(labels, [4, 4, 1], seed=1)


def test_derived_seed_is_stable_and_distinct():
    assert derived_seed("subset", "digits", "step-10", 0) == derived_seed("subset", "digits", "step-10", 0)
    assert derived_seed("subset", "digits", "step-10", 0) != derived_seed("subset", "digits", "step-10", 1)
    assert 0 <= derived_seed("x") < 2**63


@pytest.fixture(scope="module")
def digits_raw():
    return DATASETS.get("digits")().load(None, False, {})


def test_prepare_is_deterministic_and_depends_on_seed(tmp_path, digits_raw):
    a = prepare("digits", "step-10", 0, root=tmp_path)
    b = prepare("digits", "step-10", 0, root=tmp_path)
    c = prepare("digits", "step-10", 1, root=tmp_path)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.subset_hash == b.subset_hash
    assert a.subset_hash != c.subset_hash
    assert not torch.equal(a.train_x, c.train_x)
    assert a.train_counts == c.train_counts
    assert torch.equal(torch.bincount(a.train_y), torch.bincount(c.train_y))
    # The kept indices are a function of (dataset, imbalance, seed) only.
    n_max = int(np.bincount(digits_raw.train_y).min())
    counts = class_counts("step-10", 10, n_max)
    kept = select_subset(digits_raw.train_y, counts, derived_seed("subset", "digits", "step-10", 0))
    assert a.subset_hash == subset_hash(kept)
    assert torch.equal(a.train_x, torch.as_tensor(digits_raw.train_x[kept]) / 16)


@pytest.mark.parametrize("imbalance", ["step-10", "exp-10", "balanced"])
def test_prepared_train_counts_follow_profile(tmp_path, digits_raw, imbalance):
    data = prepare("digits", imbalance, 3, root=tmp_path)
    n_max = int(np.bincount(digits_raw.train_y).min())
    expected = class_counts(imbalance, 10, n_max)
    assert data.train_counts == expected
    assert torch.bincount(data.train_y, minlength=10).tolist() == expected
    assert data.train_x.shape == (sum(expected), 1, 8, 8)
    # Test set untouched: every test image, all classes, as balanced as the source split.
    assert torch.equal(data.test_y, torch.as_tensor(digits_raw.test_y))
    assert torch.equal(data.test_x, torch.as_tensor(digits_raw.test_x) / 16)
    assert torch.bincount(data.test_y, minlength=10).tolist() == np.bincount(digits_raw.test_y).tolist()


def test_prepare_n_max_argument(tmp_path):
    data = prepare("digits", "step-10", 0, root=tmp_path, args={"n_max": 50})
    assert data.train_counts == [50] * 5 + [5] * 5
    with pytest.raises(BenchError, match="training set has"):
        prepare("digits", "balanced", 0, root=tmp_path, args={"n_max": 500})


# --------------------------------------------------------------------------------------------- digits


def test_digits_pixels_classes_and_fixed_split(tmp_path, digits_raw):
    again = DATASETS.get("digits")().load(None, False, {})
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(digits_raw, field), getattr(again, field))
    assert len(digits_raw.class_names) == 10
    assert digits_raw.train_y.size + digits_raw.test_y.size == 1797
    # stratified: per-class train and test sizes differ by at most one
    assert np.abs(np.bincount(digits_raw.train_y) - np.bincount(digits_raw.test_y)).max() <= 1
    data = prepare("digits", "balanced", 0, root=tmp_path)
    for x in (data.train_x, data.test_x):
        assert x.dtype == torch.float32
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(data.train_y.tolist()) == set(range(10)) == set(data.test_y.tolist())
    assert data.bounds == (0.0, 1.0)
    assert data.class_names == [str(c) for c in range(10)]


# --------------------------------------------------------------------------------------------- gaussian


def test_gaussian_two_classes_means_and_no_bounds(tmp_path):
    eta, d = 0.7, 6
    data = prepare("gaussian", "balanced", 0, root=tmp_path, args={"d": d, "eta": eta, "n_max": 1500, "n_test": 500})
    assert data.bounds is None
    assert data.class_names == ["+1", "-1"]
    assert data.train_x.shape == (3000, d) and data.test_x.shape == (1000, d)
    assert torch.bincount(data.train_y).tolist() == [1500, 1500]
    m0 = data.train_x[data.train_y == 0].mean(0)
    m1 = data.train_x[data.train_y == 1].mean(0)
    # std of a coordinate mean is sigma / sqrt(1500) ~ 0.026
    assert torch.allclose(m0, torch.full((d,), eta), atol=0.12)
    assert torch.allclose(m1, torch.full((d,), -eta), atol=0.12)
    assert abs(float(m0.mean()) - eta) < 0.05 and abs(float(m1.mean()) + eta) < 0.05
    # imbalanced: n_max and n_max / K
    imb = prepare("gaussian", "step-10", 0, root=tmp_path, args={"d": d, "n_max": 200, "n_test": 50})
    assert imb.train_counts == [200, 20] and torch.bincount(imb.train_y).tolist() == [200, 20]
    with pytest.raises(BenchError):
        prepare("gaussian", "balanced", 0, root=tmp_path, args={"sigma": 0})


# --------------------------------------------------------------------------------------------- binary


def test_binary_on_digits_by_index(tmp_path, digits_raw):
    data = prepare("digits", "binary:3,8:60,6", 0, root=tmp_path)
    assert data.class_names == ["3", "8"]
    assert data.train_counts == [60, 6]
    assert torch.bincount(data.train_y).tolist() == [60, 6]
    mask = np.isin(digits_raw.test_y, [3, 8])
    assert torch.equal(data.test_y, torch.as_tensor((digits_raw.test_y[mask] == 8).astype(np.int64)))
    assert torch.equal(data.test_x, torch.as_tensor(digits_raw.test_x[mask]) / 16)
    # relabelling: class 0 images are 3s, class 1 images are 8s (each kept image is in the source train set)
    src = torch.as_tensor(digits_raw.train_x) / 16
    src_y = torch.as_tensor(digits_raw.train_y)
    for x, y in zip(data.train_x[:10], data.train_y[:10]):
        hit = (src == x).flatten(1).all(1)
        assert set(src_y[hit].tolist()) == {3 if int(y) == 0 else 8}


def test_binary_unknown_class_lists_names(tmp_path):
    with pytest.raises(BenchError, match="valid: 0, 1"):
        prepare("digits", "binary:3,cat:10,1", 0, root=tmp_path)
    with pytest.raises(BenchError):
        prepare("digits", "binary:3,12:10,1", 0, root=tmp_path)


# --------------------------------------------------------------------------------------------- torchvision


def _exists_only(fpath, md5=None):
    """Stand-in for torchvision's md5 check: fake files cannot match the real checksums."""
    return os.path.isfile(fpath)


@pytest.fixture
def no_md5(monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.svhn as tv_svhn

    monkeypatch.setattr(tv_cifar, "check_integrity", _exists_only)
    monkeypatch.setattr(tv_svhn, "check_integrity", _exists_only)


def _images(rng, n):
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path, obj):
    # The real files are Python 2 pickles whose str keys load as str under encoding="latin1".
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_fake_cifar10(root, per_class_train=20, per_class_test=4):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = rng.permutation(np.repeat(np.arange(10), per_class_train))
    data = _images(rng, labels.size)
    for i, chunk in enumerate(np.array_split(np.arange(labels.size), 5)):
        _dump(folder / f"data_batch_{i + 1}",
              {"batch_label": f"training batch {i + 1} of 5", "data": data[chunk], "labels": labels[chunk].tolist()})
    test_labels = np.repeat(np.arange(10), per_class_test)
    test_data = _images(rng, test_labels.size)
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test_data,
                                  "labels": test_labels.tolist()})
    _dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072})
    return data, labels, test_data, test_labels


def make_fake_cifar100(root, per_class_train=3, per_class_test=1):
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(100), per_class_train)
    _dump(folder / "train", {"data": _images(rng, labels.size), "fine_labels": labels.tolist(),
                             "coarse_labels": (labels // 5).tolist()})
    test_labels = np.repeat(np.arange(100), per_class_test)
    _dump(folder / "test", {"data": _images(rng, test_labels.size), "fine_labels": test_labels.tolist(),
                            "coarse_labels": (test_labels // 5).tolist()})
    _dump(folder / "meta", {"fine_label_names": [f"name{c}" for c in range(100)],
                            "coarse_label_names": [f"super{c}" for c in range(20)]})


def make_fake_svhn(root, train_counts, test_per_class=3):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    folder = root / "svhn"
    folder.mkdir(parents=True)
    out = {}
    for split, digits in (("train", np.repeat(np.arange(10), train_counts)),
                          ("test", np.repeat(np.arange(10), test_per_class))):
        digits = rng.permutation(digits)
        x = rng.integers(0, 256, size=(32, 32, 3, digits.size), dtype=np.uint8)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # SVHN labels digit 0 as 10
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, digits)
    return out


def test_fake_cifar10_through_torchvision(tmp_path, no_md5):
    data, labels, test_data, test_labels = make_fake_cifar10(tmp_path)
    prepared = prepare("cifar10", "step-10", 0, root=tmp_path, args={"n_max": 20})
    assert prepared.class_names == CIFAR10_NAMES
    assert prepared.train_counts == [20] * 5 + [2] * 5
    assert torch.bincount(prepared.train_y, minlength=10).tolist() == [20] * 5 + [2] * 5
    assert prepared.train_x.shape == (110, 3, 32, 32) and prepared.train_x.dtype == torch.float32
    assert prepared.test_x.shape == (40, 3, 32, 32)
    assert torch.equal(prepared.test_y, torch.as_tensor(test_labels))
    # pixels / 255 and CHW layout: row-major [3, 32, 32] as in the files
    expected_test = torch.as_tensor(test_data.reshape(-1, 3, 32, 32).astype(np.float32)) / 255
    assert torch.allclose(prepared.test_x, expected_test)
    assert 0.0 <= float(prepared.train_x.min()) and float(prepared.train_x.max()) <= 1.0
    assert float(prepared.train_x.max()) > 0.99  # really scaled from 0..255, not left as bytes nor /255 twice
    assert prepared.bounds == (0.0, 1.0)
    # every kept training image is a source image with its own label
    src = torch.as_tensor(data.reshape(-1, 3, 32, 32).astype(np.float32)) / 255
    for x, y in zip(prepared.train_x[:8], prepared.train_y[:8]):
        hit = torch.nonzero(((src - x).abs() < 1e-6).flatten(1).all(1)).flatten()
        assert hit.numel() == 1 and int(labels[hit[0]]) == int(y)
    # default n_max is the smallest class of the source
    default = prepare("cifar10", "balanced", 0, root=tmp_path)
    assert default.train_counts == [20] * 10


def test_fake_cifar10_binary_by_name(tmp_path, no_md5):
    make_fake_cifar10(tmp_path)
    by_name = prepare("cifar10", "binary:cat,horse:20,2", 0, root=tmp_path)
    by_index = prepare("cifar10", "binary:3,7:20,2", 0, root=tmp_path)
    for data in (by_name, by_index):
        assert data.class_names == ["cat", "horse"]
        assert data.train_counts == [20, 2]
        assert torch.bincount(data.train_y).tolist() == [20, 2]
        assert data.test_y.tolist() == [0] * 4 + [1] * 4  # only cat and horse test images, relabelled
    assert torch.equal(by_name.test_x, by_index.test_x)


def test_fake_cifar100_through_torchvision(tmp_path, no_md5):
    make_fake_cifar100(tmp_path)
    data = prepare("cifar100", "exp-3", 0, root=tmp_path)
    assert data.train_counts == class_counts("exp-3", 100, 3)
    assert torch.bincount(data.train_y, minlength=100).tolist() == data.train_counts
    assert data.test_x.shape == (100, 3, 32, 32) and data.test_y.tolist() == list(range(100))
    assert len(data.class_names) == 100
    assert 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0


def test_fake_svhn_through_torchvision(tmp_path, no_md5):
    train_counts = [9, 12, 8, 7, 6, 10, 6, 8, 11, 5]  # imbalanced like the real split; smallest class = 5
    fake = make_fake_svhn(tmp_path, train_counts)
    data = prepare("svhn", "balanced", 0, root=tmp_path)
    assert data.train_counts == [5] * 10  # n_max = smallest class
    assert torch.bincount(data.train_y, minlength=10).tolist() == [5] * 10
    x, digits = fake["test"]
    assert torch.equal(data.test_y, torch.as_tensor(digits))  # label 10 became digit 0
    assert data.test_x.shape == (30, 3, 32, 32)
    expected = torch.as_tensor(np.transpose(x, (3, 2, 0, 1)).astype(np.float32)) / 255
    assert torch.allclose(data.test_x, expected)
    assert 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0
    step = prepare("svhn", "step-5", 0, root=tmp_path, args={"n_max": 5})
    assert step.train_counts == [5] * 5 + [1] * 5


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                          ("svhn", "svhn")])
def test_missing_files_name_folder_and_remedy(tmp_path, name, folder):
    plugin = DATASETS.get(name)()
    with pytest.raises(BenchError) as info:
        plugin.check_available(tmp_path, False)
    message = str(info.value)
    assert str(tmp_path / folder) in message
    assert "put" in message and "download" in message
    assert plugin.url in message
    with pytest.raises(BenchError):
        prepare(name, "balanced", 0, root=tmp_path)


def test_partial_cifar_files_are_missing(tmp_path, no_md5):
    make_fake_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(BenchError, match="cifar-10-batches-py are incomplete or corrupt") as info:
        DATASETS.get("cifar10")().check_available(tmp_path, False)
    assert "files not found" not in str(info.value)  # they are there: the message says what is wrong with them
