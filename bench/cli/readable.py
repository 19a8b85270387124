"""The human-readable views of ``bench status``, ``bench show`` and ``bench list suites``: rich tables built from
what :mod:`bench.results.read` returns (frames and the run record), printed without markup, so a ``[`` in a
config value or a traceback is printed as it is."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.analysis.cost import SuiteCost, duration
from bench.cell import ACTIVE, Status

# The order ``bench status`` lists statuses in: outcomes people wait for first, then the ones to look into.
STATUS_ORDER = (Status.DONE, Status.RUNNING, Status.QUEUED, Status.FAILED, Status.DIVERGED, Status.INTERRUPTED)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


class Printer:
    """Prints text and rich renderables through ``click.echo`` (so tests and pipes see it), 100 columns wide,
    without the spaces rich pads lines with."""

    def __init__(self, width: int = 100) -> None:
        self.console = Console(markup=False, highlight=False, width=width)

    def __call__(self, *items: Any) -> None:
        if not items:
            click.echo()
        for item in items:
            with self.console.capture() as captured:
                self.console.print(item)
            click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def utcnow() -> datetime:
    """Now, naive UTC: how the store writes heartbeats (:func:`bench.results.schema.utcnow`)."""
    return datetime.now(UTC).replace(tzinfo=None)


# -- bench status --------------------------------------------------------------------------------------------------
def status_table(runs: pd.DataFrame, stale_after: timedelta, now: datetime) -> tuple[Table, bool]:
    """Cells per suite and status, and the oldest heartbeat of each suite's active (queued or running) cells;
    ``runs`` as :func:`bench.results.read.load_runs` returns them. Also whether any active cell is abandoned — a
    stale heartbeat, or a holder on this host that is gone (killed): the next ``bench run`` takes those over."""
    from bench.results.claims import claim_abandoned

    table = Table("suite", *STATUS_ORDER, "total", "oldest heartbeat", title="cells per suite and status")
    for column in table.columns[1:-1]:
        column.justify = "right"
    counts = runs.groupby(["suite", "status"]).size().unstack(fill_value=0)
    active = runs[runs["status"].isin(ACTIVE)]
    oldest = active.groupby("suite")["heartbeat_at"].min()
    gone = {suite for suite, worker, beat in zip(active["suite"], active.get("worker", [None] * len(active)),
                                                 active["heartbeat_at"])
            if beat is not None and not pd.isna(beat)
            and claim_abandoned(worker, pd.Timestamp(beat).to_pydatetime(), now, stale_after)}
    stale_any = False
    for suite, row in counts.iterrows():
        beat = oldest.get(suite)
        shown = "—"
        if suite in oldest.index:
            if beat is None or pd.isna(beat):
                shown, stale = "never", True
            else:
                age = max((now - pd.Timestamp(beat).to_pydatetime()).total_seconds(), 0.0)
                stale = age > stale_after.total_seconds()
                shown = f"{duration(age)} ago" + (", stale" if stale else "")
                if not stale and suite in gone:  # its process died on this host: no heartbeat will come
                    shown, stale = shown + ", gone", True
            stale_any |= stale
        table.add_row(str(suite), *(str(int(row.get(s, 0))) for s in STATUS_ORDER), str(int(row.sum())), shown)
    if len(counts) > 1:
        table.add_section()
        table.add_row("all", *(str(int(counts.get(s, pd.Series(dtype=int)).sum())) for s in STATUS_ORDER),
                      str(len(runs)), "")
    return table, stale_any


# -- bench show ----------------------------------------------------------------------------------------------------
IDENTITY = ("suite", "method", "dataset", "imbalance", "seed", "model")
CONFIG_GROUPS = {  # a line of the configuration summary each; keys not named here go to "other"
    "training": ("epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup_epochs", "milestones", "lr_decay",
                 "augment"),
    "train attack": ("train_attack",),
    "evaluation": ("eval_attacks", "eval_batch_size", "guards"),
    "selection": ("select", "val_split", "val_every", "val_attack"),
    "method": ("method_params", "method_args"),
    "data": ("dataset_args", "features"),
    "speed": ("precision", "eval_precision", "compile", "channels_last"),
}


def _number(value: float, key: str = "") -> str:
    if key in ("eps", "alpha") and 0 < value < 1 and abs(value * 255 - round(value * 255)) < 1e-6:
        return f"{round(value * 255)}/255"  # how the paper and the suites write perturbation sizes
    return f"{value:g}"


def _value(value: Any, key: str = "") -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return _number(value, key)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_value(v, k)}" for k, v in value.items()) or "{}"
    if isinstance(value, list):  # scalars joined without spaces, so a list never wraps inside
        sep = ", " if any(isinstance(v, (Mapping, list)) for v in value) else ","
        return sep.join(_value(v, key) for v in value) or "[]"
    return str(value)


def _attack(table: Mapping[str, Any]) -> str:
    from bench.catalog import AttackConfig

    try:
        label = AttackConfig.from_table(dict(table)).label
    except (KeyError, TypeError, ValueError):  # a config from another bench version: its keys as they are
        return _value(table)
    return f"{label} ({_value({k: v for k, v in table.items() if k != 'kind'})})"


def config_summary(config: Mapping[str, Any]) -> Table:
    """The resolved config, a line per group of keys (identity keys are in the heading, not here)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    named = {k for keys in CONFIG_GROUPS.values() for k in keys}
    groups = {**CONFIG_GROUPS, "other": tuple(k for k in config if k not in named and k not in IDENTITY)}
    for title, keys in groups.items():
        parts = []
        for key in keys:
            if key not in config or (key == "method_args" and not config[key]):
                continue
            value = config[key]
            if key == "eval_attacks":
                shown = "; ".join(_attack(a) for a in value) if value else "none"
            elif key in ("train_attack", "val_attack") and isinstance(value, Mapping):
                shown = _attack(value)
            else:
                shown = _value(value, key)
            parts.append(shown if key in ("train_attack", "method_params") else f"{key} {shown}")
        if parts:
            grid.add_row(title, " · ".join(parts))
    return grid


