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
from pathlib import Path

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect, select
from sqlalchemy.engine import Connection

from bench.errors import BenchError
from bench.results.schema import SCHEMA_VERSION, Meta

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0003"  # the newest revision under migrations/versions (a test checks it is alembic's head)
BASELINES = {1: "0001"}  # schema versions of benches before alembic -> the revision that brings them in
UPGRADE = "bench db upgrade"
# alembic's own version table, as alembic creates it: read and stamped here without importing alembic (~0.4 s),
# so the check every command makes stays cheap; alembic itself is loaded only to upgrade.
VERSION_TABLE = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                      PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


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
    return Upgrade(before, after)
