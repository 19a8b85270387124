"""Schema versions of the results database, and upgrading an older one in place (alembic).

Two marks say which schema a database holds:

* ``bench_meta.schema_version`` — the number every bench has written (1 so far); a bench older than alembic reads
  only this one, so a future schema that old benches must not write will raise it;
* ``alembic_version`` — alembic's revision (:mod:`bench.results.migrations`), the authority for migrations.

A database is *current* when both match this bench (``schema_version`` = :data:`SCHEMA_VERSION`, revision =
the newest of ``migrations/versions``). Anything else is refused by every command but ``bench db upgrade`` with
one line (:func:`refusal`): *older* (a bench before alembic — schema version 1 without ``alembic_version`` — or
an older revision) names ``bench db upgrade``; *newer* (a higher schema version or a revision this bench does not
know) asks for a newer bench; a schema version that is not a whole number is a damaged or foreign file. Nothing
is ever changed silently: :meth:`bench.results.store.Store.create` only creates missing databases (stamped at the
newest revision).

:func:`upgrade` runs alembic in one transaction on the store's own connection (SQLite: under the write lock, so a
concurrent ``bench run`` waits): a database from before alembic (:data:`BASELINES`) goes through every revision
from the first, whose baseline adds only the tables such a database lacks; a newer one through those it lacks.

Adding a schema change: change :mod:`bench.results.schema`, add a revision under ``migrations/versions`` (``alembic
-c bench/results/migrations/alembic.ini -x url=sqlite:///scratch.db revision --autogenerate --rev-id 0002 -m
what`` on a scratch database at head, then edit it), raise :data:`SCHEMA_VERSION` when older benches must not
write the result (the revision updates ``bench_meta``), and let ``tests/test_migrations.py`` prove that the
migrated schema equals the models and that the committed old databases upgrade with every row.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    select,
)
from sqlalchemy.engine import Connection

from bench.errors import BenchError
from bench.results.schema import SCHEMA_VERSION, Base, Meta

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0003"  # the newest revision under migrations/versions (a test checks it is alembic's head)
BASELINES = {1: "0001"}  # schema versions of benches before alembic -> the revision that brings them in
UPGRADE = "bench db upgrade"
# alembic's own version table, as alembic creates it: read and stamped here without importing alembic (~0.4 s),
# so the check every command makes stays cheap; alembic itself is loaded only to upgrade.
VERSION_TABLE = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                      PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
# A database is bench's when it has one of these (alembic_version alone could be another alembic application's)
BENCH_TABLES = frozenset({"runs", Meta.__tablename__})
# Tables readers do without (databases from before they existed): every other table of the models must be there.
OPTIONAL_TABLES = frozenset({"test_labels", "attack_specs", "guards", "theory_results"})


def scripts():
    """alembic's view of ``migrations/`` (imports alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def head() -> str:
    """The newest revision this bench knows."""
    return HEAD


@functools.cache
def known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in scripts().walk_revisions())


@dataclass(frozen=True)
class Version:
    """What a database says of its schema: ``bench_meta.schema_version`` as stored, and alembic's revision(s)."""

    schema: str | None
    revisions: tuple[str, ...]

    @property
    def number(self) -> int | None:
        """The schema version as a whole number; None when missing or not one."""
        text = (self.schema or "").strip()
        return int(text) if re.fullmatch(r"\d{1,9}", text) else None

    def describe(self) -> str:
        revision = f", revision {'+'.join(self.revisions)}" if self.revisions else ", no alembic revision"
        return f"schema version {self.schema}{revision}"


def read_version(connection: Connection) -> Version:
    """The schema marks of a database that has bench's tables (read only)."""
    schema = None
    tables = inspect(connection)
    if tables.has_table(Meta.__tablename__):
        schema = connection.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one_or_none()
    revisions: tuple[str, ...] = ()
    if tables.has_table(VERSION_TABLE.name):
        revisions = tuple(sorted(connection.execute(select(VERSION_TABLE.c.version_num)).scalars()))
    return Version(None if schema is None else str(schema), revisions)


def state(version: Version) -> str:
    """``current``, ``older`` (``bench db upgrade`` brings it to this bench), ``newer``, or ``unknown``."""
    number = version.number
    if number is None or number < 1:
        return "unknown"
    if number == SCHEMA_VERSION and version.revisions == (HEAD,):
        return "current"
    if number > SCHEMA_VERSION or len(version.revisions) > 1:
        return "newer"
    if not version.revisions:  # from before alembic
        return "older" if number in BASELINES else "unknown"
    return "older" if version.revisions[0] in known_revisions() else "newer"


def refusal(version: Version, shown: str) -> str | None:
    """None when this bench reads and writes the database as it is; else the one line that says why not."""
    kind = state(version)
    if kind == "current":
        return None
    if kind == "older":
        return (f"database {shown} was written by an older bench ({version.describe()}; this bench reads revision "
                f"{HEAD}): upgrade it in place with `{UPGRADE}` (same --db), then run this command again")
    if kind == "newer":
        return (f"database {shown} was written by a newer bench ({version.describe()}; this bench reads schema "
                f"version {SCHEMA_VERSION} up to revision {HEAD}): install that newer bench, or use another database")
    if version.schema is None:
        return (f"database {shown} has bench's tables but no schema version (table bench_meta); it is damaged or "
                "was not written by bench")
    if version.number is None:
        return (f"database {shown} has schema version {version.schema!r} (table bench_meta), which is not a "
                "version bench writes (a whole number); the file is damaged or was not written by bench")
    return (f"database {shown} has schema version {version.number}, this bench reads version {SCHEMA_VERSION}; "
            "use a new database file or the bench version that wrote it")


