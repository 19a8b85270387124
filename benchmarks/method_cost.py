"""Per-epoch training cost of the 2025-2026 baselines against ``ce`` on digits (issue 18).

Each method trains the ``beyond_paper_digits`` recipe (digits step-10, seed 0, its cell as the suite resolves it)
for a few epochs through bench's own training loop; an epoch's cost is its wall time (the ``seconds`` of the
training curve), the median over epochs and repeats, the methods interleaved so a load change on the machine hits
them alike. Methods whose mechanism starts late run with it on from the first epoch (``trades-awp``:
``awp_warmup = 0``; ``robustlt``: no ε warm-up; ``taet``: its adversarial stage, ``stage1_epochs = 0``), so the
ratio is that of an epoch where the mechanism acts.

    python benchmarks/method_cost.py [--epochs 3] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import methods
from bench.data import prepare
from bench.settings import Settings
from bench.suite import load_suite
from bench.train import train

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["ce", "trades", "awp", "trades-awp", "at-bsl-ra", "at-bsl-aua", "reat", "robustlt", "taet"]
ACTIVE = {"trades-awp": {"awp_warmup": 0}, "robustlt": {"cw_eps_warmup": 0.0}, "taet": {"stage1_epochs": 0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = load_suite(ROOT / "suites" / "beyond_paper_digits.toml", Settings())
    cells = {c["method"]: c.config for c in suite.cells if c["imbalance"] == "step-10" and c["seed"] == 0}
    data = prepare("digits", "step-10", 0, root=Path(tempfile.mkdtemp()))
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(args.repeats):
        for name in METHODS:
            config = {**cells[name], "epochs": args.epochs}
            method = methods.get(name, **{**config["method_args"], **ACTIVE.get(name, {})})
            method = method.for_run(epochs=args.epochs, milestones=config["milestones"])
            outcome = train(config, method, data, Path(tempfile.mkdtemp()))
            seconds[name] += [row["seconds"] for row in outcome.curves[1:]]  # the first epoch warms up
    base = statistics.median(seconds["ce"])
    print(f"{'method':<12} {'s/epoch':>8} {'x ce':>6}   augment")
    for name in METHODS:
        s = statistics.median(seconds[name])
        print(f"{name:<12} {s:8.3f} {s / base:6.2f}   {cells[name]['augment']}")


if __name__ == "__main__":
    main()
