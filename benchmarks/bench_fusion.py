"""Fused cells (bench.fusion) against the unfused runner and a reference-style loop, side by side in one run.

Digits-shaped data (1×8×8, 10 classes, synthetic, 512 images), cnn-small, PGD-10, batch 64, the quick suite's
methods as members (ce, focal, ldam, the CB and DRW variants, SRAT). For each group size M (1, 2, 4, 11) and each
round, in turn:
(a) fused: ``bench.fusion.train.train_fused`` on M members, one stacked model;
(b) unfused: ``bench.train.train`` on the same M cells one after another (the runner's path);
(c) reference: the reference-style loop of ``bench_train_speed.py`` (DataLoader, parameter gradients in every
    attack step), M times.
Each figure is the images trained per second by all M cells together (M × epochs × images ÷ the group's wall
time); per member it is that ÷ M. The three alternate within a round so machine load moves them alike; medians
over the rounds.

``--case resnet18-cuda`` (issue 16's GPU target: 11 fused ResNet-18 members at least 2× the throughput of 11
separate runs on the same card): CIFAR-shaped synthetic data (3×32×32, 10 classes, 2,048 images), resnet18, PGD-10,
batch 128, fp32 eager for every path (the fused path's policy; TF32 convolutions as torch's default, cuDNN
autotuning on), 1 epoch after a one-batch warm-up of each path. It prints images/s of (a) 1 and 11 fused members,
(b) 11 unfused cells one after another (``bench.train.train``), (c) 11 unfused cells in 11 processes launched
together on the card (timed from the first start to the last end, after every process has set up and warmed up);
``--json`` keeps the figures (rewritten after each). Without CUDA it prints one line saying it needs a GPU;
``--device cpu`` with tiny sizes runs the same code on the CPU (the GPU check's smoke test).

    python benchmarks/bench_fusion.py [--members 1,2,4,11] [--epochs 2] [--rounds 3] [--threads N]
    python benchmarks/bench_fusion.py --case resnet18-cuda [--images 2048] [--members 1,11] [--json F]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import machine
import methods
from bench.data import PreparedData
from bench.fusion.train import Member, train_fused
from bench.suite import BUILTIN_DEFAULTS
from bench.train import train
from bench_train_speed import CASES, ReferenceLoop, synthetic

METHODS = ("ce", "focal", "ldam", "cb-reweight", "cb-focal", "drcb-ce", "drcb-focal", "drcb-ldam", "srat-ce",
           "srat-focal", "srat-ldam")
IMAGES = 512
BATCH = 64
CUDA_CASE = "resnet18-cuda"


def _data(x: np.ndarray, y: np.ndarray) -> PreparedData:
    return PreparedData(
        train_x=torch.as_tensor(x, dtype=torch.float32) / 255, train_y=torch.as_tensor(y),
        test_x=torch.zeros(1, 1, 8, 8), test_y=torch.zeros(1, dtype=torch.int64),
        class_names=[str(c) for c in range(10)], train_counts=np.bincount(y, minlength=10).tolist(),
        subset_hash="bench", bounds=(0.0, 1.0),
    )


def _cells(m: int, epochs: int) -> list[tuple[dict, methods.Method]]:
    out = []
    for name in (METHODS * 2)[:m]:
        config = {**BUILTIN_DEFAULTS, "model": "cnn-small", "epochs": epochs, "batch_size": BATCH, "milestones": [],
                  "warmup_epochs": 0, "lr": 0.05, "augment": "none", "seed": 0, "method": name,
                  "train_attack": {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 10, "random_start": True,
                                   "bn_mode": "train"}}
        out.append((config, methods.get(name).for_run(epochs=epochs, milestones=[])))
    return out


def fused(m: int, epochs: int, data: PreparedData) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        members = [Member(config=c, method=meth, run_dir=Path(tmp) / str(i)) for i, (c, meth) in
                   enumerate(_cells(m, epochs))]
        start = time.perf_counter()
        train_fused(members, data)
        return time.perf_counter() - start


def unfused(m: int, epochs: int, data: PreparedData) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i, (config, method) in enumerate(_cells(m, epochs)):
            train(config, method, data, Path(tmp) / str(i))
        return time.perf_counter() - start


def reference(m: int, epochs: int, x: np.ndarray, y: np.ndarray) -> float:
    import bench_train_speed

    bench_train_speed.BATCH = BATCH  # the same batch as the other two
    loops = [ReferenceLoop(CASES["digits"], x, y) for _ in range(m)]
    start = time.perf_counter()
    for loop in loops:
        for _ in range(epochs):
            loop.epoch()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=("digits", CUDA_CASE), default="digits")
    parser.add_argument("--members", default=None, help="group sizes (default 1,2,4,11; resnet18-cuda: 1,11)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs a cell (default 2; resnet18-cuda: 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    cuda = parser.add_argument_group("resnet18-cuda")
    cuda.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test with tiny sizes")
    cuda.add_argument("--images", type=int, default=2048)
    cuda.add_argument("--size", type=int, default=32, help="image side (3×size×size)")
    cuda.add_argument("--batch", type=int, default=128)
    cuda.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack")
    cuda.add_argument("--separate", type=int, default=11, help="unfused cells, sequential and concurrent")
    cuda.add_argument("--no-concurrent", action="store_true", help="skip the concurrent processes")
    cuda.add_argument("--json", help="write the figures here (rewritten after each)")
    cuda.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    cuda.add_argument("--sync-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case == CUDA_CASE:
        from bench_fusion_resnet import run_case

        sys.exit(run_case(args))
    args.members = args.members or "1,2,4,11"
    args.epochs = args.epochs or 2
    print(machine.line(machine.describe()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; digits-shaped {IMAGES} images, cnn-small, "
          f"PGD-10, batch {BATCH}, {args.epochs} epochs a cell, medians of {args.rounds} rounds")
    x, y = synthetic((1, 8, 8), 10, IMAGES)
    data = _data(x, y)
    fused(1, 1, data)  # warm-up of every path
    unfused(1, 1, data)
    print(f"{'members':>7}  {'fused':>8}  {'unfused':>8}  {'reference':>9}  {'fused/unfused':>13}  {'fused/ref':>9}"
          "   (images trained per second, all cells of the group together)")
    for m in (int(v) for v in args.members.split(",")):
        times: dict[str, list[float]] = {"fused": [], "unfused": [], "reference": []}
        for _ in range(args.rounds):
            times["fused"].append(fused(m, args.epochs, data))
            times["unfused"].append(unfused(m, args.epochs, data))
            times["reference"].append(reference(m, args.epochs, x, y))
        rate = {k: m * IMAGES * args.epochs / statistics.median(v) for k, v in times.items()}
        print(f"{m:>7}  {rate['fused']:>8,.0f}  {rate['unfused']:>8,.0f}  {rate['reference']:>9,.0f}  "
              f"{rate['fused'] / rate['unfused']:>13.2f}  {rate['fused'] / rate['reference']:>9.2f}")
    if torch.cuda.is_available():
        print(f"GPU: python benchmarks/bench_fusion.py --case {CUDA_CASE}")


if __name__ == "__main__":
    main()
