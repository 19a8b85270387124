"""Project settings from ``bench.toml``: where results, data, runs and reports live, and suite defaults.

Looked up in the current directory (or ``--config PATH`` / ``BENCH_CONFIG``); every value has a built-in default so
bench runs without the file. Relative paths are relative to the file's folder. ``BENCH_DB`` in the environment
overrides ``db`` (a way to keep a database password out of every file: see the README's PostgreSQL note).

Every value of ``[bench]`` is checked when the file is read: a wrong type or value is one line naming the file, the
key and what is allowed.

=======================  =====================================================================================
key                      meaning
=======================  =====================================================================================
``db``                   results database URL (any SQLAlchemy URL); ``$BENCH_DB`` wins
``data_root``            dataset files
``run_dir``              per-cell checkpoints, result and state files, logs
``out_dir``              ``bench report``'s default output folder
``device``               ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
``download``             ``true`` lets torchvision download missing datasets
``threads``              CPU threads of torch: a whole number, ``0`` (torch's default) or ``"auto"`` (every core
                         this process may use)
``executor``             ``bench run``'s default ``--executor``
``fuse``                 ``"auto"``, ``"off"`` or N: train up to N cells that share data, model and schedule as one
                         stacked model (:mod:`bench.fusion`); ``"auto"`` (the default) fuses the models measured to
                         pay on the device (cnn-small and linear on the CPU); an execution setting, never part of a
                         cell
``stale_after_minutes``  a claim (``running``) or a job's cell (``queued``) whose heartbeat is older than this is
                         abandoned and taken over by the next ``bench run``, on any host, whether or not a process
                         with its pid still lives (pid reuse after a reboot); a live process refreshes its
                         heartbeat every minute (or every third of this window, if shorter). Default 10.
=======================  =====================================================================================

``[slurm]`` and ``[ray]`` configure the executors of those names (partition, time, GPUs, …); they are kept as
tables here and validated by the executor that reads them (:mod:`bench.executors`), where a suite's own
``[slurm]`` / ``[ray]`` table overrides them key by key. ``[defaults]`` is validated with the suites it applies to.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.catalog import EXECUTOR_NAMES
from bench.errors import BenchError, valid_choices
from bench.values import read_toml

DEFAULT_FILE = "bench.toml"
DB_ENV = "BENCH_DB"  # overrides bench.toml's db
THREADS_ENV = "BENCH_THREADS"  # overrides bench.toml's threads (set for each --workers process)
KNOWN_BENCH_KEYS = ("db", "data_root", "run_dir", "out_dir", "device", "download", "threads", "executor",
                    "stale_after_minutes", "fuse")
EXECUTOR_TABLES = ("slurm", "ray")  # one table per configurable executor (bench.executors)
TABLES = ("bench", "defaults", *EXECUTOR_TABLES)
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # dialect[+driver]://…


@dataclass(frozen=True)
class Settings:
    """The ``[bench]`` table of bench.toml, paths resolved; ``defaults`` is its ``[defaults]`` table."""

    db: str = "sqlite:///results/bench.db"
    data_root: Path = Path("data")
    run_dir: Path = Path("runs")
    out_dir: Path = Path("out/report")
    device: str = "auto"
    download: bool = False
    threads: int = 0  # 0 = torch's default; "auto" in the file = every core this process may use
    executor: str = "local"  # bench run's default --executor
    stale_after_minutes: float = 10.0  # a claim with no heartbeat for this long is abandoned (bench.results.claims)
    fuse: Any = "auto"  # "auto", "off" or N: train groups of up to N cells as one stacked model (bench.fusion)
    defaults: dict = field(default_factory=dict)
    executor_tables: dict[str, dict] = field(default_factory=dict)  # "slurm" / "ray" -> its table
    source: Path | None = None


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: taskset, cgroups' cpusets), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def env_threads(fallback: int) -> int:
    """torch's CPU threads: ``$BENCH_THREADS`` (a whole number; 0 or unset: ``fallback``) else ``fallback``."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not (text.isascii() and text.isdigit()):
        if text:
            raise BenchError(f"${THREADS_ENV} = {text!r}: expected a whole number of torch CPU threads >= 1 (0 or "
                             "unset: bench.toml's threads)")
        return fallback
    return int(text) or fallback


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read bench.toml (explicit path, ``$BENCH_CONFIG``, or ``./bench.toml`` when present); ``$BENCH_DB`` wins."""
    env_threads(0)  # a bad $BENCH_THREADS is one line before any command does anything
    explicit = path or os.environ.get("BENCH_CONFIG")
    file = Path(explicit) if explicit else Path(DEFAULT_FILE)
    env_db = os.environ.get(DB_ENV) or None
    if env_db is not None:
        _check_db(env_db, f"${DB_ENV}")
    if not file.exists():
        if explicit:
            raise BenchError(f"config file {file} does not exist")
        return Settings(db=env_db) if env_db else Settings()
    data = read_toml(file, "config file")
    unknown_tables = set(data) - set(TABLES)
    if unknown_tables:
        key = sorted(unknown_tables)[0]
        raise BenchError(f"{file}: unknown table [{key}]{valid_choices(key, TABLES)}")
    for name in TABLES:
        if not isinstance(data.get(name, {}), dict):
            raise BenchError(f"{file}: {name} must be a table ([{name}]), got {data[name]!r}")
    table = data.get("bench", {})
    for key in table:
        if key not in KNOWN_BENCH_KEYS:
            raise BenchError(
                f"{file}: unknown key bench.{key}{valid_choices(key, KNOWN_BENCH_KEYS)}"
            )
    base = file.resolve().parent
    value = _Reader(file, table)

    def rel(text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else base / p

    db = value.string("db", Settings.db, "a database URL such as sqlite:///results/bench.db")
    _check_db(db, f"{file}: bench.db")
    if env_db is not None:
        db = env_db  # the environment wins; relative SQLite paths are then relative to the current folder
    elif db.startswith("sqlite:///") and not db.startswith("sqlite:////"):
        relative = db[len("sqlite:///"):]
        if relative and relative != ":memory:":
            db = "sqlite:///" + str(rel(relative))
    return Settings(
        db=db,
        data_root=rel(value.string("data_root", "data", "a folder path")),
        run_dir=rel(value.string("run_dir", "runs", "a folder path")),
        out_dir=rel(value.string("out_dir", "out/report", "a folder path")),
        device=value.device(),
        download=value.boolean("download", False),
        threads=value.threads(),
        executor=value.choice("executor", "local", EXECUTOR_NAMES),
        stale_after_minutes=value.positive("stale_after_minutes", Settings.stale_after_minutes),
        fuse=_fuse(table.get("fuse", "auto"), f"{file}: bench.fuse"),
        defaults=dict(data.get("defaults", {})),
        executor_tables={name: dict(data.get(name, {})) for name in EXECUTOR_TABLES},
        source=file,
    )


def _fuse(value: Any, where: str) -> Any:
    from bench.fusion.groups import check_fuse  # torch-free

    return check_fuse(value, where)


def _check_db(db: str, where: str) -> None:
    if not URL.match(db):
        shown = db if "@" not in db else "(a URL with credentials)"
        raise BenchError(f"{where} = {shown!r}: expected a database URL such as sqlite:///results/bench.db or "
                         "postgresql://user@host/bench")


@dataclass(frozen=True)
class _Reader:
    """Typed reads of ``[bench]`` keys, each failing with one line naming the file, the key and what is allowed."""

    file: Path
    table: dict[str, Any]

    def _fail(self, key: str, allowed: str) -> BenchError:
        return BenchError(f"{self.file}: bench.{key} = {self.table[key]!r}: expected {allowed}")

    def string(self, key: str, default: str, allowed: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, allowed)
        return value

    def choice(self, key: str, default: str, names: tuple[str, ...]) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self._fail(key, f"one of {', '.join(names)}")
        if value not in names:
            raise BenchError(f"{self.file}: bench.{key}: unknown {key} {value!r}{valid_choices(value, names)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
            raise self._fail(key, "a number of minutes > 0, e.g. 10")
        return float(value)

    def device(self) -> str:
        value = self.table.get("device", "auto")
        if not isinstance(value, str) or not DEVICE.match(value.strip()):
            raise self._fail("device", "auto, cpu, cuda, cuda:N or mps")
        return value.strip()

    def threads(self) -> int:
        value = self.table.get("threads", 0)
        if isinstance(value, str) and value.strip().lower() == "auto":
            return available_cores()
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail("threads", "a whole number >= 0 (0: torch's default) or \"auto\" (every core this "
                                        "process may use)")
        return value
