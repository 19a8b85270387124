"""Turning tables and figures into the report's text: HTML, Markdown, LaTeX (jinja2 templates) and CSV.

HTML is one self-contained file (CSS inline, figures as base64 PNG) rendered with autoescape on, so every string
it did not write itself — method, suite, dataset names, notes, config values — is escaped. Markdown and LaTeX
escape the same strings with their own filters (:func:`md_escape`, :func:`tex_escape`). CSV is tidy: one line
per table row × column, with the same printed numbers as the other formats.

:mod:`~bench.report.build` writes every file with :func:`bench.io.write_output` (a temporary file in the output
folder moved into place with :func:`os.replace`), so a reader never sees half a file; the report file is written
last, after its figures.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from bench.errors import BenchError
from bench.report.drawing import Figure
from bench.report.resources import template_dir, template_loader
from bench.report.tables import GROUP_TITLES, Table, TableEntry, fmt_diff, fmt_pct

TEMPLATES = {"html": "report.html", "md": "report.md", "latex": "report.tex"}
CAPTION = ("Mean ± sample standard deviation (ddof = 1) over seeds, in percent; “–” where one seed gives no "
           "deviation. Standard: clean test set. Robust: the suite's first evaluation attack. Bold: best in its "
           "column. Underlined: an SRAT variant that beats every baseline with the same prediction loss.")


@dataclass
class ReportContext:
    """Everything the templates see."""

    title: str
    db: str  # URL with any password hidden
    suite: str | None
    suites: list[str]
    generated: str
    status_counts: dict[str, int]
    tables: list[Table]
    table_ids: dict
    figures_by_table: dict
    overall_figures: list[Figure]
    reference: bool
    groups: str
    omitted_figures: int = 0  # figures left out of a very large report (figures.MAX_FIGURES)
    theory: list = field(default_factory=list)  # Section 3 suites: {"suite", "description", "summary", "html", "md", ...}
    claims: dict | None = None  # the paper's claims checked (bench.analysis.claims): {"html", "md"}; first section
    caption: str = CAPTION


# -- escaping -----------------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]|~])")  # what can change a table cell's meaning or end it


def md_escape(value) -> str:
    """Text safe in a Markdown table cell: HTML-significant characters as entities, Markdown syntax escaped."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", text)


_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "·": r"\textperiodcentered{}", "±": r"$\pm$", "–": "--", "Δ": r"$\Delta$", "“": "``", "”": "''",
    "\n": " ",
}
_TEX_RE = re.compile("|".join(re.escape(k) for k in _TEX))


def tex_escape(value) -> str:
    """Text safe in LaTeX (text mode)."""
    return _TEX_RE.sub(lambda m: _TEX[m.group()], str(value))


# -- templates ----------------------------------------------------------------------------------------------------
def _environment(fmt: str) -> jinja2.Environment:
    loader = template_loader()
    common = {"undefined": jinja2.StrictUndefined, "trim_blocks": True, "lstrip_blocks": True,
              "keep_trailing_newline": True}
    if fmt == "html":
        env = jinja2.Environment(loader=loader, autoescape=True, **common)
    elif fmt == "latex":
        # LaTeX is made of braces: jinja's {{ }} / {% %} would collide, so this template uses << >> and <% %>.
        env = jinja2.Environment(loader=loader, autoescape=False, block_start_string="<%", block_end_string="%>",
                                 variable_start_string="<<", variable_end_string=">>", comment_start_string="<#",
                                 comment_end_string="#>", **common)
    else:
        env = jinja2.Environment(loader=loader, autoescape=False, **common)
    env.filters.update(md=md_escape, tex=tex_escape, pct=fmt_pct, diff=fmt_diff)
    env.globals.update(group_title=GROUP_TITLES)
    return env


def render_text(fmt: str, context: ReportContext) -> str:
    """The report file's text in ``fmt`` (html, md, latex or csv)."""
    if fmt == "csv":
        return render_csv(context.tables, context.reference)
    try:
        template = _environment(fmt).get_template(TEMPLATES[fmt])
    except jinja2.TemplateNotFound as exc:
        raise BenchError(f"report template {exc.name} is missing from {template_dir()}") from None
    return template.render(ctx=context)


CSV_COLUMNS = [
    "suite", "dataset", "imbalance", "adversarial", "method", "variant", "seeds", "note", "status", "accuracy",
    "attack", "attack_order", "group", "mean", "std", "n", "best", "srat_beats_baselines", "paper_mean", "paper_std",
    "difference",
]


def render_csv(tables: list[Table], reference: bool) -> str:
    """Tidy CSV: one line per table row × column; numbers as printed (percent, two decimals; empty if none).

    ``status`` is set (running, failed, …) where a row has no finished seed; ``note`` lists the row's unfinished
    runs; ``best`` and ``srat_beats_baselines`` are the bold and underline marks.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def num(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for table in tables:
        for row in table.rows:
            for group in table.column_groups:
                for column in group.columns:
                    entry: TableEntry = row.entry(column)
                    paper = reference and entry.paper_mean is not None
                    writer.writerow([
                        table.key.suite, table.key.dataset, table.key.imbalance, str(table.key.adversarial).lower(),
                        row.method, row.variant, row.n_seeds, row.note, entry.status or "", group.kind, group.attack,
                        group.attack_order, column.group, num(entry.mean),
                        num(entry.std), entry.n, int(entry.best), int(entry.srat_wins),
                        num(entry.paper_mean) if paper else "", num(entry.paper_std) if paper else "",
                        num(entry.difference) if paper else "",
                    ])
    return buffer.getvalue()


# -- the output folder ------------------------------------------------------------------------------------------------------
def prepare_out_dir(out: Path) -> None:
    """Create the output folder and prove it writable, or fail with one line before any work is done."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"output folder {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".bench-report-", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchError(f"output folder {out} cannot be written: {exc.strerror or exc}") from None
