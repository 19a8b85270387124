"""Rendering the leaderboard (:mod:`bench.analysis.leaderboard`): Markdown, CSV, JSON, and the static HTML site.

The site (:func:`write_site`) is plain files that work from ``file://`` and any static server: ``index.html`` (the
overall ranking and every setting's table), one page per setting and one per method (every setting it ran, its
class-wise figures as inline SVG, its resolved configuration, provenance and guard details), and the tidy results
to download (:mod:`bench.report.leaderboard_files`). Tables sort by a click on a header and filter by text with
a few lines of inline JavaScript; nothing is fetched. Pages are jinja2 templates
(``resources/templates/leaderboard_*.html``) rendered with autoescape on, so every string the site did not write
itself — method, dataset and host names, config values, guard details — is escaped; links are only ``http(s)``
or the site's own files.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from bench.analysis.leaderboard import METRICS, PAPER, Board, Entry, Leaderboard
from bench.analysis.leaderboard_data import Setting, slug
from bench.errors import BenchError
from bench.io import write_output
from bench.report.drawing import UNDER_COLOR, UNDER_LABEL, runs
from bench.report.leaderboard_files import has_parquet, write_downloads
from bench.report.render import prepare_out_dir
from bench.values import fmt_setting
from bench.report.resources import template_dir, template_loader

DASH = "–"
FORMATS = {"html": "index.html", "md": "leaderboard.md", "csv": "leaderboard.csv", "json": "leaderboard.json"}
COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#b04a5a")


def pct(value: float | None) -> str:
    return DASH if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def method_page(method: str) -> str:
    return f"method-{slug(method)}.html"


def setting_page(setting: Setting) -> str:
    return f"setting-{setting.slug}.html"


def entry_anchor(entry: Entry) -> str:
    return "e-" + slug(entry.setting.slug, entry.label)


# -- the table every format shows ---------------------------------------------------------------------------------
@dataclass
class Column:
    key: str
    title: str
    tip: str = ""
    numeric: bool = True


@dataclass
class Cell:
    text: str
    value: str = ""  # what the column sorts by (numbers as text; "" sorts last)
    href: str | None = None
    sub: str = ""  # a second, smaller line
    cls: str = ""
    tip: str = ""


@dataclass
class TableView:
    id: str
    caption: str
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)
    row_ids: list[str] = field(default_factory=list)


def board_columns(board: Board, generic: bool = False) -> list[Column]:
    """The columns of a setting's table (``generic``: for rows of several settings, the first attack unnamed)."""
    attack = "First attack" if generic else board.setting.attack.split(" ε ")[0]
    cols = [Column("rank", "Rank", "rank by the ranking metric; equal values share a rank"),
            Column("method", "Method", "method [variant]: hyperparameters away from its defaults; paper, venue, year",
                   numeric=False),
            Column("model", "Architecture", numeric=False)]
    kinds = [("clean", "Clean"), ("robust", attack)]
    if board.has("aa"):
        kinds.append(("aa", "AutoAttack"))
    kinds.append(("worst", "Worst case"))
    for kind, title in kinds:
        for group, word in (("overall", "all"), ("under", "under")):
            cols.append(Column(f"{kind}_{group}", f"{title} · {word}", METRICS[f"{kind}_{group}"].title + " (%)"))
    cols.append(Column("seeds", "Seeds", "distinct seeds of finished runs"))
    if board.has("paper"):
        cols += [Column("paper_robust_overall", "Paper · all", "the paper's published robust accuracy (%)"),
                 Column("paper_robust_under", "Paper · under", "the paper's published robust accuracy, "
                                                               "under-represented classes (%)")]
    cols += [Column("guards", "Guards", "robustness guards that fired: the evaluation may be unreliable",
                    numeric=False),
             Column("device_hours", "Device-h", "device-hours: wall time summed over the runs"),
             Column("images_per_second", "Images/s", "training images per second, mean over runs"),
             Column("hosts", "Hosts", "where the runs ran", numeric=False)]
    return cols


