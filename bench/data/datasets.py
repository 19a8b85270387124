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
    "milestones": [0.8, 0.9],  # fractions of the run: lr x lr_decay from epochs 160 and 180 of 200
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


@dataclass(frozen=True)
class Metadata:
    """What is known of a dataset without reading its files; a suite's cells are checked against it."""

    num_classes: int
    class_names: tuple[str, ...] = ()  # in label order, as ``load`` names them; () = known only once loaded
    train_counts: tuple[int, ...] = ()  # training images per class; () = known only once loaded
    test_counts: tuple[int, ...] = ()  # test images per class; () = known only once loaded


def _whole(minimum: int) -> tuple[str, Any]:
    """An ``arg_rules`` entry: a whole number no smaller than ``minimum``."""
    return f"a whole number >= {minimum}", lambda v: float(v).is_integer() and v >= minimum


class Dataset:
    """Base of every dataset plug-in. ``params`` are the dataset's own options (``dataset_args`` in a suite).

    The metadata class variables (``class_names``, ``train_counts``, ``test_counts``, ``bounds``, ``images``) are
    facts of the source, declared so that a suite is checked before any file is read (:meth:`metadata`)."""

    name: ClassVar[str] = ""  # set by registration
    description: ClassVar[str] = ""
    num_classes: ClassVar[int] = 0
    defaults: ClassVar[dict[str, Any]] = {}
    params: ClassVar[dict[str, Any]] = {}  # allowed dataset_args with their defaults
    # What each dataset_args value must be: (what is allowed, test of a number); n_max 0 = the smallest class.
    arg_rules: ClassVar[dict[str, tuple[str, Any]]] = {"n_max": _whole(0)}
    class_names: ClassVar[tuple[str, ...]] = ()
    train_counts: ClassVar[tuple[int, ...]] = ()
    test_counts: ClassVar[tuple[int, ...]] = ()
    bounds: ClassVar[tuple[float, float] | None] = (0.0, 1.0)  # input range (pixels scaled); None = unbounded
    images: ClassVar[bool] = True  # inputs are images [C, H, W]; False: vectors [D] (no crop, no convolutions)

    @classmethod
    def metadata(cls, args: dict[str, Any]) -> Metadata:
        """The classes and images per class of the source, without reading it (``args``: its dataset_args)."""
        return Metadata(cls.num_classes, cls.class_names, cls.train_counts, cls.test_counts)

    @classmethod
    def check_args(cls, args: dict[str, Any], where: str) -> None:
        """One line naming the first ``dataset_args`` value (numbers already parsed) that ``arg_rules`` refuses."""
        for key, value in args.items():
            allowed, ok = cls.arg_rules.get(key, ("", None))
            if ok is not None and not ok(value):
                raise BenchError(f"{where}: dataset_args.{key} = {value!r} is not allowed for {cls.name}; "
                                 f"must be {allowed}")

    def load(self, root: Path, download: bool, args: dict[str, Any]) -> RawData:
        raise NotImplementedError

    def check_available(self, root: Path, download: bool) -> None:
        """Raise a :class:`BenchError` saying where to put the files when they are missing."""

    def n_max(self, raw: RawData, args: dict[str, Any]) -> int:
        """Per-class count of the balanced source: the smallest class (5000 for CIFAR-10, 500 for CIFAR-100)."""
        if args.get("n_max"):
            return int(args["n_max"])
        return int(np.bincount(raw.train_y, minlength=len(raw.class_names)).min())


DATASETS: Registry[type[Dataset]] = Registry("dataset", stamp="name")


def _missing(name: str, folder: Path, what: str, url: str) -> BenchError:
    return BenchError(
        f"dataset {name}: files not found under {folder}; put {what} there (from {url}), "
        "or allow downloading with `download = true` in bench.toml or `bench run --download`"
    )


