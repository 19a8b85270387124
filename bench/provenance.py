"""Where a result came from: git commit, library versions, device and host."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from pathlib import Path

import torch


@functools.cache
def git_commit() -> str | None:
    """The project's commit (with ``-dirty`` when the tree has changes), or None outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


@functools.cache
def versions() -> dict[str, str]:
    from importlib import metadata

    import numpy
    import sklearn
    import torchvision

    import bench

    return {
        "bench": bench.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
        "sqlalchemy": metadata.version("sqlalchemy"),  # the store's version, without importing it here
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device, subset_hash: str) -> dict:
    return {"device": device_name(device), "host": socket.gethostname(), "git_commit": git_commit(),
            "versions": versions(), "subset_hash": subset_hash}


def resolve_device(name: str) -> torch.device:
    """``auto`` = the first CUDA device when there is one, else the CPU."""
    from bench.errors import BenchError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise BenchError(f"device {name!r} is unknown; valid: auto, cpu, cuda, cuda:N, mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {name!r} requested but no CUDA device is available; use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BenchError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"device {name!r} requested but no Apple MPS device is available; use auto or cpu")
    return device
