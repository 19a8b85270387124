"""Benchmark: `bench report --format html` over a results database of 10,000 runs.

Claim: the report of 10,000 runs renders in at most 5 s on 2 CPU cores, and so does the leaderboard site
(``bench leaderboard --out DIR``, issue 17). The database is built here, in a temporary SQLite file, with
SQLAlchemy Core bulk inserts: 1 suite × 4 imbalances of CIFAR-10 × 25 table rows (the paper's 11 methods plus 14
settings of λ and of the under-represented weight) × 100 seeds = 10,000 runs, 10 classes, clean + 2 evaluation
attacks (300,000 class rows), 10 epochs of training curves per run (100,000 rows); 1 % of the runs failed and
0.5 % are still running. As a real run stores them, each finished run also has its per-sample flags (10,000 test
images × 3, packed), its test labels, its attack tables (PGD-20, AutoAttack) and two guards (1 % flagged): the
leaderboard reads the flags for the per-sample worst case over every attack.

``--case report|leaderboard|both`` picks what is measured (default both).

Leaderboard, measured on the development machine (2 CPU cores, load average ~2, 10,000 runs, 287 MB database):
2.56 s in-process (median of 3 warm calls: load 1.45, rank 0.16, write 0.95: 16 pages, CSV + Parquet downloads,
28 MB) and 3.42 s for ``bench leaderboard --out DIR`` in a fresh interpreter, imports included (3.39 s CPU).

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

from bench.results.schema import (AttackSpecRow, ClassMetric, EpochMetric, GuardRow, Run, SampleFlags, TestLabels,
                                  pack_flags)
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
SPECS = {"pgd-20": {"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 20, "random_start": True},
         "autoattack": {"kind": "autoattack", "eps": 8 / 255, "version": "standard"}}
TRAIN_ATTACK = {"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "random_start": True, "bn_mode": "train"}
EPOCHS = 10


def build_database(path: Path, n_runs: int, seed: int = 0) -> dict:
    """Write the benchmark database; returns what it holds."""
    rng = np.random.default_rng(seed)
    store = Store(f"sqlite:///{path}")
    store.create()
    rows = [(m, {}) for m in PAPER_METHODS] + list(SWEEPS)
    seeds = max(1, n_runs // (len(IMBALANCES) * len(rows)))
    runs, metrics, curves, flags, labels, specs, guards = [], [], [], [], [], [], []
    test_labels = np.repeat(np.arange(10), N_TEST)
    labels_blob = test_labels.astype(np.int16).tobytes()
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
                          "seed": s, "model": "resnet18", "epochs": EPOCHS, "adversarial": True,
                          "train_attack": TRAIN_ATTACK, "eval_attacks": list(SPECS.values())}
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
                # Per-sample flags: one uniform draw per test image, thresholded per attack (clean above PGD above
                # AutoAttack, mostly nested), a second draw so that the attacks do not break exactly the same images.
                u, v = rng.random(test_labels.size), rng.random(test_labels.size)
                for order, attack in enumerate(ATTACKS):
                    base = level * (1.0 if order == 0 else 0.55 if order == 1 else 0.5)
                    p = np.clip(base * np.where(np.arange(10) < 5, 1.15, 0.8) + rng.normal(0, 0.02, 10), 0, 1)
                    correct_flags = (u if order < 2 else np.minimum(u, v + 0.2)) < p[test_labels]
                    per_class = np.bincount(test_labels[correct_flags], minlength=10)
                    for c in range(10):
                        correct = int(per_class[c])
                        metrics.append(dict(run_id=run_id, attack=attack, attack_order=order, class_index=c,
                                            class_name=str(c), n_train=counts[c], n_test=N_TEST, correct=correct,
                                            accuracy=correct / N_TEST))
                    flags.append(dict(run_id=run_id, attack=attack, n=test_labels.size, bits=pack_flags(correct_flags)))
                    if attack in SPECS:
                        specs.append(dict(run_id=run_id, attack=attack, kind=SPECS[attack]["kind"],
                                          spec_json=json.dumps(SPECS[attack], sort_keys=True)))
                labels.append(dict(run_id=run_id, n=test_labels.size, labels=labels_blob))
                for name, threshold in (("zero-grad-share", 0.01), ("pgd-aa-gap", 0.02)):
                    flagged = bool(rng.random() < 0.01)
                    guards.append(dict(run_id=run_id, name=name, value=threshold * (2 if flagged else 0.3),
                                       threshold=threshold, flagged=flagged, detail="{}"))
                for e in range(EPOCHS):
                    curves.append(dict(run_id=run_id, epoch=e, lr=0.1, loss=2.0 / (e + 1) + rng.random() * 0.05,
                                       train_accuracy=min(1.0, 0.3 + 0.06 * e), seconds=1.0))
    with store.engine.begin() as conn:
        conn.execute(insert(Run.__table__), runs)
        conn.execute(insert(ClassMetric.__table__), metrics)
        conn.execute(insert(EpochMetric.__table__), curves)
        for table, values in ((SampleFlags, flags), (TestLabels, labels), (AttackSpecRow, specs), (GuardRow, guards)):
            conn.execute(insert(table.__table__), values)
    store.engine.dispose()
    return {"runs": len(runs), "class_rows": len(metrics), "epoch_rows": len(curves), "flag_rows": len(flags),
            "guard_rows": len(guards), "statuses": statuses,
            "table_rows_per_table": len(rows), "seeds": seeds, "tables": len(IMBALANCES)}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the figure workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn):
    wall, cpu = time.perf_counter(), _cpu()
    result = fn()
    return result, time.perf_counter() - wall, _cpu() - cpu


CLI_CPU: dict[str, list[float]] = {}  # command -> CPU seconds (user + system) of each run of _cli


def _cli(command: list[str], repeat: int) -> list[float]:
    """Wall seconds of ``command`` in a fresh interpreter, ``repeat`` times (CPU seconds kept in CLI_CPU)."""
    out = []
    for _ in range(repeat):
        wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if proc.returncode != 0:
            raise SystemExit(f"CLI failed: {proc.stderr.strip().splitlines()[-1:]}")
        out.append(elapsed)
        CLI_CPU.setdefault(command[3], []).append(cpu)
        print(f"command line (fresh interpreter, imports included): {elapsed:.2f} s wall, {cpu:.2f} s CPU")
    return out


def _median(values) -> float | None:
    values = list(values)
    return round(statistics.median(values), 3) if values else None


def measure_report(url: str, tmp: Path, repeat: int) -> dict:
    from bench.report import make_report

    out = tmp / "out"
    result, cold_wall, cold_cpu = _timed(lambda: make_report(db=url, fmt="html", out=out))
    print(f"report in-process, cold: {cold_wall:.2f} s wall, {cold_cpu:.2f} s CPU (with figure workers)  "
          + " ".join(f"{k}={v:.2f}" for k, v in result.timings.items()))
    warm = []
    for _ in range(repeat):
        r, wall, cpu = _timed(lambda: make_report(db=url, fmt="html", out=out))
        warm.append((wall, cpu, r.timings))
        print(f"report in-process, warm: {wall:.2f} s wall, {cpu:.2f} s CPU  "
              + " ".join(f"{k}={v:.2f}" for k, v in r.timings.items()))
    # `bench report` itself (bench.cli's group, which loads the command lazily) in a fresh interpreter.
    cli = _cli([sys.executable, "-m", "bench.cli", "report", "--db", url, "--format", "html", "--out", str(out)],
               repeat)
    size = result.path.stat().st_size
    print(f"report: tables {len(result.tables)}, figures {len(result.figures)}, HTML {size / 1e6:.2f} MB; "
          f"cold {cold_wall:.2f} s, warm median {_median(w for w, _, _ in warm)} s, CLI median {_median(cli)} s")
    return {
        "benchmark": "bench report --format html",
        "figures": len(result.figures),
        "tables": len(result.tables),
        "html_bytes": size,
        "in_process_cold_wall_s": round(cold_wall, 3),
        "in_process_cold_cpu_s": round(cold_cpu, 3),
        "in_process_warm_wall_s_median": _median(w for w, _, _ in warm),
        "in_process_warm_stages_s": {k: round(v, 3) for k, v in warm[-1][2].items()} if warm else None,
        "in_process_warm_cpu_s_median": _median(c for _, c, _ in warm),
        "cli_wall_s_median": _median(cli),
        "cli_cpu_s_median": _median(CLI_CPU.get("report", [])),
    }


def _leaderboard_once(url: str, out: Path):
    """``bench leaderboard --out`` in stages: load (database reads, worst case), rank, write (pages, downloads)."""
    from bench.analysis.leaderboard import build_leaderboard
    from bench.analysis.leaderboard_data import load_leaderboard_data
    from bench.report.leaderboard_render import write_site
    from bench.report.reference import Reference

    stages = {}
    clock = time.perf_counter()
    data = load_leaderboard_data(url)
    stages["load"] = time.perf_counter() - clock
    clock = time.perf_counter()
    board = build_leaderboard(data, "worst_under", Reference.load())
    stages["rank"] = time.perf_counter() - clock
    clock = time.perf_counter()
    written = write_site(board, out, url, None)
    stages["write"] = time.perf_counter() - clock
    return board, written, stages


def measure_leaderboard(url: str, tmp: Path, repeat: int) -> dict:
    out = tmp / "site"
    (board, written, stages), cold_wall, cold_cpu = _timed(lambda: _leaderboard_once(url, out))
    print(f"leaderboard in-process, cold: {cold_wall:.2f} s wall, {cold_cpu:.2f} s CPU  "
          + " ".join(f"{k}={v:.2f}" for k, v in stages.items()))
    warm = []
    for _ in range(repeat):
        (_, _, st), wall, cpu = _timed(lambda: _leaderboard_once(url, out))
        warm.append((wall, cpu, st))
        print(f"leaderboard in-process, warm: {wall:.2f} s wall, {cpu:.2f} s CPU  "
              + " ".join(f"{k}={v:.2f}" for k, v in st.items()))
    cli = _cli([sys.executable, "-m", "bench.cli", "leaderboard", "--db", url, "--out", str(out)], repeat)
    pages = [p for p in written if p.suffix == ".html"]
    size = sum(p.stat().st_size for p in written)
    print(f"leaderboard: {len(board.boards)} settings, {len(board.entries())} rows, {len(pages)} pages, "
          f"{len(written)} files, {size / 1e6:.1f} MB; cold {cold_wall:.2f} s, warm median "
          f"{_median(w for w, _, _ in warm)} s, CLI median {_median(cli)} s (limit 5 s)")
    return {
        "benchmark": "bench leaderboard --format html --out DIR",
        "settings": len(board.boards),
        "rows": len(board.entries()),
        "pages": len(pages),
        "files": sorted(p.name for p in written if p.suffix != ".html"),
        "bytes": size,
        "in_process_cold_wall_s": round(cold_wall, 3),
        "in_process_cold_cpu_s": round(cold_cpu, 3),
        "in_process_warm_wall_s_median": _median(w for w, _, _ in warm),
        "in_process_warm_stages_s": {k: round(v, 3) for k, v in warm[-1][2].items()} if warm else None,
        "in_process_warm_cpu_s_median": _median(c for _, c, _ in warm),
        "cli_wall_s_median": _median(cli),
        "cli_cpu_s_median": _median(CLI_CPU.get("leaderboard", [])),
        "limit_s": 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--case", choices=("report", "leaderboard", "both"), default="both")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other processes on the machine skew wall times; recorded with them
    record: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        db_path = Path(tmp) / "bench.db"
        (contents, build_s, _) = _timed(lambda: build_database(db_path, args.runs))
        url = f"sqlite:///{db_path}"
        print(f"database: {contents['runs']} runs, {contents['class_rows']} class rows, "
              f"{contents['epoch_rows']} epoch rows, {contents['flag_rows']} flag rows "
              f"({db_path.stat().st_size / 1e6:.0f} MB, built in {build_s:.1f} s)")
        if args.case in ("report", "both"):
            record.update(measure_report(url, Path(tmp), args.repeat))
        if args.case in ("leaderboard", "both"):
            record["leaderboard"] = measure_leaderboard(url, Path(tmp), args.repeat)
    record.update({
        "database": contents,
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "limit_s": 5.0,
        "machine": {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "python": platform.python_version(), "platform": platform.platform()},
    })
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
