"""The GPU check in one shot (issue 20): set bench up on a bare GPU machine and measure everything, time-boxed.

One command, meant for the rare, short loans of a GPU machine (Python, torch and the scientific stack present;
sqlalchemy, pyautoattack, submitit and pytest missing; no package registry). It

1. ``setup``: installs the missing packages from the wheels carried in ``wheels/gpu/`` (see benchmarks/GPU_CHECK.md:
   ``pip install --no-index --find-links wheels/gpu``; failing that ``--target`` a private folder; failing that the
   wheels are unzipped there), tries ``pip install --no-deps --no-build-isolation -e .`` when no ``bench`` command
   exists, and always puts the repository root on ``PYTHONPATH``, so bench imports either way;
2. ``environment``: GPU name, driver, CUDA / cuDNN / torch versions, memory, SMs, the card's bf16 peak;
3. ``pytest_gpu``: ``python -m pytest -m gpu`` (the CUDA paths' tests);
4. ``train_speed``: ``benchmarks/bench_train_speed.py --cases resnet18-cuda`` for bf16 + channels-last + compiled
   (the CUDA defaults) and for fp32 eager: runner vs reference-style loop, FLOP rate against the bf16 peak;
5. ``fusion``: ``benchmarks/bench_fusion.py --case resnet18-cuda`` (issue 16): 1 and 11 fused ResNet-18 members
   against 11 unfused cells one after another and 11 processes at once on the card, fp32 eager, 1,024 images;
6. ``bench_run``: a real ``bench run`` of CIFAR-10-format files the script writes (torchvision's layout, learnable
   synthetic classes) with ResNet-18 for a few epochs and PGD-20 evaluation of the 10,000 test images; epoch times
   from the results database (the first epoch includes compiling, the others do not), and the evaluation timed on
   its own by ``bench evaluate`` (PGD-20 minus a zero-step baseline);
7. ``packing``: the same digits cells with ``bench run --workers 1, 2, 4, 8`` on the card, cells per minute;
8. ``autoattack``: a ResNet-18 cell on 1,000 test images, then ``bench evaluate`` with APGD-CE alone and with
   standard AutoAttack, each timed against a zero-step baseline;
9. ``train_speed_extra`` (budget left): bf16 eager channels-last and bf16 eager contiguous, so the gain of each
   switch (bf16, channels-last, compile) is known.

Every phase runs in its own processes with a time-out cut from one overall budget (``--budget``, 480 s), so one slow
phase never eats the others; a phase that fails or times out records why and the check goes on. Results go to
``$OUT/gpu_check.json`` (``$OUT`` unset: the current folder), rewritten after every phase, with each phase's log under
``$OUT/gpu_check_logs/``; a short table is printed at the end.

    bash benchmarks/gpu_check.sh                  # on the GPU machine (OUT set by the device tool)
    python benchmarks/gpu_check.py --cpu-smoke    # the same phases, tiny, on the CPU (tests/test_gpu_check.py)
    python benchmarks/gpu_check.py --download-wheels   # on the development machine: fill wheels/gpu/

Only the ``bench`` command line and the scripts in benchmarks/ are used (plus the results database, read with
sqlite3), so the check does not depend on where bench keeps its modules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import pickle
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
WHEELS = ROOT / "wheels" / "gpu"
SCHEMA = 1

# What the bare GPU machine lacks: setup installs every wheel in wheels/gpu/ whose distribution is not installed, and
# reports the pyproject dependencies still missing (Check._missing). psycopg and ray are not carried: bench imports them only for a PostgreSQL database or
# --executor ray, neither of which the check uses. pytest is not a runtime dependency but the check needs it.
ALWAYS = ["pytest"]
# Dependencies the check never uses and does not carry: a PostgreSQL store, --executor ray, and the leaderboard
# site's Parquet downloads (pyarrow's wheel alone is ~40 MB of the device tool's 64 MiB).
NOT_CARRIED = {"psycopg", "ray", "pyarrow"}
# The wheels --download-wheels fetches (the versions tested on the development machine), for CPython 3.12 on
# manylinux x86_64. pytest's and sqlalchemy's dependencies are listed so that `pip install --no-index` finds them
# whatever the GPU machine already has; setuptools is for `pip install -e .` without build isolation.
WHEEL_PINS = [
    "sqlalchemy==2.1.9", "greenlet==3.5.6", "typing_extensions==4.16.0",
    "pyautoattack==0.2.0",
    "submitit==1.5.4", "cloudpickle==3.1.3",
    "pytest==9.2.0", "pluggy==1.7.0", "iniconfig==2.3.1", "packaging==26.4", "pygments==2.21.0",
    "setuptools==84.2.1",
    # the results store's schema migrations (bench/results/migrations, being added): alembic and its template engine
    "alembic==1.20.1", "mako==1.4.3", "markupsafe==3.0.4",
]
WHEEL_PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                  "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                  "--platform", "manylinux2014_x86_64"]
# pyautoattack's wheel carries its examples' model weights (41 MB of model_test.pt): not code, and the device tool
# carries at most 64 MiB. --download-wheels rewrites the wheel without them.
SLIM = {"pyautoattack": ("pyautoattack/examples/model_test.pt", "pyautoattack/examples/tf_model.weight.h5")}

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EPS, ALPHA = "8/255", "2/255"

# Size of everything, per mode. "caps" are each step's own time limit in seconds; the overall budget cuts them.
MODES: dict[str, dict[str, Any]] = {
    "gpu": {
        "device": "cuda", "budget": 480, "min_step_s": 15,
        "speed_case": "resnet18-cuda", "speed_args": [], "speed_extra": True,
        "model": "resnet18", "train_per_class": 5000, "test_per_class": 1000, "aa_images": 1000,
        "epochs": 3, "batch_size": 128, "imbalance": "step-10", "aa_n_max": 500,
        "eval_resolution_s": 3.0, "eval_copies": 10,  # a PGD-20 evaluation shorter than 3 s is timed 10 at once
        "packing_workers": [1, 2, 4, 8], "packing_cells": 8, "packing_epochs": 4, "packing_defaults": "",
        # 11 cells × 1,024 images in each of the three 11-cell rows: small enough for the cap below
        "fusion_args": ["--images", "1024"],
        "caps": {"setup": 150, "environment": 60, "pytest_gpu": 120, "speed": 150, "speed_fp32": 100, "fusion": 100,
                 "speed_extra": 75, "run": 180, "evaluate": 90, "packing": 75, "aa_run": 90,
                 "aa_evaluate": 150},
    },
    "cpu-smoke": {
        "device": "cpu", "budget": 300, "min_step_s": 3,
        "speed_case": "digits", "speed_args": ["--batches", "1", "--rounds", "1", "--threads", "1"], "speed_extra": False,
        "model": "cnn-small", "train_per_class": 30, "test_per_class": 10, "aa_images": 20,
        "epochs": 2, "batch_size": 64, "imbalance": "step-10", "aa_n_max": 0,
        "eval_resolution_s": 1e9, "eval_copies": 2,  # always take the repeated-evaluation path, to test it
        "packing_workers": [2], "packing_cells": 2, "packing_epochs": 1,  # --workers 1 is the bench_run path
        # the smoke test needs the path, not the figure: a one-step evaluation and no guards keep a cell short
        "packing_defaults": 'eval_attacks = [{ kind = "fgsm", eps = 0.1 }]\nguards = []\n',
        # the resnet18 fusion case's code path, tiny, on the CPU: 16 images 3×8×8, PGD-1, groups of 1 and 2
        "fusion_args": ["--device", "cpu", "--images", "16", "--size", "8", "--batch", "8", "--steps", "1",
                        "--members", "1,2", "--separate", "2", "--threads", "1"],
        # generous: a 2-core machine shared with other work runs these a few times slower than when idle
        "caps": {"setup": 60, "environment": 60, "pytest_gpu": 90, "speed": 60, "speed_fp32": 60, "fusion": 90,
                 "speed_extra": 30, "run": 90, "evaluate": 60, "packing": 90, "aa_run": 60,
                 "aa_evaluate": 60},
    },
}
PHASES = ["setup", "environment", "pytest_gpu", "train_speed", "fusion", "bench_run", "packing", "autoattack",
          "train_speed_extra"]
# The check's own targets (issue 20), on one H100/H200.
TARGETS = {"train_images_per_s": 6000, "train_images_per_s_aim": 10000, "train_ratio_vs_reference": 3.0,
           "pgd20_eval_images_per_s": 20000,
           "fused_vs_separate_processes": 2.0}  # issue 16: 11 fused resnet18 members vs 11 processes on the card


class Skip(Exception):
    """A phase (or step) that does not apply here or has no budget left: recorded as skipped, not failed."""


class StepFailed(Exception):
    """A step's process failed or timed out; ``record`` says how."""

    def __init__(self, message: str, record: dict) -> None:
        super().__init__(message)
        self.record = record


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def tail(text: str, n: int = 1500) -> str:
    return text if len(text) <= n else "…" + text[-n:]


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = "cpu-smoke" if args.cpu_smoke else "gpu"
        self.cfg = dict(MODES[self.mode])
        self.budget = float(args.budget or self.cfg["budget"])
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + self.budget
        self.out = Path(os.environ.get("OUT") or ".").resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs = self.out / "gpu_check_logs"
        self.logs.mkdir(exist_ok=True)
        self.json_path = self.out / "gpu_check.json"
        self.work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        # One Inductor cache for every phase: the speed benchmark's compile is the cold one (its warm-up epoch),
        # the bench run's then shows what a user's later runs pay.
        self.env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.work / "inductor"))
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.setdefault("MPLBACKEND", "Agg")
        if self.mode == "cpu-smoke":
            # one thread a process: the smoke run exercises the paths, and a 2-core machine shared with other work
            # slows multi-threaded torch down many times over (OpenMP threads spin waiting for each other)
            self.env["OMP_NUM_THREADS"] = "1"
        self._prepend_path(ROOT)
        self.python = sys.executable
        self.bench_cmd: list[str] = []
        self.cuda = None  # set by the environment phase
        self.result: dict[str, Any] = {
            "schema": SCHEMA, "mode": self.mode, "started": now_iso(), "finished": None, "budget_s": self.budget,
            "elapsed_s": 0.0, "device": self.cfg["device"], "argv": sys.argv[1:], "machine": {}, "phases": {},
            "targets": {}, "diagnosis": [],
        }

    # ------------------------------------------------------------------------------------------------ plumbing

    def _prepend_path(self, path: Path) -> None:
        parts = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(path) not in parts:
            self.env["PYTHONPATH"] = os.pathsep.join([str(path), *parts])
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def box(self, cap_key: str) -> float:
        """This step's time limit: its cap, cut to the budget left (minus a few seconds to write the results)."""
        cap = float(self.cfg["caps"][cap_key])
        limit = min(cap, self.left() - 3)
        if limit < self.cfg["min_step_s"]:
            raise Skip(f"budget exhausted ({self.left():.0f} s left of {self.budget:.0f} s)")
        return limit

    def run(self, label: str, cmd: list[str], cap_key: str, *, cwd: Path = ROOT, env: dict | None = None,
            check: bool = True) -> dict:
        """Run ``cmd`` in its own process group, time-boxed; its output goes to the phase log. Returns a record."""
        limit = self.box(cap_key)
        log = self.logs / f"{label}.log"
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        timed_out = False
        try:
            output, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            output = self._kill(proc)
        except BaseException:  # interrupted (SIGTERM from the device tool): leave nothing running on the card
            self._kill(proc)
            raise
        seconds = time.perf_counter() - start
        log.write_text(f"$ {' '.join(cmd)}\n# cwd {cwd}; limit {limit:.0f} s; took {seconds:.1f} s; "
                       f"rc {proc.returncode}{'; TIMED OUT' if timed_out else ''}\n\n" + tail(output, 200_000))
        record = {"seconds": round(seconds, 2), "rc": proc.returncode, "timed_out": timed_out,
                  "limit_s": round(limit, 1), "log": str(log.relative_to(self.out))}
        record["output"] = output
        if check and (timed_out or proc.returncode != 0):
            why = f"timed out after {limit:.0f} s" if timed_out else f"exit status {proc.returncode}"
            raise StepFailed(f"{label}: {why}: {tail(output.strip(), 1200)}", _public(record))
        return record

    @staticmethod
    def _kill(proc: subprocess.Popen) -> str:
        """End the timed-out process and everything it started (its own process group)."""
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                output, _ = proc.communicate(timeout=wait)
                return output or ""
            except subprocess.TimeoutExpired:
                continue
        return ""

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.result, indent=2, default=str))
        os.replace(tmp, self.json_path)

    def phase(self, name: str, fn) -> None:
        start = time.perf_counter()
        record: dict[str, Any] = {"status": "running"}
        self.result["phases"][name] = record
        print(f"[gpu_check {time.perf_counter() - self.t0:6.1f}s] {name} ...", flush=True)
        try:
            if name in self.args.skip:
                raise Skip("--skip")
            record.update(fn() or {})
            record["status"] = "ok" if not record.get("errors") else "partial"
        except Skip as exc:
            record.update(status="skipped", reason=str(exc))
        except StepFailed as exc:
            record.update(status="timeout" if exc.record.get("timed_out") else "failed", error=str(exc),
                          step=exc.record)
        except Exception as exc:  # noqa: BLE001 - a phase's failure is data; the check goes on
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                          traceback=tail(traceback.format_exc(), 3000))
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.save()
        print(f"[gpu_check {time.perf_counter() - self.t0:6.1f}s] {name}: {record['status']} "
              f"({record['seconds']:.1f} s){' - ' + tail(record.get('reason') or record.get('error') or '', 300) if record['status'] != 'ok' else ''}",
              flush=True)

    def step(self, record: dict, key: str, fn) -> Any:
        """One step of a phase whose failure should not end the phase: its error goes to ``record['errors']``."""
        try:
            return fn()
        except Skip as exc:
            record.setdefault("skipped", {})[key] = str(exc)
        except StepFailed as exc:
            record.setdefault("errors", {})[key] = {"error": str(exc), **exc.record}
        except Exception as exc:  # noqa: BLE001
            record.setdefault("errors", {})[key] = {"error": f"{type(exc).__name__}: {exc}",
                                                    "traceback": tail(traceback.format_exc(), 2000)}
        return None

    def bench(self, *args: str) -> list[str]:
        return [*self.bench_cmd, *args]

    # ------------------------------------------------------------------------------------------------ phases

    def setup(self) -> dict:
        record: dict[str, Any] = {"python": sys.executable, "python_version": sys.version.split()[0],
                                  "repo": str(ROOT), "wheels_dir": str(WHEELS)}
        wheels = sorted(p.name for p in WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
        record["wheels"] = wheels
        missing = self._missing()
        record["missing_before"] = missing
        carried = {_norm(w.split("-")[0]): w.split("-")[0] for w in wheels}
        record["not_carried"] = [d for d in missing if _norm(d) not in carried]
        # every carried distribution this Python lacks (the folder holds only what the GPU machine needs: bench's
        # missing dependencies, theirs, pytest, setuptools for `pip install -e`)
        installable = [name for name in carried.values() if not _installed(name)]
        record["installing"] = installable
        if installable:
            record["install"] = self._install(installable)
        elif missing and not wheels:
            record["install"] = f"nothing to install from: {WHEELS} has no wheels (see benchmarks/GPU_CHECK.md)"
        if self.mode == "gpu" and not self.args.no_editable and shutil.which("bench") is None:
            record["editable"] = self._editable()
        self.bench_cmd = self._bench_command()
        record["bench_command"] = self.bench_cmd
        record["pythonpath"] = self.env.get("PYTHONPATH", "")
        helped = self.run("setup_bench_help", self.bench("--help"), "environment", check=False)
        record["bench_help_rc"] = helped["rc"]
        if helped["rc"] != 0:
            record["errors"] = {"bench --help": tail(helped["output"], 1500)}
        return record  # the environment phase checks that every module imports

    @staticmethod
    def _missing() -> list[str]:
        """pyproject's dependencies (and pytest) that this Python lacks, by distribution name."""
        try:
            import tomllib

            deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        except Exception:  # noqa: BLE001 - the known few then
            deps = ["sqlalchemy", "pyautoattack", "submitit"]
        names = [re.split(r"[\s\[<>=!~;]", d.strip(), maxsplit=1)[0] for d in [*deps, *ALWAYS]]
        return [name for name in dict.fromkeys(names) if name not in NOT_CARRIED and not _installed(name)]

    def _install(self, dists: list[str]) -> dict:
        base = [self.python, "-m", "pip", "install", "--no-index", "--find-links", str(WHEELS),
                "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off"]
        attempts = {}
        done = self.run("setup_pip_install", [*base, *dists], "setup", check=False)
        attempts["pip install"] = {"rc": done["rc"], "seconds": done["seconds"], "output": tail(done["output"], 600)}
        if done["rc"] == 0 and not done["timed_out"]:
            importlib.invalidate_caches()
            return attempts
        site = self.work / "site"  # PEP 668 or no write access: a private folder on PYTHONPATH instead
        done = self.run("setup_pip_target", [*base, "--target", str(site), *dists], "setup", check=False)
        attempts["pip install --target"] = {"rc": done["rc"], "seconds": done["seconds"],
                                            "output": tail(done["output"], 600)}
        if done["rc"] != 0 or done["timed_out"]:
            # no pip at all: a wheel is a zip of the installed files; unpacking it into a folder on the path works
            site.mkdir(parents=True, exist_ok=True)
            for wheel in sorted(WHEELS.glob("*.whl")):
                with zipfile.ZipFile(wheel) as z:
                    z.extractall(site)
            attempts["unzip"] = f"{len(list(WHEELS.glob('*.whl')))} wheels unpacked into {site}"
        self._prepend_path(site)
        importlib.invalidate_caches()
        return attempts

    def _editable(self) -> dict:
        cmd = [self.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "--no-warn-script-location", "-e", str(ROOT)]
        if importlib.util.find_spec("setuptools") is None and list(WHEELS.glob("setuptools-*.whl")):
            self.run("setup_setuptools", [self.python, "-m", "pip", "install", "--no-index", "--find-links",
                                          str(WHEELS), "setuptools"], "setup", check=False)
        done = self.run("setup_editable", cmd, "setup", check=False)
        ok = done["rc"] == 0 and not done["timed_out"]
        return {"rc": done["rc"], "seconds": done["seconds"], "bench_on_path": shutil.which("bench"),
                "note": "installed" if ok else "failed: bench runs from PYTHONPATH instead",
                "output": tail(done["output"], 600)}

    def _bench_command(self) -> list[str]:
        """``bench`` as pyproject's [project.scripts] defines it, run by this Python (works from PYTHONPATH)."""
        if self.args.bench_cmd:
            return self.args.bench_cmd.split()
        target = "bench.cli:main"
        try:
            import tomllib

            target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["bench"]
        except Exception:  # noqa: BLE001 - the default entry point then
            pass
        module, func = target.split(":")
        code = f"import sys; sys.argv[0] = 'bench'; from {module} import {func} as m; sys.exit(m())"
        return [self.python, "-c", code]

    def environment(self) -> dict:
        script = r"""
import json, os, platform, re, subprocess, sys
sys.path.insert(0, sys.argv[1])
info = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
try:
    import machine
    info["cpu"] = machine.cpu_model()
except Exception as exc:
    info["cpu"] = "unknown (%s)" % exc
import importlib, importlib.util
info["modules"] = {}
for mod in ("bench", "methods", "sqlalchemy", "pyautoattack", "submitit", "pytest", "numpy", "scipy", "pandas",
            "sklearn", "matplotlib", "jinja2", "click", "rich", "torchvision"):
    try:
        info["modules"][mod] = getattr(importlib.import_module(mod), "__version__", "ok")
    except Exception as exc:
        info["modules"][mod] = "MISSING: %s: %s" % (type(exc).__name__, exc)
info["optional_modules"] = {}  # bench imports these only where used: reported, never an error
for mod in ("alembic", "ray", "psycopg", "playwright"):
    try:
        info["optional_modules"][mod] = importlib.util.find_spec(mod) is not None
    except Exception:
        info["optional_modules"][mod] = False
try:
    import torch
except Exception as exc:
    info["modules"]["torch"] = "MISSING: %s: %s" % (type(exc).__name__, exc)
    torch = None
if torch is not None:
    info.update(torch=torch.__version__, torchvision=info["modules"].get("torchvision"),
                numpy=info["modules"].get("numpy"), torch_cuda=torch.version.cuda,
                cuda_available=torch.cuda.is_available(), torch_threads=torch.get_num_threads())
    try:
        info["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        info["cudnn"] = None
if torch is not None and torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_count=torch.cuda.device_count(), capability="%d.%d" % (p.major, p.minor),
                gpu_memory_gib=round(p.total_memory / 2**30, 1), sm_count=p.multi_processor_count,
                bf16_supported=torch.cuda.is_bf16_supported())
    try:
        import machine
        peak = machine.bf16_peak(p.name)
        info["bf16_peak_tflops"] = peak / 1e12 if peak else None
    except Exception:
        pass
    free, total = torch.cuda.mem_get_info(0)
    info["gpu_memory_free_gib"] = round(free / 2**30, 1)
try:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm,"
                        "pci.bus_id,compute_mode", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    if q.returncode == 0 and q.stdout.strip():
        info["driver"] = q.stdout.strip().splitlines()[0].split(",")[1].strip()
    h = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20)
    m = re.search(r"CUDA Version:\s*([0-9.]+)", h.stdout)
    info["driver_cuda"] = m.group(1) if m else None
except Exception as exc:
    info["nvidia_smi"] = "not available (%s)" % type(exc).__name__
print("ENV" + json.dumps(info))
"""
        done = self.run("environment", [self.python, "-c", script, str(BENCHMARKS)], "environment")
        match = re.search(r"ENV(\{.*\})", done["output"])
        if not match:
            raise RuntimeError(f"no environment line in: {tail(done['output'], 800)}")
        info = json.loads(match.group(1))
        info["git"] = self._git()
        info["hostname"] = os.uname().nodename
        self.cuda = bool(info.get("cuda_available")) if "torch" in info else None
        self.result["machine"] = info
        missing = {m: v for m, v in info.get("modules", {}).items() if str(v).startswith("MISSING")}
        record: dict[str, Any] = {"modules": info.get("modules", {})}
        if missing:
            record["errors"] = missing
        if self.mode == "gpu" and self.cuda is False:
            self.result["diagnosis"].append("no CUDA device: every GPU phase is skipped (use --cpu-smoke on a CPU)")
        record["summary"] = (f"{info.get('gpu', 'no GPU')}, driver {info.get('driver')}, torch {info.get('torch')}, "
                             f"CUDA {info.get('torch_cuda')}, cuDNN {info.get('cudnn')}")
        return record

    @staticmethod
    def _git() -> dict:
        try:
            head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10, check=False)
            dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True,
                                   timeout=10, check=False)
            if head.returncode:
                return {"commit": None}
            return {"commit": head.stdout.strip(), "changed_files": len(dirty.stdout.splitlines())}
        except Exception:  # noqa: BLE001 - a copy without git
            return {"commit": None}

    def _need_device(self) -> None:
        if self.cfg["device"] == "cuda" and self.cuda is False:
            raise Skip("needs a CUDA device")

    def pytest_gpu(self) -> dict:
        junit = self.work / "pytest_gpu.xml"
        cmd = [self.python, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={junit}"]
        done = self.run("pytest_gpu", cmd, "pytest_gpu", check=False)
        record: dict[str, Any] = {"command": "python -m pytest -m gpu -q", "rc": done["rc"], "seconds": done["seconds"],
                                  "timed_out": done["timed_out"], "log": done["log"]}
        lines = [ln for ln in done["output"].strip().splitlines() if ln.strip()]
        record["summary"] = lines[-1] if lines else ""
        record.update(_junit(junit))
        if self.mode == "gpu" and not self.cuda:
            record["note"] = "no CUDA device: the gpu tests skip themselves"
        if done["timed_out"]:
            raise StepFailed(f"pytest -m gpu timed out after {done['limit_s']} s", _public(done))
        if done["rc"] not in (0, 5):  # 5: no test collected
            record["errors"] = {"pytest": f"exit status {done['rc']}: {record['summary']}"}
        return record

    def _speed(self, label: str, flags: list[str], cap: str) -> dict:
        json_out = self.work / f"train_speed_{label}.json"
        cmd = [self.python, str(BENCHMARKS / "bench_train_speed.py"), "--cases", self.cfg["speed_case"],
               *self.cfg["speed_args"], *flags, "--json", str(json_out)]
        done = self.run(f"train_speed_{label}", cmd, cap)
        data = json.loads(json_out.read_text())
        row = data["cases"][self.cfg["speed_case"]]
        shutil.copy(json_out, self.out / json_out.name)
        warm = row.get("runner_warmup_epoch_s")
        if warm is not None and row.get("runner_epoch_s"):
            row["first_epoch_overhead_s"] = round(warm - statistics.median(row["runner_epoch_s"]), 2)
        return {"flags": flags, "process_s": done["seconds"], **row}

    def train_speed(self) -> dict:
        self._need_device()
        record: dict[str, Any] = {"case": self.cfg["speed_case"], "runs": {}}
        configs = [("bf16_cl_compiled", [], "speed"),  # the CUDA defaults: precision, compile, channels_last auto
                   ("fp32_eager", ["--precision", "fp32", "--compile", "false", "--channels-last", "false"],
                    "speed_fp32")]
        for label, flags, cap in configs:
            row = self.step(record, label, lambda label=label, flags=flags, cap=cap: self._speed(label, flags, cap))
            if row:
                record["runs"][label] = row
        if not record["runs"]:
            raise RuntimeError("no configuration measured: " + json.dumps(record.get("errors", {}))[:1500])
        self._speed_gains(record)
        return record

    def train_speed_extra(self) -> dict:
        self._need_device()
        if not self.cfg["speed_extra"]:
            raise Skip("not in --cpu-smoke (on the CPU every policy is fp32 eager)")
        record: dict[str, Any] = {"case": self.cfg["speed_case"], "runs": {}}
        configs = [("bf16_cl_eager", ["--precision", "bf16", "--compile", "false", "--channels-last", "true"]),
                   ("bf16_eager", ["--precision", "bf16", "--compile", "false", "--channels-last", "false"])]
        for label, flags in configs:
            row = self.step(record, label,
                            lambda label=label, flags=flags: self._speed(label, [*flags, "--rounds", "2"], "speed_extra"))
            if row:
                record["runs"][label] = row
        base = self.result["phases"].get("train_speed", {}).get("runs", {})
        self._speed_gains(record, {**base, **record["runs"]})
        return record

    @staticmethod
    def _speed_gains(record: dict, runs: dict | None = None) -> None:
        runs = runs or record["runs"]
        ips = {k: v.get("runner_images_per_s") for k, v in runs.items() if v.get("runner_images_per_s")}
        gains = {}
        for name, (a, b) in {"all_switches_vs_fp32_eager": ("bf16_cl_compiled", "fp32_eager"),
                             "bf16": ("bf16_eager", "fp32_eager"),
                             "channels_last": ("bf16_cl_eager", "bf16_eager"),
                             "compile": ("bf16_cl_compiled", "bf16_cl_eager")}.items():
            if a in ips and b in ips:
                gains[name] = round(ips[a] / ips[b], 2)
        record["gains"] = gains

    def fusion(self) -> dict:
        """Issue 16's GPU case: fused ResNet-18 members against separate runs (benchmarks/bench_fusion.py). The
        script rewrites its JSON after each row, so a run cut short by the cap keeps the rows it measured."""
        self._need_device()
        json_out = self.work / "fusion.json"
        cmd = [self.python, str(BENCHMARKS / "bench_fusion.py"), "--case", "resnet18-cuda", *self.cfg["fusion_args"],
               "--json", str(json_out)]
        done = self.run("fusion", cmd, "fusion", check=False)
        record: dict[str, Any] = {"command": " ".join(cmd[1:-2]), "process_s": done["seconds"], "log": done["log"]}
        if json_out.exists():
            shutil.copy(json_out, self.out / "fusion.json")
            record.update(json.loads(json_out.read_text()))
        if done["timed_out"] or done["rc"] != 0:
            why = f"timed out after {done['limit_s']} s" if done["timed_out"] else f"exit status {done['rc']}"
            if not record.get("rows"):
                raise StepFailed(f"fusion: {why}: {tail(done['output'].strip(), 1200)}", _public(done))
            record["errors"] = {"bench_fusion": f"{why} after {', '.join(record['rows'])}"}
        return record

    # -------------------------------------------------------------------------------------- the bench run

    def _write_cifar(self, root: Path, test_images: int | None = None, train_from: Path | None = None) -> dict:
        """CIFAR-10 in torchvision's on-disk layout: 5 training batches, a test batch, batches.meta.

        Each class is a fixed random low-frequency colour pattern plus noise, so a network learns it and the
        attacks face a model that is right on most images (as on real data), not one that is at chance.
        """
        import numpy as np

        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        coarse = rng.integers(0, 256, size=(10, 3, 4, 4), dtype=np.uint8)
        templates = coarse.repeat(8, axis=2).repeat(8, axis=3).reshape(10, 3072).astype(np.uint16)

        def images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            noise = rng.integers(0, 256, size=(labels.size, 3072), dtype=np.uint16)
            return ((templates[labels] * 5 + noise * 5) // 10).astype(np.uint8)

        def dump(path: Path, obj: dict) -> None:
            with open(path, "wb") as f:  # the real files are Python 2 pickles: str keys, latin1 on loading
                pickle.dump(obj, f, protocol=2)

        per_train, per_test = self.cfg["train_per_class"], self.cfg["test_per_class"]
        if train_from is None:
            labels = rng.permutation(np.repeat(np.arange(10), per_train))
            for i, chunk in enumerate(np.array_split(np.arange(labels.size), 5)):
                dump(folder / f"data_batch_{i + 1}", {"batch_label": f"training batch {i + 1} of 5",
                                                      "data": images(labels[chunk], rng), "labels": labels[chunk].tolist()})
        else:  # the same training files
            for i in range(5):
                os.symlink(train_from / "cifar-10-batches-py" / f"data_batch_{i + 1}", folder / f"data_batch_{i + 1}")
        test_rng = np.random.default_rng(1)
        test_labels = test_rng.permutation(np.repeat(np.arange(10), per_test))
        test = images(test_labels, test_rng)
        if test_images is not None:  # the first images of each class: every class keeps some (bench needs that)
            per = max(1, test_images // 10)
            keep = np.sort(np.concatenate([np.flatnonzero(test_labels == c)[:per] for c in range(10)]))
            test, test_labels = test[keep], test_labels[keep]
        dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test,
                                     "labels": test_labels.tolist()})
        dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072})
        return {"root": str(root), "train_images": 10 * per_train, "test_images": int(test_labels.size)}

    def _md5_shim(self) -> Path:
        """A sitecustomize for the bench processes: synthetic files cannot match torchvision's CIFAR md5 sums, so
        its integrity check becomes "the file exists" (as tests/test_data.py does with monkeypatch)."""
        folder = self.work / "shim"
        folder.mkdir(exist_ok=True)
        (folder / "sitecustomize.py").write_text('''"""Written by benchmarks/gpu_check.py: torchvision's CIFAR md5 check -> file exists."""
import importlib.machinery
import os
import sys


class _NoCifarMd5:
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision.datasets.cifar":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _NoCifarMd5())
# chain to the sitecustomize this one shadows, if any
for _entry in sys.path[1:]:
    _other = os.path.join(_entry, "sitecustomize.py")
    if _entry and os.path.abspath(_entry) != os.path.dirname(os.path.abspath(__file__)) and os.path.isfile(_other):
        exec(compile(open(_other).read(), _other, "exec"), {"__name__": "sitecustomize", "__file__": _other})
        break
''')
        return folder

    def _bench_env(self) -> dict:
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(self._md5_shim()), env.get("PYTHONPATH", "")])
        return env

    def _config(self, name: str, data_root: Path) -> Path:
        path = self.work / f"{name}.toml"
        path.write_text(f'[bench]\ndb = "sqlite:///{self.work / "bench.db"}"\ndata_root = "{data_root}"\n'
                        f'run_dir = "{self.work / "runs"}"\nout_dir = "{self.work / "report"}"\n'
                        f'device = "{self.cfg["device"]}"\n')
        return path

    def _suite(self, name: str, epochs: int, eval_attacks: str, extra: str = "") -> Path:
        c = self.cfg
        path = self.work / f"{name}.suite.toml"
        path.write_text(
            f'name = "{name}"\ndescription = "benchmarks/gpu_check.py"\nseeds = [0]\n\n[defaults]\n'
            f'model = "{c["model"]}"\nepochs = {epochs}\nbatch_size = {c["batch_size"]}\nwarmup_epochs = 0\n'
            f'milestones = []\ntrain_attack = {{ kind = "pgd", eps = "{EPS}", alpha = "{ALPHA}", steps = 10 }}\n'
            f'eval_attacks = {eval_attacks}\nguards = []\n{extra}\n'
            f'[[grid]]\ndataset = "cifar10"\nimbalance = "{c["imbalance"]}"\nmethod = "ce"\n')
        return path

    def _evaluate(self, config: Path, suite: str, attack: str | list[str], label: str, cap: str) -> float:
        """Process seconds of one `bench evaluate` adding the attack table(s) to the suite's finished run."""
        flags = [a for table in ([attack] if isinstance(attack, str) else attack) for a in ("--attack", table)]
        done = self.run(label, self.bench("evaluate", "--config", str(config), "--suite", suite, "--quiet", *flags),
                        cap, env=self._bench_env())
        return done["seconds"]

    def _baseline(self, config: Path, suite: str, label: str, cap: str) -> float:
        """A zero-step attack evaluated the same way: process start, imports, data and model loading and the clean
        pass, which every `bench evaluate` pays, so that an attack's own time is its run minus this one."""
        attack = f'{{kind="pgd", eps=0, alpha=0, steps=0, random_start=false, name="{label}"}}'
        return self._evaluate(config, suite, attack, label, cap)

    def bench_run(self) -> dict:
        self._need_device()
        c = self.cfg
        record: dict[str, Any] = {"model": c["model"], "imbalance": c["imbalance"], "epochs": c["epochs"],
                                  "batch_size": c["batch_size"], "device": c["device"]}
        t = time.perf_counter()
        data_full = self.work / "data_full"
        record["data"] = self._write_cifar(data_full)
        record["data"]["write_s"] = round(time.perf_counter() - t, 2)
        config = self._config("main", data_full)
        suite = self._suite("gpu-check", c["epochs"],
                            f'[{{ kind = "pgd", eps = "{EPS}", alpha = "{ALPHA}", steps = 20 }}]')
        done = self.run("bench_run", self.bench("run", "--config", str(config), str(suite), "--quiet"), "run",
                        env=self._bench_env())
        record["process_s"] = done["seconds"]
        run = _read_runs(self.work / "bench.db", "gpu-check")
        record["run"] = run
        if run.get("status") != "done":
            raise RuntimeError(f"the cell ended {run.get('status')}: {tail(str(run.get('error')), 1500)}")
        record.update(_phase_times(run, done["seconds"]))
        pgd20 = f'{{kind="pgd", eps="{EPS}", alpha="{ALPHA}", steps=20, name="pgd-20-timed"}}'
        base = self.step(record, "evaluate_baseline", lambda: self._baseline(config, "gpu-check", "baseline", "evaluate"))
        timed = base and self.step(record, "evaluate_pgd20",
                                   lambda: self._evaluate(config, "gpu-check", pgd20, "pgd20_eval", "evaluate"))
        if base and timed:
            n = record["data"]["test_images"]
            record["evaluate_baseline_process_s"] = base
            record["pgd20_eval_process_s"] = timed
            seconds, how = timed - base, "one PGD-20 `bench evaluate` minus a zero-step baseline"
            copies = c["eval_copies"]
            if seconds < c["eval_resolution_s"]:
                # too short to stand out of the processes' own noise: PGD-20 `copies` times in one process
                tables = [pgd20.replace("pgd-20-timed", f"pgd-20-copy{i}") for i in range(copies)]
                many = self.step(record, "evaluate_pgd20_copies",
                                 lambda: self._evaluate(config, "gpu-check", tables, "pgd20_eval_copies", "evaluate"))
                if many:
                    record["pgd20_eval_copies_process_s"] = many
                    seconds, how = (many - base) / copies, (f"{copies} PGD-20 attacks in one `bench evaluate`, minus a "
                                                            f"zero-step baseline, divided by {copies}")
            record["pgd20_eval_s"] = round(max(seconds, 0.0), 3)
            record["pgd20_eval_images_per_s"] = round(n / seconds, 1) if seconds > 0 else None
            record["pgd20_eval_note"] = (f"{how} (eval_precision fp32, eval_batch_size 512: the defaults)"
                                         + ("" if seconds > 0 else "; within the processes' noise, no figure"))
        record["compile_cache_note"] = ("one Inductor cache serves every phase: train_speed's first epoch "
                                        "(runner_warmup_epoch_s) paid the cold compile, so first_epoch_s here is "
                                        "what a later run pays (its last, smaller batch may still compile anew)")
        db = self.work / "bench.db"
        if db.exists() and db.stat().st_size < 30 * 2**20:
            shutil.copy(db, self.out / "gpu_check_bench.db")
        return record

    def autoattack(self) -> dict:
        self._need_device()
        c = self.cfg
        data_full = self.work / "data_full"
        if not (data_full / "cifar-10-batches-py" / "test_batch").exists():
            raise Skip("no data: the bench_run phase did not write it")
        record: dict[str, Any] = {"test_images": c["aa_images"], "version": "standard"}
        data_aa = self.work / "data_aa"
        record["data"] = self._write_cifar(data_aa, test_images=c["aa_images"], train_from=data_full)
        config = self._config("aa", data_aa)
        extra = "compile = false\n" + (f"dataset_args = {{ n_max = {c['aa_n_max']} }}\n" if c["aa_n_max"] else "")
        suite = self._suite("gpu-check-aa", 1, f'[{{ kind = "pgd", eps = "{EPS}", alpha = "{ALPHA}", steps = 20 }}]',
                            extra)
        done = self.run("aa_bench_run", self.bench("run", "--config", str(config), str(suite), "--quiet"), "aa_run",
                        env=self._bench_env())
        record["train_process_s"] = done["seconds"]
        run = _read_runs(self.work / "bench.db", "gpu-check-aa")
        record["run"] = run
        if run.get("status") != "done":
            raise RuntimeError(f"the cell ended {run.get('status')}: {tail(str(run.get('error')), 1500)}")
        base = self._baseline(config, "gpu-check-aa", "baseline", "evaluate")
        record["evaluate_baseline_process_s"] = base
        # APGD-CE alone first (AutoAttack's first and cheapest attack), then the standard ensemble, each timed on
        # its own, so a standard run cut by the time limit still leaves a figure
        attacks = [("apgd_ce", f'{{kind="autoattack", eps="{EPS}", attacks=["apgd-ce"]}}'),
                   ("standard", f'{{kind="autoattack", eps="{EPS}"}}')]
        if self.mode == "cpu-smoke":
            attacks = attacks[1:]  # the path, not the figure: one process fewer
        record["attacks"] = {}
        for label, table in attacks:
            timed = self.step(record, label, lambda table=table, label=label: self._evaluate(
                config, "gpu-check-aa", table, f"autoattack_{label}", "aa_evaluate"))
            if timed:
                seconds = timed - base
                record["attacks"][label] = {"process_s": timed, "seconds": round(max(seconds, 0.0), 2),
                                            "images_per_s": round(c["aa_images"] / seconds, 1) if seconds > 0 else None}
                if seconds < c["eval_resolution_s"]:
                    record["attacks"][label]["note"] = "within a few seconds of the baseline: a rough figure"
        if "standard" in record["attacks"]:
            record["autoattack_s"] = record["attacks"]["standard"]["seconds"]
            record["autoattack_images_per_s"] = record["attacks"]["standard"]["images_per_s"]
        if not record["attacks"]:
            raise RuntimeError("no AutoAttack run finished: " + json.dumps(record.get("errors", {}))[:1500])
        record["accuracy"] = _read_runs(self.work / "bench.db", "gpu-check-aa").get("accuracy", {})
        record["note"] = ("AutoAttack's cost grows with the images still robust after each of its attacks: compare "
                          "its accuracy here with a real model's before scaling the time")
        db = self.work / "bench.db"
        if db.exists() and db.stat().st_size < 30 * 2**20:
            shutil.copy(db, self.out / "gpu_check_bench.db")
        return record

    # ------------------------------------------------------------------------------------------ packing

    def packing(self) -> dict:
        self._need_device()
        c = self.cfg
        try:
            from bench_packing import suite_text  # benchmarks/ is on sys.path as this script's folder
        except Exception:  # noqa: BLE001
            suite_text = _packing_suite
        text = suite_text(c["packing_cells"], c["packing_epochs"])
        if c["packing_defaults"]:
            text = text.replace("[defaults]\n", "[defaults]\n" + c["packing_defaults"], 1)
        record: dict[str, Any] = {"cells": c["packing_cells"], "epochs": c["packing_epochs"], "dataset": "digits",
                                  "model": "cnn-small", "workers": {}}
        for w in c["packing_workers"]:
            row = self.step(record, f"workers_{w}", lambda w=w: self._pack(w, text))
            if row:
                record["workers"][str(w)] = row
        rates = {w: r["cells_per_min"] for w, r in record["workers"].items() if r.get("cells_per_min")}
        if rates:
            first = rates[min(rates, key=int)]
            for w, r in record["workers"].items():
                if w in rates:
                    r["gain_vs_first"] = round(rates[w] / first, 2)
            record["best_workers"] = int(max(rates, key=lambda w: rates[w]))
        if not record["workers"]:
            raise RuntimeError("no configuration measured: " + json.dumps(record.get("errors", {}))[:1500])
        return record

    def _pack(self, workers: int, text: str) -> dict:
        folder = self.work / f"packing_w{workers}"
        folder.mkdir(exist_ok=True)
        (folder / "packing.toml").write_text(text)
        db = folder / "bench.db"
        done = self.run(f"packing_w{workers}", self.bench("run", "packing.toml", "--quiet", f"--workers={workers}",
                                                          f"--db=sqlite:///{db}", f"--device={self.cfg['device']}"),
                        "packing", cwd=folder)
        cells = _count_done(db)
        return {"wall_s": done["seconds"], "cells_done": cells,
                "cells_per_min": round(60 * cells / done["seconds"], 1) if cells else 0.0}

    # ------------------------------------------------------------------------------------------ summary

    def summarise(self) -> None:
        p = self.result["phases"]
        targets, diag = self.result["targets"], self.result["diagnosis"]
        speed = p.get("train_speed", {}).get("runs", {}).get("bf16_cl_compiled")
        if speed and self.mode == "gpu":
            ips, ratio = speed["runner_images_per_s"], speed["ratio"]
            targets["train_images_per_s"] = {"value": ips, "target": TARGETS["train_images_per_s"],
                                             "aim": TARGETS["train_images_per_s_aim"],
                                             "met": ips >= TARGETS["train_images_per_s"]}
            targets["train_ratio_vs_reference"] = {"value": ratio, "target": TARGETS["train_ratio_vs_reference"],
                                                   "met": ratio >= TARGETS["train_ratio_vs_reference"]}
            share = speed.get("share_of_bf16_peak")
            if ips < TARGETS["train_images_per_s"]:
                if share is not None and share < 0.15:
                    diag.append(f"training at {ips:,.0f} images/s uses {100 * share:.1f}% of the bf16 peak: at batch "
                                "128 ResNet-18's kernels are small, so it is likely launch- or host-bound; try "
                                "torch.compile(mode='reduce-overhead') (CUDA graphs) or a larger batch")
                else:
                    diag.append(f"training at {ips:,.0f} images/s is below {TARGETS['train_images_per_s']:,}; "
                                f"share of bf16 peak {share}")
            gains = p.get("train_speed_extra", {}).get("gains") or p.get("train_speed", {}).get("gains", {})
            for switch, gain in gains.items():
                if switch != "all_switches_vs_fp32_eager" and gain < 1.05:
                    diag.append(f"the {switch} switch gains only {gain:.2f}x on this card")
            overhead = speed.get("first_epoch_overhead_s")
            if overhead and overhead > 60:
                diag.append(f"the first (compiling) epoch costs {overhead:.0f} s more than the others")
        ratio = p.get("fusion", {}).get("fused_vs_concurrent")
        if ratio is not None and self.mode == "gpu":
            target = TARGETS["fused_vs_separate_processes"]
            targets["fused_vs_separate_processes"] = {"value": ratio, "target": target, "met": ratio >= target}
        run = p.get("bench_run", {})
        ips = run.get("pgd20_eval_images_per_s")
        if ips and self.mode == "gpu":
            targets["pgd20_eval_images_per_s"] = {"value": ips, "target": TARGETS["pgd20_eval_images_per_s"],
                                                  "met": ips >= TARGETS["pgd20_eval_images_per_s"]}
            if ips < TARGETS["pgd20_eval_images_per_s"]:
                diag.append(f"PGD-20 evaluation at {ips:,.0f} images/s (fp32 without TF32, batch 512): "
                            "eval_precision = \"bf16\" or a larger eval_batch_size sized from free memory "
                            f"({self.result['machine'].get('gpu_memory_free_gib')} GiB free) would raise it")
        for name, rec in p.items():
            if rec.get("status") in ("failed", "timeout"):
                diag.append(f"phase {name} {rec['status']}: {tail(rec.get('error', ''), 300)}")
            elif rec.get("status") == "partial":
                diag.append(f"phase {name} partial: {', '.join(rec.get('errors', {}))} failed (see its errors)")

    def table(self) -> str:
        p = self.result["phases"]
        rows = []

        def figure(name: str, rec: dict) -> str:
            if rec.get("status") == "skipped":
                return rec.get("reason", "")
            if rec.get("status") in ("failed", "timeout", "interrupted"):
                return tail(rec.get("error", "").replace("\n", " "), 90)
            if rec.get("errors"):
                return f"[errors in {', '.join(rec['errors'])}] " + figure_ok(name, rec)
            return figure_ok(name, rec)

        def figure_ok(name: str, rec: dict) -> str:
            if name == "setup":
                return f"bench: {'ok' if rec.get('bench_help_rc') == 0 else 'BROKEN'}; installed {', '.join(rec.get('installing') or []) or 'nothing'}"
            if name == "environment":
                return rec.get("summary", "")
            if name == "pytest_gpu":
                return f"{rec.get('passed', 0)} passed, {rec.get('failed', 0)} failed, {rec.get('skipped', 0)} skipped, {rec.get('errors_count', 0)} errors"
            if name in ("train_speed", "train_speed_extra"):
                parts = [f"{k}: {v['runner_images_per_s']:,.0f} img/s ({v['ratio']}x ref"
                         + (f", {100 * v['share_of_bf16_peak']:.1f}% peak" if v.get("share_of_bf16_peak") else "") + ")"
                         for k, v in rec.get("runs", {}).items()]
                return "; ".join(parts)
            if name == "bench_run":
                return (f"epoch 1 {rec.get('first_epoch_s')} s, then {rec.get('steady_epoch_s')} s/epoch "
                        f"({rec.get('train_images_per_s_excl_first', 0):,.0f} img/s); PGD-20 eval "
                        f"{rec.get('pgd20_eval_images_per_s') or 0:,.0f} img/s; wall {rec.get('process_s')} s")
            if name == "fusion":
                if rec.get("skipped"):
                    return rec["skipped"]
                rows = "; ".join(f"{k} {v['images_per_s']:,.0f} img/s" for k, v in rec.get("rows", {}).items())
                ratios = ", ".join(f"{k} {rec[k]}x" for k in ("fused_vs_sequential", "fused_vs_concurrent") if k in rec)
                return rows + (f"; {ratios}" if ratios else "")
            if name == "packing":
                return "; ".join(f"{w}w {r['cells_per_min']} cells/min" for w, r in rec.get("workers", {}).items())
            if name == "autoattack":
                acc = rec.get("accuracy", {})
                return f"{rec.get('test_images')} images: " + "; ".join(
                    f"{k} {v['seconds']} s ({v['images_per_s']} img/s)" for k, v in rec.get("attacks", {}).items()) + (
                    f"; clean {acc.get('clean')}, AA {acc.get('autoattack')}" if acc else "")
            return ""

        for name in PHASES:
            rec = p.get(name)
            if rec is None:
                continue
            rows.append((name, rec.get("status", "?"), f"{rec.get('seconds', 0):.0f}", figure(name, rec)))
        width = max(len(r[0]) for r in rows) if rows else 10
        lines = [f"{'phase':<{width}}  {'status':<8} {'s':>5}  figures", "-" * (width + 60)]
        lines += [f"{n:<{width}}  {s:<8} {sec:>5}  {f}" for n, s, sec, f in rows]
        for key, t in self.result["targets"].items():
            lines.append(f"target {key}: {t['value']:,} vs {t['target']:,} -> {'met' if t['met'] else 'NOT met'}")
        for d in self.result["diagnosis"]:
            lines.append(f"diagnosis: {d}")
        return "\n".join(lines)

    def main(self) -> int:
        print(f"gpu_check: mode {self.mode}, budget {self.budget:.0f} s, results in {self.json_path}", flush=True)
        self.save()

        def on_term(signum, frame):  # the device tool's time-out: keep what was measured
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, on_term)
        try:
            for name in PHASES:
                self.phase(name, getattr(self, name))
        except KeyboardInterrupt as exc:
            self.result["diagnosis"].append(f"interrupted: {exc}")
            for rec in self.result["phases"].values():
                if rec.get("status") == "running":
                    rec.update(status="interrupted", error=f"interrupted: {exc}")
        finally:
            try:
                self.summarise()
            except Exception as exc:  # noqa: BLE001
                self.result["diagnosis"].append(f"summary failed: {exc}")
            self.result["finished"] = now_iso()
            self.save()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        print(self.table(), flush=True)
        print(f"written {self.json_path}", flush=True)
        bad = [n for n, r in self.result["phases"].items() if r.get("status") in ("failed", "timeout", "interrupted")]
        return 1 if bad else 0


