"""Schema migrations (alembic): an older results database is refused with one line naming `bench db upgrade`, which
upgrades it in place with every row; a newer or damaged one is refused, unchanged; fresh ones are stamped.

``tests/data/bench-schema-v1.db`` was written by the bench of commit 6fb63b6 (schema version 1, before alembic):
``bench run`` of a 1-epoch digits suite with two methods (ce, srat-ldam; features kept), ``bench evaluate
--attack '{kind="fgsm", eps=0.1}'`` on both runs, and a 4-point theory suite — a row in every table.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from backends import store_url  # noqa: F401 - the fixture
from factories import bench, one_line_error

from bench.results import migrate, read
from bench.results.store import Store

FIXTURE = Path(__file__).parent / "data" / "bench-schema-v1.db"
TABLES = ("bench_meta", "runs", "class_metrics", "epoch_metrics", "sample_flags", "test_labels", "attack_specs",
          "guards", "feature_dumps", "theory_results")


@pytest.fixture()
def old_db(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    return path


def columns(path: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def rows(path: Path, tables=TABLES) -> dict[str, list[tuple]]:
    """Every row of ``tables``, in the columns the fixture has (a later revision may add columns)."""
    with closing(sqlite3.connect(path)) as conn:
        return {t: sorted(conn.execute(f"SELECT {', '.join(columns(FIXTURE, t))} FROM {t}").fetchall(), key=repr)
                for t in tables}


# Columns revisions after the baseline added, null in every row they found (table -> columns).
ADDED = {"runs": ["selected_epoch", "val_clean", "val_robust", "fused_members"],
         "epoch_metrics": ["val_clean", "val_robust"]}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_meta(path: Path, value: str | None, revision: str | None = None) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:  # closed: the write-ahead log is folded into the file
        if value is None:
            conn.execute("DELETE FROM bench_meta")
        else:
            conn.execute("UPDATE bench_meta SET value = ?", (value,))
        if revision is not None:
            conn.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            conn.execute("DELETE FROM alembic_version")
            conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))


def test_head_and_baselines_are_alembics():
    assert migrate.HEAD == migrate.scripts().get_current_head()
    assert set(migrate.BASELINES.values()) <= migrate.known_revisions()


def test_the_migrations_build_exactly_the_models(tmp_path):
    """Upgrading an empty database through every revision gives the schema of bench.results.schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from bench.results.schema import Base

    from alembic import command
    from alembic.config import Config

    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(migrate.MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert migrate.state(migrate.read_version(conn)) == "current"


def test_an_older_database_is_refused_by_every_command_and_left_as_it_is(old_db, tmp_path):
    url = f"sqlite:///{old_db}"
    before = digest(old_db)
    suite = tmp_path / "s.toml"
    suite.write_text('name = "fixture"\nseeds = [0]\n[[grid]]\ndataset = "digits"\nimbalance = "step-10"\n'
                     'method = "ce"\n')
    commands = [["status"], ["show", "86c7"], ["report", "--out", str(tmp_path / "r")], ["compare", "ce", "srat-ldam"],
                ["run", str(suite), "--dry-run"], ["run", str(suite)], ["collect", "--run-dir", str(tmp_path)],
                ["evaluate", "--attack", '{kind="fgsm", eps=0.1}']]
    for args in commands:
        one_line_error(bench(*args, "--db", url), "older bench", "`bench db upgrade`")
    assert digest(old_db) == before  # never rewritten silently
    assert not (tmp_path / "r").exists()


def test_bench_db_upgrade_keeps_every_row(old_db, monkeypatch):
    url = f"sqlite:///{old_db}"
    raw = rows(old_db)
    with monkeypatch.context() as patch:  # what this bench reads from the file before the upgrade
        patch.setattr(Store, "check_schema", lambda self, allow_missing=False: None)
        frames = [read.load_results(url), read.load_guards(url)]  # load_runs reads the columns 0002 adds
        theory = read.load_theory(url)
    result = bench("db", "upgrade", "--db", url)
    assert result.exit_code == 0, result.output
    assert ("upgraded in place: schema version 1, no alembic revision -> schema version 1, revision "
            f"{migrate.HEAD}") in result.output
    assert rows(old_db) == raw
    with closing(sqlite3.connect(old_db)) as conn:
        for table, added in ADDED.items():
            assert set(added) <= set(columns(old_db, table))
            assert conn.execute(f"SELECT {', '.join(added)} FROM {table}").fetchall() == [
                (None,) * len(added)] * len(raw[table])
    for before, after in zip(frames, [read.load_results(url), read.load_guards(url)]):
        pd.testing.assert_frame_equal(before, after)
    runs = read.load_runs(url)
    assert len(frames[0]) == 60 and set(runs["method"]) == {"ce", "srat-ldam"} and runs["selected_epoch"].isna().all()
    assert [t["suite"] for t in read.load_theory(url)] == [t["suite"] for t in theory] == ["theory-small"]
    again = bench("db", "upgrade", "--db", url)
    assert again.exit_code == 0 and "is up to date" in again.output
    status = bench("status", "--db", url)
    assert status.exit_code == 0 and "fixture" in status.output


def test_a_database_of_an_early_bench_gets_the_tables_it_lacks(old_db):
    """Early benches (schema version 1 too) had no test_labels, attack_specs or guards tables."""
    with closing(sqlite3.connect(old_db)) as conn, conn:
        for table in ("test_labels", "attack_specs", "guards", "theory_results"):
            conn.execute(f"DROP TABLE {table}")
    kept = rows(old_db, [t for t in TABLES if t not in ("test_labels", "attack_specs", "guards", "theory_results")])
    assert bench("db", "upgrade", "--db", f"sqlite:///{old_db}").exit_code == 0
    after = rows(old_db)
    assert all(after[t] == kept[t] for t in kept)
    assert after["test_labels"] == after["guards"] == after["attack_specs"] == after["theory_results"] == []


@pytest.mark.parametrize("value, revision, needles", [
    ("1.1", None, ["schema version '1.1'", "not a version bench writes"]),
    ("garbage", "0001", ["schema version 'garbage'"]),
    ("", None, ["schema version ''"]),
    (None, None, ["no schema version"]),
    ("0", None, ["has schema version 0, this bench reads version 1"]),
    ("2", None, ["newer bench", "schema version 2"]),
    ("1", "ffff99", ["newer bench", "revision ffff99"]),
])
def test_a_newer_or_damaged_database_is_one_line_and_never_upgraded(old_db, value, revision, needles):
    set_meta(old_db, value, revision)
    before = digest(old_db)
    url = f"sqlite:///{old_db}"
    for args in (["status"], ["db", "upgrade"], ["report", "--out", str(old_db.parent / "r")]):
        one_line_error(bench(*args, "--db", url), *needles)
    assert digest(old_db) == before


def test_a_fresh_database_is_stamped_at_head(store_url):  # noqa: F811 - the fixture
    store = Store(store_url)
    store.create()
    store.create()
    with store.engine.connect() as conn:
        assert migrate.read_version(conn) == migrate.Version("1", (migrate.HEAD,))
    result = bench("db", "upgrade", "--db", store_url)
    assert result.exit_code == 0 and f"is up to date (schema version 1, revision {migrate.HEAD})" in result.output


def test_a_pre_alembic_database_upgrades_on_every_backend(store_url):  # noqa: F811 - the fixture
    from backends import record, result as cell_result

    store = Store(store_url)
    store.create()
    store.ingest(record(1), cell_result(1))
    with store.write_engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))  # what a bench before alembic left
    store.engine.dispose()
    one_line_error(bench("status", "--db", store_url), "`bench db upgrade`")
    assert bench("db", "upgrade", "--db", store_url).exit_code == 0
    frame = read.load_results(store_url)
    assert len(frame) == 6 and frame["correct"].sum() == sum(int(f.sum()) for f in cell_result(1).correct.values())
    assert bench("status", "--db", store_url).exit_code == 0


