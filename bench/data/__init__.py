"""Datasets, imbalance profiles and the per-cell training subset."""

from bench.data.datasets import DATASETS, Dataset, RawData
from bench.data.profiles import PROFILE_FORMS, class_counts, parse_profile
from bench.data.subset import PreparedData, derived_seed, prepare, select_subset

__all__ = [
    "DATASETS", "PROFILE_FORMS", "Dataset", "PreparedData", "RawData", "class_counts", "derived_seed",
    "parse_profile", "prepare", "select_subset",
]
