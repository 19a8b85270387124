"""``bench show``, ``bench status``, ``bench collect``: what the results database and the run folder hold."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.cli.common import config_option, db_option, load_settings
from bench.errors import BenchError


@click.command()
@click.argument("cell_hash", metavar="CELL")
@click.option("--json", "as_json", is_flag=True, help="The full record as JSON (every column), then the error.")
@db_option
@config_option
def show(cell_hash: str, as_json: bool, db, config) -> None:
    """One cell (its hash or a unique prefix): configuration, class-wise accuracy, guards, provenance, error."""
    from bench.results.read import run_record

    url = db or load_settings(config).db
    record = run_record(url, cell_hash)
    error = record.pop("error", None)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        if error:
            click.echo(error)
        return
    _show_readable(url, record)
    if error:  # as stored: a traceback or a worker's account, never through rich (no wrapping, no markup)
        click.echo(f"\nerror ({record['status']}):")
        click.echo(error)


def _show_readable(url: str, record: dict) -> None:
    from bench.analysis.metrics import group_accuracies
    from bench.cli import readable
    from bench.results.read import load_guards, load_results

    out = readable.Printer()
    for line in readable.heading(record):
        out(line)
    out()
    out("configuration")
    out(readable.config_summary(record["config"]))
    out()
    frame = load_results(url, cell_hash=record["cell_hash"])
    if frame.empty:
        out(f"class-wise accuracy: none stored (status {record['status']})")
    else:
        out(readable.class_table(frame, group_accuracies(frame)))
    guards = load_guards(url, record["suite"])
    guards = guards[guards["cell_hash"] == record["cell_hash"]]
    out(readable.guard_table(guards) if len(guards) else "guards: none stored")
    out()
    out("provenance")
    out(readable.provenance(record))
    out()
    out(f"`bench show {record['cell_hash']} --json`: the full record")


@click.command()
@click.option("--suite", help="Only this suite.")
@db_option
@config_option
def status(suite, db, config) -> None:
    """Cells per suite and status (done, running, queued, failed, diverged, interrupted) and the oldest heartbeat
    of the cells still held."""
    from datetime import timedelta

    from bench.cell import Status
    from bench.cli import readable
    from bench.errors import unknown
    from bench.results.collect import result_files
    from bench.results.read import load_runs, suite_names
    from bench.results.store import Store

    settings = load_settings(config)
    url = db or settings.db
    runs = load_runs(url, suite)
    if runs.empty:
        known = suite_names(url)
        if suite is not None and known:
            raise unknown("suite", suite, known)
        raise BenchError(f"database {Store(url).shown} holds no runs yet; run `bench run SUITE.toml` first")
    stale_after = timedelta(minutes=settings.stale_after_minutes)
    table, stale = readable.status_table(runs, stale_after, readable.utcnow())
    out = readable.Printer()
    out(table)
    if stale:
        click.echo(f"stale: no heartbeat for over {settings.stale_after_minutes:g} min (stale_after_minutes), or "
                   "gone: its process on this host has ended; the next `bench run` of the suite takes those "
                   "cells over")
    waiting = set(runs.loc[runs["status"] != Status.DONE, "cell_hash"]) & set(result_files(settings.run_dir))
    if waiting:  # workers finished while no driver was there to ingest
        click.echo(f"{len(waiting)} finished result file(s) in {settings.run_dir} not yet in the database: "
                   f"`bench collect` ingests them")


@click.command()
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder (default: bench.toml's run_dir).")
@db_option
@config_option
def collect(run_dir, db, config) -> None:
    """Ingest the result files workers left in the run folder (e.g. after the driver was killed); idempotent.

    A database that does not exist yet is created only when there are result files to write into it."""
    from bench.results.collect import collect as collect_results
    from bench.results.collect import result_files
    from bench.results.store import Store

    settings = load_settings(config)
    folder = Path(run_dir) if run_dir else settings.run_dir
    if not folder.is_dir():
        raise BenchError(f"run folder {folder} does not exist; pass --run-dir or set run_dir in bench.toml")
    store = Store(db or settings.db)
    store.check_writable()
    if store.exists() or result_files(folder):  # a database is created only for results to write into it
        store.create()
    summary = collect_results(store, folder)
    for line in summary.unreadable:
        click.echo(f"skipped {line}", err=True)
    click.echo(f"{folder}: {summary.line()}; results in {store.shown}")
