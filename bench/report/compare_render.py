"""``bench compare``'s outputs: the :class:`~bench.analysis.comparison.Comparison` as a terminal table (rich),
plain text, Markdown, CSV, JSON or a self-contained HTML page, and :func:`write_compare`.

Every human-readable format prints the same strings (:func:`metric_table`, :func:`class_tables`, the ``fmt_*``
helpers); CSV and JSON carry the unrounded numbers (:func:`to_records`). The HTML page is the template
``compare.html`` beside the report's templates, loaded from the same folder and in the same way
(:func:`bench.report.resources.template_loader`, jinja2 with autoescape, so every name is escaped). Files are
written with :func:`bench.io.write_output` (atomic; a failure is one ``cannot write PATH: reason`` line).

It lives in the report room, not beside the statistics: it is about how numbers look on a page, like the
report's renderers, and only the command (and the report, which may link to a comparison page) needs it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import jinja2

from bench.analysis.comparison import ClassRow, Comparison, PairGroup
from bench.analysis.paired import PairedDifference
from bench.compare import FORMATS, PAIR_KEYS, SUFFIX_FORMATS
from bench.errors import unknown
from bench.io import write_output
from bench.report.resources import template_loader

TEMPLATE = "compare.html"


# -- formatting ------------------------------------------------------------------------------------------------


def fmt_pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


def fmt_diff(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2f}"


def fmt_ci(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def fmt_wtl(d: PairedDifference) -> str:
    return f"{d.wins}/{d.ties}/{d.losses}"


def _varying(comparison: Comparison) -> list[str]:
    """Pairing keys shown as columns: dataset and imbalance always, the others when they vary."""
    cells = {r.cell for r in comparison.rows} | {n.cell for n in comparison.notes if n.cell}
    shown = []
    for key in PAIR_KEYS:
        if key in ("dataset", "imbalance") or len({getattr(c, key) for c in cells}) > 1:
            shown.append(key)
    return shown


def _constant_line(comparison: Comparison) -> str:
    cells = {r.cell for r in comparison.rows} | {n.cell for n in comparison.notes if n.cell}
    parts = []
    for key in ("suite", "model", "adversarial"):
        values = {getattr(c, key) for c in cells}
        if len(values) == 1:
            value = values.pop()
            parts.append(("adversarial training" if value else "standard training") if key == "adversarial"
                         else f"{key} {value}")
    return ", ".join(parts)


def _cell_values(cell: PairGroup, keys: Sequence[str]) -> list[str]:
    return [("adv" if cell.adversarial else "std") if k == "adversarial" else str(getattr(cell, k)) for k in keys]


_HEAD = {"suite": "Suite", "dataset": "Dataset", "imbalance": "Imbalance", "model": "Model", "adversarial": "Training"}


def metric_table(comparison: Comparison, metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of one metric's table (the same strings in every human-readable format)."""
    keys = _varying(comparison)
    head = [_HEAD[k] for k in keys] + [
        "n", comparison.a, comparison.b, "Δ A−B", f"{comparison.confidence:.0%} CI", "p t-test (Holm)",
        "p Wilcoxon (Holm)", "W/T/L", "A vs B",
    ]
    body = []
    for r in comparison.rows_for(metric):
        d = r.diff
        body.append(_cell_values(r.cell, keys) + [
            str(d.n), fmt_pct(d.mean_a), fmt_pct(d.mean_b), fmt_diff(d.mean), fmt_ci(d.ci_low, d.ci_high),
            fmt_p(r.t_p_holm), fmt_p(r.wilcoxon_p_holm), fmt_wtl(d), r.verdict,
        ])
    return head, body


