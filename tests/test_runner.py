"""`bench run` end to end through the CLI: results in a real SQLite file, resume, failures as data, bad input.

Cells here are tiny (digits, 2–6 epochs, PGD-2) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.results.read import load_results
from bench.results.schema import unpack_flags

TINY = """
name = "tiny"
seeds = [0]

[defaults]
epochs = {epochs}
milestones = [1]
warmup_epochs = 0
train_attack = {{ eps = 0.1, alpha = 0.05, steps = 2 }}
eval_attacks = [{{ kind = "pgd", eps = 0.1, alpha = 0.05, steps = 2 }}]

[[grid]]
dataset = "digits"
imbalance = ["step-10"]
method = {methods}
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A working folder with its own bench.toml (database, run folder), as a user would have."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    return tmp_path


def suite(path: Path, epochs: int = 2, methods: str = '["ce", "srat-ldam"]', name: str = "tiny.toml") -> Path:
    file = path / name
    file.write_text(textwrap.dedent(TINY.format(epochs=epochs, methods=methods)))
    return file


def bench(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def db_rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_run_stores_classwise_results_and_resumes_by_skipping(project):
    file = suite(project)
    result = bench("run", str(file), "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 done" in result.output
    db = project / "results" / "bench.db"
    frame = load_results(f"sqlite:///{db}")
    for column in ("run_id", "suite", "method", "dataset", "imbalance", "seed", "attack", "class_index",
                   "n_train", "n_test", "correct", "accuracy"):
        assert column in frame.columns
    assert set(frame["attack"]) == {"clean", "pgd-2"}
    assert len(frame) == 2 * 2 * 10  # runs × attacks × classes
    assert (frame["accuracy"] == frame["correct"] / frame["n_test"]).all()
    # train counts are the step-10 profile of digits' 87-image classes
    counts = frame[frame.run_id == frame.run_id.min()].drop_duplicates("class_index")["n_train"].tolist()
    assert counts == [87] * 5 + [8] * 5
    # per-sample flags agree with the class-wise counts
    flags = db_rows(db, "select run_id, attack, n, bits from sample_flags")
    for run_id, attack, n, bits in flags:
        rows = frame[(frame.run_id == run_id) & (frame.attack == attack)]
        assert unpack_flags(bits, n).sum() == rows["correct"].sum()
    run = db_rows(db, "select status, git_commit, versions_json, device, subset_hash, images_per_second, epochs_done from runs")
    assert all(r[0] == "done" and r[6] == 2 and r[4] and r[5] > 0 and "torch" in json.loads(r[2]) for r in run)
    assert len(db_rows(db, "select * from epoch_metrics")) == 4
    # the same command again runs nothing
    again = bench("run", str(file))
    assert again.exit_code == 0 and "2 skipped" in again.output
    assert len(db_rows(db, "select * from runs")) == 2


def test_subset_is_shared_by_methods_at_a_seed(project):
    assert bench("run", str(suite(project)), "--quiet").exit_code == 0
    hashes = db_rows(project / "results" / "bench.db", "select method, subset_hash from runs")
    assert len({h for _, h in hashes}) == 1


def test_dry_run_lists_cells_and_touches_nothing(project):
    file = suite(project)
    result = bench("run", str(file), "--dry-run")
    assert result.exit_code == 0
    assert "0 done, 2 to run" in result.output and "srat-ldam" in result.output
    assert not (project / "results").exists()
    bench("run", str(file), "--quiet", "--only", "method=ce")
    result = bench("run", str(file), "--dry-run")
    assert "1 done, 1 to run" in result.output


@pytest.mark.parametrize("fuse", ["off", "auto"])
def test_failed_cell_is_data_and_the_grid_goes_on(project, monkeypatch, fuse):
    """Unfused (ce's training raises) and fused (ce's loss raises inside the group it shares with srat-ldam): ce
    fails with its traceback, srat-ldam is done, the command exits 1; --debug re-raises."""
    import bench.runner as runner
    import methods

    if fuse == "off":
        real = runner.train

        def exploding(config, method, *args, **kwargs):
            if config["method"] == "ce":
                raise RuntimeError("boom in the training loop")
            return real(config, method, *args, **kwargs)

        monkeypatch.setattr(runner, "train", exploding)
    else:
        def exploding_loss(self, inputs):
            raise RuntimeError("boom in the training loop")

        monkeypatch.setattr(type(methods.get("ce")), "loss", exploding_loss)
    result = bench("run", str(suite(project)), "--quiet", "--fuse", fuse)
    assert result.exit_code == 1
    rows = dict(db_rows(project / "results" / "bench.db", "select method, status from runs"))
    assert rows == {"ce": "failed", "srat-ldam": "done"}
    error = db_rows(project / "results" / "bench.db", "select error from runs where method='ce'")[0][0]
    assert "Traceback" in error and "boom in the training loop" in error
    # --debug re-raises
    with pytest.raises(RuntimeError, match="boom"):
        CliRunner().invoke(cli, ["run", str(suite(project)), "--debug", "--quiet", "--fuse", fuse],
                           catch_exceptions=False)


def test_nan_loss_marks_the_cell_diverged(project):
    file = suite(project, methods='["ce"]')
    result = bench("run", str(file), "--quiet", "--set", "lr=1e30")
    assert result.exit_code == 0, result.output
    assert db_rows(project / "results" / "bench.db", "select status from runs") == [("diverged",)]


def _snapshot(db: Path) -> bytes | None:
    return db.read_bytes() if db.exists() else None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "epoch = 3\n", "unknown key 'epoch'"),
        (lambda t: t.replace('"ce"', '"srat-ldm"'), "did you mean 'srat-ldam'"),
        (lambda t: t.replace('"digits"', '"imagenet"'), "dataset = 'imagenet' is unknown"),
        (lambda t: t.replace('"step-10"', '"step-0"'), "K must be >= 1"),
        (lambda t: t.replace("eps = 0.1, alpha = 0.05, steps = 2 }\neval", "eps = -0.1, alpha = 0.05, steps = 2 }\neval"),
         "negative"),
        (lambda t: t + "[[grid\n", "malformed TOML"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_database_unchanged(project, edit, message):
    file = suite(project, methods='["ce"]')
    assert bench("run", str(file), "--quiet").exit_code == 0
    db = project / "results" / "bench.db"
    before = _snapshot(db)
    file.write_text(edit(file.read_text()))
    result = CliRunner().invoke(cli, ["run", str(file)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
    assert _snapshot(db) == before


def test_unreadable_and_read_only_databases(project):
    file = suite(project, methods='["ce"]')
    garbage = project / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    result = CliRunner().invoke(cli, ["run", str(file), "--db", f"sqlite:///{garbage}"])
    assert result.exit_code == 2 and "unreadable" in result.output
    assert garbage.read_bytes() == b"not a database" * 100
    assert bench("run", str(file), "--quiet").exit_code == 0
    db = project / "results" / "bench.db"
    before = _snapshot(db)
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    result = CliRunner().invoke(cli, ["run", str(file), "--db", read_only, "--set", "epochs=3"])
    assert result.exit_code == 2 and "cannot be written" in result.output
    assert _snapshot(db) == before
    result = CliRunner().invoke(cli, ["run", str(file), "--db", "postgresql://nobody@127.0.0.1:1/none"])
    assert result.exit_code == 2 and "Error:" in result.output and "Traceback" not in result.output


def test_missing_dataset_names_where_to_put_it(project):
    file = project / "c.toml"
    file.write_text('[[grid]]\ndataset = "cifar10"\nimbalance = "step-10"\nmethod = "ce"\n')
    result = CliRunner().invoke(cli, ["run", str(file)])
    assert result.exit_code == 2
    assert "cifar-10-batches-py" in result.output and "download" in result.output
    assert not (project / "results").exists() or not load_results_exists(project)


def load_results_exists(project: Path) -> bool:
    db = project / "results" / "bench.db"
    return db.exists() and bool(db_rows(db, "select count(*) from runs")[0][0])


def _metrics(db: Path) -> pd.DataFrame:
    frame = load_results(f"sqlite:///{db}")
    return frame[["method", "attack", "class_index", "n_train", "n_test", "correct"]].reset_index(drop=True)


def _bench_process(project: Path, *args: str) -> subprocess.Popen:
    code = "from bench.cli import main; import torch; torch.set_num_threads(1); main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_cell_resumes_to_the_uninterrupted_result(project, tmp_path_factory):
    file = suite(project, epochs=6, methods='["srat-ce"]')
    proc = _bench_process(project, "run", str(file), "--quiet")
    checkpoint = next(iter([])) if False else None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((project / "runs").glob("*/checkpoint.pt")) if (project / "runs").exists() else []
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.01)
    assert checkpoint is not None, "no checkpoint appeared"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] < 5, "the cell finished before it could be killed"
    db = project / "results" / "bench.db"
    assert db_rows(db, "select status from runs") == [("running",)]
    resumed = bench("run", str(file), "--quiet")
    assert resumed.exit_code == 0 and "1 done" in resumed.output
    assert db_rows(db, "select status, epochs_done from runs") == [("done", 6)]
    # an uninterrupted run of the same cell in a fresh folder
    fresh = tmp_path_factory.mktemp("fresh")
    (fresh / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    os.chdir(fresh)
    assert bench("run", str(file), "--quiet").exit_code == 0
    pd.testing.assert_frame_equal(_metrics(db), _metrics(fresh / "results" / "bench.db"))
    flags = [db_rows(d, "select attack, bits from sample_flags order by attack") for d in (db, fresh / "results" / "bench.db")]
    assert flags[0] == flags[1]
    curves = [db_rows(d, "select epoch, lr, loss, train_accuracy from epoch_metrics order by epoch")
              for d in (db, fresh / "results" / "bench.db")]
    assert curves[0] == curves[1]


def test_two_processes_on_one_database_never_run_a_cell_twice(project):
    file = suite(project, epochs=2, methods='["ce", "focal", "cb-reweight", "drcb-ce"]')
    procs = [_bench_process(project, "run", str(file)) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    done_lines = sum(line.startswith("[") and "] done " in line for out in outputs for line in out.splitlines())
    assert done_lines == 4, outputs
    rows = db_rows(project / "results" / "bench.db", "select method, status from runs")
    assert sorted(rows) == sorted((m, "done") for m in ("ce", "focal", "cb-reweight", "drcb-ce"))
    assert db_rows(project / "results" / "bench.db", "select count(*) from class_metrics")[0][0] == 4 * 2 * 10


def test_checkpoints_load_without_executing_code(project):
    file = suite(project, methods='["ce"]')
    assert bench("run", str(file), "--quiet").exit_code == 0
    final = next((project / "runs").glob("*/final.pt"))
    state = torch.load(final, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state["model"].values())
    assert not list((project / "runs").glob("*/checkpoint.pt"))  # replaced by final.pt


def test_list_methods_and_show(project):
    result = bench("list", "methods")
    assert result.exit_code == 0
    for name in ("srat-ldam", "cb-focal", "drw", "ldam"):
        assert name in result.output
    assert bench("run", str(suite(project, methods='["ce"]')), "--quiet").exit_code == 0
    cell = db_rows(project / "results" / "bench.db", "select cell_hash from runs")[0][0]
    shown = bench("show", cell[:8], "--json")
    assert shown.exit_code == 0 and '"method": "ce"' in shown.output and "class_accuracy" in shown.output
    assert CliRunner().invoke(cli, ["show", "zzzz"]).exit_code == 2


def test_feature_dumps_are_shared_points_across_methods(project):
    from bench.results.read import load_features

    file = suite(project)
    assert bench("run", str(file), "--quiet", "--set", "features=40").exit_code == 0
    url = f"sqlite:///{project / 'results' / 'bench.db'}"
    runs = db_rows(project / "results" / "bench.db", "select id from runs order by id")
    dumps = [load_features(url, run_id) for (run_id,) in runs]
    assert set(dumps[0]) == {("train", "clean"), ("train", "pgd-2"), ("test", "clean"), ("test", "pgd-2")}
    labels, vectors = dumps[0][("test", "clean")]
    assert vectors.shape == (40, 64) and labels.shape == (40,) and np.isfinite(vectors).all()
    # the same points for both methods, different features
    np.testing.assert_array_equal(labels, dumps[1][("test", "clean")][0])
    assert not np.allclose(vectors, dumps[1][("test", "clean")][1])
    assert not np.allclose(vectors, dumps[0][("test", "pgd-2")][1])


def test_workers_share_the_cells_of_one_database(project):
    file = suite(project, epochs=2, methods='["ce", "focal", "cb-reweight"]')
    result = bench("run", str(file), "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "2 workers" in result.output and "3 done" in result.output
    assert "[w0]" in result.output and "[w1]" in result.output
    rows = db_rows(project / "results" / "bench.db", "select method, status from runs")
    assert sorted(rows) == sorted((m, "done") for m in ("ce", "focal", "cb-reweight"))


def test_worker_environments_split_gpus_or_cores():
    from bench.executors import worker_environments

    gpu = worker_environments(3, "cuda", 2, 16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpu] == ["0", "1", "0"]
    cpu = worker_environments(2, "cpu", 0, 8)
    assert [e["BENCH_THREADS"] for e in cpu] == ["4", "4"] and "CUDA_VISIBLE_DEVICES" not in cpu[0]


@pytest.mark.parametrize("value", ["abc", "-2", "1.5"])
def test_a_bad_bench_threads_is_one_line(project, monkeypatch, value):
    monkeypatch.setenv("BENCH_THREADS", value)
    result = CliRunner().invoke(cli, ["run", str(suite(project)), "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"$BENCH_THREADS = {value!r}: expected a whole number" in result.output
    assert not (project / "results" / "bench.db").exists()


@pytest.mark.parametrize("device, words", [("mps", "no Apple MPS device"), ("xla", "valid: auto, cpu, cuda"),
                                           ("cuda:7", "CUDA")])
def test_a_device_this_machine_lacks_is_refused_before_any_cell(project, device, words):
    result = CliRunner().invoke(cli, ["run", str(suite(project)), "--quiet", "--device", device])
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output
    assert not (project / "results" / "bench.db").exists()


def test_workers_are_not_started_for_cells_already_done(project):
    file = suite(project, methods='["ce"]')
    assert bench("run", str(file), "--quiet").exit_code == 0
    result = bench("run", str(file), "--workers", "1000")
    assert result.exit_code == 0 and "all 1 cell(s) done; nothing to run" in result.output


@pytest.mark.parametrize("args, words", [
    (["run", "x.toml", "--workers", "0"], "'--workers': 0 is not in the range"),
    (["report", "--format", "pdf"], "'pdf' is not one of 'html', 'md', 'latex', 'csv'"),
    (["runn"], "No such command 'runn'. Did you mean 'run'?"),
    (["run", "x.toml", "--bogus"], "No such option '--bogus'"),
    (["compare"], "Missing argument 'A'"),
    (["db", "upgrad"], "No such command 'upgrad'"),
])
def test_clicks_own_usage_errors_are_one_line_too(project, args, words):
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and words in lines[0] and "--help` lists what is allowed" in lines[0]
