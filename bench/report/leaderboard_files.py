"""The leaderboard site's downloads: the tidy results behind it, as CSV and Parquet, and the ranked rows.

* ``runs.csv`` / ``runs.parquet`` — one line per finished run: its keys, setting, row label, provenance, cost and
  its accuracies (percent);
* ``results.csv`` / ``results.parquet`` — one line per run × attack × class, the worst case included (``attack =
  "worst-case"``, ordered after the run's attacks): counts, accuracy and the class's group (well / under); the
  run's keys are in ``runs.*`` (join on ``run_id``);
* ``leaderboard.csv`` / ``leaderboard.json`` — the ranked rows of every setting and the overall ranking.

Parquet is written with pandas and pyarrow; where pyarrow is missing the CSV files are still written and the
site says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis.leaderboard import ACCURACIES, Leaderboard
from bench.analysis.leaderboard_data import WORST_ORDER
from bench.analysis.metrics import class_groups
from bench.io import write_output

RUN_FIELDS = ["run_id", "cell_hash", "suite", "dataset", "imbalance", "train_attack", "eval_attack", "method",
              "label", "seed", "model", "host", "device", "git_commit", "finished_at", "wall_seconds",
              "train_seconds", "images_per_second", *ACCURACIES]
CLASS_FIELDS = ["run_id", "attack", "attack_order", "class_index", "class_name", "group", "n_train", "n_test",
                "correct", "accuracy"]


def tidy_runs(lb: Leaderboard) -> pd.DataFrame:
    runs = lb.data.runs
    label = {run_id: e.label for e in lb.entries() for run_id in e.run_ids}
    frame = runs.assign(
        run_id=runs.index.astype("int64"),
        train_attack=[s.train for s in runs["setting"]], eval_attack=[s.attack for s in runs["setting"]],
        label=[label.get(i, "") for i in runs.index.tolist()],
        finished_at=runs["finished_at"].astype(str).where(runs["finished_at"].notna(), None),
    )
    return frame[RUN_FIELDS].reset_index(drop=True)


def tidy_classes(lb: Leaderboard) -> pd.DataFrame:
    """One line per run × attack × class (the worst case ordered after the run's attacks); run keys, setting and
    row label are in :func:`tidy_runs` (join on ``run_id``)."""
    runs = lb.data.runs
    rows = lb.data.class_rows.sort_values(["run_id", "attack_order", "class_index"], kind="stable")
    run_ids = rows["run_id"].to_numpy(dtype=np.int64)
    orders = rows["attack_order"].to_numpy(dtype=np.int64)
    klass = rows["class_index"].to_numpy(dtype=np.int64)
    stored = np.where(orders == WORST_ORDER, -1, orders)
    last = pd.Series(stored).groupby(run_ids).transform("max").to_numpy()
    # Groups depend on the run and class only: computed on the clean rows, looked up for every attack.
    clean = rows[orders == 0]
    width = int(klass.max(initial=0)) + 1
    keys = clean["run_id"].to_numpy() * width + clean["class_index"].to_numpy()
    groups = pd.Series(class_groups(clean).to_numpy(), index=keys)
    out = pd.DataFrame({
        "run_id": run_ids,
        "attack": rows["attack"].fillna("").to_numpy(),
        "attack_order": np.where(orders == WORST_ORDER, last + 1, orders),
        "class_index": klass,
        "class_name": _class_names(runs["class_names_json"].reindex(run_ids).to_numpy(), klass),
        "group": groups.reindex(run_ids * width + klass).to_numpy(),
        "n_train": rows["n_train"].to_numpy(dtype=np.int64),
        "n_test": rows["n_test"].to_numpy(dtype=np.int64),
        "correct": rows["correct"].to_numpy(dtype=np.int64),
    })
    out["accuracy"] = out["correct"] / out["n_test"].where(out["n_test"] > 0)
    return out[CLASS_FIELDS]


def write_downloads(lb: Leaderboard, out: Path, texts: dict[str, str]) -> list[Path]:
    """Write the downloads into ``out``, and ``texts`` (file name -> text: the ranked rows); returns their paths
    (Parquet only where pyarrow is installed)."""
    written = []
    for name, frame in (("runs", tidy_runs(lb)), ("results", tidy_classes(lb))):
        csv_bytes, parquet = encode(frame)
        write_output(out / f"{name}.csv", csv_bytes)
        written.append(out / f"{name}.csv")
        if parquet is not None:
            write_output(out / f"{name}.parquet", parquet)
            written.append(out / f"{name}.parquet")
    for name, text in texts.items():
        write_output(out / name, text)
        written.append(out / name)
    return written


def encode(frame: pd.DataFrame) -> tuple[bytes, bytes | None]:
    """The frame as CSV and Parquet bytes: with pyarrow both from one Arrow table (its CSV writer is ~10x faster
    than pandas' on 400,000 lines); without it, pandas' CSV and no Parquet."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq
    except ImportError:
        return frame.to_csv(index=False, lineterminator="\n").encode(), None
    table = pa.Table.from_pandas(frame, preserve_index=False)
    text, parquet = pa.BufferOutputStream(), pa.BufferOutputStream()
    pa_csv.write_csv(table, text, pa_csv.WriteOptions(quoting_style="needed"))
    pq.write_table(table, parquet)
    return text.getvalue().to_pybytes(), parquet.getvalue().to_pybytes()


def has_parquet() -> bool:
    try:
        import pyarrow  # noqa: F401 - pandas' Parquet engine
    except ImportError:
        return False
    return True


def _class_names(texts: np.ndarray, klass: np.ndarray) -> np.ndarray:
    """Each row's class name from its run's ``class_names_json`` (runs share a few lists: one lookup per list)."""
    out = klass.astype(str).astype(object)
    keys = pd.Series(texts, dtype=object).fillna("")
    for text, positions in keys.groupby(keys, sort=False).indices.items():
        try:
            names = json.loads(text) if text else None
        except ValueError:
            names = None
        if not isinstance(names, list) or not names:
            continue
        table = np.array([str(n) for n in names], dtype=object)
        index = klass[positions]
        ok = (index >= 0) & (index < table.size)
        out[positions[ok]] = table[index[ok]]
    return out
