"""Result files and their ingestion: atomic files, one writer, ``bench collect``, nothing lost when a process dies.

Runs against SQLite and (with ``$BENCH_TEST_POSTGRES_URL``) PostgreSQL where a database is involved.
"""

from __future__ import annotations

import multiprocessing
import textwrap

import numpy as np
import pytest
from backends import record, result, store_url  # noqa: F401 - store_url is a fixture
from click.testing import CliRunner

from bench.results import files as resultfile
from bench.cli import cli
from bench.results.collect import collect
from bench.results.read import load_results
from bench.results.store import Store


def test_a_result_file_round_trips_every_field(tmp_path):
    cell, original = record(3), result(3)
    path = resultfile.write_result(tmp_path, cell, original)
    assert path == tmp_path / cell.cell_hash / "result.npz"
    assert [p.name for p in path.parent.iterdir()] == ["result.npz"]  # the temporary file is gone
    back_cell, back = resultfile.read_result(path)
    assert back_cell == cell
    for name in ("status", "error", "class_names", "train_counts", "curves", "provenance", "wall_seconds",
                 "images_per_second", "epochs_done", "attack_specs", "guards"):
        assert getattr(back, name) == (list(getattr(original, name)) if name in ("class_names", "train_counts",
                                                                              "curves", "guards")
                                       else getattr(original, name)), name
    np.testing.assert_array_equal(back.test_labels, original.test_labels)
    assert list(back.correct) == ["clean", "pgd-2"]
    for label in original.correct:
        np.testing.assert_array_equal(back.correct[label], original.correct[label])
    labels, vectors = back.features[("test", "clean")]
    np.testing.assert_array_equal(labels, original.features[("test", "clean")][0])
    np.testing.assert_allclose(vectors, original.features[("test", "clean")][1], atol=1e-3)  # float16


def test_unreadable_files_are_reported_and_the_rest_ingested(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.create()
    for i in range(3):
        resultfile.write_result(tmp_path / "runs", record(i), result(i))
    (tmp_path / "runs" / "garbage").mkdir()
    (tmp_path / "runs" / "garbage" / "result.npz").write_bytes(b"PK not a zip")
    misplaced = tmp_path / "runs" / "cell999999999999" / "result.npz"  # a file copied into the wrong folder
    misplaced.parent.mkdir()
    misplaced.write_bytes(resultfile.dumps(record(5), result(5)))
    # an interrupted write leaves only its temporary file, which is never read
    (tmp_path / "runs" / record(4).cell_hash).mkdir()
    (tmp_path / "runs" / record(4).cell_hash / ".result.npz.host.1.tmp").write_bytes(b"half")
    summary = collect(store, tmp_path / "runs")
    assert sorted(summary.ingested) == [record(i).cell_hash for i in range(3)]
    assert len(summary.unreadable) == 2
    assert any("not a bench result file" in u for u in summary.unreadable)
    assert any("holds cell" in u for u in summary.unreadable)
    assert len(load_results(store.url)) == 3 * 2 * 3


def test_bench_collect_ingests_what_workers_left_and_twice_changes_nothing(tmp_path, monkeypatch, store_url):
    """Workers wrote result files, the driver died before ingesting them: ``bench collect`` brings them in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text(f'[bench]\ndb = "{store_url}"\nrun_dir = "runs"\n')
    store = Store(store_url)
    store.create()
    cells = [record(i) for i in range(4)]
    store.enqueue(cells, [f"slurm:5_{i}" for i in range(4)])  # what the driver recorded before it died
    for cell in cells[:3]:
        resultfile.write_result(tmp_path / "runs", cell, result(int(cell.seed)))
    status = CliRunner().invoke(cli, ["status"])
    assert status.exit_code == 0 and "queued" in status.output
    assert "3 finished result file(s)" in status.output and "bench collect" in status.output
    first = CliRunner().invoke(cli, ["collect"])
    assert first.exit_code == 0, first.output
    assert "3 result(s) ingested, 0 already in the database" in first.output
    second = CliRunner().invoke(cli, ["collect"])
    assert "0 result(s) ingested, 3 already in the database" in second.output
    frame = load_results(store_url)
    assert sorted(frame["seed"].unique()) == [0, 1, 2] and len(frame) == 3 * 2 * 3
    assert store.statuses([cells[3].cell_hash]) == {cells[3].cell_hash: "queued"}
    status = CliRunner().invoke(cli, ["status"])
    assert "not yet in the database" not in status.output


def test_bench_collect_needs_an_existing_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(cli, ["collect", "--run-dir", "nowhere", "--db", f"sqlite:///{tmp_path / 'b.db'}"])
    assert out.exit_code == 2 and out.output.startswith("Error: run folder nowhere does not exist")
    assert not (tmp_path / "b.db").exists()


def _collector(url: str, run_dir: str, barrier) -> None:
    barrier.wait(timeout=120)
    collect(Store(url), run_dir)


def test_concurrent_collectors_ingest_each_file_exactly_once(tmp_path, store_url):
    """The driver and one or more ``bench collect`` at the same time, over the same files."""
    store = Store(store_url)
    store.create()
    n = 12
    for i in range(n):
        resultfile.write_result(tmp_path / "runs", record(i), result(i))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_collector, args=(store_url, str(tmp_path / "runs"), barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    frame = load_results(store_url)
    assert len(frame) == n * 2 * 3 and frame.groupby("seed").size().eq(6).all()
    assert collect(store, tmp_path / "runs").already == n


TINY = """
name = "tiny"
seeds = [0]

[defaults]
epochs = 2
milestones = [1]
warmup_epochs = 0
train_attack = { eps = 0.1, alpha = 0.05, steps = 2 }
eval_attacks = [{ kind = "pgd", eps = 0.1, alpha = 0.05, steps = 2 }]

[[grid]]
dataset = "digits"
imbalance = "step-10"
method = ["ce", "focal"]
"""


def test_a_run_killed_between_result_file_and_database_loses_nothing(tmp_path, monkeypatch):
    """The result file is written first; if the process dies before the database write, the next run ingests
    the file instead of training the cell again."""
    import bench.runner as runner
    from bench.results.store import Store as StoreClass

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    (tmp_path / "tiny.toml").write_text(textwrap.dedent(TINY))
    real_ingest = StoreClass.ingest

    def dies(self, cell, outcome, worker=None):
        raise SystemExit("killed after the result file, before the database")

    monkeypatch.setattr(StoreClass, "ingest", dies)
    first = CliRunner().invoke(cli, ["run", "tiny.toml", "--quiet"])
    assert first.exit_code != 0
    assert len(list((tmp_path / "runs").glob("*/result.npz"))) == 1
    monkeypatch.setattr(StoreClass, "ingest", real_ingest)
    trained = []
    real_finish = runner.finish_cell  # every trained cell goes through it, fused or not
    monkeypatch.setattr(runner, "finish_cell",
                        lambda cell, *a, **k: trained.append(cell["method"]) or real_finish(cell, *a, **k))
    second = CliRunner().invoke(cli, ["run", "tiny.toml", "--quiet"])
    assert second.exit_code == 0, second.output
    assert trained == ["focal"]  # ce came from its result file
    frame = load_results("sqlite:///results/bench.db")
    assert sorted(frame["method"].unique()) == ["ce", "focal"]


@pytest.mark.parametrize("garbage", [b"", b"PK\x03\x04 broken"])
def test_loads_rejects_garbage_with_one_reason(garbage):
    with pytest.raises(resultfile.UnreadableResult, match="not a bench result file"):
        resultfile.loads(garbage)
