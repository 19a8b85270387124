"""A cell: one method × dataset × imbalance × seed × … configuration, its identity, and the words for its outcome.

Every other room speaks of cells through these types: :mod:`bench.suite` makes :class:`Cell` objects, the ledger
(:mod:`bench.results.ledger`) drives them through their life, the store writes a :class:`CellRecord` and a
:class:`CellResult`, and :class:`Status` is the only place a status value is spelled. Torch-free and
database-free, so any process can import it cheaply.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.accel_keys import identity_view

if TYPE_CHECKING:
    import numpy as np


class Status(enum.StrEnum):
    """A cell's status in the results store (a ``str``, so it compares and stores as its value)."""

    QUEUED = "queued"  # handed to a worker that has not reported yet (Slurm, Ray)
    RUNNING = "running"  # claimed by a live process (heartbeat) or reported running by a worker
    DONE = "done"  # metrics written
    FAILED = "failed"  # an exception; its traceback (or one-line user error) is stored
    DIVERGED = "diverged"  # the training loss went NaN
    INTERRUPTED = "interrupted"  # stopped by the user (Ctrl-C) or by the driver


STATUSES = tuple(Status)
ACTIVE = (Status.QUEUED, Status.RUNNING)  # handed out, no outcome reported yet
OUTCOMES = (Status.DONE, Status.FAILED, Status.DIVERGED, Status.INTERRUPTED)


def cell_hash(config: Mapping[str, Any]) -> str:
    """The cell's identity: a hash of its fully resolved configuration, less the speed keys that do not change
    what a result means (:func:`bench.accel_keys.identity_view`: ``compile`` and ``channels_last`` always, the
    precisions at their defaults). So adding those keys changed no existing cell's hash, and switching compilation
    on or off, like changing the device or ``--workers``, finds the same cells done."""
    return hashlib.sha256(json.dumps(identity_view(config), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CellRecord:
    """What the store keeps of a cell before it runs: its identity and grid keys."""

    cell_hash: str
    suite: str
    method: str
    dataset: str
    imbalance: str
    seed: int
    model: str
    adversarial: bool
    config: dict


@dataclass(frozen=True)
class Cell:
    """One method × dataset × imbalance × seed × … configuration, fully resolved."""

    config: dict
    cell_hash: str

    def __getitem__(self, key: str) -> Any:
        return self.config[key]

    @property
    def adversarial(self) -> bool:
        return self.config["train_attack"] != "none"

    def record(self) -> CellRecord:
        c = self.config
        return CellRecord(
            cell_hash=self.cell_hash, suite=c["suite"], method=c["method"], dataset=c["dataset"],
            imbalance=c["imbalance"], seed=c["seed"], model=c["model"], adversarial=self.adversarial, config=c,
        )

    def label(self) -> str:
        c = self.config
        return f"{c['method']} · {c['dataset']} {c['imbalance']} · seed {c['seed']}"


@dataclass
class CellResult:
    """A finished cell: everything written in the final transaction."""

    status: str  # a Status of OUTCOMES
    error: str | None = None
    class_names: Sequence[str] = ()
    train_counts: Sequence[int] = ()
    test_labels: np.ndarray | None = None  # [n_test] int
    correct: dict[str, np.ndarray] | None = None  # attack label -> [n_test] bool, in suite order (clean first)
    curves: Sequence[dict] = ()
    provenance: dict | None = None  # device, host, git_commit, versions, subset_hash
    wall_seconds: float | None = None
    train_seconds: float | None = None
    images_per_second: float | None = None
    peak_memory_mb: float | None = None
    epochs_done: int = 0
    features: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None  # (split, kind) -> (labels, h)
    attack_specs: dict[str, dict] | None = None  # attack label -> resolved eval_attacks table
    guards: Sequence[dict] = ()  # {"name", "value", "threshold", "flagged", "detail": dict} (bench.guards)
    # With a validation set (bench.selection): {"select", "epoch", "val_clean", "val_robust", "val_attack",
    # "val_images"}, the epoch whose weights were evaluated and its class-balanced validation accuracies
    selection: dict | None = None
