"""The report's figures: which ones, showing what (each is drawn as one PNG, embedded in the HTML, and one PDF).

* class-wise accuracy — per (suite, dataset, imbalance): bars of standard and robust accuracy per class, for
  natural and adversarial training when both were run (the paper's Figure 1), one panel per shown method, the
  under-represented classes (:func:`under_classes`) shaded;
* training class counts — one line per (dataset, imbalance), under-represented classes marked;
* sweeps — accuracy against a config key that varies within a table (``lam``, ``under_weight``), and against
  the imbalance ratio K when a suite runs three or more ratios of one imbalance kind;
* training curves — training accuracy per epoch on one axis, the loss on one small panel per method (each on
  its own scale: LDAM's loss is ~30x cross-entropy's), mean over seeds;
* t-SNE of learned features — per (suite, dataset, imbalance), for runs that kept feature dumps (cell key
  ``features``): the first seed of up to four methods / training modes, test points, clean and attacked (the
  paper's Figures 3 and 4). t-SNE (scikit-learn) runs in the drawing worker, on at most ``MAX_TSNE_POINTS``.

Figure count and size are bounded whatever the database holds (the limits below): a table gets at most one
figure of each kind, and a figure shows at most a few methods — the table's first row (the plain baseline in
registry order) and those with the best robust accuracy on the under-represented classes. Building a figure is
~0.1-0.2 s of matplotlib per panel (text layout, mostly: every panel has its tick labels), so these limits are what
keeps a 10,000-run report within seconds. How each figure stays legible (width, fonts, marks) is
:mod:`~bench.report.drawing`'s business.

Building is split in two: :func:`plan_figures` (here) turns tables and data into small picklable
:class:`~bench.report.drawing.FigureSpec` objects (numbers only), and :func:`bench.report.drawing.draw` draws one
spec — so figures can be drawn in parallel processes (:mod:`~bench.report.workers`), and a worker needs neither
the database nor the tables.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.metrics import class_groups
from bench.cell import Status
from bench.report.drawing import FigureSpec
from bench.report.load import ReportData, load_curves
from bench.report.tables import Row, Table, TableKey, imbalance_ratio
from bench.values import fmt_setting

MAX_METHOD_PANELS = 4  # class-wise panels per figure (one per shown method)
MAX_LINES = 6  # methods per curve / sweep figure
MAX_SWEEP_KEYS = 2  # swept config keys drawn per table (those with the most values)
MAX_PROFILES = 12  # class-count profiles in the one profile figure
MAX_TSNE_FIGURES = 4  # t-SNE figures per report (each runs t-SNE once per panel)
MAX_TSNE_POINTS = 500  # test points per t-SNE panel
MAX_FIGURES = 48  # per report (~16 tables' worth, ~20 s to draw): past it, later tables get no figures


@dataclass
class FigurePlan:
    """Specs grouped where the report shows them: after a table, or in the report-wide figure section."""

    by_table: dict[TableKey, list[FigureSpec]]
    overall: list[FigureSpec]
    omitted: int = 0  # figures left out to stay within MAX_FIGURES

    def all(self) -> list[FigureSpec]:
        return [*self.overall, *(s for specs in self.by_table.values() for s in specs)]


# -- planning -----------------------------------------------------------------------------------------------------
def plan_figures(data: ReportData, tables: list[Table]) -> FigurePlan:
    by_table: dict[TableKey, list[FigureSpec]] = {t.key: [] for t in tables}
    overall: list[FigureSpec] = []
    class_acc = _ClassAccuracy(data.class_rows)

    sections: dict[tuple, list[Table]] = {}
    for table in tables:
        sections.setdefault((table.key.suite, table.key.dataset, table.key.imbalance), []).append(table)
    for section_tables in sections.values():
        spec = _classwise_spec(data, section_tables, class_acc)
        if spec is not None:
            by_table[section_tables[0].key].append(spec)

    curve_rows = {t.key: highlighted(t, MAX_LINES) for t in tables}
    curve_ids = [i for rows in curve_rows.values() for r in rows for i in r.done_ids]
    curves = load_curves(data.url, curve_ids) if curve_ids else pd.DataFrame()
    for table in tables:
        spec = _curves_spec(table, curve_rows[table.key], curves)
        if spec is not None:
            by_table[table.key].append(spec)
        spec = _sweep_spec(table)
        if spec is not None:
            by_table[table.key].append(spec)

    profile = _profile_spec(data)
    if profile is not None:
        overall.append(profile)
    overall.extend(_ratio_sweep_specs(tables))
    overall.extend(_tsne_specs(data))
    overall = overall[:MAX_FIGURES]
    budget, omitted = MAX_FIGURES - len(overall), 0
    for key, specs in by_table.items():  # tables in report order: the first ones keep their figures
        kept = specs[: max(budget, 0)]
        budget -= len(kept)
        omitted += len(specs) - len(kept)
        by_table[key] = kept
    return FigurePlan(by_table, overall, omitted)


def highlighted(table: Table, limit: int) -> list[Row]:
    """The rows a figure shows: the first row with results, then the best robust-under ones, in table order."""
    done = [r for r in table.rows if r.n_seeds]
    if len(done) <= limit:
        return done
    chosen = {id(done[0])} | {id(r) for r in sorted(done[1:], key=_robust_under, reverse=True)[: limit - 1]}
    return [r for r in done if id(r) in chosen]


def _robust_under(row: Row) -> float:
    for key in ((1, "under"), (0, "under")):
        entry = row.entries.get(key)
        if entry is not None and entry.mean is not None:
            return entry.mean
    return -math.inf


class _ClassAccuracy:
    """Per-class accuracy (%) of every finished run, sorted by run so a run's rows are one slice."""

    def __init__(self, rows: pd.DataFrame) -> None:
        rows = rows.sort_values("run_id", kind="stable")
        self.order = rows["attack_order"].to_numpy()
        self.klass = rows["class_index"].to_numpy()
        self.acc = rows["correct"].to_numpy() / np.maximum(rows["n_test"].to_numpy(), 1) * 100.0
        run_ids, starts, counts = np.unique(rows["run_id"].to_numpy(), return_index=True, return_counts=True)
        self.slices = {int(r): (int(a), int(a + n)) for r, a, n in zip(run_ids, starts, counts)}

    def mean_by_class(self, run_ids: list[int], order: int) -> np.ndarray | None:
        """Mean over ``run_ids`` of each class's accuracy under attack ``order``; ``None`` if none was evaluated."""
        parts = [np.arange(*self.slices[r]) for r in run_ids if r in self.slices]
        if not parts:
            return None
        idx = np.concatenate(parts)
        idx = idx[self.order[idx] == order]
        if idx.size == 0:
            return None
        n = int(self.klass[idx].max()) + 1
        total = np.bincount(self.klass[idx], weights=self.acc[idx], minlength=n)
        count = np.bincount(self.klass[idx], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _class_names(data: ReportData, run_ids: list[int], n: int) -> list[str]:
    for run_id in run_ids[:1]:
        names = data.class_names(run_id)
        if names is not None and len(names) >= n:
            return names[:n]
    return [str(i) for i in range(n)]


def under_classes(class_rows: pd.DataFrame, run_id: int | None) -> list[int]:
    """The under-represented classes of one run, by :func:`bench.analysis.metrics.class_groups` (the one rule)."""
    mine = class_rows.loc[class_rows["run_id"] == run_id, ["run_id", "class_index", "n_train"]]
    if mine.empty:
        return []
    mine = mine.drop_duplicates("class_index")
    return sorted(int(c) for c, g in zip(mine["class_index"].tolist(), class_groups(mine)) if g == "under")


def _classwise_spec(data: ReportData, section: list[Table], class_acc: _ClassAccuracy) -> FigureSpec | None:
    primary = next((t for t in section if t.key.adversarial), section[0])
    panels = []
    names: list[str] = []
    first_run: int | None = None
    for row in highlighted(primary, MAX_METHOD_PANELS):
        series = []
        for table in sorted(section, key=lambda t: not t.key.adversarial):
            match = next((r for r in table.rows if r.label == row.label and r.n_seeds), None)
            if match is None:
                continue
            mode = "adversarial training" if table.key.adversarial else "natural training"
            for order, what in ((0, "standard"), (1, "robust")):
                values = class_acc.mean_by_class(match.done_ids, order)
                if values is not None:
                    series.append({"label": f"{mode} · {what}", "values": values})
            if not names:
                width = max((len(s["values"]) for s in series), default=0)
                names = _class_names(data, match.done_ids, width)
            if first_run is None:
                first_run = match.done_ids[0]
        if series:
            panels.append({"title": row.label, "series": series})
    if not panels:
        return None
    key = primary.key
    return FigureSpec(
        kind="classwise", name=f"classwise-{_slug(key.suite, key.dataset, key.imbalance)}",
        title=f"Class-wise accuracy · {key.dataset} · {key.imbalance}",
        caption=("Accuracy per class (%), mean over seeds: standard (clean) and robust (first evaluation attack), "
                 "for each training mode run; the under-represented classes shaded (bold names). Methods shown: "
                 "the first row and those with the best robust accuracy on the under-represented classes (at most "
                 f"{MAX_METHOD_PANELS})."),
        payload={"panels": panels, "class_names": names, "under": under_classes(data.class_rows, first_run)},
    )


def _curves_spec(table: Table, rows: list[Row], curves: pd.DataFrame) -> FigureSpec | None:
    if curves.empty or not rows:
        return None
    lines = []
    for row in rows:
        mine = curves[curves["run_id"].isin(row.done_ids)]
        if mine.empty:
            continue
        mean = mine.groupby("epoch")[["loss", "train_accuracy"]].mean()
        lines.append({"label": row.label, "epoch": mean.index.to_numpy(dtype=float),
                      "loss": mean["loss"].to_numpy(dtype=float),
                      "train_accuracy": mean["train_accuracy"].to_numpy(dtype=float)})
    if not lines:
        return None
    key = table.key
    return FigureSpec(
        kind="curves", name=f"curves-{_slug(key.suite, key.dataset, key.imbalance, str(key.adversarial))}",
        title=f"Training curves · {key.title}",
        caption=(f"Training accuracy (%) and training loss per epoch, mean over seeds (at most {MAX_LINES} methods). "
                 "Each method's loss has its own panel and scale: the losses differ in kind (LDAM's scaled margins "
                 "sit far above cross-entropy's), so on one axis most curves would be flat."),
        payload={"lines": lines},
    )


def _numeric(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _sweep_spec(table: Table) -> FigureSpec | None:
    order = 1 if any(g.attack_order == 1 for g in table.column_groups) else 0
    keys: dict[str, set] = {}
    for row in table.rows:
        for k, v in row.settings.items():
            if _numeric(v) is not None:
                keys.setdefault(k, set()).add(_numeric(v))
    keys = {k: v for k, v in keys.items() if len(v) >= 2}
    panels = []
    for k in sorted(keys, key=lambda k: (-len(keys[k]), k))[:MAX_SWEEP_KEYS]:
        lines: dict[str, dict] = {}
        for row in table.rows:
            x = _numeric(row.settings.get(k))
            overall, under = row.entries.get((order, "overall")), row.entries.get((order, "under"))
            if x is None or overall is None or overall.mean is None:
                continue
            rest = ", ".join(f"{o.removeprefix('method_args.')}={fmt_setting(row.settings[o])}"
                             for o in sorted(row.settings) if o != k)
            label = f"{row.method} [{rest}]" if rest else row.method
            line = lines.setdefault(label, {"label": label, "x": [], "overall": [], "under": []})
            line["x"].append(x)
            line["overall"].append(overall.mean)
            line["under"].append(under.mean if under is not None and under.mean is not None else np.nan)
        kept = [line for line in lines.values() if len(line["x"]) >= 2][:MAX_LINES]
        for line in kept:
            idx = np.argsort(line["x"])
            for name in ("x", "overall", "under"):
                line[name] = np.asarray(line[name], dtype=float)[idx]
        if kept:
            panels.append({"xlabel": k.removeprefix("method_args."), "lines": kept, "log": _wide(keys[k])})
    if not panels:
        return None
    key = table.key
    what = "Robust" if order == 1 else "Standard"
    return FigureSpec(
        kind="sweep", name=f"sweep-{_slug(key.suite, key.dataset, key.imbalance, str(key.adversarial))}",
        title=f"Sweeps · {key.title}",
        caption=(f"{what} accuracy (%) against each swept setting, mean over seeds: overall (solid) and "
                 "under-represented classes (dashed)."),
        payload={"panels": panels, "ylabel": f"{what} accuracy (%)"},
    )


def _wide(values) -> bool:
    values = [v for v in values if v > 0]
    return len(values) >= 2 and max(values) / min(values) >= 20


def _ratio_sweep_specs(tables: list[Table]) -> list[FigureSpec]:
    groups: dict[tuple, list[tuple[float, Table]]] = {}
    for table in tables:
        kind, ratio = imbalance_ratio(table.key.imbalance)
        if ratio is not None:
            groups.setdefault((table.key.suite, table.key.dataset, kind, table.key.adversarial), []).append(
                (ratio, table))
    specs = []
    for (suite, dataset, kind, adversarial), members in groups.items():
        if len({r for r, _ in members}) < 3:  # the paper's main grid (two ratios per kind) is not a sweep
            continue
        members.sort(key=lambda m: m[0])
        order = 1 if any(g.attack_order == 1 for _, t in members for g in t.column_groups) else 0
        labels = [r.label for r in highlighted(members[-1][1], MAX_LINES)]
        lines = []
        for label in labels:
            xs, overall, under = [], [], []
            for ratio, table in members:
                row = next((r for r in table.rows if r.label == label), None)
                shown = row.entries.get((order, "overall")) if row else None
                if shown is None or shown.mean is None:
                    continue
                u = row.entries.get((order, "under"))
                xs.append(ratio)
                overall.append(shown.mean)
                under.append(u.mean if u is not None and u.mean is not None else np.nan)
            if len(xs) >= 2:
                lines.append({"label": label, "x": np.asarray(xs), "overall": np.asarray(overall),
                              "under": np.asarray(under)})
        if not lines:
            continue
        what = "Robust" if order == 1 else "Standard"
        training = "adversarial training" if adversarial else "natural training"
        specs.append(FigureSpec(
            kind="sweep", name=f"ratio-sweep-{_slug(suite, dataset, kind, str(adversarial))}",
            title=f"Imbalance ratio sweep · {dataset} · {kind} · {training}",
            caption=(f"{what} accuracy (%) against the imbalance ratio K, mean over seeds: overall (solid) and "
                     "under-represented classes (dashed)."),
            payload={"panels": [{"xlabel": f"imbalance ratio K ({kind})", "lines": lines, "log": True}],
                     "ylabel": f"{what} accuracy (%)"},
        ))
    return specs


def _profile_spec(data: ReportData) -> FigureSpec | None:
    rows = data.class_rows
    if rows.empty:
        return None
    runs = data.runs.loc[data.runs["status"] == Status.DONE, ["dataset", "imbalance"]]
    runs = runs[runs.index.isin(rows["run_id"].unique())]
    firsts = runs.reset_index().drop_duplicates(["dataset", "imbalance"]).head(MAX_PROFILES)
    wanted = set(firsts["index"])
    counts = rows[rows["run_id"].isin(wanted)].drop_duplicates(["run_id", "class_index"])
    profiles = []
    for rec in firsts.itertuples(index=False):
        mine = counts[counts["run_id"] == rec.index].sort_values("class_index")
        profiles.append({"label": f"{rec.dataset} · {rec.imbalance}",
                         "classes": mine["class_index"].to_numpy(dtype=float),
                         "counts": mine["n_train"].to_numpy(dtype=float),
                         "under": under_classes(mine, rec.index)})
    if not profiles:
        return None
    return FigureSpec(
        kind="profile", name="class-counts",
        title="Training examples per class",
        caption=(f"Training images per class of each (dataset, imbalance) (at most {MAX_PROFILES}); open markers "
                 "(and the shaded band, where every profile agrees): the under-represented classes."),
        payload={"profiles": profiles},
    )


def _tsne_specs(data: ReportData) -> list[FigureSpec]:
    """One t-SNE figure per (suite, dataset, imbalance) with feature dumps: first seed of up to 4 run kinds."""
    from bench.results.read import feature_dump_runs, load_features

    dumped = feature_dump_runs(data.url, data.runs.index.tolist())
    if not dumped:
        return []
    runs = data.runs.loc[sorted(dumped)].sort_values(["suite", "dataset", "imbalance", "seed"])
    specs: list[FigureSpec] = []
    for (suite, dataset, imbalance), group in runs.groupby(["suite", "dataset", "imbalance"], sort=False):
        if len(specs) >= MAX_TSNE_FIGURES:
            break
        panels = []
        for (method, adversarial), runs_of in group.groupby(["method", "adversarial"], sort=False):
            run_id = int(runs_of.index[0])
            names = data.class_names(run_id)
            under = under_classes(data.class_rows, run_id)
            for (split, kind), (labels, vectors) in sorted(load_features(data.url, run_id).items()):
                if split != "test":
                    continue
                panels.append({
                    "title": f"{method} · {'adversarial' if adversarial else 'natural'} · {kind}",
                    "labels": labels[:MAX_TSNE_POINTS], "vectors": vectors[:MAX_TSNE_POINTS],
                    "names": names, "under": under,
                })
            if len(panels) >= MAX_METHOD_PANELS:
                break
        if panels:
            specs.append(FigureSpec(
                kind="tsne", name=_slug("tsne", suite, dataset, imbalance),
                title=f"t-SNE of learned features · {suite} · {dataset} {imbalance}",
                caption="t-SNE (scikit-learn, perplexity 30) of the penultimate features of test points, clean and "
                        "under the first evaluation attack; colour = class, crosses = under-represented classes.",
                payload={"panels": panels[:MAX_METHOD_PANELS]},
            ))
    return specs


def _slug(*parts: str) -> str:
    """A file-name-safe, unique stem for user-named parts (suite names may hold any character)."""
    text = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:60] or "x"
    digest = hashlib.sha1("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{text}-{digest}"
