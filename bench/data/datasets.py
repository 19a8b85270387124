"""Datasets as registered plug-ins: real torchvision loaders for CIFAR-10/100 and SVHN, scikit-learn's bundled
8×8 digits for offline work, and the two-Gaussian mixture of the paper's Section 3.

A dataset gives raw arrays (:class:`RawData`) plus its own cell defaults (model, ε and α for its pixel scale,
epochs, batch size, schedule) that a suite can override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.errors import BenchError
from bench.registry import Registry

CIFAR_RECIPE: dict[str, Any] = {
    # methods.md §2: the authors' recipe, per key.
    "model": "resnet18",
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_epochs": 5,  # linear warm-up 0.02 -> 0.1 over epochs 0..4
    "milestones": [160, 180],  # lr x lr_decay at the start of each
    "lr_decay": 0.01,
    "augment": "crop-flip",  # random crop 32, 4-pixel zero padding, horizontal flip
    "train_attack": {"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 10},
    "eval_attacks": [{"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 20}],
}


@dataclass
class RawData:
    """Arrays as loaded: images ``[N, C, H, W]`` (or ``[N, D]``) and int labels; ``scale`` maps them to [0, 1]."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]
    scale: float = 1.0
    bounds: tuple[float, float] | None = (0.0, 1.0)  # valid input range the attack clips to; None = unbounded


class Dataset:
    """Base of every dataset plug-in. ``params`` are the dataset's own options (``dataset_args`` in a suite)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    num_classes: ClassVar[int] = 0
    defaults: ClassVar[dict[str, Any]] = {}
    params: ClassVar[dict[str, Any]] = {}  # allowed dataset_args with their defaults

    def load(self, root: Path, download: bool, args: dict[str, Any]) -> RawData:
        raise NotImplementedError

    def check_available(self, root: Path, download: bool) -> None:
        """Raise a :class:`BenchError` saying where to put the files when they are missing."""

    def n_max(self, raw: RawData, args: dict[str, Any]) -> int:
        """Per-class count of the balanced source: the smallest class (5000 for CIFAR-10, 500 for CIFAR-100)."""
        if args.get("n_max"):
            return int(args["n_max"])
        return int(np.bincount(raw.train_y, minlength=len(raw.class_names)).min())


DATASETS: Registry[type[Dataset]] = Registry("dataset")


def _missing(name: str, folder: Path, what: str, url: str) -> BenchError:
    return BenchError(
        f"dataset {name}: files not found under {folder}; put {what} there (from {url}), "
        "or allow downloading with `download = true` in bench.toml or `bench run --download`"
    )


class _TorchvisionImages(Dataset):
    """Shared loading through torchvision's own dataset classes (integrity checks included)."""

    folder: ClassVar[str] = ""
    what: ClassVar[str] = ""
    url: ClassVar[str] = ""

    def _open(self, root: Path, train: bool, download: bool):
        raise NotImplementedError

    def _arrays(self, ds) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def check_available(self, root: Path, download: bool) -> None:
        self._open_checked(root, True, download)

    def _open_checked(self, root: Path, train: bool, download: bool):
        try:
            return self._open(root, train, download)
        except RuntimeError:
            raise _missing(self.name, root / self.folder, self.what, self.url) from None
        except OSError as exc:
            raise BenchError(f"dataset {self.name}: cannot read {root}: {exc}") from None

    def load(self, root: Path, download: bool, args: dict[str, Any]) -> RawData:
        train = self._open_checked(root, True, download)
        train_x, train_y = self._arrays(train)
        test_x, test_y = self._arrays(self._open_checked(root, False, download))
        return RawData(train_x, train_y, test_x, test_y, self._class_names(train), scale=1 / 255)

    def _class_names(self, ds) -> list[str]:
        """The dataset's own class names where torchvision reads them (CIFAR meta files), else indices."""
        names = getattr(ds, "classes", None)
        return [str(c) for c in names] if names else [str(c) for c in range(self.num_classes)]


@DATASETS.register("cifar10")
class CIFAR10(_TorchvisionImages):
    description = "CIFAR-10, 32x32 RGB, 10 classes (torchvision)"
    num_classes = 10
    defaults = CIFAR_RECIPE
    params = {"n_max": 0}
    folder = "cifar-10-batches-py"
    what = "cifar-10-python.tar.gz extracted (cifar-10-batches-py/)"
    url = "https://www.cs.toronto.edu/~kriz/cifar.html"

    def _open(self, root: Path, train: bool, download: bool):
        from torchvision.datasets import CIFAR10 as TV

        return TV(str(root), train=train, download=download)

    def _arrays(self, ds) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets, dtype=np.int64)


@DATASETS.register("cifar100")
class CIFAR100(CIFAR10):
    description = "CIFAR-100, 32x32 RGB, 100 classes (torchvision)"
    num_classes = 100
    folder = "cifar-100-python"
    what = "cifar-100-python.tar.gz extracted (cifar-100-python/)"

    def _open(self, root: Path, train: bool, download: bool):
        from torchvision.datasets import CIFAR100 as TV

        return TV(str(root), train=train, download=download)


