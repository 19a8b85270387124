"""Project settings from ``bench.toml``: where results, data, runs and reports live, and suite defaults.

Looked up in the current directory (or ``--config PATH`` / ``BENCH_CONFIG``); every value has a built-in default so
bench runs without the file. Relative paths are relative to the file's folder.

``[slurm]`` and ``[ray]`` configure the executors of those names (partition, time, GPUs, …); they are kept as
tables here and validated by the executor that reads them (:mod:`bench.executors`), where a suite's own
``[slurm]`` / ``[ray]`` table overrides them key by key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError, valid_choices
from bench.values import read_toml

DEFAULT_FILE = "bench.toml"
KNOWN_BENCH_KEYS = ("db", "data_root", "run_dir", "out_dir", "device", "download", "threads", "executor")
EXECUTOR_TABLES = ("slurm", "ray")  # one table per configurable executor (bench.executors)
TABLES = ("bench", "defaults", *EXECUTOR_TABLES)


@dataclass(frozen=True)
class Settings:
    """The ``[bench]`` table of bench.toml, paths resolved; ``defaults`` is its ``[defaults]`` table."""

    db: str = "sqlite:///results/bench.db"
    data_root: Path = Path("data")
    run_dir: Path = Path("runs")
    out_dir: Path = Path("out/report")
    device: str = "auto"
    download: bool = False
    threads: int = 0  # 0 = torch's default
    executor: str = "local"  # bench run's default --executor
    defaults: dict = field(default_factory=dict)
    executor_tables: dict[str, dict] = field(default_factory=dict)  # "slurm" / "ray" -> its table
    source: Path | None = None


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Read bench.toml (explicit path, ``$BENCH_CONFIG``, or ``./bench.toml`` when present)."""
    explicit = path or os.environ.get("BENCH_CONFIG")
    file = Path(explicit) if explicit else Path(DEFAULT_FILE)
    if not file.exists():
        if explicit:
            raise BenchError(f"config file {file} does not exist")
        return Settings()
    data = read_toml(file, "config file")
    unknown_tables = set(data) - set(TABLES)
    if unknown_tables:
        key = sorted(unknown_tables)[0]
        raise BenchError(f"{file}: unknown table [{key}]{valid_choices(key, TABLES)}")
    for name in EXECUTOR_TABLES:
        if not isinstance(data.get(name, {}), dict):
            raise BenchError(f"{file}: {name} must be a table ([{name}]), got {data[name]!r}")
    table = data.get("bench", {})
    for key in table:
        if key not in KNOWN_BENCH_KEYS:
            raise BenchError(
                f"{file}: unknown key bench.{key}{valid_choices(key, KNOWN_BENCH_KEYS)}"
            )
    base = file.resolve().parent

    def rel(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    db = str(table.get("db", Settings.db))
    if db.startswith("sqlite:///") and not db.startswith("sqlite:////"):
        relative = db[len("sqlite:///"):]
        if relative and relative != ":memory:":
            db = "sqlite:///" + str(rel(relative))
    return Settings(
        db=db,
        data_root=rel(table.get("data_root", "data")),
        run_dir=rel(table.get("run_dir", "runs")),
        out_dir=rel(table.get("out_dir", "out/report")),
        device=str(table.get("device", "auto")),
        download=bool(table.get("download", False)),
        threads=int(table.get("threads", 0)),
        executor=str(table.get("executor", "local")),
        defaults=dict(data.get("defaults", {})),
        executor_tables={name: dict(data.get(name, {})) for name in EXECUTOR_TABLES},
        source=file,
    )
