"""Section 3's evaluated grid (:mod:`bench.analysis.theory`) as an HTML table fragment, Markdown or CSV."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from bench.errors import BenchError, valid_choices
from bench.report.render import md_escape
from bench.report.resources import template_loader

FORMATS = ("html", "md", "csv")
SUMMARY_COLUMNS = (
    "d", "eta", "sigma", "K", "rho", "eps", "numeric_bias", "closed_form_bias", "monte_carlo_bias",
    "monte_carlo_tolerance", "agrees_with_paper", "adv_err_minority", "adv_err_majority", "nat_err_minority",
    "nat_err_majority", "thm31_numeric", "thm32_numeric", "thm31_closed_form", "thm32_closed_form", "verdict",
)


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def render_theory(frame: pd.DataFrame, fmt: str, columns: Sequence[str] | None = None) -> str:
    """The frame as an HTML table fragment (autoescaped), a Markdown table or CSV.

    ``columns`` defaults to SUMMARY_COLUMNS (those present) for html and md and to every column for csv; numbers
    are printed with 4 significant digits in html and md, in full in csv.
    """
    if fmt not in FORMATS:
        raise BenchError(f"unknown format {fmt!r}{valid_choices(fmt, FORMATS)}")
    if columns is None:
        columns = list(frame.columns) if fmt == "csv" else [c for c in SUMMARY_COLUMNS if c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BenchError(f"unknown column(s) {', '.join(map(repr, missing))}; valid: {', '.join(frame.columns)}")
    if fmt == "csv":
        return frame.loc[:, list(columns)].to_csv(index=False)
    rows = [[_cell(v) for v in record] for record in frame.loc[:, list(columns)].itertuples(index=False)]
    if fmt == "html":
        env = jinja2.Environment(loader=template_loader(), autoescape=True, undefined=jinja2.StrictUndefined)
        return env.get_template("theory_table.html").render(columns=list(columns), rows=rows)

    lines = ["| " + " | ".join(md_escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