def entry_cells(entry: Entry, columns: list[Column], metric: str, link_setting: bool = False,
                card: bool = True) -> list[Cell]:
    """A row's cells; ``link_setting``: the setting links to its page; ``card``: the paper under the method."""
    cells = []
    for col in columns:
        key = col.key
        if key == "rank":
            cells.append(Cell(str(entry.rank) if entry.rank is not None else DASH,
                              "" if entry.rank is None else str(entry.rank)))
        elif key == "method":
            info = (entry.card or {}) if card else {}
            sub = " · ".join(str(p) for p in (info.get("paper"), info.get("venue"), info.get("year")) if p)
            cells.append(Cell(entry.label, entry.label, href=f"{method_page(entry.method)}#{entry_anchor(entry)}",
                              sub=sub, cls="left method", tip=entry.recipe_text))
        elif key == "setting":
            cells.append(Cell(entry.setting.title, entry.setting.title, cls="left",
                              href=setting_page(entry.setting) if link_setting else None))
        elif key == "model":
            cells.append(Cell(entry.model, entry.model, cls="left"))
        elif key == "guards":
            text = ", ".join(f"{name} ×{n}" for name, n in sorted(entry.guards.items()))
            cells.append(Cell(f"⚠ {text}" if text else "", text,
                              href=f"{method_page(entry.method)}#guards-{entry_anchor(entry)}" if text else None,
                              cls="left flag" if text else "left",
                              tip="evaluation may be unreliable: see the guard's detail" if text else ""))
        elif key == "hosts":
            text = ", ".join(sorted(entry.hosts))
            cells.append(Cell(text, text, cls="left"))
        else:
            value = entry.value(key)
            if key == "seeds":
                text = str(len(entry.seeds))
            elif key == "device_hours":
                text = DASH if value is None else f"{value:.3g}"
            elif key == "images_per_second":
                text = DASH if value is None else f"{value:,.0f}"
            else:
                text = pct(value)
            cells.append(Cell(text, "" if value is None else repr(value), cls="metric" if key == metric else ""))
    return cells


def board_view(board: Board, metric: str, table_id: str) -> TableView:
    columns = board_columns(board)
    view = TableView(table_id, f"{board.setting.title}: ranked by {METRICS[metric].title}", columns)
    for entry in board.entries:
        view.rows.append(entry_cells(entry, columns, metric))
        view.row_ids.append(entry_anchor(entry))
    return view


def overall_view(lb: Leaderboard) -> TableView:
    columns = [Column("rank", "Rank"), Column("method", "Method", numeric=False),
               Column("paper", "Paper", numeric=False), Column("venue", "Venue", numeric=False),
               Column("year", "Year"), Column("mean_rank", "Mean rank", "mean of its ranks over the settings"),
               Column("settings", "Settings", "settings it was ranked in")]
    view = TableView("overall", f"Overall: mean rank over settings, by {METRICS[lb.metric.name].title}", columns)
    for item in lb.overall:
        card = item.card or {}
        view.rows.append([
            Cell(str(item.rank), str(item.rank)),
            Cell(item.label, item.label, href=method_page(item.method), cls="left"),
            Cell(str(card.get("paper") or ""), str(card.get("paper") or ""), cls="left paper"),
            Cell(str(card.get("venue") or ""), str(card.get("venue") or ""), cls="left"),
            Cell(str(card.get("year") or ""), str(card.get("year") or "")),
            Cell(f"{item.mean_rank:.2f}", repr(item.mean_rank)),
            Cell(str(item.n_settings), str(item.n_settings)),
        ])
        view.row_ids.append("o-" + slug(item.label))
    return view


