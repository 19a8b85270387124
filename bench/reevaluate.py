"""Re-evaluation of finished runs (``bench evaluate``, :mod:`bench.cli.evaluate`): re-evaluate finished runs under new attacks from their saved weights, without retraining.

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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def evaluate_run(run, store, settings, device, tables: list[dict[str, Any]], download: bool = False,
                 progress=None) -> RunOutcome:
    """Add the attacks of ``tables`` the run lacks, and the guards it lacks, to one finished run; ``progress``
    (:class:`bench.progress.EvaluateProgress`) is told which attack runs and how far it got."""
    import numpy as np
    import torch

    import methods
    from bench.attacks import AttackSpec
    from bench.data import prepare
    from bench.evaluate import evaluate
    from bench.guards import GUARDS, GuardContext, guard_names, run_guards
    from bench.results import read
    from bench.train import FINAL, build_cell_model

    config = json.loads(run.config_json)
    stored_flags = read.run_flags(store, run.id)
    stored_tables = read.run_attack_tables(store, run.id)
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
    method = methods.as_stored(config)  # as it trained: the stored hyperparameters, not today's defaults
    order = [*stored_flags, *(s.label for s, _ in new)]
    light = GuardContext(None, None, config, method, dict.fromkeys(order), specs)
    stored_guards = read.stored_guards(store, run.id)
    missing = [n for n in guard_names(config) if n not in stored_guards and GUARDS.get(n).applies(light)]
    note = f"; label(s) {', '.join(conflicts)} already stored with other parameters (set name = \"...\")" if conflicts else ""
    if not new and not missing and read.has_test_labels(store, run.id):
        return RunOutcome("up-to-date", "nothing to add" + note)

    path = Path(settings.run_dir) / run.cell_hash / FINAL
    if not path.exists():
        return RunOutcome("skipped", f"no checkpoint at {path}" + note)
    try:
        state = torch.load(path, map_location=device, weights_only=True)["model"]
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is reported, the other runs go on
        return RunOutcome("skipped", f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}".splitlines()[0])
    data = prepare(config["dataset"], config["imbalance"], config["seed"], root=settings.data_root,
                   download=download or settings.download, args=config["dataset_args"], device=device,
                   val_split=config.get("val_split", 0.0))
    if run.subset_hash and data.subset_hash != run.subset_hash:
        return RunOutcome("skipped", f"the training subset changed since the run (hash {data.subset_hash} != "
                                     f"{run.subset_hash}); rerun it instead")
    clean = stored_flags.get("clean")
    if clean is not None and clean.size != data.test_y.shape[0]:
        return RunOutcome("skipped", f"the test set has {data.test_y.shape[0]} images, the run stored {clean.size}")
    model = build_cell_model(config, method, data)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        return RunOutcome("skipped", f"checkpoint {path} does not fit the cell's model: {str(exc).splitlines()[0]}")
    model.eval()
    correct = evaluate(model, data, config, specs=[s for s, _ in new],
                       on_step=progress.step if progress is not None else None)
    if clean is not None:
        differ = int((correct["clean"] != clean).sum())
        if differ > CLEAN_MISMATCH_TOLERANCE * clean.size:
            return RunOutcome("skipped", f"the checkpoint does not reproduce the stored clean predictions "
                                         f"({differ} of {clean.size} differ)")
    added = {label: flags for label, flags in correct.items() if label != "clean"}
    all_flags = {**stored_flags, **added} if stored_flags else dict(correct)
    ctx = GuardContext(model, data, config, method, all_flags, specs)
    names = [n for n in guard_names(config) if n in missing or (added and not GUARDS.get(n).needs_model)]
    if progress is not None and names:
        progress.phase("guards " + ", ".join(names))
    guards = run_guards(ctx, names)
    store.add_evaluation(run.id, correct=added, attack_specs={s.label: t for s, t in new},
                         class_names=data.class_names, train_counts=data.train_counts,
                         test_labels=data.test_y.cpu().numpy(), guards=[g.row() for g in guards])
    return RunOutcome("evaluated", note.lstrip("; "), {k: float(np.mean(v)) for k, v in added.items()}, guards)


def describe(run) -> str:
    return f"{run.cell_hash} {run.method} · {run.dataset} {run.imbalance} · seed {run.seed}"


def outcome_line(outcome: RunOutcome) -> str:
    parts = [f"+ {label} {100 * acc:.1f}%" for label, acc in outcome.added.items()]
    for g in outcome.guards:
        value = f"{100 * g.value:.1f} pts" if g.name != "zero-grad-share" else f"{100 * g.value:.1f}%"
        parts.append(f"{g.name} {value} {'FLAGGED' if g.flagged else 'ok'}")
    if outcome.message:
        parts.append(outcome.message)
    return "; ".join(parts) or "nothing to add"
