"""The results store on every supported database: a SQLite file and a real PostgreSQL server.

Each test runs once per backend (``store_url``; PostgreSQL from ``$BENCH_TEST_POSTGRES_URL``, which ``.ci/run``
sets). What must hold on both: the schema, claims that only one process wins, idempotent ingestion keyed by the
cell hash, the queue states of remote executors, and many workers delivering at the same instant — every result
exactly once.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest
from backends import record, result, store_url  # noqa: F401 - store_url is a fixture
from click.testing import CliRunner
from sqlalchemy import func, select

from bench.cli import cli
from bench.errors import BenchError
from bench.results.read import load_guards, load_results, load_sample_flags
from bench.results.schema import ClassMetric, EpochMetric, GuardRow, Run, SampleFlags
from bench.results.store import Store


def counts(store: Store) -> dict[str, int]:
    with store.session(write=False) as session:
        return {table.__tablename__: session.execute(select(func.count()).select_from(table)).scalar_one()
                for table in (Run, ClassMetric, EpochMetric, SampleFlags, GuardRow)}


def test_schema_and_a_finished_cell_read_back_the_same(store_url):
    store = Store(store_url)
    assert not store.exists()
    store.create()
    store.create()  # twice: no error, one schema
    assert store.claim(record(0))
    store.finish(record(0).cell_hash, result(0))
    frame = load_results(store_url)
    assert len(frame) == 2 * 3 and set(frame["attack"]) == {"clean", "pgd-2"}
    expected = result(0).correct["pgd-2"][:10].sum()
    assert frame[(frame.attack == "pgd-2") & (frame.class_index == 0)]["correct"].item() == expected
    flags = load_sample_flags(store_url)
    (run_flags,) = flags.values()
    np.testing.assert_array_equal(run_flags["flags"]["clean"], result(0).correct["clean"])
    np.testing.assert_array_equal(run_flags["labels"], result(0).test_labels)
    assert load_guards(store_url)["name"].tolist() == ["zero-grad-share"]


def test_only_one_claim_wins_and_a_done_cell_is_never_claimed(store_url):
    first, second = Store(store_url), Store(store_url)
    first.create()
    assert first.claim(record(1))
    assert not second.claim(record(1))  # same process id, but the claim is live: the row says running
    first.finish(record(1).cell_hash, result(1))
    assert not second.claim(record(1))
    assert first.statuses([record(1).cell_hash]) == {record(1).cell_hash: "done"}


def test_ingest_is_idempotent_and_never_overwrites_a_done_run(store_url):
    store = Store(store_url)
    store.create()
    assert store.ingest(record(2), result(2, "failed"))  # a cell the database had not seen: its row is created
    assert store.statuses([record(2).cell_hash]) == {record(2).cell_hash: "failed"}
    assert store.ingest(record(2), result(2))  # a later, finished attempt replaces the failed one
    before = counts(store)
    assert before == {"runs": 1, "class_metrics": 6, "epoch_metrics": 2, "sample_flags": 2, "guards": 1}
    assert not store.ingest(record(2), result(2))
    assert not store.ingest(record(2), result(2, "failed"))  # a stale failure never overwrites a result
    assert counts(store) == before
    assert store.statuses([record(2).cell_hash]) == {record(2).cell_hash: "done"}


def test_queue_states_of_remote_cells(store_url):
    store = Store(store_url)
    store.create()
    cells = [record(i) for i in range(3)]
    store.ingest(cells[2], result(2))
    marked = store.enqueue(cells, ["slurm:7_0", "slurm:7_1", "slurm:7_2"])
    assert marked == [cells[0].cell_hash, cells[1].cell_hash]  # the done one stays done
    assert store.claims([c.cell_hash for c in cells]) == {
        cells[0].cell_hash: ("queued", "slurm:7_0"), cells[1].cell_hash: ("queued", "slurm:7_1"),
        cells[2].cell_hash: ("done", None)}
    assert not store.mark_running(cells[0].cell_hash, "slurm:9_9", 1)  # another job's report: ignored
    assert store.mark_running(cells[0].cell_hash, "slurm:7_0", 1)
    assert store.mark_ended(cells[1].cell_hash, "slurm:7_1", "failed", "node died")
    assert not store.mark_ended(cells[1].cell_hash, "slurm:7_1", "failed", "twice")
    assert not Store(store_url).claim(cells[0])  # a queued cell with a fresh heartbeat is not taken over
    store.touch({cells[0].cell_hash: "slurm:7_0"})
    statuses = store.statuses([c.cell_hash for c in cells])
    assert statuses == {cells[0].cell_hash: "running", cells[1].cell_hash: "failed", cells[2].cell_hash: "done"}


def _deliver(url: str, indices: list[int], barrier) -> None:
    """A worker process: wait for the others, then deliver its cells at the same instant."""
    store = Store(url)
    barrier.wait(timeout=120)
    for i in indices:
        store.ingest(record(i), result(i))


def test_many_workers_finishing_at_once_deliver_each_result_exactly_once(store_url):
    Store(store_url).create()
    n = 6
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    # every cell is delivered by two workers at once (a requeued job finishing twice, a driver racing collect)
    procs = [ctx.Process(target=_deliver, args=(store_url, [i, (i + 1) % n], barrier)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0] * n
    store = Store(store_url)
    assert counts(store) == {"runs": n, "class_metrics": n * 6, "epoch_metrics": n * 2, "sample_flags": n * 2,
                             "guards": n}
    frame = load_results(store_url)
    for i in range(n):
        rows = frame[frame.seed == i]
        assert rows[rows.attack == "clean"]["correct"].sum() == result(i).correct["clean"].sum()


def test_postgresql_urls_use_psycopg_and_hide_the_password():
    store = Store("postgresql://user:secret@127.0.0.1:1/db")
    assert store.engine.url.drivername == "postgresql+psycopg"
    assert "secret" not in store.shown and store.shared
    assert not Store("sqlite:///x.db").shared


def test_unreachable_database_is_one_line_before_any_cell_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = "ce"\n')
    started = time.monotonic()
    out = CliRunner().invoke(cli, ["run", "s.toml", "--db", "postgresql+psycopg://bench:pw@127.0.0.1:1/none"])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: database") and "unreachable" in lines[0]
    assert "pw" not in lines[0] and "Traceback" not in out.output
    assert time.monotonic() - started < 30
    assert not (tmp_path / "runs").exists()
    with pytest.raises(BenchError, match="unreachable"):
        Store("postgresql://bench@127.0.0.1:1/none").check_writable()


def _claim_all(url: str, n: int, barrier, won) -> None:
    """A worker process: at the same instant as the others, try to claim every cell; report the ones it won."""
    store = Store(url)
    barrier.wait(timeout=120)
    for i in range(n):
        if store.claim(record(i)):
            won.put(i)


def test_processes_racing_for_new_cells_claim_each_exactly_once(store_url):
    """The insert race (no row yet) and the conditional update, across processes: one winner per cell."""
    Store(store_url).create()
    n, workers = 8, 4
    ctx = multiprocessing.get_context("spawn")
    barrier, won = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(store_url, n, barrier, won)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0] * workers
    claimed = sorted(won.get(timeout=10) for _ in range(n))
    assert claimed == list(range(n)) and won.empty()


def test_the_cli_end_to_end_on_each_backend(tmp_path, monkeypatch, store_url):
    """bench run, status, show, report and compare against the same database URL."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_THREADS", "1")
    (tmp_path / "s.toml").write_text(
        'name = "e2e"\nseeds = [0, 1]\n[defaults]\nepochs = 1\nmodel = "linear"\n'
        'train_attack = { eps = 0.1, alpha = 0.05, steps = 1 }\n'
        'eval_attacks = [{ kind = "pgd", eps = 0.1, alpha = 0.05, steps = 1 }]\n'
        '[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = ["ce", "focal"]\n')
    run = CliRunner().invoke(cli, ["run", "s.toml", "--db", store_url, "--quiet"])
    assert run.exit_code == 0 and "4 done" in run.output, run.output
    status = CliRunner().invoke(cli, ["status", "--db", store_url])
    row = next(line for line in status.output.splitlines() if line.startswith("│ e2e "))
    assert [c.strip() for c in row.split("│")[2:4]] == ["4", "0"]  # done, running
    cell = load_results(store_url)["cell_hash"].iloc[0]
    assert '"method"' in CliRunner().invoke(cli, ["show", cell, "--json", "--db", store_url]).output
    assert "class-wise accuracy" in CliRunner().invoke(cli, ["show", cell, "--db", store_url]).output
    report = CliRunner().invoke(cli, ["report", "--db", store_url, "--format", "md", "--out", "out"])
    assert report.exit_code == 0 and "focal" in (tmp_path / "out" / "report.md").read_text()
    compare = CliRunner().invoke(cli, ["compare", "ce", "focal", "--db", store_url, "--format", "csv"])
    assert compare.exit_code == 0, compare.output
