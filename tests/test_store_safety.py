"""The results store is never damaged by bad input: `bench export --out` the database itself, corrupt bundles,
foreign or incomplete databases, read-only commands, read-only folders, `--db ''`, LIKE wildcards in `bench show`.

Each bad input is one line (``Error: ...``), exit status 2, no traceback, and the database file byte for byte as it
was (sha256). Read-only commands leave every file they read unchanged, whatever its journal mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from factories import add_run, bench, one_line_error

from bench.errors import BenchError
from bench.results import store as store_module
from bench.results.bundle import export_bundle
from bench.results.read import load_runs
from bench.results.store import Store

LABELS = np.repeat([0, 1, 2, 3], 6)
TRAIN = [60, 60, 6, 6]
CONFIG = {"train_attack": {"kind": "pgd", "eps": 0.1}, "eval_attacks": [{"kind": "fgsm", "eps": 0.1}]}


SUITE = 'name = "s"\nseeds = [0]\n[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = "ce"\n'


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def journal_mode(path: Path) -> bytes:
    """The file format's read/write version bytes (offsets 18, 19): 2 = WAL, 1 = rollback journal."""
    return Path(path).read_bytes()[18:20]


def lab(path: Path, seeds=(0, 1, 2), methods=("ce", "focal")) -> str:
    """A database with finished runs of two methods, one failed and one running run; closed, so the file is whole."""
    url = f"sqlite:///{path}"
    store = Store(url)
    rng = np.random.default_rng(0)
    for method in methods:
        for seed in seeds:
            add_run(store, method=method, seed=seed, test_labels=LABELS, train_counts=TRAIN, config=CONFIG,
                    correct={"clean": rng.random(LABELS.size) < 0.7, "fgsm": rng.random(LABELS.size) < 0.4},
                    curves=[{"epoch": 0, "lr": 0.1, "loss": 2.0, "train_accuracy": 0.3, "seconds": 1.0}])
    add_run(store, method="ce", seed=97, correct={}, test_labels=LABELS, train_counts=TRAIN, status="failed",
            config=CONFIG)
    add_run(store, method="ce", seed=98, correct={}, test_labels=LABELS, train_counts=TRAIN, status="running",
            config=CONFIG)
    store.engine.dispose()
    return url


