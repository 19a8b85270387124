"""Wall time of the offline default, `bench run suites/quick.toml`, from an empty database.

Target (issue: bench run): at most 5 minutes on 2 CPU cores. Runs the real CLI in a subprocess in a temporary
folder (fresh database and run folder), prints the machine, versions and the time, and writes JSON.

    python benchmarks/bench_quick.py [--suite suites/quick.toml] [--json out.json]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=str(ROOT / "suites" / "quick.toml"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "bench_quick.json"))
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(ROOT / "bench.toml", work / "bench.toml")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(Path(args.suite).resolve())],
                              cwd=work, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"bench run failed:\n{proc.stdout}\n{proc.stderr}")
        with sqlite3.connect(work / "results" / "bench.db") as conn:
            statuses = dict(conn.execute("select status, count(*) from runs group by status").fetchall())
            train = conn.execute("select sum(train_seconds), avg(images_per_second) from runs").fetchone()
    figures = {
        "suite": Path(args.suite).name,
        "wall_seconds": round(seconds, 1),
        "target_seconds": 300,
        "cells": statuses,
        "train_seconds_total": round(train[0] or 0, 1),
        "mean_train_images_per_second": round(train[1] or 0, 1),
        "machine": f"{platform.machine()} {platform.processor()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    print(json.dumps(figures, indent=2))
    print(f"bench run {figures['suite']}: {seconds:.0f} s for {sum(statuses.values())} cells "
          f"({'within' if seconds <= 300 else 'OVER'} the 300 s target)")
    Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
