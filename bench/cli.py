"""The ``bench`` command line (click). User mistakes are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click

from bench.errors import BenchError

# Commands that live in their own modules, loaded on first use (keeps `bench --help` and `bench run` light).
LAZY_COMMANDS = {
    "report": "bench.report:report_command",
    "compare": "bench.compare:compare_command",
    "evaluate": "bench.evaluation_cmd:evaluate_command",
}


class BenchGroup(click.Group):
    """Turns :class:`BenchError` into ``Error: <one line>`` with exit status 2; loads some commands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            message = " ".join(str(exc).split())
            click.echo(f"Error: {message}", err=True)
            ctx.exit(2)


@click.group(cls=BenchGroup)
@click.version_option(package_name="bench")
def cli() -> None:
    """Benchmark adversarial training on class-imbalanced data.

    \b
    bench run suites/quick.toml          run a suite (resumes where it stopped)
    bench report --format html           paper-style tables and figures
    bench compare srat-ldam drcb-ldam    paired comparison of two methods
    """


db_option = click.option("--db", "db", metavar="URL", help="Results database URL (default: bench.toml's db).")
config_option = click.option("--config", "config", metavar="PATH", type=click.Path(dir_okay=False),
                             help="bench.toml to use (default: ./bench.toml, or $BENCH_CONFIG).")


def _settings(config: str | None):
    from bench.settings import load_settings

    return load_settings(config)


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise BenchError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise BenchError(f"--seeds {text!r}: expected integers >= 0 separated by commas")
    return seeds


