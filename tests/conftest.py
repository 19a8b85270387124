"""Shared fixtures. Tests are CPU-only and offline; `slow` and `gpu` markers select the rest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from factories import add_run`


def pytest_configure(config):
    # The test models are tiny: one intra-op thread is faster than two, and far faster when the two cores are
    # shared with other processes (OpenMP workers spin while waiting for each other).
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
