"""Wall time of the offline default, `bench run suites/quick.toml`, from an empty database, for each ``fuse`` setting
in turn (side by side in one run), and how far apart the settings' numbers are.

Targets: at most 5 minutes on 2 CPU cores (issue: bench run); with fused cells (issue 16, ``fuse = "auto"``, the
default) at most 120 s and faster than ``--fuse off``. Each setting runs the real CLI in a subprocess in its own
temporary folder (fresh database and run folder). Printed: the machine, versions, each setting's wall and training
time, the ratio against the first setting, and the largest per-cell difference of overall clean and first-attack
accuracy between each setting and the first. A setting ``FUSE@THREADS`` runs with that many torch threads: the
unfused runner's own spread between thread counts is the yardstick for the fused-vs-unfused differences (some
cells, LDAM's above all, are chaotic on this short schedule), and fused cells do not move with the thread count.

    python benchmarks/bench_quick.py [--suite suites/quick.toml] [--fuse off,auto] [--json out.json]
    python benchmarks/bench_quick.py --fuse off,off@1,auto,auto@1   # also each at 1 torch thread
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 300
FUSED_TARGET_SECONDS = 120


def run_suite(suite: str, setting: str) -> dict:
    """One cold `bench run` of ``suite`` for ``setting`` (``FUSE`` or ``FUSE@THREADS``: ``--fuse FUSE``, and torch
    threads through ``BENCH_THREADS``): its timings and every cell's overall accuracies."""
    fuse, _, threads = setting.partition("@")
    env = dict(os.environ, **({"BENCH_THREADS": threads} if threads else {}))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(ROOT / "bench.toml", work / "bench.toml")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(Path(suite).resolve()), "--quiet",
                               "--fuse", fuse], cwd=work, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"bench run --fuse {fuse} failed:\n{proc.stdout}\n{proc.stderr}")
        with sqlite3.connect(work / "results" / "bench.db") as conn:
            statuses = dict(conn.execute("select status, count(*) from runs group by status").fetchall())
            train = conn.execute("select sum(train_seconds), avg(images_per_second), max(fused_members) "
                                 "from runs").fetchone()
            rows = conn.execute(
                "select r.cell_hash, m.attack_order, sum(m.correct) * 1.0 / sum(m.n_test) from runs r "
                "join class_metrics m on m.run_id = r.id where m.attack_order <= 1 "
                "group by r.cell_hash, m.attack_order").fetchall()
    return {"fuse": setting, "wall_seconds": round(seconds, 1), "cells": statuses,
            "train_seconds_total": round(train[0] or 0, 1), "mean_train_images_per_second": round(train[1] or 0, 1),
            "largest_group": train[2] or 1, "accuracy": {f"{h}/{order}": acc for h, order, acc in rows}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=str(ROOT / "suites" / "quick.toml"))
    parser.add_argument("--fuse", default="off,auto",
                        help="settings run in turn, FUSE or FUSE@THREADS (torch threads), e.g. off,off@1,auto")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    import torch

    machine = (f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} cores, "
               f"{torch.get_num_threads()} torch threads; python {platform.python_version()}, torch {torch.__version__}")
    print(machine)
    results = [run_suite(args.suite, fuse) for fuse in args.fuse.split(",")]
    base = results[0]
    print(f"{'fuse':>7}  {'wall s':>7}  {'train s':>7}  {'group':>5}  {'wall vs ' + base['fuse']:>12}  "
          f"{'max |Δ clean|':>13}  {'max |Δ robust|':>14}")
    for r in results:
        diffs = {0: [], 1: []}
        for key, acc in r["accuracy"].items():
            if key in base["accuracy"]:
                diffs[int(key.split("/")[1])].append(abs(acc - base["accuracy"][key]))
        r["max_clean_diff_pp"] = round(100 * max(diffs[0], default=0.0), 2)
        r["max_robust_diff_pp"] = round(100 * max(diffs[1], default=0.0), 2)
        print(f"{r['fuse']:>7}  {r['wall_seconds']:>7.1f}  {r['train_seconds_total']:>7.1f}  {r['largest_group']:>5}  "
              f"{base['wall_seconds'] / r['wall_seconds']:>11.2f}×  {r['max_clean_diff_pp']:>10.2f} pp  "
              f"{r['max_robust_diff_pp']:>11.2f} pp")
    for r in results:
        target = FUSED_TARGET_SECONDS if r["largest_group"] > 1 else TARGET_SECONDS
        print(f"bench run {Path(args.suite).name} --fuse {r['fuse']}: {r['wall_seconds']:.0f} s for "
              f"{sum(r['cells'].values())} cells ({'within' if r['wall_seconds'] <= target else 'OVER'} the {target} s "
              "target)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": [
            {k: v for k, v in r.items() if k != "accuracy"} for r in results]}, indent=2))


if __name__ == "__main__":
    main()
