"""benchmarks/gpu_check.py (issue 20's one-shot GPU check) end to end in its CPU mode, so it cannot rot while no GPU
is available: every phase runs tiny through the real `bench` command line and the benchmark scripts, and the JSON
it leaves in $OUT has each phase with sane figures (the CUDA-only ones recorded as skipped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["setup", "environment", "pytest_gpu", "train_speed", "fusion", "bench_run", "packing", "autoattack",
          "train_speed_extra"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = {**os.environ, "OUT": str(out), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    path = out / "gpu_check.json"
    assert path.exists(), f"no JSON written; rc {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, json.loads(path.read_text()), out


def test_every_phase_runs_and_none_fails(smoke):
    done, data, out = smoke
    statuses = {name: rec.get("status") for name, rec in data["phases"].items()}
    detail = {n: r.get("error") or r.get("errors") for n, r in data["phases"].items() if r.get("status") != "ok"}
    assert done.returncode == 0, (statuses, detail, done.stdout[-3000:], done.stderr[-3000:])
    assert data["mode"] == "cpu-smoke" and data["device"] == "cpu" and data["finished"]
    assert list(data["phases"]) == PHASES
    assert statuses == {**dict.fromkeys(PHASES, "ok"), "train_speed_extra": "skipped"}, detail
    assert data["elapsed_s"] < data["budget_s"]
    assert data["machine"]["torch"] and data["machine"]["python"]
    for name in PHASES:  # the short table names every phase
        assert name in done.stdout
    assert (out / "gpu_check_logs" / "bench_run.log").exists()


def test_setup_finds_bench_and_its_dependencies(smoke):
    phases = smoke[1]["phases"]
    assert phases["setup"]["bench_help_rc"] == 0
    modules = phases["environment"]["modules"]
    for module in ("bench", "methods", "sqlalchemy", "pyautoattack", "submitit", "pytest"):
        assert not str(modules[module]).startswith("MISSING"), modules


def test_gpu_tests_ran_or_skipped_cleanly(smoke):
    import torch

    rec = smoke[1]["phases"]["pytest_gpu"]
    assert rec["tests"] >= 1 and rec["failed"] == 0 and rec["errors_count"] == 0, rec
    if not torch.cuda.is_available():
        assert rec["skipped"] == rec["tests"]


def test_train_speed_figures(smoke):
    rec = smoke[1]["phases"]["train_speed"]
    assert set(rec["runs"]) == {"bf16_cl_compiled", "fp32_eager"}
    for row in rec["runs"].values():
        assert row["runner_images_per_s"] > 0 and row["reference_images_per_s"] > 0 and row["ratio"] > 0
        assert row["gflop_per_batch"] > 0 and row["runner_warmup_epoch_s"] > 0
    assert rec["gains"]["all_switches_vs_fp32_eager"] > 0


def test_bench_run_on_cifar_format_files(smoke):
    rec = smoke[1]["phases"]["bench_run"]
    run = rec["run"]
    assert run["status"] == "done" and run["epochs_done"] == 2 and len(rec["epoch_s"]) == 2
    assert run["train_images"] == 5 * 30 + 5 * 3  # step-10 of 30 synthetic images a class
    assert run["test_images"] == {"clean": 100, "pgd-20": 100}
    for label, accuracy in run["accuracy"].items():
        assert 0 <= accuracy <= 1, (label, accuracy)
    assert run["accuracy"]["pgd-20"] <= run["accuracy"]["clean"]
    assert rec["cell_wall_s"] >= rec["train_s"] > 0 and rec["process_s"] >= rec["cell_wall_s"]
    assert rec["train_images_per_s_excl_first"] > 0
    # the evaluation timing (repeated PGD-20 in one `bench evaluate`, minus a baseline) ran; on 100 images the
    # figure itself is within process noise, so only its presence is checked
    assert rec["pgd20_eval_copies_process_s"] > 0 and rec["pgd20_eval_s"] >= 0 and "pgd20_eval_images_per_s" in rec


def test_fusion_rows(smoke):
    """bench_fusion.py --case resnet18-cuda's code path, tiny on the CPU: fused groups of 1 and 2, two unfused
    cells one after another and two processes at once."""
    rec = smoke[1]["phases"]["fusion"]
    assert set(rec["rows"]) == {"fused_1", "fused_2", "sequential_2", "concurrent_2"}
    for row in rec["rows"].values():
        assert row["images_per_s"] > 0 and row["seconds"] > 0
    assert rec["fused_vs_sequential"] > 0 and rec["fused_vs_concurrent"] > 0
    assert (smoke[2] / "fusion.json").exists()


def test_packing_counts_cells(smoke):
    rec = smoke[1]["phases"]["packing"]
    assert set(rec["workers"]) == {"2"}  # two worker processes sharing the cells through the database
    for row in rec["workers"].values():
        assert row["cells_done"] == rec["cells"] and row["cells_per_min"] > 0


def test_autoattack_on_a_subset(smoke):
    rec = smoke[1]["phases"]["autoattack"]
    assert rec["test_images"] == 20 and rec["run"]["test_images"]["clean"] == 20
    assert rec["attacks"]["standard"]["process_s"] > 0 and rec["attacks"]["standard"]["seconds"] >= 0
    assert rec["accuracy"]["autoattack"] <= rec["accuracy"]["clean"]
