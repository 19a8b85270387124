"""The paper's published numbers, shown beside ours: ``srat-paper-tables.csv`` (its Tables 1–10).

One CSV row per (dataset, imbalance, method) with the mean and std of Standard / Robust × Overall / Under, in
percent. Standard is our attack order 0 (clean), Robust order 1 (the first evaluation attack, PGD-20 in the paper).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.report.resources import reference_csv

# CSV column prefix -> (attack order, group)
COLUMNS = {
    "standard_overall": (0, "overall"),
    "standard_under": (0, "under"),
    "robust_overall": (1, "overall"),
    "robust_under": (1, "under"),
}


@dataclass(frozen=True)
class ReferenceEntry:
    source: str  # "SRAT paper Table 1"
    values: dict  # (attack order, group) -> (mean, std)


class Reference:
    """Published values by (dataset, imbalance, method)."""

    def __init__(self, entries: dict[tuple[str, str, str], ReferenceEntry]) -> None:
        self.entries = entries

    def get(self, dataset: str, imbalance: str, method: str) -> ReferenceEntry | None:
        return self.entries.get((dataset, imbalance, method))

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Reference:
        path = Path(path) if path is not None else reference_csv()
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                records = list(csv.DictReader(handle))
        except OSError as exc:
            raise BenchError(f"reference values {path} cannot be read: {exc.strerror}") from None
        entries = {}
        for line, record in enumerate(records, start=2):
            try:
                values = {
                    key: (float(record[f"{prefix}_mean"]), float(record[f"{prefix}_std"]))
                    for prefix, key in COLUMNS.items()
                }
                entries[(record["dataset"], record["imbalance"], record["method"])] = ReferenceEntry(
                    record["source"], values)
            except (KeyError, TypeError, ValueError):
                raise BenchError(f"reference values {path}:{line}: malformed row") from None
        return cls(entries)
