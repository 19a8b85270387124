"""A database password never reaches a file others can read: job pickles, Ray task arguments, result and state
files, logs, reports, command lines, error lines. Workers take it from their environment.

The end-to-end case needs a PostgreSQL server (``$BENCH_TEST_POSTGRES_URL``, see tests/backends.py); the test
server trusts local connections, so any password is accepted and the test can plant one to search for.
"""

from __future__ import annotations

import os
import pickle
import uuid

import pytest
from click.testing import CliRunner

from backends import postgres_url
from bench.cli import cli
from bench.errors import BenchError
from bench.results.store import Store, hide_password, without_password

PASSWORD = "S3cret-pw-4f9c2e"

SUITE = """
name = "secret"
seeds = [0]

[defaults]
epochs = 2
milestones = [1]
warmup_epochs = 0
model = "linear"
train_attack = "none"
eval_attacks = [{ kind = "fgsm", eps = 0.1 }]
guards = []

[[grid]]
dataset = "digits"
imbalance = "step-10"
method = ["ce"]
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text('[bench]\nrun_dir = "runs"\nout_dir = "out"\n')
    (tmp_path / "secret.toml").write_text(SUITE)
    for name in ("BENCH_CONFIG", "BENCH_DB", "PGPASSWORD"):
        monkeypatch.setenv(name, "")  # recorded, so whatever a test sets is undone afterwards
        monkeypatch.delenv(name)
    return tmp_path


def bench(*args: str, env: dict | None = None):
    return CliRunner(env=env).invoke(cli, list(args))


def test_urls_shown_or_handed_on_carry_no_password():
    url = f"postgresql://me:{PASSWORD}@db.example/bench"
    assert PASSWORD not in hide_password(url) and PASSWORD not in without_password(url)
    assert without_password(url) == "postgresql://me@db.example/bench"
    assert PASSWORD not in hide_password(f"postgresql://me:{PASSWORD}@db:notaport/x")
    with pytest.raises(BenchError) as info:
        Store(f"postgresql+nodriver://me:{PASSWORD}@db/bench")
    assert PASSWORD not in str(info.value)


def test_a_jobs_pickle_carries_no_password_and_the_driver_shares_it_through_the_environment(project, monkeypatch):
    from bench.executors import RunContext
    from bench.executors.job import CellJob
    from bench.executors.remote import RemoteExecutor
    from bench.settings import load_settings
    from bench.suite import load_suite

    url = f"postgresql://me:{PASSWORD}@127.0.0.1:1/bench"
    monkeypatch.setenv("BENCH_DB", url)  # bench.toml's db overridden by the environment
    settings = load_settings()
    assert settings.db == url
    cell = load_suite(project / "secret.toml", settings).cells[0]
    ctx = RunContext(suite_name="secret", suite_path=project / "secret.toml", cells=[cell], store=Store(url),
                     settings=settings, device="cpu")
    job = RemoteExecutor(ctx).job(cell, "slurm")
    assert PASSWORD.encode() not in pickle.dumps(job)
    assert job.db_url == "postgresql://me@127.0.0.1:1/bench"
    assert os.environ["PGPASSWORD"] == PASSWORD  # inherited by submitit's jobs, sbatch and a local Ray
    assert job.credentialed_url() == url  # a worker with $BENCH_DB uses it; else libpq reads PGPASSWORD
    monkeypatch.setenv("BENCH_DB", "postgresql://me:other@elsewhere/db")
    assert job.credentialed_url() == job.db_url
    sqlite_job = CellJob(config=cell.config, cell_hash=cell.cell_hash, settings=settings, device="cpu", engine="x")
    assert sqlite_job.credentialed_url() is None


def test_local_workers_get_the_database_through_the_environment_not_the_command_line(project, monkeypatch):
    from bench.executors import local

    seen = {}

    def fake_workers(args, envs):
        seen["args"], seen["envs"] = list(args), envs
        return [0] * len(envs)

    monkeypatch.setattr(local, "run_workers", fake_workers)
    url = f"sqlite:///{project / 'w.db'}"
    result = bench("run", "secret.toml", "--workers", "2", "--db", url)
    assert result.exit_code == 0, result.output
    assert not any(a.startswith("--db") for a in seen["args"])  # a command line is world-readable (ps)
    # every worker started (one per cell to run, at most --workers) gets the database from its environment
    assert seen["envs"] and [env["BENCH_DB"] for env in seen["envs"]] == [url] * len(seen["envs"])


@pytest.fixture()
def postgres_with_password():
    base = postgres_url()
    if base is None:
        pytest.skip("BENCH_TEST_POSTGRES_URL is not set (bash .ci/postgres.sh starts a server)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_s_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name, password=PASSWORD).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_no_file_a_postgresql_backed_run_writes_holds_the_password(project, postgres_with_password, monkeypatch):
    url = postgres_with_password
    outputs = []
    for args in (["run", "secret.toml", "--executor", "submitit-local"], ["status"], ["collect"],
                 ["report", "--format", "md", "--out", "out"], ["evaluate", "--attack", '{kind="fgsm", eps=0.05}']):
        result = bench(*args, env={"BENCH_DB": url})
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "1 done" in outputs[0]
    cell_hash = next(p.name for p in (project / "runs").iterdir() if not p.name.startswith("_"))
    show = bench("show", cell_hash, env={"BENCH_DB": url})
    assert show.exit_code == 0, show.output
    outputs.append(show.output)
    written = [p for p in project.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pkl" for p in written)  # submitit's job pickles were among them
    assert any(p.name == "result.npz" for p in written) and any(p.suffix == ".md" for p in written)
    leaks = [str(p.relative_to(project)) for p in written if PASSWORD.encode() in p.read_bytes()]
    assert leaks == []
    assert not any(PASSWORD in out for out in outputs)
    failing = bench("status", "--db", url.replace("/bench_s_", "/nonexistent_"), env={})
    assert failing.exit_code == 2 and PASSWORD not in failing.output and "***" in failing.output
