"""Project settings from ``bench.toml``: where results, data, runs and reports live, and suite defaults.

Looked up in the current directory (or ``--config PATH`` / ``BENCH_CONFIG``); every value has a built-in default so
bench runs without the file. Relative paths are relative to the file's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError, did_you_mean
from bench.values import read_toml

DEFAULT_FILE = "bench.toml"
KNOWN_BENCH_KEYS = ("db", "data_root", "run_dir", "out_dir", "device", "download", "threads")


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
    defaults: dict = field(default_factory=dict)
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
    unknown_tables = set(data) - {"bench", "defaults", "slurm", "ray"}
    if unknown_tables:
        key = sorted(unknown_tables)[0]
        raise BenchError(f"{file}: unknown table [{key}]{did_you_mean(key, ['bench', 'defaults'])}; valid: bench, defaults")
    table = data.get("bench", {})
    for key in table:
        if key not in KNOWN_BENCH_KEYS:
            raise BenchError(
                f"{file}: unknown key bench.{key}{did_you_mean(key, KNOWN_BENCH_KEYS)}; valid: {', '.join(KNOWN_BENCH_KEYS)}"
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
        defaults=dict(data.get("defaults", {})),
        source=file,
    )