@DATASETS.register("svhn")
class SVHN(_TorchvisionImages):
    """SVHN's training split is itself imbalanced; ``n_max`` defaults to its smallest class (methods.md §1)."""

    description = "SVHN, 32x32 RGB digits, 10 classes (torchvision); alpha 1/255"
    num_classes = 10
    defaults = {
        **CIFAR_RECIPE,
        "train_attack": {"kind": "pgd", "eps": 8 / 255, "alpha": 1 / 255, "steps": 10},
        "eval_attacks": [{"kind": "pgd", "eps": 8 / 255, "alpha": 1 / 255, "steps": 20}],
    }
    params = {"n_max": 0}
    folder = "svhn"
    what = "train_32x32.mat and test_32x32.mat"
    url = "http://ufldl.stanford.edu/housenumbers/"

    def _open(self, root: Path, train: bool, download: bool):
        from torchvision.datasets import SVHN as TV

        return TV(str(root / self.folder), split="train" if train else "test", download=download)

    def _arrays(self, ds) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(ds.data), np.asarray(ds.labels, dtype=np.int64)


@DATASETS.register("digits")
class Digits(Dataset):
    """scikit-learn's bundled 8×8 digits (1,797 images, offline), split once 50/50, stratified, fixed seed."""

    description = "scikit-learn 8x8 digits, 10 classes, bundled (offline default)"
    num_classes = 10
    defaults = {
        "model": "cnn-small",
        "epochs": 15,
        "batch_size": 64,  # ~8 steps an epoch on the ~500 kept images
        "lr": 0.05,  # LDAM's s = 30 on a plain linear head diverges at 0.1 with so few warm-up steps
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "warmup_epochs": 2,
        # DRW starts at the first milestone. With ~40 steps left, the recipe's x0.01 decay would leave the
        # class-balanced weights no learning rate to act with, so digits decays by x0.1.
        "milestones": [10, 13],
        "lr_decay": 0.1,
        "augment": "none",
        # Pixels are multiples of 1/16 after scaling: ε = 0.1 is ~1.6 grey levels, α = ε/4 as 2/255 vs 8/255.
        "train_attack": {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 10},
        "eval_attacks": [{"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 20}],
    }
    params = {"n_max": 0}
    split_seed: ClassVar[int] = 0

    def load(self, root: Path, download: bool, args: dict[str, Any]) -> RawData:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        images = bunch.images.astype(np.float32)[:, None, :, :]  # values 0..16
        labels = bunch.target.astype(np.int64)
        tr_x, te_x, tr_y, te_y = train_test_split(
            images, labels, test_size=0.5, stratify=labels, random_state=self.split_seed
        )
        return RawData(tr_x, tr_y, te_x, te_y, [str(c) for c in range(10)], scale=1 / 16)


@DATASETS.register("gaussian")
class Gaussian(Dataset):
    """Section 3's mixture: class 0 ~ N(+μ, σ²I), class 1 ~ N(−μ, σ²I), μ = (η, …, η) in d dimensions.

    Drawn once from ``data_seed``; the imbalance profile then keeps ``n_max`` and ``n_max / K`` training points.
    Inputs are unbounded, so the attack does not clip to [0, 1].
    """

    description = "two-class Gaussian mixture of the paper's Section 3 (d, eta, sigma)"
    num_classes = 2
    defaults = {
        "model": "linear",
        "epochs": 20,
        "batch_size": 256,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_epochs": 0,
        "milestones": [16, 18],
        "lr_decay": 0.1,
        "augment": "none",
        "train_attack": {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 10},
        "eval_attacks": [{"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 20}],
    }
    params = {"d": 10, "eta": 0.5, "sigma": 1.0, "n_max": 2000, "n_test": 2000, "data_seed": 0}

    def load(self, root: Path, download: bool, args: dict[str, Any]) -> RawData:
        p = {**self.params, **args}
        d, eta, sigma = int(p["d"]), float(p["eta"]), float(p["sigma"])
        if d < 1 or sigma <= 0:
            raise BenchError(f"dataset gaussian: need d >= 1 and sigma > 0, got d={d}, sigma={sigma}")
        rng = np.random.default_rng(int(p["data_seed"]))

        def draw(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
            y = np.repeat(np.arange(2, dtype=np.int64), n_per_class)
            sign = np.where(y == 0, 1.0, -1.0)[:, None]
            x = sign * eta + sigma * rng.standard_normal((y.size, d))
            return x.astype(np.float32), y

        tr_x, tr_y = draw(int(p["n_max"]))
        te_x, te_y = draw(int(p["n_test"]))
        return RawData(tr_x, tr_y, te_x, te_y, ["+1", "-1"], scale=1.0, bounds=None)


@dataclass(frozen=True)
class DatasetInfo:
    """What ``bench list datasets`` shows."""

    name: str
    description: str
    defaults: dict = field(default_factory=dict)


def dataset_infos() -> list[DatasetInfo]:
    return [DatasetInfo(n, DATASETS.get(n).description, dict(DATASETS.get(n).defaults)) for n in DATASETS]