def rollback_journal(path: Path) -> None:
    """Switch a database to the rollback journal (what `bench export` writes): a reader that switched it to WAL
    would change its bytes."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    assert journal_mode(path) == b"\x01\x01"


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    monkeypatch.delenv("BENCH_DB", raising=False)
    return tmp_path


# -- 1. bench export --out the database itself ------------------------------------------------------------------
def test_export_onto_the_results_database_itself_is_refused(project):
    db = project / "results" / "bench.db"
    url = lab(db)
    (project / "link.db").symlink_to(db)
    before = sha(db)
    cases = [
        (["export", "--out", "results/bench.db"], "is the results database itself"),  # bench.toml's db
        (["export", "--out", str(db), "--db", url], "is the results database itself"),
        (["export", "--out", "link.db", "--db", url], "is the results database itself"),  # through a symlink
        (["export", "--out", "results/../results/bench.db"], "is the results database itself"),
        (["export", "--out", "results/bench.db-wal"], "SQLite keeps beside the results database"),
    ]
    for args, needle in cases:
        one_line_error(bench(*args), needle, "name another file")
        assert sha(db) == before, args
    statuses = sorted(load_runs(url)["status"])
    assert statuses.count("failed") == 1 and statuses.count("running") == 1  # nothing lost


def test_export_replaces_only_an_earlier_bundle(project):
    url = lab(project / "results" / "bench.db")
    notes = project / "notes.db"
    notes.write_text("my notes, not a bundle")
    other = project / "other.db"
    lab(other, seeds=(5,), methods=("ce",))
    for target in (notes, other):
        before = sha(target)
        one_line_error(bench("export", "--out", str(target), "--db", url), "exists and is not a bench bundle")
        assert sha(target) == before
    assert bench("export", "--out", "b.db", "--db", url).exit_code == 0
    first = sha(project / "b.db")
    result = bench("export", "--out", "b.db", "--db", url)  # an earlier bundle: replaced
    assert result.exit_code == 0 and "exported 6 finished runs" in result.output
    assert len(load_runs("sqlite:///b.db")) == 6 and first  # a whole bundle again
    (project / "empty.db").touch()  # an empty file holds nothing to lose
    assert bench("export", "--out", "empty.db", "--db", url).exit_code == 0


# -- 2. corrupt bundles -------------------------------------------------------------------------------------------
CORRUPTIONS = {
    "config-not-json": ("UPDATE runs SET config_json = '{not json' WHERE id = (SELECT max(id) FROM runs)",
                        ["table runs", "column config_json", "is not valid JSON"]),
    "config-not-object": ("UPDATE runs SET config_json = '[1, 2]' WHERE id = (SELECT max(id) FROM runs)",
                          ["table runs", "column config_json", "is not a JSON object"]),
    "seed-text": ("UPDATE runs SET seed = 'x' WHERE id = (SELECT max(id) FROM runs)",
                  ["table runs", "column seed", "is not a whole number"]),
    "versions-not-json": ("UPDATE runs SET versions_json = '[' WHERE id = (SELECT max(id) FROM runs)",
                          ["column versions_json", "is not valid JSON"]),
    "class-names-not-list": ("UPDATE runs SET class_names_json = '7'", ["column class_names_json", "JSON list"]),
    "accuracy-text": ("UPDATE class_metrics SET accuracy = 'abc' WHERE id = 3",
                      ["table class_metrics", "row id 3", "column accuracy", "is not a number"]),
    "correct-over-n": ("UPDATE class_metrics SET correct = n_test + 1 WHERE id = 2",
                       ["table class_metrics", "row id 2", "exceeds n_test"]),
    "no-class-metrics": ("DROP TABLE class_metrics", ["lacks table class_metrics"]),
    "unknown-status": ("UPDATE runs SET status = 'weird'", ["table runs", "column status", "'weird'",
                                                            "valid: queued, running, done"]),
    "path-in-hash": ("UPDATE runs SET cell_hash = '../../x' WHERE id = (SELECT max(id) FROM runs)",
                     ["column cell_hash", "is not a cell hash"]),
    "orphan-rows": ("PRAGMA foreign_keys = OFF; DELETE FROM runs WHERE id = (SELECT max(id) FROM runs)",
                    ["names no run of the bundle"]),
    "short-flags": ("UPDATE sample_flags SET bits = x'00' WHERE id = 1", ["table sample_flags", "column bits"]),
    "spec-not-json": (("INSERT INTO attack_specs (run_id, attack, kind, spec_json) SELECT min(id), 'x', 'pgd', "
                       "'nope' FROM runs"),
                      ["table attack_specs", "column spec_json", "is not valid JSON"]),
    "loss-text": ("UPDATE epoch_metrics SET loss = 'low'",
                  ["table epoch_metrics", "column loss", "is not a number"]),
    "meta-not-json": ("UPDATE bench_meta SET value = '{' WHERE key = 'bundle'",
                      ["table bench_meta", "not valid JSON"]),
    "no-finished-run": ("UPDATE runs SET status = 'failed'", ["holds no finished runs"]),
}


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundle")
    source = lab(folder / "source.db", seeds=(0, 1), methods=("ce",))
    export_bundle(source, folder / "good.bundle.db")
    return folder / "good.bundle.db"


@pytest.mark.parametrize("case", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_a_corrupt_bundle_is_refused_before_anything_is_written(project, good_bundle, case):
    sql, needles = CORRUPTIONS[case]
    bad = project / "bad.db"
    shutil.copy(good_bundle, bad)
    with closing(sqlite3.connect(bad)) as conn:
        conn.executescript(sql)
        conn.commit()
    db = project / "results" / "bench.db"
    url = lab(db, seeds=(7,), methods=("ce",))
    before = sha(db)
    one_line_error(bench("import", "bad.db"), "bundle bad.db", *needles)
    assert sha(db) == before
    fresh = project / "fresh.db"  # a database that does not exist yet is not created for a bad bundle
    one_line_error(bench("import", "bad.db", "--db", f"sqlite:///{fresh}"), "bundle bad.db")
    assert not fresh.exists()
    assert len(load_runs(url)) == 3  # and reports still read it


def test_a_good_bundle_still_imports(project, good_bundle):
    url = lab(project / "results" / "bench.db", seeds=(7,), methods=("ce",))
    result = bench("import", str(good_bundle))
    assert result.exit_code == 0 and "2 runs added" in result.output, result.output
    assert (load_runs(url)["status"] == "done").sum() == 3


def test_a_bundle_without_the_optional_tables_still_imports(project, good_bundle):
    bundle = project / "lean.db"
    shutil.copy(good_bundle, bundle)
    with closing(sqlite3.connect(bundle)) as conn:
        conn.executescript("DROP TABLE guards; DROP TABLE attack_specs; DROP TABLE test_labels")
    result = bench("import", "lean.db", "--db", "sqlite:///new.db")
    assert result.exit_code == 0 and "2 runs added" in result.output, result.output


def test_import_messages_name_the_users_path(project, good_bundle):
    url = lab(project / "results" / "bench.db", seeds=(7,), methods=("ce",))
    db = project / "results" / "bench.db"
    before = sha(db)
    (project / "bundles").mkdir()
    one_line_error(bench("import", "bundles"), "bundle bundles is a folder")
    old = project / "old.db"
    shutil.copy(good_bundle, old)
    with closing(sqlite3.connect(old)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
        conn.commit()
    result = bench("import", "old.db")
    one_line_error(result, "bundle old.db was written by an older bench", f"--db sqlite:///{old}")
    assert "file%3A" not in result.output and "mode=ro" not in result.output
    one_line_error(bench("import", "results/bench.db"), "is the results database itself")
    assert sha(db) == before
    assert url


# -- 3. read-only commands never change the file; foreign databases are refused -----------------------------------
READ_COMMANDS = [
    ["status"],
    ["show", "0"],
    ["report", "--format", "md", "--out", "out/report"],
    ["compare", "ce", "focal"],
    ["leaderboard", "--format", "md", "--out", "out/site"],
    ["claims"],
    ["export", "--out", "out/bundle.db"],
    ["evaluate", "--attack", '{kind="fgsm", eps=0.1}', "--only", "method=none-such"],
    ["list", "suites"],
    ["db", "upgrade"],
    ["collect", "--run-dir", "runs"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=[" ".join(a[:2]) for a in READ_COMMANDS])
def test_reading_leaves_the_file_byte_for_byte(project, args):
    db = project / "results" / "bench.db"
    lab(db)
    rollback_journal(db)  # as a bundle is written, or a file another tool made
    (project / "out").mkdir()
    (project / "runs").mkdir()
    before = sha(db)
    result = bench(*args)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2), result.output
    assert sha(db) == before and journal_mode(db) == b"\x01\x01", result.output


def test_an_exported_bundle_is_read_without_change(project):
    url = lab(project / "results" / "bench.db")
    export_bundle(url, project / "b.db")
    before = sha(project / "b.db")
    first = load_runs("sqlite:///b.db")["cell_hash"][0]
    for args in (["status"], ["show", first], ["export", "--out", "again.db"], ["list", "suites"]):
        result = bench(*args, "--db", "sqlite:///b.db")
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert sha(project / "b.db") == before


def test_writers_still_switch_to_wal(project):
    db = project / "results" / "bench.db"
    lab(db)
    rollback_journal(db)
    store = Store(f"sqlite:///{db}")
    add_run(store, method="ce", seed=50, correct={"clean": LABELS > 0}, test_labels=LABELS, train_counts=TRAIN,
            config=CONFIG)
    store.engine.dispose()
    assert journal_mode(db) == b"\x02\x02"  # concurrent readers while a cell's rows are written


def test_a_foreign_sqlite_database_is_refused_untouched(project):
    foreign = project / "foreign.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE foo (x)")
        conn.commit()
    before = sha(foreign)
    url = f"sqlite:///{foreign}"
    (project / "runs").mkdir()
    (project / "s.toml").write_text(SUITE)
    for args in (["status"], ["report", "--format", "md", "--out", "out"], ["run", "s.toml", "--quiet"],
                 ["collect", "--run-dir", "runs"], ["db", "upgrade"], ["export", "--out", "x.db"]):
        one_line_error(bench(*args, "--db", url), "is not a bench results database", "table(s) foo",
                       "give an empty or a bench database")
        assert sha(foreign) == before, args
    with pytest.raises(BenchError, match="is not a bench results database"):
        Store(url).create()
    assert sha(foreign) == before


def test_an_empty_file_is_read_as_empty_and_left_empty(project):
    empty = project / "results" / "bench.db"
    empty.touch()
    (project / "runs").mkdir()
    for args in (["status"], ["report", "--format", "md", "--out", "out"], ["export", "--out", "x.db"],
                 ["db", "upgrade"]):
        one_line_error(bench(*args), "holds no results yet")
    result = bench("collect", "--run-dir", "runs")  # nothing to collect: nothing created or written
    assert result.exit_code == 0 and "0 result(s) ingested" in result.output
    assert empty.stat().st_size == 0


def test_collect_creates_no_database_when_there_is_nothing_to_collect(project):
    (project / "runs").mkdir()
    result = bench("collect", "--run-dir", "runs", "--db", "sqlite:///new/none.db")
    assert result.exit_code == 0 and "0 result(s) ingested" in result.output
    assert not (project / "new").exists()


# -- 4. an incomplete database ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sql,needle", [
    ("DROP TABLE class_metrics", "lacks table class_metrics"),
    ("ALTER TABLE runs DROP COLUMN fused_members", "table runs lacks column fused_members"),
], ids=["table", "column"])
def test_an_incomplete_database_is_refused_at_open(project, sql, needle):
    db = project / "results" / "bench.db"
    lab(db)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(sql)
        conn.commit()
    before = sha(db)
    (project / "s.toml").write_text(SUITE)
    for args in (["db", "upgrade"], ["status"], ["report", "--format", "md", "--out", "out"], ["show", "0"],
                 ["run", "s.toml", "--quiet"], ["import", "results/bench.db", "--db", "sqlite:///other.db"]):
        one_line_error(bench(*args), needle)
        assert sha(db) == before, args


# -- 5. a read-only folder -------------------------------------------------------------------------------------------
def test_a_database_in_a_read_only_folder_is_read(project, monkeypatch):
    folder = project / "archive"
    folder.mkdir()
    db = folder / "bench.db"
    url = lab(db)
    assert journal_mode(db) == b"\x02\x02"  # WAL: a normal open would need to create bench.db-shm beside it
    before = sha(db)
    real_access = os.access

    def access(path, mode, *args, **kwargs):  # as on a read-only mount (root passes chmod, so pretend)
        if Path(path).absolute() in (folder, db) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(store_module.os, "access", access)
    first = load_runs(url)["cell_hash"][0]
    for args in (["status"], ["show", first], ["report", "--format", "md", "--out", "out"],
                 ["export", "--out", "b.db"]):
        result = bench(*args, "--db", url)
        assert result.exit_code == 0 and "Traceback" not in result.output, (args, result.output)
    store = Store(url)
    assert store.frozen and "immutable=1" in str(store.engine.url)
    assert sorted(p.name for p in folder.iterdir()) == ["bench.db"]  # no -shm, no -wal made beside it
    assert sha(db) == before
    one_line_error(bench("collect", "--run-dir", ".", "--db", url), "check its permissions")


# -- 6. --db '' ---------------------------------------------------------------------------------------------------
def test_an_empty_db_option_is_refused(project):
    lab(project / "results" / "bench.db")
    for args in (["status"], ["export", "--out", "x.db"], ["db", "upgrade"], ["show", "0"], ["collect"]):
        one_line_error(bench(*args, "--db", ""), "--db '' is empty", "sqlite:///")
    one_line_error(bench("report", "--out", "out", "--db", ""), "''")  # report's own --db: refused as well


# -- 7. bench show takes a prefix, not a LIKE pattern -----------------------------------------------------------------
def test_show_treats_its_argument_as_a_prefix(project):
    url = lab(project / "results" / "bench.db")
    hashes = list(load_runs(url)["cell_hash"])
    first = hashes[0]
    assert bench("show", first[:6]).exit_code == 0
    pattern = first[0] + "_" + first[2]
    one_line_error(bench("show", pattern), f"cell {pattern!r} matches no run")
    one_line_error(bench("show", "%"), "cell '%' matches no run")
    one_line_error(bench("show", "_"), "cell '_' matches no run")
    one_line_error(bench("show", ""), "no cell given")
    assert json.loads(bench("show", first, "--json").output)["cell_hash"] == first