@cli.command()
@click.argument("suite_file", metavar="SUITE.toml", type=click.Path(dir_okay=False))
@click.option("--only", multiple=True, metavar="KEY=PATTERN", help="Run only matching cells (glob; repeatable).")
@click.option("--seeds", metavar="0,1,...", help="Override the suite's seeds.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a cell key for every cell (highest precedence), e.g. epochs=5 or method_args.lam=1.")
@click.option("--dry-run", is_flag=True, help="List the cells (done / to run) without running anything.")
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Device (default: bench.toml's device).")
@click.option("--download", is_flag=True, help="Let torchvision download missing datasets.")
@click.option("--debug", is_flag=True, help="Re-raise the first failing cell's exception.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes sharing the cells (one per GPU when there are GPUs; else CPU cores split).")
@click.option("--executor", metavar="local|slurm|ray|submitit-local",
              help="Where cells run (default: bench.toml's executor, else local); slurm/ray read [slurm]/[ray].")
@click.option("--ray-address", metavar="HOST:PORT|auto", help="Ray cluster for --executor ray (default: start one here).")
@db_option
@config_option
def run(suite_file, only, seeds, sets, dry_run, device, download, debug, quiet, workers, executor, ray_address, db,
        config) -> None:
    """Run every cell of SUITE.toml not yet done, storing class-wise results."""
    from bench.data import DATASETS
    from bench.store import Store
    from bench.suite import load_suite, parse_overrides, select

    settings = _settings(config)
    if _suite_kind(suite_file) == "theory":
        _run_theory(suite_file, Store(db or settings.db), dry_run)
        return
    suite = load_suite(suite_file, settings, seeds=_parse_seeds(seeds), overrides=parse_overrides(sets))
    cells = select(suite.cells, only)
    if not cells:
        raise BenchError(f"no cell of suite {suite.name} matches {' '.join('--only ' + o for o in only)}")
    store = Store(db or settings.db)
    if dry_run:
        _print_dry_run(suite.name, cells, store.statuses([c.cell_hash for c in cells]) if store.exists() else {})
        return
    from bench.executors import EXECUTORS, RunContext, executor_options

    where = "--executor" if executor else f"{settings.source}: bench.executor"
    executor = executor or settings.executor
    kind = EXECUTORS.get(executor, where)
    if executor != "local" and workers > 1:
        raise BenchError(f"--workers applies to --executor local; {executor} runs one cell per job "
                         "(cap concurrency in its [slurm] / [ray] table)")
    if ray_address and executor != "ray":
        raise BenchError(f"--ray-address applies to --executor ray, not {executor}")
    options = executor_options(kind, settings, Path(suite_file))
    store.check_writable()
    for name in sorted({c["dataset"] for c in cells}):
        DATASETS.get(name)().check_available(settings.data_root, download or settings.download)
    args = ["--executor=local", suite_file, *(f"--only={o}" for o in only), *(f"--set={x}" for x in sets), f"--db={store.url}",
            f"--device={device or settings.device}"]
    args += ["--quiet"] if quiet else []
    args += [f"--seeds={seeds}"] if seeds else []
    args += [f"--config={config}"] if config else []
    args += ["--download"] if download else []
    ctx = RunContext(suite_name=suite.name, suite_path=Path(suite_file), cells=cells, store=store, settings=settings,
                     device=device or settings.device, download=download, debug=debug, quiet=quiet, workers=workers,
                     ray_address=ray_address, cli_args=args, options=options)
    runner = kind(ctx)
    runner.check()  # sbatch missing, a Ray address that does not answer: one line before any cell starts
    code = runner.run()
    if code:
        sys.exit(code)


def _suite_kind(path: str) -> str:
    """``theory`` for a Section 3 suite (``kind = "theory"``), else ``cells``; errors surface in the loaders."""
    import tomllib

    try:
        return str(tomllib.loads(Path(path).read_text()).get("kind", "cells"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "cells"


def _run_theory(path: str, store, dry_run: bool) -> None:
    """Evaluate a Section 3 grid numerically, store it for the report, print the agreement with the paper."""
    from bench import theory
    from bench.store import save_theory

    suite = theory.load_theory_suite(path)
    sizes = [len(v) for k, v in suite["grid"].items() if isinstance(v, list)]
    rows = 1
    for size in sizes:
        rows *= size
    if dry_run:
        click.echo(f"theory suite {suite['name']}: {rows} grid point(s) to evaluate")
        return
    store.check_writable()
    frame = theory.evaluate_grid(suite["grid"], f"{path}: [theory]")
    pairs = theory.theorem_pairs(suite["grid"], f"{path}: [theory]")
    save_theory(store, suite["name"], suite["description"], frame, pairs)
    agree = int(frame["agrees_with_paper"].sum())
    click.echo(f"theory suite {suite['name']}: {len(frame)} grid points; the numeric optimum agrees with the "
               f"paper's Lemma 3.1 closed form in {agree} of them; stored in {store.url} (see bench report)")


def _print_dry_run(suite: str, cells, statuses: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"suite {suite}: {len(cells)} cell(s)")
    for column in ("cell", "status", "method", "dataset", "imbalance", "seed", "model", "epochs", "train"):
        table.add_column(column)
    for cell in cells:
        c = cell.config
        status = statuses.get(cell.cell_hash, "to run")
        train = "natural" if c["train_attack"] == "none" else f"pgd-{c['train_attack']['steps']}"
        table.add_row(cell.cell_hash, status, c["method"], c["dataset"], c["imbalance"], str(c["seed"]),
                      c["model"], str(c["epochs"]), train)
    console = Console(width=160)
    console.print(table)
    done = sum(statuses.get(c.cell_hash) == "done" for c in cells)
    console.print(f"{done} done, {len(cells) - done} to run")


@cli.command("list")
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
        import tomllib

        table = Table("suite file", "name", "description")
        for path in sorted(Path("suites").glob("*.toml")):
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError):
                continue
            table.add_row(str(path), str(data.get("name", path.stem)), str(data.get("description", "")))
    console.print(table)


@cli.command()
@click.argument("cell_hash", metavar="CELL")
@db_option
@config_option
def show(cell_hash: str, db, config) -> None:
    """One cell's full record: config, status, error, provenance and class-wise accuracy."""
    from sqlalchemy import select as sql_select

    from bench.store import ClassMetric, Run, Store

    store = Store(db or _settings(config).db)
    store.check_schema()
    with store.session() as session:
        runs = session.execute(sql_select(Run).where(Run.cell_hash.startswith(cell_hash))).scalars().all()
        if len(runs) != 1:
            raise BenchError(f"cell {cell_hash!r} {'matches no run' if not runs else 'is ambiguous'} in {store.url}")
        run = runs[0]
        record = {c.name: getattr(run, c.name) for c in Run.__table__.columns if c.name != "config_json"}
        record["config"] = json.loads(run.config_json)
        for key in ("versions_json", "class_names_json"):
            if record.get(key):
                record[key.removesuffix("_json")] = json.loads(record.pop(key))
        metrics = session.execute(sql_select(ClassMetric).where(ClassMetric.run_id == run.id)
                                  .order_by(ClassMetric.attack_order, ClassMetric.class_index)).scalars().all()
        record["class_accuracy"] = {}
        for m in metrics:
            record["class_accuracy"].setdefault(m.attack, {})[m.class_name] = round(m.accuracy, 4)
    error = record.pop("error", None)
    click.echo(json.dumps(record, indent=2, default=str))
    if error:
        click.echo(error)


@cli.command()
@click.option("--suite", help="Only this suite.")
@db_option
@config_option
def status(suite, db, config) -> None:
    """How many cells are queued, running, done, failed or diverged, per suite."""
    from bench.collect import result_files
    from bench.store import STATUSES, load_runs

    settings = _settings(config)
    runs = load_runs(db or settings.db, suite)
    if runs.empty:
        raise BenchError("no runs" + (f" for suite {suite!r}" if suite else "") + " in the database")
    counts = runs.groupby(["suite", "status"]).size().unstack(fill_value=0)
    counts = counts[[s for s in STATUSES if s in counts.columns]]
    click.echo(counts.to_string())
    waiting = set(runs.loc[runs["status"] != "done", "cell_hash"]) & set(result_files(settings.run_dir))
    if waiting:  # workers finished while no driver was there to ingest
        click.echo(f"{len(waiting)} finished result file(s) in {settings.run_dir} not yet in the database: "
                   f"`bench collect` ingests them")


@cli.command()
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder (default: bench.toml's run_dir).")
@db_option
@config_option
def collect(run_dir, db, config) -> None:
    """Ingest the result files workers left in the run folder (e.g. after the driver was killed); idempotent."""
    from bench.collect import collect as collect_results
    from bench.store import Store

    settings = _settings(config)
    folder = Path(run_dir) if run_dir else settings.run_dir
    if not folder.is_dir():
        raise BenchError(f"run folder {folder} does not exist; pass --run-dir or set run_dir in bench.toml")
    store = Store(db or settings.db)
    store.check_writable()
    store.create()
    summary = collect_results(store, folder)
    for line in summary.unreadable:
        click.echo(f"skipped {line}", err=True)
    click.echo(f"{folder}: {summary.line()}; results in {store.shown}")


def main() -> None:
    cli(prog_name="bench")


if __name__ == "__main__":
    main()
