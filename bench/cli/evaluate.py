"""``bench evaluate``: attack finished runs again from their saved weights (:mod:`bench.reevaluate`)."""

from __future__ import annotations

import json
import sys

import click

from bench.cli.common import config_option, db_option, load_settings
from bench.errors import BenchError


@click.command("evaluate")
@click.option("--suite", help="Only runs of this suite.")
@click.option("--only", multiple=True, metavar="KEY=PATTERN", help="Only matching runs (glob; repeatable).")
@click.option("--attack", "attacks", multiple=True, metavar="TOML_TABLE",
              help="An attack table, e.g. '{kind=\"autoattack\", eps=\"8/255\"}' (repeatable).")
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Device (default: bench.toml's device).")
@click.option("--download", is_flag=True, help="Let torchvision download missing datasets.")
@click.option("--quiet", is_flag=True, help="Only the summary line.")
@db_option
@config_option
def evaluate_command(suite, only, attacks, device, download, quiet, db, config) -> None:
    """Attack finished runs again from their saved weights (new attacks, guards), without retraining.

    \b
    bench evaluate --attack '{kind="autoattack", eps="8/255"}'
    bench evaluate --suite quick --only method=*ldam --attack '{kind="pgd-cw", eps="8/255", alpha="2/255", steps=20}'
    """
    from bench.cell import Cell
    from bench.reevaluate import describe, evaluate_run, outcome_line, parse_attacks
    from bench.results.read import done_runs
    from bench.results.store import Store
    from bench.suite import select

    settings = load_settings(config)
    tables = parse_attacks(attacks)
    store = Store(db or settings.db)
    store.check_schema()
    store.check_writable()
    store.create()  # adds tables this version keeps (test labels, attack tables, guards) to an older database
    runs = done_runs(store, suite)
    by_hash = {run.cell_hash: run for run in runs}
    cells = select([Cell(json.loads(run.config_json), run.cell_hash) for run in runs], only)
    if not cells:
        what = f" of suite {suite!r}" if suite else ""
        raise BenchError(f"no finished run{what} in {store.url}" + (f" matches {' '.join('--only ' + o for o in only)}" if only else ""))

    import torch

    from bench.provenance import resolve_device

    if settings.threads:
        torch.set_num_threads(settings.threads)
    target = resolve_device(device or settings.device)
    counts: dict[str, int] = {}
    try:
        for cell in cells:
            run = by_hash[cell.cell_hash]
            outcome = evaluate_run(run, store, settings, target, tables, download)
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.status == "skipped":
                click.echo(f"{describe(run)}: skipped: {outcome.message}", err=True)
            elif not quiet:
                click.echo(f"{describe(run)}: {outcome_line(outcome)}")
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    order = ("evaluated", "up-to-date", "skipped")
    click.echo("evaluate: " + ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)))
    if counts.get("skipped"):
        sys.exit(1)
