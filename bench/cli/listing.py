"""``bench list``: the registered methods, datasets, models and attacks, and the suites in ./suites."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.common import config_option, db_option


@click.command("list")
@click.argument("what", type=click.Choice(["methods", "datasets", "models", "attacks", "suites"]))
@db_option
@config_option
def list_(what: str, db, config) -> None:
    """List registered methods, datasets, models, attacks, or the suites in ./suites (with their cells, how many
    are done, and an estimate of the training time left from the images/s recorded so far)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    if what == "methods":
        import methods

        table = Table("method", "prediction loss", "weights", "λ", "needs", "training attack", "description")
        for name in methods.names():
            m = methods.get(name)
            table.add_row(name, m.prediction_loss, m.weight_schedule, f"{m.lam:g}", ", ".join(m.needs()) or "—",
                          m.attack_recipe_text(), m.description)
    elif what == "datasets":
        from bench.data import DATASETS

        table = Table("dataset", "classes", "model", "ε", "epochs", "description")
        for name in DATASETS:
            d = DATASETS.get(name)
            eps = d.defaults.get("train_attack", {}).get("eps", "")
            table.add_row(name, str(d.num_classes), d.defaults.get("model", ""), f"{eps:.4g}", str(d.defaults.get("epochs", "")),
                          d.description)
    elif what == "models":
        from bench.models import MODELS

        table = Table("model", "description")
        for name in MODELS:
            table.add_row(name, (MODELS.get(name).__doc__ or "").strip().splitlines()[0])
    elif what == "attacks":
        from bench.attacks import ATTACKS

        table = Table("attack", "description")
        for name in ATTACKS:
            table.add_row(name, (ATTACKS.get(name).__doc__ or "").strip().splitlines()[0])
    else:
        _list_suites(db, config)
        return
    console.print(table)


def _list_suites(db: str | None, config: str | None) -> None:
    """The suites in ./suites: cells (expanded as `bench run` would), done, and the estimated training time left."""
    from rich.table import Table

    from bench.analysis.cost import recorded_speeds, suite_cost
    from bench.cell import Status
    from bench.cli.common import load_settings
    from bench.cli.readable import Printer, estimate
    from bench.errors import BenchError
    from bench.results.read import load_runs
    from bench.results.store import Store
    from bench.suite import load_suite, read_suite_file

    settings = load_settings(config)
    url = db or settings.db
    statuses: dict[str, str] = {}
    speeds: dict = {}
    unread = None
    try:
        if Store(url).exists():
            runs = load_runs(url)
            statuses = dict(zip(runs["cell_hash"], runs["status"]))
            speeds = recorded_speeds(runs)
    except BenchError as exc:  # the listing stands without the database; say why done and cost are missing
        unread = str(exc)
    table = Table("suite file", "name", "cells", Status.DONE, "est. time left *", "description")
    for column in table.columns[2:5]:
        column.justify = "right"
    table.columns[5].max_width, table.columns[5].no_wrap, table.columns[5].overflow = 64, True, "ellipsis"
    for path in sorted(Path("suites").glob("*.toml")):
        try:
            file = read_suite_file(path)
        except BenchError:  # a broken file (malformed TOML): listed, and `bench run` on it says why
            table.add_row(str(path), path.stem, "—", "—", "—", f"not valid: `bench run {path} --dry-run` says why")
            continue
        name, description = str(file.data.get("name", path.stem)), str(file.data.get("description", ""))
        if file.kind == "theory":
            table.add_row(str(path), name, "theory", "—", "—", description)
            continue
        try:
            cells = load_suite(file, settings).cells
        except BenchError:
            table.add_row(str(path), name, "—", "—", "—", f"not valid: `bench run {path} --dry-run` says why")
            continue
        cost = None if unread else suite_cost(cells, statuses, speeds)
        table.add_row(str(path), name, str(len(cells)), "—" if cost is None else str(cost.done), estimate(cost),
                      description)
    out = Printer(width=160)
    out(table)
    click.echo("* estimate of the training time (evaluation not included): epochs × training images of each cell to "
               "run ÷ the mean images/s of finished runs of its dataset and model; — where none is recorded")
    if unread:
        click.echo(f"done and time left unknown: {unread}", err=True)
