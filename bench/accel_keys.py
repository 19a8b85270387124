"""The four speed keys of a cell (``precision``, ``eval_precision``, ``compile``, ``channels_last``): their defaults,
their checks and which of them belong to a cell's identity. Torch-free, so reading a suite and hashing a cell never
imports torch; :mod:`bench.accel` applies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.errors import BenchError

# The keys and their defaults; every default keeps the CPU on the plain fp32 eager path.
ACCEL_DEFAULTS: dict[str, Any] = {
    "precision": "auto",        # training attack + training step: auto = bf16 on CUDA, fp32 elsewhere
    "eval_precision": "fp32",   # evaluation: fp32 for the reported numbers
    "compile": "auto",          # torch.compile the backbone: auto = CUDA and a model worth compiling
    "channels_last": "auto",    # channels-last memory format: auto = CUDA
}
PRECISIONS = ("auto", "fp32", "bf16")
EVAL_PRECISIONS = ("fp32", "bf16")
SWITCHES = ("auto", True, False)
# Keys that choose how a result is computed, not what it means (like the device or --workers): never part of a
# cell's identity. The precisions are, when not at their defaults: bf16 evaluation changes reported robust accuracy.
EXECUTION_KEYS = ("compile", "channels_last")


def validate(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The four keys of ``config`` checked and normalised (absent keys take their defaults); one-line errors."""
    out = {key: config.get(key, default) for key, default in ACCEL_DEFAULTS.items()}
    if out["precision"] not in PRECISIONS:
        raise BenchError(f"{where}: precision = {out['precision']!r} is unknown; valid: {', '.join(PRECISIONS)}")
    if out["eval_precision"] not in EVAL_PRECISIONS:
        raise BenchError(f"{where}: eval_precision = {out['eval_precision']!r} is unknown; "
                         f"valid: {', '.join(EVAL_PRECISIONS)}")
    for key in EXECUTION_KEYS:
        value = out[key]
        if not (value == "auto" or isinstance(value, bool)):
            raise BenchError(f"{where}: {key} = {value!r} is unknown; valid: \"auto\", true, false")
    return out


def identity_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without what does not change a result's meaning: the execution keys, and the precisions at
    their defaults (so adding these keys changed no existing cell's hash, and a stored cell is found again)."""
    return {k: v for k, v in config.items()
            if k not in EXECUTION_KEYS and not (k in ACCEL_DEFAULTS and v == ACCEL_DEFAULTS[k])}
