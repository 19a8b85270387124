"""``bench evaluate``: re-evaluate finished runs under new attacks from their saved weights, without retraining.

For every finished run (``--suite``, ``--only KEY=PATTERN`` select as in ``bench run``) and every ``--attack``
table, the run's final weights (``run_dir/<cell_hash>/final.pt``, loaded with ``weights_only=True``) are attacked
on the run's own test set, and the new per-class rows (``attack_order`` after the run's last attack), per-sample
flags, attack tables and guards are written in one transaction per run. A (run, attack label) pair already
stored is skipped, so the same command after an interruption resumes where it stopped; a label stored with
other parameters is reported and skipped (give the new attack a ``name``). Runs whose checkpoint is missing,
unreadable or does not reproduce the stored clean predictions are reported and skipped; the exit status is then
1. Without ``--attack`` the command computes only the guards a run is missing.

Each attack draws its randomness from a generator seeded by the cell's seed and the attack's label, exactly as
``bench run`` would have, so an attack added here gives the flags it would have given in the suite.
"""

from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from bench.errors import BenchError

CLEAN_MISMATCH_TOLERANCE = 0.01  # share of clean predictions a reloaded model may flip (GPU-trained → CPU)


def parse_attacks(items: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """``--attack`` TOML inline tables to validated ``eval_attacks`` tables with unique labels."""
    from bench.suite import RESERVED_LABELS, attack_label, eval_attack

    tables = []
    for text in items:
        where = f"--attack {text}"
        try:
            value = tomllib.loads(f"attack = {text}")["attack"]
        except tomllib.TOMLDecodeError as exc:
            raise BenchError(f"{where}: not a TOML inline table ({exc}); e.g. '{{kind=\"autoattack\", eps=\"8/255\"}}'") from None
        tables.append(eval_attack(value, where))
    labels = [attack_label(t) for t in tables]
    if len(set(labels)) != len(labels) or RESERVED_LABELS & set(labels):
        raise BenchError(f"--attack labels must be unique and not {' or '.join(sorted(RESERVED_LABELS))}, got {labels}; "
                         "set name = \"...\"")
    return tables


@dataclass
class RunOutcome:
    """What happened to one run: ``evaluated``, ``up-to-date`` or ``skipped`` (with the reason)."""

    status: str
    message: str = ""
    added: dict[str, float] = field(default_factory=dict)  # label -> robust accuracy
    guards: list = field(default_factory=list)  # GuardResult


def evaluate_run(run, store, settings, device, tables: list[dict[str, Any]], download: bool = False) -> RunOutcome:
    """Add the attacks of ``tables`` the run lacks, and the guards it lacks, to one finished run."""
    import numpy as np
    import torch

    import methods
    from bench.attacks import AttackSpec
    from bench.data import prepare
    from bench.evaluate import evaluate
    from bench.guards import GUARDS, GuardContext, guard_names, run_guards
    from bench.train import FINAL, build_cell_model

    config = json.loads(run.config_json)
    stored_flags = store.run_flags(run.id)
    stored_tables = store.run_attack_tables(run.id)
    new: list[tuple[AttackSpec, dict]] = []
    conflicts = []
    for table in tables:
        spec = AttackSpec.from_table(table)
        if spec.label in stored_flags:
            if spec.label in stored_tables and stored_tables[spec.label] != table:
                conflicts.append(spec.label)
            continue
        new.append((spec, table))
    all_tables = {**stored_tables, **{s.label: t for s, t in new}}
    specs = {label: AttackSpec.from_table(t) for label, t in all_tables.items()}
    method = methods.get(config["method"], **config["method_args"]).for_run(
        epochs=config["epochs"], milestones=config["milestones"])
    order = [*stored_flags, *(s.label for s, _ in new)]
    light = GuardContext(None, None, config, method, dict.fromkeys(order), specs)
    stored_guards = store.run_guards(run.id)
    missing = [n for n in guard_names(config) if n not in stored_guards and GUARDS.get(n).applies(light)]
    note = f"; label(s) {', '.join(conflicts)} already stored with other parameters (set name = \"...\")" if conflicts else ""
    if not new and not missing and store.has_test_labels(run.id):
        return RunOutcome("up-to-date", "nothing to add" + note)

    path = Path(settings.run_dir) / run.cell_hash / FINAL
    if not path.exists():
        return RunOutcome("skipped", f"no checkpoint at {path}" + note)
    try:
        state = torch.load(path, map_location=device, weights_only=True)["model"]
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is reported, the other runs go on
        return RunOutcome("skipped", f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}".splitlines()[0])
    data = prepare(config["dataset"], config["imbalance"], config["seed"], root=settings.data_root,
                   download=download or settings.download, args=config["dataset_args"], device=device)
    if run.subset_hash and data.subset_hash != run.subset_hash:
        return RunOutcome("skipped", f"the training subset changed since the run (hash {data.subset_hash} != "
                                     f"{run.subset_hash}); rerun it instead")
    clean = stored_flags.get("clean")
    if clean is not None and clean.size != data.test_y.shape[0]:
        return RunOutcome("skipped", f"the test set has {data.test_y.shape[0]} images, the run stored {clean.size}")
    model = build_cell_model(config, method, data)
    # Weights saved before models carried an inference bias had none: zero is exactly what they computed.
    state.setdefault("logit_bias", torch.zeros_like(model.logit_bias))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        return RunOutcome("skipped", f"checkpoint {path} does not fit the cell's model: {str(exc).splitlines()[0]}")
    model.eval()
    correct = evaluate(model, data, config, specs=[s for s, _ in new])
    if clean is not None:
        differ = int((correct["clean"] != clean).sum())
        if differ > CLEAN_MISMATCH_TOLERANCE * clean.size:
            return RunOutcome("skipped", f"the checkpoint does not reproduce the stored clean predictions "
                                         f"({differ} of {clean.size} differ)")
    added = {label: flags for label, flags in correct.items() if label != "clean"}
    all_flags = {**stored_flags, **added} if stored_flags else dict(correct)
    ctx = GuardContext(model, data, config, method, all_flags, specs)
    names = [n for n in guard_names(config) if n in missing or (added and not GUARDS.get(n).needs_model)]
    guards = run_guards(ctx, names)
    store.add_evaluation(run.id, correct=added, attack_specs={s.label: t for s, t in new},
                         class_names=data.class_names, train_counts=data.train_counts,
                         test_labels=data.test_y.cpu().numpy(), guards=[g.row() for g in guards])
    return RunOutcome("evaluated", note.lstrip("; "), {k: float(np.mean(v)) for k, v in added.items()}, guards)


def _describe(run) -> str:
    return f"{run.cell_hash} {run.method} · {run.dataset} {run.imbalance} · seed {run.seed}"


def _line(outcome: RunOutcome) -> str:
    parts = [f"+ {label} {100 * acc:.1f}%" for label, acc in outcome.added.items()]
    for g in outcome.guards:
        value = f"{100 * g.value:.1f} pts" if g.name != "zero-grad-share" else f"{100 * g.value:.1f}%"
        parts.append(f"{g.name} {value} {'FLAGGED' if g.flagged else 'ok'}")
    if outcome.message:
        parts.append(outcome.message)
    return "; ".join(parts) or "nothing to add"


@click.command("evaluate")
@click.option("--suite", help="Only runs of this suite.")
@click.option("--only", multiple=True, metavar="KEY=PATTERN", help="Only matching runs (glob; repeatable).")
@click.option("--attack", "attacks", multiple=True, metavar="TOML_TABLE",
              help="An attack table, e.g. '{kind=\"autoattack\", eps=\"8/255\"}' (repeatable).")
@click.option("--device", metavar="auto|cpu|cuda[:N]", help="Device (default: bench.toml's device).")
@click.option("--download", is_flag=True, help="Let torchvision download missing datasets.")
@click.option("--quiet", is_flag=True, help="Only the summary line.")
@click.option("--db", "db", metavar="URL", help="Results database URL (default: bench.toml's db).")
@click.option("--config", "config", metavar="PATH", type=click.Path(dir_okay=False),
              help="bench.toml to use (default: ./bench.toml, or $BENCH_CONFIG).")
def evaluate_command(suite, only, attacks, device, download, quiet, db, config) -> None:
    """Attack finished runs again from their saved weights (new attacks, guards), without retraining.

    \b
    bench evaluate --attack '{kind="autoattack", eps="8/255"}'
    bench evaluate --suite quick --only method=*ldam --attack '{kind="pgd-cw", eps="8/255", alpha="2/255", steps=20}'
    """
    from bench.settings import load_settings
    from bench.store import Store
    from bench.suite import Cell, select

    settings = load_settings(config)
    tables = parse_attacks(attacks)
    store = Store(db or settings.db)
    store.check_schema()
    store.check_writable()
    store.create()  # adds tables this version keeps (test labels, attack tables, guards) to an older database
    runs = store.done_runs(suite)
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
                click.echo(f"{_describe(run)}: skipped: {outcome.message}", err=True)
            elif not quiet:
                click.echo(f"{_describe(run)}: {_line(outcome)}")
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    order = ("evaluated", "up-to-date", "skipped")
    click.echo("evaluate: " + ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)))
    if counts.get("skipped"):
        sys.exit(1)