def class_tables(comparison: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per cell × attack kind of the per-class differences."""
    if not comparison.class_rows:
        return []
    out = []
    groups: dict[tuple[PairGroup, str], list[ClassRow]] = {}
    for r in comparison.class_rows:
        groups.setdefault((r.cell, r.kind), []).append(r)
    head = ["Class", "Group", "Train", "n", comparison.a, comparison.b, "Δ A−B", f"{comparison.confidence:.0%} CI",
            "W/T/L"]
    for (cell, kind), rows in groups.items():
        title = f"Per class, {kind} accuracy ({rows[0].attack}): {cell.describe()}"
        body = [[f"{r.class_index} {r.class_name}" if r.class_name != str(r.class_index) else r.class_name,
                 r.group, str(r.n_train), str(r.diff.n), fmt_pct(r.diff.mean_a), fmt_pct(r.diff.mean_b),
                 fmt_diff(r.diff.mean), fmt_ci(r.diff.ci_low, r.diff.ci_high), fmt_wtl(r.diff)] for r in rows]
        out.append((title, head, body))
    return out


def _metric_title(comparison: Comparison, metric: str) -> str:
    labels = sorted({r.attack for r in comparison.rows_for(metric)})
    return f"{metric} (attack: {', '.join(labels)})" if metric.startswith("robust") and labels else metric


def _note_lines(comparison: Comparison) -> list[str]:
    return [f"{n.cell.describe()}: {n.message}" if n.cell else n.message for n in comparison.notes]


def _title(comparison: Comparison) -> str:
    return f"bench compare: {comparison.a} (A) vs {comparison.b} (B)"


# -- renderers -------------------------------------------------------------------------------------------------


def table_renderables(comparison: Comparison) -> list:
    """rich renderables of the comparison (for a terminal)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out: list = [Text(_title(comparison), style="bold"), Text(comparison.method_line()),
                 Text(comparison.attack_line() + (f"; {_constant_line(comparison)}" if _constant_line(comparison) else ""))]
    for metric in comparison.metrics:
        head, body = metric_table(comparison, metric)
        table = Table(title=_metric_title(comparison, metric), box=box.SIMPLE_HEAD, title_justify="left")
        n_keys = len(head) - 9
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i < n_keys else "right", no_wrap=True)
        for row in body:
            style = {"better": "green", "worse": "red"}.get(row[-1])
            table.add_row(*row, style=style)
        if not body:
            table.add_row(*(["—"] * len(head)))
        out.append(table)
    for title, head, body in class_tables(comparison):
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
        for row in body:
            table.add_row(*row)
        out.append(table)
    out.append(Text(f"Summary (alpha {comparison.alpha:g}, Holm-corrected paired t-test)", style="bold"))
    out.extend(Text(line) for line in comparison.summary_lines())
    if comparison.notes:
        out.append(Text("Not compared (unpaired or missing)", style="bold yellow"))
        out.extend(Text(f"- {line}") for line in _note_lines(comparison))
    return out


