"""bench export / bench import: a SQLite bundle of finished runs, merged into another database by cell hash."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from factories import add_run

from bench.cell import Status
from bench.cli import cli
from bench.errors import BenchError
from bench.results.bundle import export_bundle, import_bundle
from bench.results.read import load_guards, load_results, load_runs, load_sample_flags
from bench.results.schema import Run
from bench.results.store import Store

LABELS = np.repeat([0, 1, 2, 3], 6)
TRAIN = [60, 60, 6, 6]
CONFIG = {"train_attack": {"kind": "pgd", "eps": 0.1}, "eval_attacks": [{"kind": "fgsm", "eps": 0.1}]}


def flags(rng, p=0.7):
    return {"clean": rng.random(LABELS.size) < p, "fgsm": rng.random(LABELS.size) < p / 2}


def lab(url: str, seeds, *, host: str, rng_seed: int = 0, method: str = "ce") -> Store:
    """A lab's database: finished runs of ``method`` with curves and a guard, one failed run."""
    from bench.results.schema import GuardRow

    store = Store(url)
    rng = np.random.default_rng(rng_seed)
    for seed in seeds:
        add_run(store, method=method, seed=seed, correct=flags(rng), test_labels=LABELS, train_counts=TRAIN,
                config=CONFIG, curves=[{"epoch": 0, "lr": 0.1, "loss": 2.0, "train_accuracy": 0.3, "seconds": 1.0}])
    add_run(store, method="focal", seed=99, correct={}, test_labels=LABELS, train_counts=TRAIN, status="failed",
            config=CONFIG)
    with store.session() as session, session.begin():
        session.query(Run).update({Run.host: host})
        first = session.query(Run).order_by(Run.id).first()
        session.add(GuardRow(run_id=first.id, name="zero-grad-share", value=0.2, threshold=0.01, flagged=True,
                             detail=json.dumps({"zero": 3})))
    return store


def test_round_trip_into_an_empty_database_reads_back_identically(tmp_path):
    source = f"sqlite:///{tmp_path / 'a.db'}"
    lab(source, [0, 1, 2], host="lab-a")
    summary = export_bundle(source, tmp_path / "bundle.db")
    assert summary.runs == 3 and summary.rows["class_metrics"] == 3 * 2 * 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    target = f"sqlite:///{tmp_path / 'b.db'}"
    result = import_bundle(target, tmp_path / "bundle.db")
    assert len(result.added) == 3 and not result.identical and not result.conflicts
    pd.testing.assert_frame_equal(load_results(source), load_results(target))
    pd.testing.assert_frame_equal(load_guards(source), load_guards(target))
    a, b = load_sample_flags(source), load_sample_flags(target)
    assert a.keys() == b.keys()
    for run_id in a:
        assert all(np.array_equal(a[run_id]["flags"][k], b[run_id]["flags"][k]) for k in a[run_id]["flags"])
        assert np.array_equal(a[run_id]["labels"], b[run_id]["labels"])
    runs_a = load_runs(source)
    runs_a = runs_a[runs_a["status"] == Status.DONE].reset_index(drop=True)
    runs_b = load_runs(target)
    # every column of the run rows — provenance (host, device, commit, versions, subset hash), timings — kept
    pd.testing.assert_frame_equal(runs_a.drop(columns="error"), runs_b.drop(columns="error"), check_dtype=False)
    assert runs_a["error"].isna().all() and runs_b["error"].isna().all()
    assert set(runs_b["host"]) == {"lab-a"}
    again = import_bundle(target, tmp_path / "bundle.db")  # twice changes nothing
    assert not again.added and len(again.identical) == 3
    pd.testing.assert_frame_equal(load_results(source), load_results(target))


