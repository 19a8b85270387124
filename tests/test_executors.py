"""Executors on their real engines: submitit's LocalExecutor (real job processes, pre-emption and requeue, a
killed job, a killed driver) and a local Ray cluster; options from bench.toml and suites; bad input.

Cells are tiny (digits, linear or small CNN, PGD-2, 1–6 epochs). Worker processes use one torch thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from backends import store_url  # noqa: F401 - fixture
from click.testing import CliRunner

from bench.results import files as resultfile
from bench.cli import cli
from bench.results.read import load_results
from bench.results.store import Store

SUITE = """
name = "tiny"
seeds = [0]

[defaults]
epochs = {epochs}
milestones = [0.5]  # half-way: epoch 1 of 2 (epoch 0 of a 1-epoch run)
warmup_epochs = 0
model = "{model}"
train_attack = {{ eps = 0.1, alpha = 0.05, steps = 2 }}
eval_attacks = [{{ kind = "pgd", eps = 0.1, alpha = 0.05, steps = 2 }}]

[[grid]]
dataset = "digits"
imbalance = "step-10"
method = {methods}
"""

BENCH_TOML = """
[bench]
db = "{db}"
run_dir = "runs"

[slurm]
array_parallelism = 2
poll_s = 0.3

[ray]
local_cpus = 2
poll_s = 0.3
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A folder with bench.toml (SQLite database, run folder, fast polling); worker processes use one thread."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    monkeypatch.setenv("BENCH_THREADS", "1")
    (tmp_path / "bench.toml").write_text(BENCH_TOML.format(db="sqlite:///results/bench.db"))
    return tmp_path


def suite(folder: Path, epochs: int = 1, methods: str = '["ce", "focal"]', model: str = "linear",
          extra: str = "", name: str = "tiny.toml") -> Path:
    file = folder / name
    file.write_text(textwrap.dedent(SUITE.format(epochs=epochs, methods=methods, model=model)) + extra)
    return file


def bench(*args: str):
    return CliRunner().invoke(cli, list(args))


def db_url(project: Path) -> str:
    return f"sqlite:///{project / 'results' / 'bench.db'}"


def runs(project: Path) -> list[tuple]:
    store = Store(db_url(project))
    from sqlalchemy import select

    from bench.results.schema import Run

    with store.session(write=False) as session:
        return [tuple(r) for r in session.execute(select(Run.method, Run.status, Run.worker, Run.epochs_done)
                                                  .order_by(Run.method))]


def bench_process(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(predicate, timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def one_state(project: Path) -> dict | None:
    found = list((project / "runs").glob("*/state.json")) if (project / "runs").exists() else []
    if not found:
        return None
    try:
        return json.loads(found[0].read_text())
    except ValueError:
        return None


# -- options and bad input ------------------------------------------------------------------------------------------

def test_executor_tables_layer_bench_toml_then_the_suite(project):
    from bench.executors import EXECUTORS, executor_options
    from bench.settings import load_settings

    (project / "bench.toml").write_text(
        '[slurm]\npartition = "a100"\ntime_min = 60\naccount = "lab"\n[ray]\nnum_gpus = 0.5\n')
    file = suite(project, extra='\n[slurm]\npartition = "h100"\ngpus_per_node = 2\n')
    options = executor_options(EXECUTORS.get("slurm"), load_settings(), file)
    assert (options["partition"], options["time_min"], options["account"], options["gpus_per_node"]) == ("h100", 60, "lab", 2)
    assert options["array_parallelism"] == 32  # the built-in default
    assert executor_options(EXECUTORS.get("ray"), load_settings(), file)["num_gpus"] == 0.5
    # the suite's executor table is not part of any cell
    from bench.suite import load_suite

    plain = load_suite(suite(project, name="plain.toml"), load_settings()).cells
    assert [c.cell_hash for c in plain] == [c.cell_hash for c in load_suite(file, load_settings()).cells]


@pytest.mark.parametrize(
    ("where", "text", "message"),
    [
        ("toml", '[slurm]\npartiton = "gpu"\n', "unknown key slurm.partiton (did you mean 'partition'?)"),
        ("toml", '[slurm]\ntime_min = "2h"\n', "slurm.time_min = '2h': expected int"),
        ("suite", '\n[slurm]\narray_parallelism = 0\n', "slurm.array_parallelism = 0: must be >= 1"),
        ("suite", '\n[ray]\ngpus_by_model = { cnn-small = -1 }\n', "ray.gpus_by_model.cnn-small = -1"),
        ("toml", '[bench]\nexecutor = "slurn"\n', "unknown executor 'slurn' (did you mean 'slurm'?)"),
    ],
)
def test_executor_configuration_mistakes_are_one_line(project, where, text, message):
    executor = "ray" if "[ray]" in text else "submitit-local"
    if where == "toml":
        (project / "bench.toml").write_text(text)
        file = suite(project)
    else:
        file = suite(project, extra=text)
    args = ["run", str(file)] + ([] if "executor =" in text else ["--executor", executor])
    out = bench(*args)
    assert out.exit_code == 2, out.output
    assert out.output.startswith("Error: ") and message in out.output and out.output.count("\n") == 1
    assert not (project / "results").exists() and not (project / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "slurn"], "unknown executor 'slurn' (did you mean 'slurm'?)"),
        (["--executor", "ray", "--workers", "2"], "--workers applies to --executor local"),
        (["--ray-address", "127.0.0.1:6379"], "--ray-address applies to --executor ray"),
    ],
)
def test_misplaced_executor_flags(project, args, message):
    out = bench("run", str(suite(project)), *args)
    assert out.exit_code == 2 and message in out.output and out.output.count("\n") == 1


