"""``bench evaluate``: attack finished runs again from their saved weights (:mod:`bench.reevaluate`)."""

from __future__ import annotations

import json
import sys

import click

from bench.cli.common import config_option, db_option, load_settings
from bench.errors import BenchError

EVALUATE_LOG = "evaluate.log"  # in each run's folder: what AutoAttack and other libraries print


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

    Shows runs done / total, the attack running and the time left; what AutoAttack prints goes to each run's
    log, runs/<cell>/evaluate.log.

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
    runs = done_runs(store, suite)
    by_hash = {run.cell_hash: run for run in runs}
    cells = select([Cell(json.loads(run.config_json), run.cell_hash) for run in runs], only)
    if not cells:
        what = f" of suite {suite!r}" if suite else ""
        raise BenchError(f"no finished run{what} in {store.shown}" + (f" matches {' '.join('--only ' + o for o in only)}" if only else ""))
    from bench.suite_checks import check_attacks

    for cell in cells:  # ε and α within each run's input range, AutoAttack's needs: before any row is written
        check_attacks(cell.config, [(f"--attack {text}", table) for text, table in zip(attacks, tables)], "")

    import torch

    from bench.provenance import resolve_device

    if settings.threads:
        torch.set_num_threads(settings.threads)
    target = resolve_device(device or settings.device)
    from bench.progress import EvaluateProgress
    from bench.runlog import run_log

    counts: dict[str, int] = {}
    progress = EvaluateProgress(enabled=not quiet)
    header = "bench evaluate " + " ".join(f"--attack '{a}'" for a in attacks)
    unlogged = []
    try:
        with progress.session(total=len(cells)):
            for cell in cells:
                run = by_hash[cell.cell_hash]
                progress.run_started(f"{run.cell_hash[:8]} {run.method} seed {run.seed}")
                with run_log(settings.run_dir / run.cell_hash / EVALUATE_LOG, header) as log:
                    outcome = evaluate_run(run, store, settings, target, tables, download, progress=progress)
                    if outcome.status == "evaluated":
                        log.write(f"{outcome_line(outcome)}\n")  # the run's own record of what was added
                if log.failed:
                    unlogged.append(run.cell_hash)
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
                where, left = progress.run_finished()
                if outcome.status == "skipped":
                    click.echo(f"{where} {describe(run)}: skipped: {outcome.message} · {left}", err=True)
                elif not quiet:
                    click.echo(f"{where} {describe(run)}: {outcome_line(outcome)} · {left}")
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    if unlogged:
        click.echo(f"{len(unlogged)} run folder(s) under {settings.run_dir} could not take {EVALUATE_LOG}; "
                   "AutoAttack's messages of those runs were dropped", err=True)
    order = ("evaluated", "up-to-date", "skipped")
    click.echo("evaluate: " + ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)))
    if counts.get("skipped"):
        sys.exit(1)