def test_merge_adds_new_runs_skips_identical_and_never_overwrites_different_numbers(tmp_path):
    ours_url, theirs_url = f"sqlite:///{tmp_path / 'ours.db'}", f"sqlite:///{tmp_path / 'theirs.db'}"
    lab(ours_url, [0, 1], host="lab-a", rng_seed=1)
    lab(theirs_url, [0], host="lab-b", rng_seed=1)  # seed 0: the same numbers as ours
    theirs = Store(theirs_url)
    rng = np.random.default_rng(5)
    add_run(theirs, method="ce", seed=1, correct=flags(rng, 0.2), test_labels=LABELS, train_counts=TRAIN,
            config=CONFIG)  # seed 1: same cell, other numbers
    add_run(theirs, method="ldam", seed=0, correct=flags(rng), test_labels=LABELS, train_counts=TRAIN, config=CONFIG)
    with theirs.session() as session, session.begin():
        session.query(Run).update({Run.host: "lab-b"})
    before = load_results(ours_url)
    export_bundle(theirs_url, tmp_path / "theirs.bundle")
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "theirs.bundle"), "--db", ours_url])
    assert result.exit_code == 0, result.output
    assert "1 runs added, 1 identical skipped, 1 with different numbers kept as they were" in result.output
    assert "differs: cell" in result.output and "ce · digits step-10 · seed 1" in result.output
    after = load_results(ours_url)
    kept = after[after["method"] == "ce"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.reset_index(drop=True))  # ours untouched
    added = after[after["method"] == "ldam"]
    assert len(added) == 2 * 4
    theirs_ldam = load_results(theirs_url).query("method == 'ldam'")
    assert added["correct"].tolist() == theirs_ldam["correct"].tolist()
    assert added["run_id"].iloc[0] not in set(before["run_id"])  # a taken id is replaced by a fresh one
    from bench.analysis.leaderboard import make_leaderboard

    hosts = {e.method: set(e.hosts) for e in make_leaderboard(ours_url).boards[0].entries}
    assert hosts == {"ce": {"lab-a"}, "ldam": {"lab-b"}}  # both labs' runs, with the host they came from
    guards = load_guards(ours_url)
    assert len(guards[guards["method"] == "ldam"]) == 0 and len(guards) == 1


def test_a_run_not_done_here_is_left_alone(tmp_path):
    ours_url, theirs_url = f"sqlite:///{tmp_path / 'ours.db'}", f"sqlite:///{tmp_path / 'theirs.db'}"
    rng = np.random.default_rng(2)
    add_run(Store(ours_url), method="ce", seed=0, correct={}, test_labels=LABELS, train_counts=TRAIN,
            status="running", config=CONFIG)
    add_run(Store(theirs_url), method="ce", seed=0, correct=flags(rng), test_labels=LABELS, train_counts=TRAIN,
            config=CONFIG)
    export_bundle(theirs_url, tmp_path / "b.db")
    result = import_bundle(ours_url, tmp_path / "b.db")
    assert not result.added and len(result.not_done_here) == 1 and "left alone" in result.not_done_here[0].reason
    assert load_results(ours_url).empty


def test_export_of_one_suite_and_one_line_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = lab(url, [0], host="h")
    add_run(store, method="ce", seed=0, suite="other", correct=flags(np.random.default_rng(0)), test_labels=LABELS,
            train_counts=TRAIN, config=CONFIG)
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "--db", url, "--suite", "other", "--out", str(tmp_path / "o.db")])
    assert result.exit_code == 0 and "exported 1 finished runs" in result.output
    assert set(load_runs(f"sqlite:///{tmp_path / 'o.db'}")["suite"]) == {"other"}
    (tmp_path / "notes.txt").write_text("not a bundle")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(empty).create()
    cases = [
        (["export", "--db", url, "--suite", "nope", "--out", str(tmp_path / "x.db")], "unknown suite 'nope'"),
        (["export", "--db", url, "--out", str(tmp_path)], "is a folder"),
        (["export", "--db", empty, "--out", str(tmp_path / "x.db")], "no finished runs"),
        (["import", str(tmp_path / "missing.db"), "--db", url], "does not exist"),
        (["import", str(tmp_path / "notes.txt"), "--db", url], "not a SQLite file"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(BenchError, match="holds no bench results"):
        import sqlite3

        sqlite3.connect(tmp_path / "plain.db").execute("CREATE TABLE t (x)").connection.commit()
        import_bundle(url, tmp_path / "plain.db")
