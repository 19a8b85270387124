"""Per-cell result and state files: how a worker hands its outcome to the one process that writes the database.

A worker never needs the database: when a cell ends (done, failed or diverged) it writes
``<run_dir>/<cell hash>/result.npz`` atomically (a temporary file in the same folder, fsync, ``os.replace``), so
the file is either absent or complete, even on a network filesystem and even if the worker is killed while
writing. The driver ingests it (:func:`bench.results.collect.collect`); ``bench collect`` does the same after the driver
was killed. The file stays where it is: it is the cell's durable record, and ingesting it again changes nothing.

While a cell runs, its worker keeps ``<run_dir>/<cell hash>/state.json`` up to date (status, epochs, job, host,
pid, how often it started), from which the driver shows ``running`` and its epoch.

Format: one ``.npz`` (numpy's zip of arrays) holding a JSON header (the cell's record and every scalar of its
:class:`~bench.cell.CellResult`) and the arrays (per-sample flags, test labels, feature dumps). It loads with
``allow_pickle=False``: reading a result file never executes code.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np

from bench.cell import CellRecord, CellResult
from bench.io import write_atomic  # the one atomic writer (temporary file, fsync, os.replace)

RESULT = "result.npz"
STATE = "state.json"
FORMAT = 1


class UnreadableResult(ValueError):
    """A result file that is not one (another program's file, another format version)."""


def result_path(run_dir: Path, cell_hash: str) -> Path:
    return Path(run_dir) / cell_hash / RESULT


def state_path(run_dir: Path, cell_hash: str) -> Path:
    return Path(run_dir) / cell_hash / STATE


def dumps(cell: CellRecord, result: CellResult) -> bytes:
    """A cell's record and outcome as the bytes of a result file."""
    correct = result.correct or {}
    features = result.features or {}
    header = {
        "format": FORMAT,
        "cell": {
            "cell_hash": cell.cell_hash, "suite": cell.suite, "method": cell.method, "dataset": cell.dataset,
            "imbalance": cell.imbalance, "seed": cell.seed, "model": cell.model, "adversarial": cell.adversarial,
            "config": cell.config,
        },
        "result": {
            "status": result.status, "error": result.error, "class_names": [str(c) for c in result.class_names],
            "train_counts": [int(c) for c in result.train_counts], "curves": list(result.curves),
            "provenance": result.provenance, "wall_seconds": result.wall_seconds,
            "train_seconds": result.train_seconds, "images_per_second": result.images_per_second,
            "peak_memory_mb": result.peak_memory_mb, "epochs_done": result.epochs_done,
            "attack_specs": result.attack_specs, "guards": list(result.guards), "selection": result.selection,
        },
        "attacks": list(correct),
        "features": [list(key) for key in features],
        "has_test_labels": result.test_labels is not None,
        "written_at": time.time(),
    }
    arrays = {"header": np.frombuffer(json.dumps(header, default=_json_default).encode(), dtype=np.uint8)}
    for i, flags in enumerate(correct.values()):
        arrays[f"correct_{i}"] = np.asarray(flags, dtype=bool)
    if result.test_labels is not None:
        arrays["test_labels"] = np.asarray(result.test_labels, dtype=np.int64)
    for i, (labels, vectors) in enumerate(features.values()):
        arrays[f"feature_labels_{i}"] = np.asarray(labels)
        arrays[f"feature_vectors_{i}"] = np.asarray(vectors, dtype=np.float16)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def loads(data: bytes) -> tuple[CellRecord, CellResult]:
    """The cell and outcome of a result file's bytes; :class:`UnreadableResult` if they are not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            header = json.loads(archive["header"].tobytes().decode())
            if header.get("format") != FORMAT:
                raise UnreadableResult(f"result file format {header.get('format')!r}, this bench reads {FORMAT}")
            correct = {label: archive[f"correct_{i}"] for i, label in enumerate(header["attacks"])}
            test_labels = archive["test_labels"] if header["has_test_labels"] else None
            features = {tuple(key): (archive[f"feature_labels_{i}"], archive[f"feature_vectors_{i}"])
                        for i, key in enumerate(header["features"])}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # zip, JSON or a missing array
        if isinstance(exc, UnreadableResult):
            raise
        raise UnreadableResult(f"not a bench result file ({type(exc).__name__}: {exc})") from None
    cell = CellRecord(**header["cell"])
    fields = header["result"]
    result = CellResult(
        correct=correct or None, test_labels=test_labels, features=features or None, **fields,
    )
    return cell, result


def write_result(run_dir: Path, cell: CellRecord, result: CellResult) -> Path:
    """Write a cell's result file atomically; returns its path."""
    path = result_path(run_dir, cell.cell_hash)
    write_atomic(path, dumps(cell, result))
    return path


def read_result(path: Path) -> tuple[CellRecord, CellResult]:
    return loads(Path(path).read_bytes())


def discard(run_dir: Path, cell_hash: str) -> None:
    """Remove a cell's old result file (a failed attempt) before the cell runs again, so it cannot be ingested
    over the new attempt; a ``done`` cell never runs again, so this never removes a finished result."""
    result_path(run_dir, cell_hash).unlink(missing_ok=True)


def write_state(run_dir: Path, cell_hash: str, **fields) -> dict:
    """Update a running cell's state file (merged over the previous one) and return it."""
    path = state_path(run_dir, cell_hash)
    state = read_state(run_dir, cell_hash) or {}
    state.update(fields, updated_at=time.time())
    write_atomic(path, json.dumps(state, default=_json_default).encode())
    return state


def read_state(run_dir: Path, cell_hash: str) -> dict | None:
    try:
        return json.loads(state_path(run_dir, cell_hash).read_text())
    except (OSError, ValueError):
        return None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