# -- class-wise figure (inline SVG) ---------------------------------------------------------------------------------
def classwise_figure(classwise: dict, width: int = 760) -> dict | None:
    """Geometry of a grouped bar chart of per-class accuracy: one group per class, one bar per series, the
    under-represented classes shaded (one band per run of neighbouring classes) and named in bold; the template
    draws it as SVG (every label escaped). ``width`` fits an 800 px column, where its 12 px text stays 12 px."""
    series, classes = classwise.get("series") or [], classwise.get("classes") or []
    if not series or not classes:
        return None
    n = len(classes)
    under = set(classwise.get("under") or [])
    legend = [{"color": COLORS[i % len(COLORS)], "text": item["label"], "outline": False}
              for i, item in enumerate(series)]
    if under:
        legend.append({"color": UNDER_COLOR, "text": UNDER_LABEL, "outline": True})
    legend, legend_h = _legend_rows(legend, 48, width - 10)
    rotate = n > 10 or max(len(str(c)) for c in classes) > 6
    left, right, top = 48, 10, legend_h + 12
    # Tick labels (rotated 40°: ~4.6 px of height per character), then the axis title.
    bottom = 22 + (round(min(max(len(str(c)) for c in classes), 12) * 4.6) if rotate else 0) + 18
    height = top + 190 + bottom
    plot_w, plot_h = width - left - right, height - top - bottom
    group = plot_w / n
    bar = group * 0.8 / len(series)
    y = lambda v: top + plot_h * (1 - v / 100.0)
    shades = [{"x": round(left + a * group, 2), "w": round((b - a + 1) * group, 2), "y": top, "h": plot_h}
              for a, b in runs(c for c in under if c < n)]
    bars = []
    for s, item in enumerate(series):
        for c, value in enumerate(item["values"][:n]):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            x = left + c * group + group * 0.1 + s * bar
            bars.append({"x": round(x, 2), "y": round(y(value), 2), "w": round(max(bar - 0.5, 0.5), 2),
                         "h": round(plot_h * value / 100.0, 2), "color": COLORS[s % len(COLORS)],
                         "tip": f"class {classes[c]} · {item['label']}: {value:.1f}%"})
    every = max(1, math.ceil(n / 25))
    labels = [{"x": round(left + (c + 0.5) * group, 2), "y": top + plot_h + 12, "text": str(classes[c])[:12],
               "under": c in under} for c in range(0, n, every)]
    ticks = [{"y": round(y(v), 2), "text": str(v)} for v in (0, 25, 50, 75, 100)]
    return {"width": width, "height": height, "left": left, "top": top, "plot_w": plot_w, "plot_h": plot_h,
            "bars": bars, "shades": shades, "under_color": UNDER_COLOR, "labels": labels, "ticks": ticks,
            "legend": legend, "rotate": rotate, "xlabel": {"x": round(left + plot_w / 2, 2), "y": height - 6,
                       "text": "class" if every == 1 else f"class (one name in {every})"}}


def _legend_rows(items: list[dict], left: int, right: int, char_px: float = 7.0) -> tuple[list[dict], int]:
    """Legend items laid out left to right, wrapping before ``right``; returns them with x, y and the height."""
    x, y = left, 8
    for item in items:
        w = 16 + len(str(item["text"])) * char_px + 18  # swatch, text, gap
        if x > left and x + w - 18 > right:
            x, y = left, y + 18
        item.update(x=round(x, 2), y=y)
        x += w
    return items, y + 12


# -- text formats -------------------------------------------------------------------------------------------------
ROW_FIELDS = ["setting", "dataset", "imbalance", "train_attack", "eval_attack", "rank", "label", "method", "variant",
              "paper", "venue", "year", "repository", "model", "recipe", "clean_overall", "clean_under",
              "robust_overall", "robust_under", "aa_overall", "aa_under", "worst_overall", "worst_under", "seeds",
              "runs", *PAPER.values(), "paper_source", "guards_flagged", "device_hours", "images_per_second", "hosts"]


