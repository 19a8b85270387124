"""Benchmark: `bench report --format html` over a results database of 10,000 runs.

Claim: the report of 10,000 runs renders in at most 5 s on 2 CPU cores. The database is built here, in a
temporary SQLite file, with SQLAlchemy Core bulk inserts: 1 suite × 4 imbalances of CIFAR-10 × 25 table rows
(the paper's 11 methods plus 14 settings of λ and of the under-represented weight) × 100 seeds = 10,000 runs,
10 classes, clean + 2 evaluation attacks (300,000 class rows), 10 epochs of training curves per run
(100,000 rows); 1 % of the runs failed and 0.5 % are still running.

Measured: the in-process call (:func:`bench.report.make_report`) cold (first call: matplotlib's import and font
cache included), then warm (median of ``--repeat`` calls, after the cold one), with a per-stage breakdown; and
the command line in a fresh interpreter (``python -m bench.cli report ...``, what ``bench report`` runs, imports
included — torch alone is ~2.5 s of that, imported by ``methods``). Wall
seconds, CPU seconds (this process plus its figure workers) and the machine's load average are printed and
written as JSON.

    .venv/bin/python benchmarks/bench_report.py [--runs 10000] [--repeat 3] [--json benchmarks/bench_report.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from bench.results.schema import ClassMetric, EpochMetric, Run
from bench.results.store import Store

IMBALANCES = {  # training examples per class, CIFAR-10 style (5,000 for the largest class)
    "step-10": [5000] * 5 + [500] * 5,
    "step-100": [5000] * 5 + [50] * 5,
    "exp-10": [int(5000 * 10 ** (-i / 9)) for i in range(10)],
    "exp-100": [int(5000 * 100 ** (-i / 9)) for i in range(10)],
}
PAPER_METHODS = ["ce", "focal", "ldam", "cb-reweight", "cb-focal", "drcb-ce", "drcb-focal", "drcb-ldam",
                 "srat-ce", "srat-focal", "srat-ldam"]
SWEEPS = ([("srat-ldam", {"lam": v}) for v in (0.5, 1.0, 4.0, 8.0)]
          + [("srat-ce", {"lam": v}) for v in (0.5, 1.0, 4.0, 8.0)]
          + [("drcb-ldam", {"under_weight": v}) for v in (10, 20, 50, 100, 150, 200)])
ATTACKS = ["clean", "pgd-20", "autoattack"]
N_TEST = 1000  # test images per class
EPOCHS = 10


def build_database(path: Path, n_runs: int, seed: int = 0) -> dict:
    """Write the benchmark database; returns what it holds."""
    rng = np.random.default_rng(seed)
    store = Store(f"sqlite:///{path}")
    store.create()
    rows = [(m, {}) for m in PAPER_METHODS] + list(SWEEPS)
    seeds = max(1, n_runs // (len(IMBALANCES) * len(rows)))
    runs, metrics, curves = [], [], []
    run_id = 0
    statuses = {"done": 0, "failed": 0, "running": 0}
    for imbalance, counts in IMBALANCES.items():
        for r, (method, args) in enumerate(rows):
            level = 0.35 + 0.02 * r
            for s in range(seeds):
                run_id += 1
                draw = rng.random()
                status = "failed" if draw < 0.01 else "running" if draw < 0.015 else "done"
                statuses[status] += 1
                config = {"suite": "scale", "dataset": "cifar10", "imbalance": imbalance, "method": method,
                          "seed": s, "model": "resnet18", "epochs": EPOCHS, "adversarial": True}
                if args:
                    config["method_args"] = args
                text = json.dumps(config, sort_keys=True)
                runs.append(dict(
                    id=run_id, cell_hash=hashlib.sha256(text.encode()).hexdigest()[:32], suite="scale",
                    method=method, dataset="cifar10", imbalance=imbalance, seed=s, model="resnet18",
                    adversarial=True, config_json=text, status=status, epochs_done=EPOCHS if status == "done" else 3,
                    error="RuntimeError: synthetic" if status == "failed" else None,
                    class_names_json=json.dumps(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                 "horse", "ship", "truck"]),
                ))
                if status != "done":
                    continue
                for order, attack in enumerate(ATTACKS):
                    base = level * (1.0 if order == 0 else 0.55)
                    for c in range(10):
                        p = np.clip(base * (1.15 if c < 5 else 0.8) + rng.normal(0, 0.02), 0, 1)
                        correct = int(rng.binomial(N_TEST, p))
                        metrics.append(dict(run_id=run_id, attack=attack, attack_order=order, class_index=c,
                                            class_name=str(c), n_train=counts[c], n_test=N_TEST, correct=correct,
                                            accuracy=correct / N_TEST))
                for e in range(EPOCHS):
                    curves.append(dict(run_id=run_id, epoch=e, lr=0.1, loss=2.0 / (e + 1) + rng.random() * 0.05,
                                       train_accuracy=min(1.0, 0.3 + 0.06 * e), seconds=1.0))
    with store.engine.begin() as conn:
        conn.execute(insert(Run.__table__), runs)
        conn.execute(insert(ClassMetric.__table__), metrics)
        conn.execute(insert(EpochMetric.__table__), curves)
    store.engine.dispose()
    return {"runs": len(runs), "class_rows": len(metrics), "epoch_rows": len(curves), "statuses": statuses,
            "table_rows_per_table": len(rows), "seeds": seeds, "tables": len(IMBALANCES)}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the figure workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn):
    wall, cpu = time.perf_counter(), _cpu()
    result = fn()
    return result, time.perf_counter() - wall, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other processes on the machine skew wall times; recorded with them
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        db_path = Path(tmp) / "bench.db"
        (contents, build_s, _) = _timed(lambda: build_database(db_path, args.runs))
        url = f"sqlite:///{db_path}"
        print(f"database: {contents['runs']} runs, {contents['class_rows']} class rows, "
              f"{contents['epoch_rows']} epoch rows (built in {build_s:.1f} s)")

        from bench.report import make_report

        out = Path(tmp) / "out"
        result, cold_wall, cold_cpu = _timed(lambda: make_report(db=url, fmt="html", out=out))
        print(f"in-process, cold: {cold_wall:.2f} s wall, {cold_cpu:.2f} s CPU (with figure workers)  "
              + " ".join(f"{k}={v:.2f}" for k, v in result.timings.items()))
        warm = []
        for _ in range(args.repeat):
            r, wall, cpu = _timed(lambda: make_report(db=url, fmt="html", out=out))
            warm.append((wall, cpu, r.timings))
            print(f"in-process, warm: {wall:.2f} s wall, {cpu:.2f} s CPU  "
                  + " ".join(f"{k}={v:.2f}" for k, v in r.timings.items()))

        # `bench report` itself (bench.cli's group, which loads the command lazily) in a fresh interpreter.
        command = [sys.executable, "-m", "bench.cli", "report", "--db", url, "--format", "html", "--out", str(out)]
        cli = []
        for _ in range(args.repeat):
            wall = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - wall
            if proc.returncode != 0:
                raise SystemExit(f"CLI failed: {proc.stderr.strip().splitlines()[-1:]}")
            cli.append(elapsed)
            print(f"command line (fresh interpreter, imports included): {elapsed:.2f} s wall")
        size = result.path.stat().st_size

    record = {
        "benchmark": "bench report --format html",
        "database": contents,
        "figures": len(result.figures),
        "tables": len(result.tables),
        "html_bytes": size,
        "in_process_cold_wall_s": round(cold_wall, 3),
        "in_process_cold_cpu_s": round(cold_cpu, 3),
        "in_process_warm_wall_s_median": round(statistics.median(w for w, _, _ in warm), 3) if warm else None,
        "in_process_warm_stages_s": {k: round(v, 3) for k, v in warm[-1][2].items()} if warm else None,
        "in_process_warm_cpu_s_median": round(statistics.median(c for _, c, _ in warm), 3) if warm else None,
        "cli_wall_s_median": round(statistics.median(cli), 3) if cli else None,
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "limit_s": 5.0,
        "machine": {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"tables {record['tables']}, figures {record['figures']}, HTML {size / 1e6:.2f} MB; "
          f"in-process cold {cold_wall:.2f} s, warm median {record['in_process_warm_wall_s_median']} s, "
          f"CLI median {record['cli_wall_s_median']} s (limit 5 s); wrote {args.json}")


if __name__ == "__main__":
    main()
