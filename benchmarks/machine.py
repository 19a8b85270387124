"""What a benchmark ran on: CPU model, cores, torch threads, GPU, versions (printed and written with each figure)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# Dense bf16 tensor-core peak (no sparsity) by device name, in FLOP/s, from the vendors' data sheets. Longest
# matching name wins ("H100 PCIe" before "H100"); an unknown card reports no peak rather than a guess.
BF16_PEAK = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,   # SXM
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_peak(device_name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or ``None`` when the name is not in :data:`BF16_PEAK`."""
    for name in sorted(BF16_PEAK, key=len, reverse=True):
        if name in device_name:
            return BF16_PEAK[name]
    return None


def describe(device: torch.device | None = None) -> dict:
    """Machine and versions, as a JSON-ready dict."""
    info = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["gpu_bf16_peak_tflops"] = (bf16_peak(info["gpu"]) or 0) / 1e12 or None
    return info


def line(info: dict) -> str:
    gpu = f", {info['gpu']} (CUDA {info['cuda']})" if "gpu" in info else ""
    return (f"{info['cpu']}, {info['cores']} cores, {info['torch_threads']} torch threads{gpu}; "
            f"python {info['python']}, torch {info['torch']}")
