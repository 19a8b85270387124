"""What a suite still costs, estimated from the speed its runs recorded (``bench list suites``).

A finished run stores ``images_per_second``: the training images it went through (the training set once an
epoch) over its training seconds, so the training attack's cost is in the rate. A cell still to run costs ``epochs × training-set
size`` images; dividing by the mean images/s recorded for finished runs of the same dataset and model gives its
training time. It is an **estimate**: evaluation is not in it, and runs of one dataset and model may have run on
other devices, with other attack steps or batch sizes. A cell with no recorded speed for its dataset and model is
left out of the estimate (and counted as such), never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.cell import Cell, Status
from bench.data import DATASETS, class_counts, parse_profile
from bench.data.profiles import held_out


def train_images(config: Mapping[str, Any]) -> int | None:
    """Training images of one epoch of a cell, from its dataset's metadata and imbalance profile (no file read),
    less its validation split's held-out images; ``None`` when the metadata does not say (a dataset whose class
    sizes are known only once loaded)."""
    plugin = DATASETS.get(config["dataset"])
    args = dict(config.get("dataset_args") or {})
    profile = parse_profile(config["imbalance"])
    if profile.kind in ("counts", "binary"):
        counts = list(profile.counts)
    else:
        meta = plugin.metadata(args)
        n_max = int(args.get("n_max") or 0) or (min(meta.train_counts) if meta.train_counts else 0)
        if not n_max:
            return None
        counts = class_counts(config["imbalance"], meta.num_classes, n_max)
    return sum(counts) - sum(held_out(counts, float(config.get("val_split", 0.0))))


def recorded_speeds(runs: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Mean recorded images/s of finished runs by ``(dataset, model)``; ``runs`` as
    :func:`bench.results.read.load_runs` returns them."""
    if runs.empty:
        return {}
    done = runs[runs["status"] == Status.DONE]
    speed = pd.to_numeric(done["images_per_second"], errors="coerce")
    done = done.assign(speed=speed)[(speed > 0) & speed.map(math.isfinite)]
    return {(str(d), str(m)): float(v) for (d, m), v in done.groupby(["dataset", "model"])["speed"].mean().items()}


@dataclass(frozen=True)
class SuiteCost:
    """A suite's cells, how many are done, and the estimated training time of those still to run."""

    cells: int
    done: int
    priced: int  # cells still to run with a recorded speed for their dataset and model
    seconds: float  # estimated training seconds of those ``priced`` cells

    @property
    def remaining(self) -> int:
        return self.cells - self.done


def suite_cost(cells: Sequence[Cell], statuses: Mapping[str, str],
               speeds: Mapping[tuple[str, str], float]) -> SuiteCost:
    """The cost of ``cells`` given their stored ``statuses`` (by cell hash) and :func:`recorded_speeds`."""
    done = priced = 0
    seconds = 0.0
    for cell in cells:
        if statuses.get(cell.cell_hash) == Status.DONE:
            done += 1
            continue
        speed = speeds.get((cell["dataset"], cell["model"]))
        images = train_images(cell.config)
        if speed and images:
            priced += 1
            seconds += cell["epochs"] * images / speed
    return SuiteCost(cells=len(cells), done=done, priced=priced, seconds=seconds)


def duration(seconds: float) -> str:
    """A rough duration: ``<1 s``, ``45 s``, ``12 min``, ``3.4 h``, ``2.1 days``."""
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
