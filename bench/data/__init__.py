"""Datasets, imbalance profiles and the per-cell training subset.

The dataset registry and the profiles are torch-free and imported here; the training subset
(:mod:`bench.data.subset`: ``prepare``, ``PreparedData``, …) builds tensors, so it is imported on first use.
Reading a suite (:mod:`bench.suite`) thus validates datasets and profiles without importing torch.
"""

from bench.data.datasets import DATASETS, Dataset, RawData
from bench.data.profiles import PROFILE_FORMS, class_counts, parse_profile

_SUBSET = ("PreparedData", "derived_seed", "prepare", "select_subset")

__all__ = ["DATASETS", "PROFILE_FORMS", "Dataset", "RawData", "class_counts", "parse_profile", *_SUBSET]


def __getattr__(name: str):
    """``bench.data.prepare`` and the other names of :mod:`bench.data.subset`, imported when first asked for."""
    if name in _SUBSET:
        from bench.data import subset

        return getattr(subset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