def foreign(tables: set[str], shown: str) -> str | None:
    """None unless a SQLite file has tables but none of bench's: then the line that refuses it, so that no command
    reads it as empty or writes bench's tables into it."""
    if not tables or tables & BENCH_TABLES:
        return None
    names = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
    return (f"database {shown} is not a bench results database: it has table(s) {names} and none of bench's; give "
            "an empty or a bench database (e.g. a new file)")


def incomplete(connection: Connection, shown: str) -> str | None:
    """None when a database at this bench's schema has its tables (all but :data:`OPTIONAL_TABLES`, which readers
    do without) and their columns; else the one line naming the first that is missing (a table dropped by hand, a
    damaged file): refused before any command reads or writes it, never a SQL error half-way."""
    tables = inspect(connection)
    have = set(tables.get_table_names())
    lacking = [name for name in Base.metadata.tables if name not in have and name not in OPTIONAL_TABLES]
    if lacking:
        return (f"database {shown} lacks table {', '.join(lacking)} of bench's schema (revision {HEAD}), so it is "
                "not a complete bench database; restore it from a backup, or use another database (a new file)")
    if connection.dialect.name == "sqlite":  # one query for every table (the inspector asks table by table)
        rows = connection.exec_driver_sql(
            "SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p "
            "WHERE m.type = 'table'").all()
        columns: dict[str, set[str]] = {}
        for table, column in rows:
            columns.setdefault(table, set()).add(column)
    else:
        found = tables.get_multi_columns(filter_names=list(Base.metadata.tables))  # one catalogue query
        columns = {name: {c["name"] for c in cols} for (_schema, name), cols in found.items()}
    for name, table in Base.metadata.tables.items():
        missing = [c.name for c in table.columns if name in have and c.name not in columns.get(name, set())]
        if missing:
            return (f"database {shown}: table {name} lacks column {', '.join(missing)} of bench's schema (revision "
                    f"{HEAD}), so it is not a complete bench database; restore it from a backup, or use another "
                    "database (a new file)")
    return None


def column_problem(column: Column, value, limit: int = 2**63) -> str | None:
    """Why ``value``, as SQLite stores it (no type conversion), cannot be a value of ``column`` (a column of the
    models; INTEGER columns hold ``|n| < limit``); None when it can."""
    kind = column.type
    if value is None:
        return None if column.nullable else "is empty (NULL), which this column never is"
    if isinstance(kind, Boolean):
        return None if type(value) is int and value in (0, 1) else "is not a boolean (0 or 1)"
    if isinstance(kind, Integer):
        if type(value) is not int:
            return "is not a whole number"
        if -limit <= value < limit:
            return None
        return f"is out of the range of an integer column (|n| < 2**{limit.bit_length() - 1})"
    if isinstance(kind, Float):
        return None if type(value) in (int, float) else "is not a number"
    if isinstance(kind, DateTime):
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value)
                return None
            except ValueError:
                pass
        return "is not a date and time (YYYY-MM-DD HH:MM:SS)"
    if isinstance(kind, String):
        if not isinstance(value, str):
            return "is not text"
        if kind.length is not None and len(value) > kind.length:
            return f"is longer than the column's {kind.length} characters"
        return None
    if isinstance(kind, LargeBinary):
        return None if isinstance(value, bytes) else "is not binary data"
    return None


def read_only_query(path: Path) -> dict[str, str]:
    """How to open a SQLite file in a folder this process cannot write: ``mode=ro``; and ``immutable=1`` where
    SQLite would otherwise need a ``-shm`` file it cannot make — a WAL-mode file (header bytes 18-19 = 2) with no
    ``-wal`` beside it, or a read-only mount. Immutable means SQLite trusts nobody writes the file meanwhile: true of
    a read-only mount, and of a WAL file whose writers have all closed it (a writer reopening it is not seen)."""
    import os

    if Path(f"{path}-wal").exists():
        return {"mode": "ro"}
    with open(path, "rb") as handle:
        header = handle.read(20)
    read_only_mount = bool(os.statvfs(path.absolute().parent).f_flag & os.ST_RDONLY)
    return {"mode": "ro", "immutable": "1"} if read_only_mount or header[18:20] == b"\x02\x02" else {"mode": "ro"}


def stamp_head(connection: Connection) -> None:
    """Mark a database just created from the models as being at the newest revision (inside the caller's
    transaction, like the creation itself)."""
    VERSION_TABLE.create(connection, checkfirst=True)
    if connection.execute(select(VERSION_TABLE.c.version_num)).first() is None:
        connection.execute(VERSION_TABLE.insert().values(version_num=HEAD))


@dataclass(frozen=True)
class Upgrade:
    before: Version
    after: Version

    @property
    def changed(self) -> bool:
        return self.before != self.after


def upgrade(connection: Connection, shown: str) -> Upgrade:
    """Bring an older database to this bench's schema, inside the caller's transaction; a current one is left
    as it is. A newer, damaged or foreign database is refused with one line, unchanged."""
    before = read_version(connection)
    kind = state(before)
    if kind == "current":
        problem = incomplete(connection, shown)
        if problem:
            raise BenchError(problem)
        return Upgrade(before, before)
    if kind != "older":
        raise BenchError(refusal(before, shown) or f"database {shown} cannot be upgraded")
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")  # from before alembic: from the start (the baseline adds only missing tables)
    after = read_version(connection)
    if state(after) != "current":  # a revision that forgot bench_meta: a bug, never a half-upgraded file
        raise RuntimeError(f"upgrade of {shown} ended at {after.describe()}, not at this bench's schema")
    problem = incomplete(connection, shown)
    if problem:  # a damaged file: the caller's transaction rolls back, the file stays as it was
        raise BenchError(f"{problem}; it is unchanged")
    return Upgrade(before, after)