def class_table(frame: pd.DataFrame, groups: pd.DataFrame) -> Table:
    """Class-wise accuracy (%) under each evaluated attack, clean first, and the group accuracies below;
    ``frame`` is one run's :func:`bench.results.read.load_results`, ``groups`` its
    :func:`bench.analysis.metrics.group_accuracies`."""
    attacks = frame.drop_duplicates("attack").sort_values("attack_order")["attack"].tolist()
    table = Table("class", "train", "test", *(f"{a} %" for a in attacks), title="class-wise accuracy")
    for column in table.columns[1:]:
        column.justify = "right"
    wide = frame.pivot(index="class_index", columns="attack", values="accuracy")
    classes = frame.drop_duplicates("class_index").set_index("class_index").sort_index()
    for index, row in classes.iterrows():
        table.add_row(str(row["class_name"]), str(int(row["n_train"])), str(int(row["n_test"])),
                      *(_percent(wide.at[index, a]) for a in attacks))
    table.add_section()
    by_attack = groups.set_index("attack")
    for group, title in (("overall", "overall"), ("well", "well-represented"), ("under", "under-represented")):
        table.add_row(title, "", "", *(_percent(by_attack.at[a, group]) for a in attacks))
    return table


def _percent(value: float) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def guard_table(guards: pd.DataFrame) -> Table:
    """A run's stored guards (:func:`bench.results.read.load_guards` rows): value, threshold, verdict."""
    table = Table("guard", "value", "threshold", "verdict", title="guards (flagged when value > threshold)")
    for column in table.columns[1:3]:
        column.justify = "right"
    for row in guards.itertuples():
        table.add_row(row.name, f"{row.value:.4f}", f"{row.threshold:.4f}", "FLAGGED" if row.flagged else "ok")
    return table


def _time(value: Any) -> str:
    return value.strftime(TIME_FORMAT) if isinstance(value, datetime) else "—"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s" if value < 90 else duration(value)


def heading(record: Mapping[str, Any]) -> list[str]:
    """Who the cell is and where it stands: two lines."""
    c = record["config"]
    epochs = c.get("epochs")
    first = f"cell {record['cell_hash']} · suite {record['suite']} · {record['status']}"
    second = (f"{record['method']} · {record['dataset']} {record['imbalance']} · seed {record['seed']} · "
              f"model {record['model']} · {'adversarial' if record['adversarial'] else 'natural'} training · "
              f"epoch {record.get('epochs_done') or 0} of {epochs}")
    if record.get("selected_epoch") is None:
        return [first, second]
    scores = [f"{name} {record[key]:.1%}" for name, key in (("clean", "val_clean"), ("robust", "val_robust"))
              if record.get(key) is not None]
    third = (f"reported weights: after epoch {record['selected_epoch'] + 1} of {epochs} "
             f"({record['config'].get('select')}), validation accuracy {', '.join(scores) or 'not stored'} "
             "(class-balanced)")
    return [first, second, third]


def provenance(record: Mapping[str, Any]) -> Table:
    """Where, when, with what code and how fast the run ran."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    speed = record.get("images_per_second")
    memory = record.get("peak_memory_mb")
    rows = {
        "worker": f"{record.get('worker') or '—'} · host {record.get('host') or '—'} · "
                  f"device {record.get('device') or '—'}",
        "code": f"git {record.get('git_commit') or '—'} · data subset {record.get('subset_hash') or '—'}",
        "time": f"started {_time(record.get('started_at'))} · " + (
            f"last heartbeat {_time(record.get('heartbeat_at'))}" if record["status"] in ACTIVE
            else f"finished {_time(record.get('finished_at'))}"),
        "cost": f"wall {_seconds(record.get('wall_seconds'))} · training {_seconds(record.get('train_seconds'))} · "
                f"{'—' if speed is None else f'{speed:,.0f}'} images/s · peak memory "
                f"{'—' if memory is None else f'{memory:,.0f} MB'}" + (
                    f" · trained as one stacked model with {record['fused_members'] - 1} other cell(s), time split "
                    "evenly" if record.get("fused_members") else ""),
        "versions": _value(record.get("versions") or {}).replace("=", " "),
    }
    for key, text in rows.items():
        grid.add_row(key, text)
    return grid


# -- bench list suites ---------------------------------------------------------------------------------------------
def estimate(cost: SuiteCost | None) -> str:
    """The estimated training time left of a suite: ``~3.4 h``, ``~3.4 h (12 of 20 cells)`` when only some
    cells still to run have a recorded speed, ``—`` when none has, ``0`` when every cell is done."""
    if cost is None:
        return "—"
    if cost.remaining == 0:
        return "0"
    if cost.priced == 0:
        return "—"
    text = f"~{duration(cost.seconds)}"
    return text if cost.priced == cost.remaining else f"{text} ({cost.priced} of {cost.remaining} cells)"