# -------------------------------------------------------------------------------------------------- helpers


def _installed(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def _norm(name: str) -> str:
    """A distribution name as wheel file names and PEP 503 compare it."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "output"}


def _junit(path: Path) -> dict:
    if not path.exists():
        return {}
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = {"tests": 0, "failed": 0, "errors_count": 0, "skipped": 0}
    failures = []
    for s in suites:
        out["tests"] += int(s.get("tests", 0))
        out["failed"] += int(s.get("failures", 0))
        out["errors_count"] += int(s.get("errors", 0))
        out["skipped"] += int(s.get("skipped", 0))
        for case in s.iter("testcase"):
            for bad in list(case.findall("failure")) + list(case.findall("error")):
                failures.append({"test": f"{case.get('classname')}::{case.get('name')}",
                                 "message": tail(bad.get("message") or "", 600), "details": tail(bad.text or "", 1500)})
    out["passed"] = out["tests"] - out["failed"] - out["errors_count"] - out["skipped"]
    out["failures"] = failures[:20]
    return out


def _rows(con: sqlite3.Connection, sql: str, args: tuple = ()) -> list[dict]:
    cur = con.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _read_runs(db: Path, suite: str) -> dict:
    """The suite's (single) run as the results database stores it: timings, epochs, accuracy per attack."""
    if not db.exists():
        return {"status": None, "error": f"no database at {db}"}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = _rows(con, "SELECT * FROM runs WHERE suite = ? ORDER BY id", (suite,))
        if not runs:
            return {"status": None, "error": f"no run of suite {suite} in {db}"}
        r = runs[-1]
        keep = ("id", "cell_hash", "status", "error", "wall_seconds", "train_seconds", "images_per_second",
                "peak_memory_mb", "device", "epochs_done", "model")
        out = {k: r.get(k) for k in keep}
        try:
            out["config"] = {k: v for k, v in json.loads(r.get("config_json") or "{}").items()
                             if k in ("precision", "eval_precision", "compile", "channels_last", "eval_batch_size",
                                      "batch_size", "epochs")}
        except ValueError:
            pass
        try:
            out["epochs"] = _rows(con, "SELECT epoch, seconds, loss, train_accuracy FROM epoch_metrics "
                                       "WHERE run_id = ? ORDER BY epoch", (r["id"],))
        except sqlite3.Error as exc:
            out["epochs_error"] = str(exc)
        try:
            acc = _rows(con, "SELECT attack, SUM(correct) AS correct, SUM(n_test) AS n, SUM(n_train) AS n_train "
                             "FROM class_metrics WHERE run_id = ? GROUP BY attack", (r["id"],))
            out["accuracy"] = {a["attack"]: round(a["correct"] / a["n"], 4) for a in acc if a["n"]}
            out["test_images"] = {a["attack"]: a["n"] for a in acc}
            out["train_images"] = max((a["n_train"] or 0 for a in acc), default=None)
        except sqlite3.Error as exc:
            out["accuracy_error"] = str(exc)
        return out
    finally:
        con.close()


def _count_done(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM runs WHERE status = 'done'").fetchone()[0])
    finally:
        con.close()


def _phase_times(run: dict, process_s: float) -> dict:
    """First epoch (compile included) vs the rest, and where the cell's wall time went."""
    out: dict[str, Any] = {}
    epochs = [e["seconds"] for e in run.get("epochs") or []]
    n_train = run.get("train_images")
    if epochs:
        out["epoch_s"] = [round(s, 2) for s in epochs]
        out["first_epoch_s"] = round(epochs[0], 2)
        if len(epochs) > 1:
            steady = statistics.median(epochs[1:])
            out["steady_epoch_s"] = round(steady, 2)
            out["compile_and_warmup_s"] = round(epochs[0] - steady, 2)
            if n_train:
                out["train_images_per_s_excl_first"] = round(n_train / steady, 1)
    if run.get("images_per_second"):
        out["train_images_per_s_incl_first"] = round(run["images_per_second"], 1)
    wall, train = run.get("wall_seconds"), run.get("train_seconds")
    if wall and train is not None:
        out["cell_wall_s"] = round(wall, 2)
        out["train_s"] = round(train, 2)
        out["outside_training_s"] = round(wall - train, 2)  # data to the device, checkpoints, evaluation, writes
        out["process_overhead_s"] = round(process_s - wall, 2)  # interpreter, imports, database, CUDA start-up
    return out


def _packing_suite(cells: int, epochs: int) -> str:
    """benchmarks/bench_packing.py's suite, should that file be unimportable."""
    methods = ["ce", "focal", "ldam", "cb-reweight", "cb-focal", "drcb-ce", "drcb-focal", "drcb-ldam"]
    seeds = (cells + len(methods) - 1) // len(methods)
    names = ", ".join(f'"{m}"' for m in methods[:min(cells, len(methods))])
    return (f'name = "packing"\nseeds = {list(range(seeds))}\n\n[defaults]\nepochs = {epochs}\nbatch_size = 128\n'
            f'milestones = [0.75]\n\n[[grid]]\ndataset = "digits"\nimbalance = "step-10"\n'
            f'method = [{names}]\n')


def download_wheels(dest: Path) -> int:
    """Fill ``dest`` with the wheels the GPU machine lacks (CPython 3.12, manylinux x86_64), then slim them."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", *WHEEL_PLATFORM, "-d", str(dest),
           *WHEEL_PINS]
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc:
        return rc
    for wheel in sorted(dest.glob("*.whl")):
        dist = wheel.name.split("-")[0].lower()
        if dist in SLIM:
            slim_wheel(wheel, SLIM[dist])
    total = 0
    for wheel in sorted(dest.glob("*.whl")):
        total += wheel.stat().st_size
        print(f"{wheel.stat().st_size / 1e6:8.2f} MB  {wheel.name}")
    print(f"{total / 1e6:8.2f} MB  in all ({dest})")
    return 0


def slim_wheel(wheel: Path, drop: tuple[str, ...]) -> None:
    """Rewrite ``wheel`` without the files ``drop`` (and their RECORD lines)."""
    with zipfile.ZipFile(wheel) as z:
        if not any(n in drop for n in z.namelist()):
            return
        tmp = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for info in z.infolist():
                if info.filename in drop:
                    continue
                data = z.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = [ln for ln in data.decode().splitlines() if ln.split(",")[0] not in drop]
                    data = ("\n".join(lines) + "\n").encode()
                out.writestr(info, data)
    os.replace(tmp, wheel)
    print(f"slimmed {wheel.name}: dropped {', '.join(drop)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (what the test runs)")
    parser.add_argument("--budget", type=float, default=0,
                        help="overall seconds (default 480 on the GPU, 150 in --cpu-smoke)")
    parser.add_argument("--skip", default="", help=f"comma-separated phases to skip, of: {', '.join(PHASES)}")
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary folder, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--no-editable", action="store_true", help="never `pip install -e .`; PYTHONPATH only")
    parser.add_argument("--bench-cmd", help="how to call bench (default: pyproject's entry point via this Python)")
    parser.add_argument("--download-wheels", nargs="?", const=str(WHEELS), metavar="DIR",
                        help="on the development machine: download the GPU machine's wheels into DIR and exit")
    args = parser.parse_args(argv)
    args.skip = [s for s in args.skip.split(",") if s]
    unknown = [s for s in args.skip if s not in PHASES]
    if unknown:
        parser.error(f"--skip: unknown phase {unknown[0]!r}; valid: {', '.join(PHASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.download_wheels:
        return download_wheels(Path(args.download_wheels))
    return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