def render_text(comparison: Comparison, width: int = 160) -> str:
    """The terminal tables as plain text (no colour codes), e.g. for ``--out compare.txt``."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    for item in table_renderables(comparison):
        console.print(item)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return lines


def render_markdown(comparison: Comparison) -> str:
    lines = [f"# {_md_cell(_title(comparison))}", "", _md_cell(comparison.method_line()), "",
             _md_cell(comparison.attack_line() + (f"; {_constant_line(comparison)}" if _constant_line(comparison) else "")), ""]
    for metric in comparison.metrics:
        head, body = metric_table(comparison, metric)
        lines += [f"## {_md_cell(_metric_title(comparison, metric))}", ""]
        lines += _md_table(head, body, len(head) - 9) if body else ["No cell compared."]
        lines.append("")
    for title, head, body in class_tables(comparison):
        lines += [f"### {_md_cell(title)}", ""] + _md_table(head, body, 2) + [""]
    lines += [f"## Summary (alpha {comparison.alpha:g}, Holm-corrected paired t-test)", ""] + [f"- {_md_cell(s)}" for s in comparison.summary_lines()] + [""]
    if comparison.notes:
        lines += ["## Not compared (unpaired or missing)", ""] + [f"- {_md_cell(s)}" for s in _note_lines(comparison)]
        lines.append("")
    return "\n".join(lines)


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _cell_dict(cell: PairGroup | None) -> dict:
    return asdict(cell) if cell else {k: None for k in PAIR_KEYS}


def _diff_dict(d: PairedDifference, tests: bool = True) -> dict:
    out = {k: _num(v) for k, v in asdict(d).items()}
    if not tests:
        out.pop("t_p")
        out.pop("wilcoxon_p")
    return out


def to_records(comparison: Comparison) -> dict:
    """The comparison as plain data (what the JSON output holds); accuracies in percent, NaN as None."""
    return {
        "a": comparison.a,
        "b": comparison.b,
        "metrics": list(comparison.metrics),
        "attack": comparison.attack,
        "alpha": comparison.alpha,
        "confidence": comparison.confidence,
        "units": "percent; differences are A - B in percentage points",
        "correction": "Holm, across the cells compared, per metric (t-test and Wilcoxon separately)",
        "verdict_rule": "better/worse when the Holm-corrected paired t-test p-value < alpha",
        "rows": [
            {**_cell_dict(r.cell), "metric": r.metric, "attack": r.attack, "seeds": list(r.seeds),
             **_diff_dict(r.diff), "t_p_holm": _num(r.t_p_holm), "wilcoxon_p_holm": _num(r.wilcoxon_p_holm),
             "verdict": r.verdict}
            for r in comparison.rows
        ],
        "per_class": None if comparison.class_rows is None else [
            {**_cell_dict(r.cell), "kind": r.kind, "attack": r.attack, "class_index": r.class_index,
             "class_name": r.class_name, "group": r.group, "n_train": r.n_train, "seeds": list(r.seeds),
             **_diff_dict(r.diff, tests=False)}
            for r in comparison.class_rows
        ],
        "summary": comparison.summary(),
        "notes": [{**_cell_dict(n.cell), "message": n.message} for n in comparison.notes],
    }


def render_json(comparison: Comparison) -> str:
    return json.dumps(to_records(comparison), indent=2, allow_nan=False) + "\n"


CSV_COLUMNS = [
    "row", *PAIR_KEYS, "metric", "attack", "class_index", "class_name", "group", "n_train", "seeds", "n",
    "mean_a", "mean_b", "mean", "sd", "ci_low", "ci_high", "t_p", "t_p_holm", "wilcoxon_p", "wilcoxon_p_holm",
    "wins", "ties", "losses", "verdict", "message",
]


def render_csv(comparison: Comparison) -> str:
    """One tidy table: ``row`` is ``metric`` (a cell × metric), ``class`` (per-class) or ``note``.

    Accuracies in percent, differences A − B; ``t_p_holm``/``wilcoxon_p_holm`` are Holm-corrected across cells
    per metric. Numbers are written unrounded.
    """
    records = to_records(comparison)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()

    def clean(rec: dict) -> dict:
        rec = {k: ("" if v is None else v) for k, v in rec.items()}
        if "seeds" in rec:
            rec["seeds"] = " ".join(str(s) for s in rec["seeds"])
        return rec

    for rec in records["rows"]:
        writer.writerow(clean({"row": "metric", **rec}))
    for rec in records["per_class"] or ():
        writer.writerow(clean({"row": "class", "metric": f"{rec['kind']}_class", **rec}))
    for rec in records["notes"]:
        writer.writerow(clean({"row": "note", **rec}))
    return buffer.getvalue()


def _html_template() -> jinja2.Template:
    """``compare.html``; unlike the report's templates, blocks keep their whitespace (as the page always had)."""
    env = jinja2.Environment(loader=template_loader(), autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE)


def render_compare_html(comparison: Comparison, title: str | None = None) -> str:
    """A self-contained HTML page (inline CSS, no external resources); every string is escaped.

    The report can write it next to its own pages (see :func:`write_compare`) and link to it.
    """
    tables = []
    for metric in comparison.metrics:
        head, body = metric_table(comparison, metric)
        tables.append({"metric": metric, "title": _metric_title(comparison, metric), "head": head, "body": body,
                       "n_keys": len(head) - 9})
    constant = _constant_line(comparison)
    return _html_template().render(
        title=title or _title(comparison),
        method_line=comparison.method_line(),
        attack_line=comparison.attack_line() + (f"; {constant}" if constant else ""),
        metric_tables=tables,
        class_tables=class_tables(comparison),
        summary=comparison.summary_lines(),
        notes=_note_lines(comparison),
        alpha=f"{comparison.alpha:g}",
    )


RENDERERS = {"table": render_text, "md": render_markdown, "csv": render_csv, "json": render_json,
             "html": render_compare_html}


def render(comparison: Comparison, fmt: str = "table") -> str:
    """The comparison in one of :data:`FORMATS`."""
    if fmt not in RENDERERS:
        raise unknown("format", fmt, FORMATS)
    return RENDERERS[fmt](comparison)


def format_for(path: Path | None, fmt: str | None) -> str:
    """The explicit format, else the one ``path``'s suffix names, else the terminal table."""
    if fmt:
        return fmt
    if path is not None:
        return SUFFIX_FORMATS.get(path.suffix.lower(), "table")
    return "table"


def write_compare(comparison: Comparison, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Render and write atomically; the format follows ``fmt`` or the file suffix. Returns the path."""
    path = Path(path)
    write_output(path, render(comparison, format_for(path, fmt)))
    return path
