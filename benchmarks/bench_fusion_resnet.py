"""``bench_fusion.py --case resnet18-cuda``: fused ResNet-18 members against separate unfused runs on one card.

Issue 16's GPU target: 11 fused members at least 2× the throughput of 11 separate processes on the same card. See
``bench_fusion.py``'s docstring for what is measured; run through it:

    python benchmarks/bench_fusion.py --case resnet18-cuda [--images 2048] [--members 1,11] [--json F]

Every figure is images trained per second by all the cells of the row together (cells × epochs × images ÷ wall
time, synchronised). The separate processes are timed from the first one's start to the last one's end, after all
of them have imported, set up and warmed up (a "go" file releases them together), so process start-up is not
counted against them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import methods
from bench.data import PreparedData
from bench.fusion.train import Member, train_fused
from bench.suite import BUILTIN_DEFAULTS
from bench.train import train

CASE = "resnet18-cuda"
METHODS = ("ce", "focal", "ldam", "cb-reweight", "cb-focal", "drcb-ce", "drcb-focal", "drcb-ldam", "srat-ce",
           "srat-focal", "srat-ldam")
TARGET = 2.0  # issue 16: 11 fused members ≥ 2× 11 separate processes
WAIT_S = 300  # the longest a worker waits for "go", or the parent for every worker to be ready


def _data(args: argparse.Namespace, images: int) -> PreparedData:
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(images, 3, args.size, args.size), dtype=np.uint8)
    y = rng.integers(0, 10, size=images)
    return PreparedData(
        train_x=(torch.as_tensor(x, dtype=torch.float32) / 255).to(device), train_y=torch.as_tensor(y).to(device),
        test_x=torch.zeros(1, 3, args.size, args.size, device=device),
        test_y=torch.zeros(1, dtype=torch.int64, device=device), class_names=[str(c) for c in range(10)],
        train_counts=np.bincount(y, minlength=10).tolist(), subset_hash="bench", bounds=(0.0, 1.0),
    )


def _cell(args: argparse.Namespace, i: int) -> tuple[dict, methods.Method]:
    name = METHODS[i % len(METHODS)]
    config = {**BUILTIN_DEFAULTS, "model": "resnet18", "epochs": args.epochs, "batch_size": args.batch,
              "milestones": [], "warmup_epochs": 0, "lr": 0.05, "augment": "none", "seed": i, "method": name,
              # fp32 eager for every path: the fused path's policy, so the rows compare the same arithmetic
              "precision": "fp32", "compile": False, "channels_last": False,
              "train_attack": {"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": args.steps,
                               "random_start": True, "bn_mode": "train"}}
    return config, methods.get(name).for_run(epochs=args.epochs, milestones=[])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fused(args: argparse.Namespace, m: int, data: PreparedData) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        members = [Member(config=c, method=meth, run_dir=Path(tmp) / str(i))
                   for i, (c, meth) in enumerate(_cell(args, i) for i in range(m))]
        _sync(args.device)
        start = time.perf_counter()
        outcomes = train_fused(members, data)
        _sync(args.device)
        seconds = time.perf_counter() - start
    bad = [o for o in outcomes if isinstance(o, BaseException)]
    if bad:
        raise RuntimeError(f"a fused member failed: {bad[0]!r}")
    return seconds


def sequential(args: argparse.Namespace, m: int, data: PreparedData) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        _sync(args.device)
        start = time.perf_counter()
        for i in range(m):
            config, method = _cell(args, i)
            train(config, method, data, Path(tmp) / str(i))
        _sync(args.device)
        return time.perf_counter() - start


def _worker(args: argparse.Namespace) -> int:
    """One of the concurrent processes: set up, warm up, say ready, wait for go, train one cell, report."""
    sync = Path(args.sync_dir)
    data = _data(args, args.images)
    sequential(_warm_args(args), 1, _data(args, args.batch))  # cuDNN autotuning and allocator, off the clock
    (sync / f"ready-{args.worker}").touch()
    deadline = time.monotonic() + WAIT_S
    while not (sync / "go").exists():
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.01)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        config, method = _cell(args, args.worker)
        train(config, method, data, Path(tmp) / "cell")
    _sync(args.device)
    (sync / f"done-{args.worker}.json").write_text(json.dumps({"start": start, "end": time.time()}))
    return 0


def concurrent(args: argparse.Namespace, m: int) -> dict:
    """``m`` processes, each one unfused cell, released together once all are ready."""
    with tempfile.TemporaryDirectory() as sync:
        cmd = [sys.executable, str(Path(__file__).with_name("bench_fusion.py")), "--case", CASE,
               "--device", args.device, "--images", str(args.images), "--size", str(args.size),
               "--batch", str(args.batch), "--steps", str(args.steps), "--epochs", str(args.epochs),
               "--sync-dir", sync]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        launched = time.perf_counter()
        procs = [subprocess.Popen([*cmd, "--worker", str(i)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for i in range(m)]
        try:
            deadline = time.monotonic() + WAIT_S
            while sum((Path(sync) / f"ready-{i}").exists() for i in range(m)) < m:
                dead = [p for p in procs if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    out = dead[0].communicate()[0] if dead else "not ready in time"
                    raise RuntimeError(f"a concurrent worker did not get ready: {out[-2000:]}")
                time.sleep(0.05)
            setup_s = time.perf_counter() - launched
            (Path(sync) / "go").touch()
            outputs = [p.communicate()[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        failed = [(p.returncode, out) for p, out in zip(procs, outputs) if p.returncode]
        if failed:
            raise RuntimeError(f"a concurrent worker failed (rc {failed[0][0]}): {failed[0][1][-2000:]}")
        times = [json.loads((Path(sync) / f"done-{i}.json").read_text()) for i in range(m)]
    seconds = max(t["end"] for t in times) - min(t["start"] for t in times)
    return {"seconds": seconds, "setup_s": round(setup_s, 2)}


def _warm_args(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "epochs": 1})


def run_case(args: argparse.Namespace) -> int:
    args.epochs = args.epochs or 1
    if args.worker is not None:
        return _worker(args)
    members = [int(v) for v in (args.members or "1,11").split(",")]
    if args.device == "cuda" and not torch.cuda.is_available():
        line = f"{CASE}: needs a CUDA GPU (none here): not measured"
        print(line)
        if args.json:
            Path(args.json).write_text(json.dumps({"case": CASE, "skipped": line}))
        return 0
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # as the unfused policy does on CUDA (the fused trainer too)
    data = _data(args, args.images)
    warm = _data(args, args.batch)
    images = args.images * args.epochs
    result: dict = {"case": CASE, "device": args.device, "images": args.images, "size": args.size,
                    "batch": args.batch, "pgd_steps": args.steps, "epochs": args.epochs, "separate": args.separate,
                    "torch": torch.__version__, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
                    "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None, "rows": {}}

    def record(label: str, cells: int, seconds: float, **extra) -> None:
        ips = cells * images / seconds
        result["rows"][label] = {"cells": cells, "seconds": round(seconds, 3), "images_per_s": round(ips, 1), **extra}
        print(f"{label:>16}  {cells:>5}  {seconds:>9.2f}  {ips:>10,.0f}", flush=True)
        rows = result["rows"]
        for other in ("sequential", "concurrent"):
            if f"fused_{args.separate}" in rows and f"{other}_{args.separate}" in rows:
                result[f"fused_vs_{other}"] = round(rows[f"fused_{args.separate}"]["images_per_s"]
                                                    / rows[f"{other}_{args.separate}"]["images_per_s"], 3)
        if "fused_vs_concurrent" in result:
            result["target"] = {"fused_vs_concurrent": TARGET, "met": result["fused_vs_concurrent"] >= TARGET}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))

    print(f"{CASE} on {result['gpu'] or args.device}: torch {torch.__version__}; {args.images} images 3×{args.size}×"
          f"{args.size}, resnet18, PGD-{args.steps}, batch {args.batch}, {args.epochs} epoch(s) a cell, fp32 eager")
    print(f"{'row':>16}  {'cells':>5}  {'seconds':>9}  {'images/s':>10}   (all cells of the row together)")
    for m in members:
        fused(_warm_args(args), m, warm)  # warm-up: autotuning for this member count
        record(f"fused_{m}", m, fused(args, m, data))
    sequential(_warm_args(args), 1, warm)
    record(f"sequential_{args.separate}", args.separate, sequential(args, args.separate, data))
    if not args.no_concurrent:
        if args.device == "cuda":
            torch.cuda.empty_cache()  # leave the card's memory to the processes
        out = concurrent(args, args.separate)
        record(f"concurrent_{args.separate}", args.separate, out["seconds"], setup_s=out["setup_s"])
    for key in ("fused_vs_sequential", "fused_vs_concurrent"):
        if key in result:
            print(f"{key}: {result[key]:.2f}x" + (f" (target {TARGET}x)" if key == "fused_vs_concurrent" else ""))
    return 0


if __name__ == "__main__":  # run through bench_fusion.py, which parses the arguments
    os.execv(sys.executable, [sys.executable, str(Path(__file__).with_name("bench_fusion.py")), "--case", CASE,
                              *sys.argv[1:]])