def test_upgrade_of_a_missing_database_is_one_line(tmp_path):
    one_line_error(bench("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'none.db'}"), "holds no results yet")
    assert not (tmp_path / "none.db").exists()


def test_a_database_at_the_first_revision_gains_the_selection_columns(old_db):
    """A database of the first alembic bench (revision 0001) upgrades through 0002 and 0003: the model-selection
    and fusion columns appear, null in every row, and nothing else changes."""
    from alembic import command
    from alembic.config import Config

    engine = create_engine(f"sqlite:///{old_db}")
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(migrate.MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        assert migrate.read_version(conn) == migrate.Version("1", ("0001",))
    engine.dispose()
    raw = rows(old_db)
    assert not set(ADDED["runs"]) & set(columns(old_db, "runs"))
    one_line_error(bench("status", "--db", f"sqlite:///{old_db}"), "`bench db upgrade`")
    result = bench("db", "upgrade", "--db", f"sqlite:///{old_db}")
    assert result.exit_code == 0 and "revision 0001 -> schema version 1, revision 0003" in result.output, result.output
    assert rows(old_db) == raw
    for table, added in ADDED.items():
        assert set(added) <= set(columns(old_db, table))
    runs = read.load_runs(f"sqlite:///{old_db}")
    assert runs["selected_epoch"].isna().all() and runs["val_robust"].isna().all()
