"""Several small cells per device: wall time of the same digits cells with `bench run --workers 1` vs `--workers 2`.

One digits cell (cnn-small, a few hundred images) cannot fill a device: on a GPU its kernels are too small to
occupy the card, on 2 CPU cores its tiny kernels do not scale across the two threads (the OpenMP fork/join per
operation is a large share of each). The local executor packs cells instead: `--workers N` starts N worker
processes that claim cells from one database, round-robin over the GPUs (N > GPUs puts several on each card), or
with the CPU cores split between them (`BENCH_THREADS`). On this project's 2-core CPU that is the choice between
one process with 2 torch threads and two processes with 1 thread each.

Each configuration runs the same K cells from an empty database in a temporary folder, through the real CLI (so
process start-up and imports are counted, as a user pays them); configurations alternate, `--rounds` times, and
the median is reported, so machine load moves all of them alike.

    python benchmarks/bench_packing.py [--workers 1,2] [--cells 8] [--epochs 4] [--rounds 3] [--device cpu]

Prints the machine, wall time and cells per minute of each configuration and the gain over the first; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import machine

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["ce", "focal", "ldam", "cb-reweight", "cb-focal", "drcb-ce", "drcb-focal", "drcb-ldam"]


def suite_text(cells: int, epochs: int) -> str:
    """A digits suite of ``cells`` cells: methods × seeds 0, 1, … until there are enough."""
    seeds = (cells + len(METHODS) - 1) // len(METHODS)
    per_seed = min(cells, len(METHODS))
    if per_seed * seeds != cells:
        raise SystemExit(f"--cells must be at most {len(METHODS)} or a multiple of it, got {cells}")
    methods = ", ".join(f'"{m}"' for m in METHODS[:per_seed])
    return (f'name = "packing"\nseeds = {list(range(seeds))}\n\n[defaults]\nepochs = {epochs}\nbatch_size = 128\n'
            f'milestones = [0.75]\n\n[[grid]]\ndataset = "digits"\nimbalance = "step-10"\n'
            f'method = [{methods}]\n')


def run_once(workers: int, text: str, device: str) -> float:
    """Wall seconds of one `bench run` of the suite from an empty database."""
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "packing.toml"
        suite.write_text(text)
        command = [sys.executable, "-m", "bench.cli", "run", str(suite), "--quiet", f"--workers={workers}",
                   f"--db=sqlite:///{tmp}/bench.db", f"--device={device}"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"bench run --workers {workers} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    text = suite_text(args.cells, args.epochs)
    info = machine.describe(torch.device(args.device))
    print(machine.line(info))
    print(f"{args.cells} digits cells (cnn-small, PGD-10, {args.epochs} epochs), `bench run --workers N` on "
          f"{args.device}, median of {args.rounds} alternating rounds")
    walls: dict[int, list[float]] = {w: [] for w in counts}
    for _ in range(args.rounds):
        for w in counts:
            walls[w].append(run_once(w, text, args.device))
    base = statistics.median(walls[counts[0]])
    rows = {}
    for w in counts:
        wall = statistics.median(walls[w])
        rows[w] = {"wall_s": round(wall, 1), "cells_per_min": round(60 * args.cells / wall, 1),
                   "gain": round(base / wall, 2), "walls_s": [round(s, 1) for s in walls[w]]}
        print(f"--workers {w}: {wall:6.1f} s, {rows[w]['cells_per_min']:5.1f} cells/min, "
              f"{rows[w]['gain']:.2f}x of --workers {counts[0]}   (rounds {rows[w]['walls_s']})")
    Path(args.json).write_text(json.dumps({"machine": info, "cells": args.cells, "epochs": args.epochs,
                                           "device": args.device, "workers": rows}, indent=2))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