CIFAR100_NAMES = (  # the fine labels in label order (the meta file's fine_label_names)
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
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
            if (root / self.folder).is_dir() and any((root / self.folder).iterdir()):
                raise BenchError(f"dataset {self.name}: the files under {root / self.folder} are incomplete or corrupt "
                                 f"(torchvision's checksum check failed); extract {self.what} there again "
                                 f"(from {self.url})") from None
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
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    train_counts = (5000,) * 10
    test_counts = (1000,) * 10
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
    class_names = CIFAR100_NAMES
    train_counts = (500,) * 100
    test_counts = (100,) * 100
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
    # Digits 0-9 (torchvision's label 10 is digit 0): the train split's own imbalance, and the test split's.
    class_names = tuple(str(c) for c in range(10))
    train_counts = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)
    test_counts = (1744, 5099, 4149, 2882, 2523, 2384, 1977, 2019, 1660, 1595)
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
    class_names = tuple(str(c) for c in range(10))
    train_counts = (89, 91, 89, 91, 90, 91, 90, 90, 87, 90)  # the fixed 50/50 split (tests/test_validation.py)
    test_counts = (89, 91, 88, 92, 91, 91, 91, 89, 87, 90)
    defaults = {
        "model": "cnn-small",
        "epochs": 15,
        "batch_size": 64,  # ~8 steps an epoch on the ~500 kept images
        "lr": 0.05,  # LDAM's s = 30 on a plain linear head diverges at 0.1 with so few warm-up steps
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "warmup_epochs": 2,
        # DRW starts at the first milestone. With ~40 steps left, the recipe's x0.01 decay would leave the
        # class-balanced weights no learning rate to act with, so digits decays by x0.1. Fractions of the run:
        # epochs 10 and 13 of 15.
        "milestones": [2 / 3, 13 / 15],
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
    class_names = ("+1", "-1")
    bounds = None
    images = False
    defaults = {
        "model": "linear",
        "epochs": 20,
        "batch_size": 256,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_epochs": 0,
        "milestones": [0.8, 0.9],  # epochs 16 and 18 of 20
        "lr_decay": 0.1,
        "augment": "none",
        "train_attack": {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 10},
        "eval_attacks": [{"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 20}],
    }
    params = {"d": 10, "eta": 0.5, "sigma": 1.0, "n_max": 2000, "n_test": 2000, "data_seed": 0}
    arg_rules = {"d": _whole(1), "sigma": ("> 0", lambda v: v > 0), "n_max": _whole(1), "n_test": _whole(1),
                 "data_seed": _whole(0)}

    @classmethod
    def metadata(cls, args: dict[str, Any]) -> Metadata:
        """``n_max`` training and ``n_test`` test points are drawn per class."""
        p = {**cls.params, **args}
        return Metadata(2, cls.class_names, (int(p["n_max"]),) * 2, (int(p["n_test"]),) * 2)

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


# -- Tiny-ImageNet (issue 19) ---------------------------------------------------------------------------------------
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@DATASETS.register("tiny-imagenet")
class TinyImageNet(Dataset):
    """Tiny-ImageNet-200 from the standard ``tiny-imagenet-200/`` folder under the data root; its labelled
    validation split (``val/``, 50 images a class) is the test set, as in AT-BSL.

    Classes are the ``wnids.txt`` ids in sorted order (torchvision ``ImageFolder``'s order on ``train/``), so class 0
    is ``n01443537`` and the long-tailed profiles shrink the later ids; a class's name is the first synonym of its
    ``words.txt`` line (the id itself when absent; a repeated name gets its id appended). Training images are
    ``train/<wnid>/images/*.JPEG`` in file-name order, test images ``val/images/`` in ``val_annotations.txt`` order;
    every image is decoded as 64×64 RGB (the few greyscale files are converted). The decoded arrays are cached once
    as ``tiny-imagenet-200.npz`` beside the folder (written atomically) and reused while the folder's file list is
    unchanged. Defaults: the CIFAR recipe (ε 8/255, α 2/255, crop-flip with 4-pixel padding) with PreAct ResNet-18;
    ``n_max`` = the smallest class (500).
    """

    name = "tiny-imagenet"  # also stamped by the registry
    description = "Tiny-ImageNet-200, 64x64 RGB, 200 classes (tiny-imagenet-200/ folder; val split = test set)"
    num_classes = 200
    train_counts = (500,) * 200  # class names are known once words.txt is read
    test_counts = (50,) * 200
    defaults = {**CIFAR_RECIPE, "model": "preact-resnet18"}
    params = {"n_max": 0}
    folder: ClassVar[str] = "tiny-imagenet-200"
    what: ClassVar[str] = "tiny-imagenet-200.zip extracted (tiny-imagenet-200/ with train/, val/, wnids.txt, words.txt)"
    url: ClassVar[str] = TINY_IMAGENET_URL
    cache_version: ClassVar[int] = 1
    image_size: ClassVar[int] = 64

    def check_available(self, root: Path, download: bool) -> None:
        base = Path(root) / self.folder
        needed = ("wnids.txt", "train", "val/val_annotations.txt", "val/images")
        missing = [n for n in needed if not (base / n).exists()]
        if missing:
            what = "" if len(missing) == len(needed) else f" ({', '.join(missing)} missing)"
            raise BenchError(
                f"dataset {self.name}: files not found under {base}{what}; put {self.what} there (from {self.url}); "
                "bench does not download it"
            )

    def load(self, root: Path, download: bool, args: dict[str, Any]) -> RawData:
        import hashlib

        self.check_available(root, download)
        base = Path(root) / self.folder
        wnids = sorted({w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()})
        train_files: list[Path] = []
        train_y: list[int] = []
        for label, wnid in enumerate(wnids):
            images = base / "train" / wnid / "images"
            names = sorted(n for n in _listdir(images, self.name) if n.lower().endswith((".jpeg", ".jpg", ".png")))
            train_files += [images / n for n in names]
            train_y += [label] * len(names)
        index = {w: i for i, w in enumerate(wnids)}
        test_files, test_y = [], []
        for n, line in enumerate((base / "val" / "val_annotations.txt").read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or parts[1] not in index:
                raise BenchError(f"dataset {self.name}: {base / 'val' / 'val_annotations.txt'} line {n}: "
                                 f"expected '<file> <wnid> …' with a wnid of wnids.txt, got {line.strip()!r}")
            test_files.append(base / "val" / "images" / parts[0])
            test_y.append(index[parts[1]])
        listing = "\n".join([*wnids, *(str(p.relative_to(base)) for p in train_files + test_files)])
        signature = f"v{self.cache_version}:" + hashlib.sha256(listing.encode()).hexdigest()
        cache = Path(root) / f"{self.folder}.npz"
        arrays = _read_cache(cache, signature)
        if arrays is None:
            arrays = {"train_x": self._decode(train_files), "test_x": self._decode(test_files)}
            _write_cache(cache, signature, arrays)
        return RawData(arrays["train_x"], np.asarray(train_y, dtype=np.int64), arrays["test_x"],
                       np.asarray(test_y, dtype=np.int64), _class_names(base / "words.txt", wnids), scale=1 / 255)

    def _decode(self, files: list[Path]) -> np.ndarray:
        """``[N, 3, 64, 64]`` uint8, decoded on a few threads (PIL releases the GIL while decoding)."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        from PIL import Image

        size = self.image_size

        def read(path: Path) -> np.ndarray:
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            except OSError as exc:
                raise BenchError(f"dataset {self.name}: cannot read {path}: {exc}") from None
            if pixels.shape != (size, size, 3):
                raise BenchError(f"dataset {self.name}: {path} is {pixels.shape[1]}x{pixels.shape[0]}, "
                                 f"expected {size}x{size}")
            return pixels.transpose(2, 0, 1)

        out = np.empty((len(files), 3, size, size), dtype=np.uint8)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for i, pixels in enumerate(pool.map(read, files, chunksize=256)):
                out[i] = pixels
        return out


def _listdir(folder: Path, name: str) -> list[str]:
    import os

    try:
        return [entry.name for entry in os.scandir(folder) if entry.is_file()]
    except FileNotFoundError:
        raise BenchError(f"dataset {name}: {folder} not found (each train/<wnid>/ needs an images/ folder)") from None


def _class_names(words: Path, wnids: list[str]) -> list[str]:
    """The first synonym of each wnid's ``words.txt`` line (``n02124075\\tEgyptian cat`` → ``Egyptian cat``)."""
    lookup: dict[str, str] = {}
    if words.exists():
        for line in words.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            if text.strip():
                lookup[wnid.strip()] = text.split(",")[0].strip()
    names = [lookup.get(w, w) for w in wnids]
    return [f"{n} ({w})" if n != w and names.count(n) > 1 else n for n, w in zip(names, wnids)]


def _read_cache(cache: Path, signature: str) -> dict[str, np.ndarray] | None:
    """The cached arrays when the cache exists and was made from the same file list; else None (rebuilt, also when
    the file is truncated or not an archive at all)."""
    import zipfile

    try:
        with np.load(cache, allow_pickle=False) as data:
            if str(data["signature"]) != signature:
                return None
            return {"train_x": data["train_x"], "test_x": data["test_x"]}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _write_cache(cache: Path, signature: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the decoded arrays beside the folder atomically; a read-only data root only costs the speed-up."""
    from bench.io import write_atomic

    try:
        write_atomic(cache, lambda handle: np.savez(handle, signature=np.asarray(signature), **arrays))
    except OSError:
        pass
