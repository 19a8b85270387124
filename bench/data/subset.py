"""The imbalanced training subset and the prepared tensors of a cell.

The kept subset depends on ``(dataset, imbalance, seed)`` only — never on the method — so every method at one
seed trains on the identical images (paired design). Per class: a seeded shuffle of its indices, first ``n_c``.
A validation split (``val_split``, :mod:`bench.selection_keys`) is drawn from the kept images the same way: per
class, a shuffle seeded by ``(dataset, imbalance, seed)`` only, first ``held_out(n_c)`` held out; the model trains on
the rest, and ``train_counts`` are the counts after the split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.datasets import DATASETS, RawData
from bench.data.profiles import class_counts, held_out, parse_profile, pick_classes
from bench.errors import BenchError


@dataclass
class PreparedData:
    """Tensors of one cell, on its device: ``train_x`` ``[N, ...]`` float in the dataset's range, labels int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    train_counts: list[int]
    subset_hash: str  # of the training indices (after a validation split, if any)
    bounds: tuple[float, float] | None
    # The validation set (``val_split`` > 0): held out of the kept training images; empty otherwise.
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    val_counts: list[int] = field(default_factory=list)


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from named parts (benchopt-style): independent streams without reseeding globals."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def select_subset(labels: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """Indices kept: per class ``c``, the first ``counts[c]`` of a shuffle seeded by ``seed``; sorted."""
    rng = np.random.default_rng(seed)
    kept = []
    for c, n_c in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if n_c > idx.size:
            raise BenchError(f"imbalance keeps {n_c} images of class {c}, but the training set has {idx.size}")
        kept.append(rng.permutation(idx)[:n_c])
    return np.sort(np.concatenate(kept))


def split_validation(labels: np.ndarray, kept: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``kept`` split into (training, validation) indices, both sorted: per class, the first ``held_out(n_c)`` of a
    shuffle of its kept indices seeded by ``seed`` are held out for validation."""
    if share <= 0:
        return kept, np.zeros(0, dtype=kept.dtype)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[kept])
    per_class = [kept[labels[kept] == c] for c in classes]
    held = [rng.permutation(idx)[:h] for idx, h in zip(per_class, held_out([idx.size for idx in per_class], share))]
    val = np.sort(np.concatenate(held))
    return np.setdiff1d(kept, val), val


def subset_hash(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def _binary_view(raw: RawData, classes: tuple[str, ...], where: str) -> RawData:
    """Keep two classes (given by index or name) and relabel them 0 and 1."""
    try:
        picked = pick_classes(classes, raw.class_names, len(raw.class_names))
    except BenchError as exc:
        raise BenchError(f"{where}: {exc}") from None

    def view(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = np.isin(y, picked)
        return x[mask], np.where(y[mask] == picked[0], 0, 1).astype(np.int64)

    tr_x, tr_y = view(raw.train_x, raw.train_y)
    te_x, te_y = view(raw.test_x, raw.test_y)
    return RawData(tr_x, tr_y, te_x, te_y, [raw.class_names[i] for i in picked], raw.scale, raw.bounds)


def prepare(
    dataset: str,
    imbalance: str,
    seed: int,
    *,
    root: Path,
    download: bool = False,
    args: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    val_split: float = 0.0,
) -> PreparedData:
    """Load ``dataset``, keep the ``imbalance`` subset for ``seed``, hold out ``val_split`` of each class's kept
    images for validation (none by default) and move everything to ``device``."""
    args = dict(args or {})
    plugin = DATASETS.get(dataset)()
    raw = plugin.load(Path(root), download, args)
    profile = parse_profile(imbalance)
    if profile.kind == "binary":
        raw = _binary_view(raw, profile.classes, f"imbalance {imbalance!r}")
    counts = class_counts(imbalance, len(raw.class_names), plugin.n_max(raw, args))
    kept = select_subset(raw.train_y, counts, derived_seed("subset", dataset, imbalance, seed))
    train, val = split_validation(raw.train_y, kept, val_split, derived_seed("val-split", dataset, imbalance, seed))
    train_counts = np.bincount(raw.train_y[train], minlength=len(raw.class_names)).tolist()
    if val.size and min(train_counts[c] for c, n in enumerate(counts) if n) < 1:  # bench.suite_checks says it first
        raise BenchError(f"val_split = {val_split:g} leaves a class of imbalance {imbalance!r} without training "
                         "images; give a smaller val_split")
    tested = np.bincount(raw.test_y, minlength=len(raw.class_names))
    if not tested.all():  # metadata said otherwise (bench.suite_checks): files that differ from the real source
        c = int(np.argmin(tested))
        raise BenchError(f"dataset {dataset}: class {c} ({raw.class_names[c]}) has no test images, so "
                         "its class-wise accuracy would be undefined; every class kept needs at least one test image")

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x)).to(device=device, dtype=torch.float32) * raw.scale

    def labels(idx: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(raw.train_y[idx], dtype=torch.int64, device=device)

    return PreparedData(
        train_x=tensor(raw.train_x[train]),
        train_y=labels(train),
        test_x=tensor(raw.test_x),
        test_y=torch.as_tensor(raw.test_y, dtype=torch.int64, device=device),
        class_names=list(raw.class_names),
        train_counts=train_counts if val.size else counts,
        subset_hash=subset_hash(train),
        bounds=raw.bounds,
        val_x=tensor(raw.train_x[val]) if val.size else None,
        val_y=labels(val) if val.size else None,
        val_counts=np.bincount(raw.train_y[val], minlength=len(raw.class_names)).tolist() if val.size else [],
    )
