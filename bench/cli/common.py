"""Options and helpers every command shares."""

from __future__ import annotations

import click

from bench.errors import BenchError


def _database_url(_ctx, _param, value: str | None) -> str | None:
    """``--db``: absent means bench.toml's db; given, it must be a URL (an empty one never falls back silently)."""
    if value is not None and not value.strip():
        raise BenchError(f"--db {value!r} is empty: give a database URL such as sqlite:///results/bench.db or "
                         "postgresql://user@host/bench, or leave --db out to use bench.toml's db")
    return value


db_option = click.option("--db", "db", metavar="URL", callback=_database_url,
                         help="Results database URL (default: bench.toml's db).")
config_option = click.option("--config", "config", metavar="PATH", type=click.Path(dir_okay=False),
                             help="bench.toml to use (default: ./bench.toml, or $BENCH_CONFIG).")


def load_settings(config: str | None):
    """bench.toml's settings (``--config``, else ``$BENCH_CONFIG``, else ./bench.toml)."""
    from bench.settings import load_settings as load

    return load(config)


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise BenchError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise BenchError(f"--seeds {text!r}: expected integers >= 0 separated by commas")
    return seeds
