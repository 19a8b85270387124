"""``bench run``: run a suite's cells (any executor), a theory suite, or list them (``--dry-run``)."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import click

from bench.cli.common import config_option, db_option, load_settings, parse_seeds
from bench.errors import BenchError


@click.command("run")
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
@click.option("--fuse", "fuse", metavar="auto|off|N",
              help="Train up to N cells sharing data, model and schedule as one stacked model (default: the suite's "
                   "fuse, else bench.toml's).")
@click.option("--ray-address", metavar="HOST:PORT|auto", help="Ray cluster for --executor ray (default: start one here).")
@db_option
@config_option
def run(suite_file, only, seeds, sets, dry_run, device, download, debug, quiet, workers, executor, fuse, ray_address,
        db, config) -> None:
    """Run every cell of SUITE.toml not yet done, storing class-wise results."""
    from bench.data import DATASETS
    from bench.results.store import Store
    from bench.suite import load_suite, parse_overrides, read_suite_file, select

    settings = load_settings(config)
    file = read_suite_file(suite_file)  # the one read of the file: its kind, its cells, its executor tables
    if file.kind == "theory":
        _run_theory(file, Store(db or settings.db), dry_run)
        return
    suite = load_suite(file, settings, seeds=parse_seeds(seeds), overrides=parse_overrides(sets))
    settings = _with_fuse(settings, file, fuse)
    cells = select(suite.cells, only)
    if not cells:
        raise BenchError(f"no cell of suite {suite.name} matches {' '.join('--only ' + o for o in only)}")
    store = Store(db or settings.db, stale_after=timedelta(minutes=settings.stale_after_minutes))
    if dry_run:
        store.check_schema(allow_missing=True)
        _print_dry_run(suite.name, cells, store.statuses([c.cell_hash for c in cells]) if store.exists() else {},
                       settings.fuse, device or settings.device)
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
    options = executor_options(kind, settings, file)
    for name in sorted({c["dataset"] for c in cells}):  # the files: the one check a suite's metadata cannot make
        DATASETS.get(name)().check_available(settings.data_root, download or settings.download)
    store.check_writable()
    _check_run_folders(store, settings, cells)
    args = ["--executor=local", suite_file, *(f"--only={o}" for o in only), *(f"--set={x}" for x in sets),
            f"--device={device or settings.device}"]
    args += ["--quiet"] if quiet else []
    args += [f"--seeds={seeds}"] if seeds else []
    args += [f"--config={config}"] if config else []
    args += ["--download"] if download else []
    args += [f"--fuse={fuse}"] if fuse else []
    ctx = RunContext(suite_name=suite.name, suite_path=Path(suite_file), cells=cells, store=store, settings=settings,
                     device=device or settings.device, download=download, debug=debug, quiet=quiet, workers=workers,
                     ray_address=ray_address, cli_args=args, options=options)
    runner = kind(ctx)
    runner.check()  # sbatch missing, a Ray address that does not answer: one line before any cell starts
    code = runner.run()
    if code:
        sys.exit(code)


def _run_theory(file, store, dry_run: bool) -> None:
    """Evaluate a Section 3 grid numerically, store it for the report, print the agreement with the paper."""
    from bench.analysis.theory_suite import load_theory_suite

    suite = load_theory_suite(file)
    sizes = [len(v) for k, v in suite["grid"].items() if isinstance(v, list)]
    rows = 1
    for size in sizes:
        rows *= size
    if dry_run:
        click.echo(f"theory suite {suite['name']}: {rows} grid point(s) to evaluate")
        return
    store.check_writable()
    from bench.analysis import theory  # scipy and pandas: only once there is a grid to evaluate
    from bench.results.store import save_theory

    path = file.path
    frame = theory.evaluate_grid(suite["grid"], f"{path}: [theory]")
    pairs = theory.theorem_pairs(suite["grid"], f"{path}: [theory]")
    save_theory(store, suite["name"], suite["description"], frame, pairs)
    agree = int(frame["agrees_with_paper"].sum())
    click.echo(f"theory suite {suite['name']}: {len(frame)} grid points; the numeric optimum agrees with the "
               f"paper's Lemma 3.1 closed form in {agree} of them; stored in {store.shown} (see bench report)")


def _check_run_folders(store, settings, cells) -> None:
    """Before any claim: the run folder, and the folders of the cells still to run, take new files (one line)."""
    from bench.cell import Status
    from bench.results.ledger import check_run_folders

    statuses = store.statuses([c.cell_hash for c in cells]) if store.exists() else {}
    todo = [c for c in cells if statuses.get(c.cell_hash) != Status.DONE]
    if todo:
        check_run_folders(settings.run_dir, todo)


def _with_fuse(settings, file, option: str | None):
    """Settings with the ``fuse`` in force: ``--fuse`` > the suite file's ``fuse`` > bench.toml's."""
    import dataclasses

    from bench.fusion.groups import check_fuse

    if option is not None:
        value = int(option) if option.isdigit() else option
        return dataclasses.replace(settings, fuse=check_fuse(value, "--fuse"))
    if "fuse" in file.data:
        return dataclasses.replace(settings, fuse=check_fuse(file.data["fuse"], f"{file.path}: fuse"))
    return settings


def _recipe(attack: dict) -> str:
    """A training attack in a few words: ``pgd-10 eval-BN``, ``pgd-5 eval-BN U[0,eps]``."""
    start = " U[0,eps]" if attack.get("start") == "positive" else ""
    if not attack.get("clip_start", True):
        start += " unclipped"
    return f"pgd-{attack['steps']} {attack['bn_mode']}-BN{start}"


def _selection(c: dict) -> str:
    """How the reported epoch is chosen: ``last``, or ``best-val-robust 10%/1`` (validation share / every)."""
    if not c.get("val_split"):
        return "last"
    return f"{c['select']} {c['val_split']:.0%}/{c['val_every']}"


def _print_dry_run(suite: str, cells, statuses: dict[str, str], fuse="off", device: str = "cpu") -> None:
    from rich.console import Console
    from rich.table import Table

    import methods
    from bench.cell import Status
    from bench.fusion.groups import plan
    from bench.provenance import resolve_device

    todo = [c for c in cells if statuses.get(c.cell_hash) != Status.DONE]
    # the device the cells would run on; a dry run on a machine without the GPU it names still plans for it
    units = plan(todo, fuse, "cuda" if str(device).startswith("cuda") else resolve_device(device).type)
    groups = [members for on, members in units.units if on]
    fused = {cell.cell_hash: f"#{g + 1} ({len(members)} cell{'' if len(members) == 1 else 's'})"
             for g, members in enumerate(groups) for cell in members}
    table = Table(title=f"suite {suite}: {len(cells)} cell(s)")
    for column in ("cell", "status", "method", "dataset", "imbalance", "seed", "model", "epochs", "milestones",
                   "drw", "train", "augment", "select", "fused group"):
        table.add_column(column)
    for cell in cells:
        c = cell.config
        status = statuses.get(cell.cell_hash, "to run")
        train = "natural" if c["train_attack"] == "none" else _recipe(c["train_attack"])
        deferred = methods.get(c["method"]).weight_schedule == "drw"  # the DRW epoch matters only there
        drw = str(c["method_params"].get("drw_epoch")) if deferred else "—"
        table.add_row(cell.cell_hash, status, c["method"], c["dataset"], c["imbalance"], str(c["seed"]),
                      c["model"], str(c["epochs"]), ",".join(map(str, c["milestones"])) or "—", drw, train,
                      c["augment"], _selection(c), fused.get(cell.cell_hash, "—"))
    console = Console(width=210)
    console.print(table)
    done = sum(statuses.get(c.cell_hash) == Status.DONE for c in cells)
    console.print(f"{done} done, {len(cells) - done} to run")
    if fused:
        console.print(f"fuse = {fuse}: {len(fused)} cell(s) in {len({v for v in fused.values()})} fused group(s)")
    reasons: dict[str, int] = {}
    for reason in units.reasons.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        console.print(f"not fused: {count} cell(s), {reason}")
