"""``bench list``: the registered methods, datasets, models and attacks, and the suites in ./suites."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("list")
@click.argument("what", type=click.Choice(["methods", "datasets", "models", "attacks", "suites"]))
def list_(what: str) -> None:
    """List registered methods, datasets, models, attacks, or the suites in ./suites."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    if what == "methods":
        import methods

        table = Table("method", "prediction loss", "weights", "λ", "needs", "description")
        for name in methods.names():
            m = methods.get(name)
            table.add_row(name, m.prediction_loss, m.weight_schedule, f"{m.lam:g}", ", ".join(m.needs()) or "—",
                          m.description)
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
        from bench.errors import BenchError
        from bench.suite import read_suite_file

        table = Table("suite file", "name", "description")
        for path in sorted(Path("suites").glob("*.toml")):
            try:
                data = read_suite_file(path).data
            except BenchError:  # a broken file: `bench run` on it says why
                continue
            table.add_row(str(path), str(data.get("name", path.stem)), str(data.get("description", "")))
    console.print(table)