def entry_record(entry: Entry) -> dict:
    card = entry.card or {}
    record = {
        "setting": entry.setting.title, "dataset": entry.setting.dataset, "imbalance": entry.setting.imbalance,
        "train_attack": entry.setting.train, "eval_attack": entry.setting.attack, "rank": entry.rank,
        "label": entry.label, "method": entry.method, "variant": entry.variant, "paper": card.get("paper"),
        "venue": card.get("venue"), "year": card.get("year"), "repository": card.get("repository"),
        "model": entry.model, "recipe": entry.recipe_text, **{k: entry.values.get(k) for k in entry.values},
        "seeds": len(entry.seeds), "runs": len(entry.run_ids),
        **{k: entry.paper.get(k) for k in PAPER.values()}, "paper_source": entry.paper_source,
        "guards_flagged": dict(sorted(entry.guards.items())), "device_hours": entry.device_hours,
        "images_per_second": entry.images_per_second, "hosts": dict(sorted(entry.hosts.items())),
    }
    return {k: record.get(k) for k in ROW_FIELDS}


def render_json(lb: Leaderboard) -> str:
    doc = {
        "metric": lb.metric.name, "tiebreak": lb.metric.tiebreak,
        "settings": [{"setting": b.setting.title, "rows": [entry_record(e) for e in b.entries]} for b in lb.boards],
        "overall": [{"rank": o.rank, "label": o.label, "method": o.method, "mean_rank": o.mean_rank,
                     "settings": o.n_settings, "card": o.card} for o in lb.overall],
    }
    return json.dumps(doc, indent=2, allow_nan=False, default=_plain) + "\n"


def _plain(value):
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def render_csv(lb: Leaderboard) -> str:
    """One line per setting × row, every column (percent with full precision; empty where missing)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ROW_FIELDS)
    for entry in lb.entries():
        record = entry_record(entry)
        writer.writerow(["" if v is None else (";".join(f"{k}={n}" for k, n in v.items()) if isinstance(v, dict)
                                                else v) for v in record.values()])
    return buffer.getvalue()


def render_md(lb: Leaderboard) -> str:
    return _environment(html=False).get_template("leaderboard.md").render(
        lb=lb, views=[board_view(b, lb.metric.name, f"s{i}") for i, b in enumerate(lb.boards)],
        overall=overall_view(lb))


# -- the site ---------------------------------------------------------------------------------------------------------
@functools.cache
def _environment(html: bool = True) -> jinja2.Environment:
    """One environment per process and mode: templates compile once (~50 ms each), not once per page."""
    env = jinja2.Environment(loader=template_loader(), autoescape=html, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(pct=pct, value=fmt_setting, md=_md, safe_url=_safe_url)
    env.globals.update(method_page=method_page, setting_page=setting_page, entry_anchor=entry_anchor)
    return env


def _md(value) -> str:
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
    return "".join("\\" + c if c in "\\`*_{}[]|~" else c for c in text)


def _safe_url(value) -> str | None:
    text = str(value or "")
    return text if text.startswith(("https://", "http://")) else None


def render_page(template: str, **context) -> str:
    try:
        return _environment().get_template(template).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise BenchError(f"leaderboard template {exc.name} is missing from {template_dir()}") from None


def write_site(lb: Leaderboard, out: Path, db: str, suite: str | None) -> list[Path]:
    """Write the static site into ``out``; returns the files written (index.html last)."""
    prepare_out_dir(out)
    common = {"lb": lb, "db": db, "suite": suite, "metric": lb.metric,
              "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "n_runs": len(lb.data.runs), "suites": sorted(lb.data.runs["suite"].unique().tolist()),
              "lb_parquet": has_parquet()}
    written = write_downloads(lb, out, {"leaderboard.csv": render_csv(lb), "leaderboard.json": render_json(lb)})
    views = [board_view(b, lb.metric.name, f"setting-{i + 1}") for i, b in enumerate(lb.boards)]
    for board, view in zip(lb.boards, views):
        figures = [(e, classwise_figure(e.classwise)) for e in board.entries[:6]]
        path = out / setting_page(board.setting)
        write_output(path, render_page("leaderboard_setting.html", board=board, view=view, figures=figures,
                                       title=f"{board.setting.title} · bench leaderboard", **common))
        written.append(path)
    by_method: dict[str, list[Entry]] = {}
    for entry in lb.entries():
        by_method.setdefault(entry.method, []).append(entry)
    guard_details = _guard_details(lb)
    columns = {c: lb.data.runs[c].tolist() for c in PROVENANCE}
    records = {run_id: {c: columns[c][i] for c in PROVENANCE}
               for i, run_id in enumerate(lb.data.runs.index.tolist())}
    for method, entries in sorted(by_method.items()):
        columns = [Column("setting", "Setting", numeric=False)] + [
            c for c in board_columns(_union_board(entries), generic=True) if c.key not in ("hosts",)]
        view = TableView("method-settings", f"{method}: every setting it ran", columns)
        for entry in entries:
            view.rows.append(entry_cells(entry, columns, lb.metric.name, link_setting=True, card=False))
            view.row_ids.append("row-" + entry_anchor(entry))
        sections = [{"entry": e, "figure": classwise_figure(e.classwise), "config": _config_text(lb, e),
                     "provenance": _provenance(lb, e, records), "guards": guard_details.get(id(e), [])}
                    for e in entries]
        path = out / method_page(method)
        write_output(path, render_page("leaderboard_method.html", method=method, card=_card(entries[0].card),
                                       view=view, sections=sections, title=f"{method} · bench leaderboard",
                                       **common))
        written.append(path)
    path = out / FORMATS["html"]
    write_output(path, render_page("leaderboard_index.html", views=views, overall=overall_view(lb),
                                   title="bench leaderboard", **common))
    written.append(path)
    return written


def _card(card: dict | None) -> dict:
    return {"paper": None, "venue": None, "year": None, "repository": None, **(card or {})}


def _union_board(entries: list[Entry]) -> Board:
    """A board over one method's rows in every setting (for its column set)."""
    return Board(entries[0].setting, entries)