def test_slurm_without_sbatch_is_one_line_before_anything_runs(project, monkeypatch):
    monkeypatch.setenv("PATH", str(project))  # no Slurm tools here
    out = bench("run", str(suite(project)), "--executor", "slurm")
    assert out.exit_code == 2, out.output
    assert out.output == ("Error: --executor slurm needs Slurm's sbatch and srun on PATH and did not find it; run "
                          "bench on a Slurm login node, or use --executor local\n")
    assert not (project / "results").exists() and not (project / "runs").exists()


def test_ray_address_that_does_not_answer_is_one_line(project):
    started = time.monotonic()
    out = bench("run", str(suite(project)), "--executor", "ray", "--ray-address", "127.0.0.1:1")
    assert out.exit_code == 2, out.output
    assert out.output.startswith("Error: Ray address 127.0.0.1:1 does not answer") and out.output.count("\n") == 1
    assert time.monotonic() - started < 30
    assert not (project / "results").exists()


def test_slurm_job_script_carries_the_configuration(project, monkeypatch):
    """What sbatch would get: submitit's script from bench.toml's [slurm] (srun faked: only its presence counts)."""
    from bench.executors import EXECUTORS, executor_options
    from bench.executors.slurm import SubmititBackend
    from bench.settings import load_settings

    fake = project / "bin"
    fake.mkdir()
    for tool in ("srun", "sbatch"):
        (fake / tool).write_text("#!/bin/sh\nexit 1\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    (project / "bench.toml").write_text(textwrap.dedent("""
        [slurm]
        partition = "gpu"
        account = "lab"
        qos = "high"
        constraint = "h100"
        time_min = 240
        gpus_per_node = 1
        cpus_per_task = 16
        mem_gb = 64
        array_parallelism = 8
        setup = ["source /home/me/bench/.venv/bin/activate"]
        additional = { mail-type = "FAIL" }
    """))
    options = executor_options(EXECUTORS.get("slurm"), load_settings(), None)
    backend = SubmititBackend("slurm", "slurm", project / "runs" / "_submitit", options, "bench-tiny")
    executor = backend.executor._executor
    executor.parameters["map_count"] = 220  # what a 220-cell batch sets
    script = executor._make_submission_file_text("python -u -m submitit.core._submit FOLDER", "uid")
    for line in ("--partition=gpu", "--account=lab", "--qos=high", "--constraint=h100", "--time=240",
                 "--gpus-per-node=1", "--cpus-per-task=16", "--mem=64GB", "--array=0-219%8", "--signal=USR2@120",
                 "--mail-type=FAIL", "--job-name=bench-tiny"):
        assert f"#SBATCH {line}\n" in script, line
    assert "source /home/me/bench/.venv/bin/activate" in script
    assert executor.max_num_timeout == 10
    assert "Slurm (partition gpu, account lab, qos high, 1 GPU(s), 240 min per job, at most 8 at once)" == backend.describe()


def test_ray_gpu_shares_per_cell():
    from bench.executors.ray import RayBackend

    class FakeRay:
        @staticmethod
        def remote(fn):
            return fn

    def job(model: str, device: str = "auto"):
        from bench.executors.job import CellJob
        from bench.settings import Settings

        return CellJob(config={"model": model}, cell_hash="x", settings=Settings(), device=device, engine="ray")

    options = {"num_gpus": 1, "gpus_by_model": {"cnn-small": 0.25, "linear": 0.125}}
    backend = RayBackend(FakeRay, options, gpus_available=2, started_here=True)
    assert [backend.gpus_for(job(m)) for m in ("resnet18", "cnn-small", "linear")] == [1.0, 0.25, 0.125]
    assert backend.gpus_for(job("resnet18", device="cpu")) == 0.0
    assert RayBackend(FakeRay, options, gpus_available=0, started_here=True).gpus_for(job("resnet18")) == 0.0


# -- workers writing directly to a database server ---------------------------------------------------------------

def test_a_worker_writes_the_database_only_when_it_is_a_server(project, store_url, monkeypatch):
    """A SQLite file is never opened by a worker (result file only); PostgreSQL is written directly."""
    from bench.executors import RunContext
    from bench.executors import job as job_module
    from bench.executors.remote import RemoteExecutor
    from bench.settings import load_settings
    from bench.suite import load_suite

    monkeypatch.setitem(job_module.TAGGERS, "test", lambda engine: "test:1")
    settings = load_settings()
    cell = load_suite(suite(project, methods='["ce"]'), settings).cells[0]
    store = Store(store_url)
    store.create()
    ctx = RunContext(suite_name="tiny", suite_path=project / "tiny.toml", cells=[cell], store=store,
                     settings=settings, device="cpu")
    job = RemoteExecutor(ctx).job(cell, "test")
    assert (job.db_url is not None) == store_url.startswith("postgresql")
    assert job() == "done"
    assert resultfile.result_path(settings.run_dir, cell.cell_hash).exists()
    expected = {cell.cell_hash: ("done", "test:1")} if job.db_url else {}
    assert store.claims([cell.cell_hash]) == expected
    # requeued after it wrote its result (pre-empted on the way out): it hands the same result on, no training
    import bench.runner

    monkeypatch.setattr(bench.runner, "run_cell", lambda *a, **k: pytest.fail("trained the cell again"))
    assert job() == "done"
    assert store.claims([cell.cell_hash]) == expected


# -- submitit: real job processes ----------------------------------------------------------------------------------

def test_submitit_local_runs_each_cell_as_its_own_job_exactly_once(project):
    file = suite(project, methods='["ce", "focal"]')  # unfused cells (fused groups: test_fusion_executors.py)
    out = bench("run", str(file), "--executor", "submitit-local", "--fuse", "off")
    assert out.exit_code == 0, out.output
    assert "2 to submit on submitit's local executor (at most 2 at once)" in out.output
    assert "suite tiny: 2 done" in out.output and out.output.count("] done ") == 2
    rows = runs(project)
    assert [r[1] for r in rows] == ["done"] * 2 and all(r[2].startswith("submitit-local:") for r in rows)
    assert len({r[2] for r in rows}) == 2  # two jobs
    pids = {json.loads(p.read_text())["pid"] for p in (project / "runs").glob("*/state.json")}
    assert len(pids) == 2 and os.getpid() not in pids
    assert len(load_results(db_url(project))) == 2 * 2 * 10
    jobs_before = sorted((project / "runs" / "_submitit").glob("*_submitted.pkl"))
    again = bench("run", str(file), "--executor", "submitit-local", "--fuse", "off")
    assert again.exit_code == 0 and "0 to submit" in again.output
    assert sorted((project / "runs" / "_submitit").glob("*_submitted.pkl")) == jobs_before
    status = bench("status")
    row = next(line for line in status.output.splitlines() if line.startswith("│ tiny "))
    assert [c.strip() for c in row.split("│")[2:9]] == ["2", "0", "0", "0", "0", "0", "2"]  # done … total


def _metrics(url: str):
    frame = load_results(url)
    return frame[["attack", "class_index", "n_train", "n_test", "correct"]].reset_index(drop=True)


def test_a_preempted_job_requeues_and_resumes_from_its_checkpoint(project, tmp_path_factory):
    """Slurm's pre-emption signal (USR2) mid-cell: submitit checkpoints and requeues the job, which resumes from
    the last epoch and ends with exactly the metrics of an uninterrupted run."""
    file = suite(project, epochs=6, methods='["srat-ce"]', model="cnn-small")
    driver = bench_process(project, "run", str(file), "--executor", "submitit-local")
    wait_for(lambda: (one_state(project) or {}).get("epochs_done", 0) >= 1, what="the job's first epoch")
    state = one_state(project)
    os.kill(state["pid"], signal.SIGUSR2)
    output = driver.communicate(timeout=300)[0]
    assert driver.returncode == 0, output
    final = one_state(project)
    assert final["starts"] == 2 and final["pid"] != state["pid"] and final["status"] == "done"
    ((method, status, worker, epochs),) = runs(project)
    assert (status, epochs) == ("done", 6) and worker == final["worker"]
    logs = "".join(p.read_text() for p in (project / "runs" / "_submitit").glob("*_log.*"))
    assert "preempted" in logs and "Requeued" in logs
    # the same cell, never interrupted, in a fresh folder
    fresh = tmp_path_factory.mktemp("fresh")
    (fresh / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    os.chdir(fresh)
    torch.set_num_threads(1)
    assert bench("run", str(file), "--quiet").exit_code == 0
    assert _metrics(db_url(project)).equals(_metrics(db_url(fresh)))


@pytest.mark.slow  # ~50 s on 2 busy cores; the pre-emption test above covers resuming in the default run
def test_a_killed_job_fails_its_cell_and_the_next_run_resumes_it(project):
    file = suite(project, epochs=5, methods='["ce"]', model="cnn-small")
    driver = bench_process(project, "run", str(file), "--executor", "submitit-local")
    wait_for(lambda: (one_state(project) or {}).get("epochs_done", 0) >= 1, what="the job's first epoch")
    os.kill(one_state(project)["pid"], signal.SIGKILL)
    output = driver.communicate(timeout=300)[0]
    assert driver.returncode == 1, output
    ((_, status, worker, _),) = runs(project)
    assert status == "failed"
    checkpoint = next((project / "runs").glob("*/checkpoint.pt"))
    saved = torch.load(checkpoint, weights_only=True)
    done_before = saved["epoch"] + 1
    assert done_before < 5
    cell = checkpoint.parent.name
    shown = bench("show", cell)
    assert "ended" in shown.output and "without a result" in shown.output
    again = bench("run", str(file), "--executor", "submitit-local")
    assert again.exit_code == 0, again.output
    ((_, status, new_worker, epochs),) = runs(project)
    assert (status, epochs) == ("done", 5) and new_worker != worker
    # resumed, not restarted: the epochs trained before the kill keep their measured times
    from sqlalchemy import select

    from bench.results.schema import EpochMetric

    with Store(db_url(project)).session(write=False) as session:
        seconds = list(session.execute(select(EpochMetric.seconds).order_by(EpochMetric.epoch)).scalars())
    assert seconds[:done_before] == [row["seconds"] for row in saved["curves"]]


def test_a_killed_driver_loses_nothing_bench_collect_ingests_the_jobs_results(project):
    file = suite(project, epochs=2, methods='["ce", "focal"]')
    driver = bench_process(project, "run", str(file), "--executor", "submitit-local")
    wait_for(lambda: len(list((project / "runs").glob("*/state.json"))) == 2 if (project / "runs").exists() else False,
             what="both jobs to start")
    os.kill(driver.pid, signal.SIGKILL)  # the driver only: its jobs go on
    driver.communicate(timeout=60)
    wait_for(lambda: len(list((project / "runs").glob("*/result.npz"))) == 2, what="the jobs' result files")
    before = {r[1] for r in runs(project)}
    assert before <= {"queued", "running"}
    status = bench("status")
    assert "2 finished result file(s)" in status.output
    collected = bench("collect")
    assert collected.exit_code == 0 and "2 result(s) ingested" in collected.output
    assert [r[1] for r in runs(project)] == ["done", "done"]
    assert "0 result(s) ingested, 2 already" in bench("collect").output


# -- Ray: a local cluster ------------------------------------------------------------------------------------------

def test_ray_runs_each_cell_as_a_task_exactly_once(project):
    file = suite(project, methods='["ce", "focal", "cb-reweight", "drcb-ce"]')
    out = bench("run", str(file), "--executor", "ray", "--fuse", "off")  # fused groups: test_fusion_executors.py
    assert out.exit_code == 0, out.output
    assert "4 to submit on a Ray instance started here (no GPU: cells on CPUs)" in out.output
    assert "suite tiny: 4 done" in out.output and out.output.count("] done ") == 4
    rows = runs(project)
    assert [r[1] for r in rows] == ["done"] * 4 and all(r[2].startswith("ray:") for r in rows)
    assert len(load_results(db_url(project))) == 4 * 2 * 10
    states = [json.loads(p.read_text()) for p in (project / "runs").glob("*/state.json")]
    assert {s["worker"] for s in states} == {r[2] for r in rows} and os.getpid() not in {s["pid"] for s in states}