def _config_text(lb: Leaderboard, entry: Entry) -> str:
    config = dict(lb.data.runs.at[entry.run_ids[0], "config"])
    config.pop("seed", None)
    return json.dumps(config, indent=2, sort_keys=True, default=str)


def _provenance(lb: Leaderboard, entry: Entry, records: dict[int, dict], limit: int = 40) -> dict:
    mine = [records[i] for i in entry.run_ids]
    versions = next((r["versions_json"] for r in mine if isinstance(r["versions_json"], str)), None)
    listed = sorted(mine, key=lambda r: (r["seed"], r["cell_hash"]))[:limit]
    return {
        "hosts": dict(entry.hosts), "devices": dict(entry.devices),
        "commits": sorted({str(r["git_commit"]) for r in mine if isinstance(r["git_commit"], str)}),
        "subsets": sorted({str(r["subset_hash"]) for r in mine if isinstance(r["subset_hash"], str)})[:10],
        "versions": _json_dict(versions),
        "suites": sorted({str(r["suite"]) for r in mine}),
        "runs": [{"cell_hash": r["cell_hash"], "seed": int(r["seed"]), "host": _text(r["host"]),
                  "device": _text(r["device"]), "finished": _text(r["finished_at"]), "wall": r["wall_seconds"],
                  "speed": r["images_per_second"]} for r in listed],
        "more": max(0, len(mine) - limit),
    }


PROVENANCE = ["cell_hash", "seed", "suite", "host", "device", "git_commit", "subset_hash", "versions_json",
              "finished_at", "wall_seconds", "images_per_second"]


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _json_dict(text) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _guard_details(lb: Leaderboard) -> dict[int, list[dict]]:
    guards = lb.data.guards
    if guards.empty:
        return {}
    flagged = guards[guards["flagged"]]
    by_run: dict[int, list[dict]] = {}
    for rec in flagged.itertuples():
        by_run.setdefault(int(rec.run_id), []).append({
            "cell_hash": rec.cell_hash, "seed": int(rec.seed), "name": rec.name, "value": float(rec.value),
            "threshold": float(rec.threshold), "detail": rec.detail})
    return {id(e): [g for i in e.run_ids for g in by_run.get(i, [])] for e in lb.entries()}
