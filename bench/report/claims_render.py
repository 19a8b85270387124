"""The claims in every format ``bench claims`` writes: a terminal table (rich), Markdown, JSON and HTML.

:func:`render_claims` is the one entry point (``fmt`` one of :data:`FORMATS`); :func:`to_records` is the plain
data the JSON holds (every field of every claim); :func:`render_html` gives a standalone page or, with
``standalone=False``, a fragment (one ``<section>``) for the report. Every string is escaped (jinja2 autoescape
for HTML, pipes and backslashes for Markdown).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Sequence

import jinja2

from bench.analysis.claims_core import ALPHA, CONFIDENCE, MIN_PAIRS, ClaimResult, ClaimTest
from bench.analysis.claims_theory import LEMMA_SHARE
from bench.errors import unknown
from bench.report.resources import template_loader

FORMATS = ("table", "md", "json", "html")
SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".json": "json", ".html": "html", ".htm": "html", ".txt": "table"}
RUNS_SHOWN = 6  # cell hashes listed per claim in the terminal table (JSON, Markdown and HTML list all)
TITLE = "bench claims: the SRAT paper's claims, checked from the results database"
RULE = (f"Each effect is oriented so that the paper claims it is > 0. Verdict: fewer than {MIN_PAIRS} pairs -> "
        f"inconclusive; Holm-adjusted two-sided paired t-test p < {ALPHA:g} (Holm across the claims' headline tests) "
        f"-> supported if the effect is > 0, not supported if < 0; otherwise not supported when the "
        f"{CONFIDENCE:.0%} t interval holds no positive value, else inconclusive. C5 is deterministic: supported "
        f"when at least {LEMMA_SHARE:.0%} of the theory grid points agree. Breakdown rows are Holm-corrected within "
        "their claim.")


def _num(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def _test_record(test: ClaimTest) -> dict:
    out = {k: _num(v) for k, v in dataclasses.asdict(test).items()}
    out["seeds"] = list(test.seeds)
    out["runs"] = list(test.runs)
    for key in ("effect", "mean_a", "mean_b", "ci_low", "ci_high", "sd"):
        if isinstance(out[key], float) and math.isinf(out[key]):
            out[key] = None
    return out


def to_records(claims: Sequence[ClaimResult]) -> dict:
    """Everything about the claims as plain data (NaN as null)."""
    return {
        "alpha": ALPHA, "confidence": CONFIDENCE, "min_pairs": MIN_PAIRS, "lemma_share": LEMMA_SHARE,
        "verdict_rule": RULE,
        "claims": [{
            "id": c.id, "source": c.spec.source, "statement": c.spec.statement, "effect_definition": c.spec.effect,
            "a": c.spec.a, "b": c.spec.b, "unit": c.spec.unit, "suites": list(c.spec.suites),
            "verdict": c.verdict, "reason": c.overall.reason, "missing": c.missing,
            "used_suites": list(c.used_suites),
            "overall": _test_record(c.overall), "breakdown": [_test_record(t) for t in c.breakdown],
            "notes": list(c.notes),
        } for c in claims],
    }


def render_json(claims: Sequence[ClaimResult]) -> str:
    return json.dumps(to_records(claims), indent=2, allow_nan=False) + "\n"


# -- the strings every human-readable format shows -----------------------------------------------------------------


def _decimals(claim: ClaimResult) -> int:
    return 3 if claim.spec.unit == "ln ratio" else 2


def fmt_effect(claim: ClaimResult, test: ClaimTest) -> str:
    if test.n == 0 or math.isnan(test.effect):
        return "n/a"
    if claim.id == "C5":
        return f"{test.effect:.1f}% ({int(test.mean_a)}/{int(test.mean_b)})"
    return f"{test.effect:+.{_decimals(claim)}f}"


def fmt_ci(claim: ClaimResult, test: ClaimTest) -> str:
    if math.isnan(test.ci_low):
        return "n/a"
    k = _decimals(claim)
    return f"[{test.ci_low:+.{k}f}, {test.ci_high:+.{k}f}]"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def fmt_value(claim: ClaimResult, x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{_decimals(claim)}f}"


def _seeds(test: ClaimTest) -> str:
    return ",".join(str(s) for s in test.seeds) or "—"


def summary_table(claims: Sequence[ClaimResult]) -> tuple[list[str], list[list[str]]]:
    head = ["Claim", "Paper", "Verdict", "Effect", "Unit", f"{CONFIDENCE:.0%} CI", "p (Holm)", "n", "Seeds", "Runs"]
    body = [[c.id, c.spec.source, c.verdict, fmt_effect(c, c.overall), c.spec.unit, fmt_ci(c, c.overall),
             fmt_p(c.overall.p_holm), str(c.overall.n), _seeds(c.overall), str(len(c.overall.runs))] for c in claims]
    return head, body


def breakdown_table(claim: ClaimResult) -> tuple[list[str], list[list[str]]]:
    if claim.id == "C5":
        head = ["Grid points", "n", "Agree", "Share", "Verdict"]
        body = [[t.label, str(t.n), str(int(t.mean_a)), f"{t.effect:.1f}%", t.verdict] for t in claim.breakdown]
        return head, body
    head = ["Group", "n", "Seeds", f"mean {claim.spec.a}", f"mean {claim.spec.b}", "Effect", f"{CONFIDENCE:.0%} CI",
            "p (Holm in claim)", "Verdict"]
    body = [[t.label, str(t.n), _seeds(t), fmt_value(claim, t.mean_a), fmt_value(claim, t.mean_b),
             fmt_effect(claim, t), fmt_ci(claim, t), fmt_p(t.p_holm), t.verdict] for t in claim.breakdown]
    return head, body


def detail_lines(claim: ClaimResult) -> list[str]:
    """The lines under a claim's heading: statement, effect, verdict's reason, data source."""
    o = claim.overall
    claimed = "" if claim.id == "C5" else "; claimed > 0"
    lines = [f"Claim: {claim.spec.statement}", f"Effect: {claim.spec.effect} ({claim.spec.unit}){claimed}."]
    if claim.id != "C5" and o.n:
        lines.append(f"Means over {o.n} pair(s): {claim.spec.a} {fmt_value(claim, o.mean_a)}, {claim.spec.b} "
                     f"{fmt_value(claim, o.mean_b)}; raw p {fmt_p(o.p)}, Holm-adjusted {fmt_p(o.p_holm)}.")
    lines.append(f"Verdict: {claim.verdict}: {o.reason}.")
    if claim.missing is None:
        lines.append(f"Runs from suite(s): {', '.join(claim.used_suites) or 'n/a'}; the suites that produce this "
                     f"claim's data: {', '.join(claim.spec.suites)}.")
    return lines


def _runs_line(test: ClaimTest, limit: int | None) -> str:
    shown = test.runs if limit is None else test.runs[:limit]
    more = "" if limit is None or len(test.runs) <= limit else f", … ({len(test.runs)} in all; --format json lists all)"
    return f"Runs used ({len(test.runs)}): {', '.join(shown)}{more}" if test.runs else "Runs used: none"


# -- terminal -------------------------------------------------------------------------------------------------------


def table_renderables(claims: Sequence[ClaimResult]) -> list:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    styles = {"supported": "green", "not supported": "red"}
    out: list = [Text(TITLE, style="bold"), Text(RULE)]
    head, body = summary_table(claims)
    table = Table(box=box.SIMPLE_HEAD)
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i < 3 or h in ("Unit", "Seeds") else "right", no_wrap=i < 3)
    for row in body:
        table.add_row(*(Text(c) for c in row), style=styles.get(row[2]))  # Text: "[suite]" is not rich markup
    out.append(table)
    for claim in claims:
        out.append(Text(f"{claim.id} ({claim.spec.source}): {claim.verdict}", style=f"bold {styles.get(claim.verdict, '')}".strip()))
        out.extend(Text(line) for line in detail_lines(claim))
        head, body = breakdown_table(claim)
        if body:
            sub = Table(box=box.SIMPLE_HEAD)
            for i, h in enumerate(head):
                sub.add_column(h, justify="left" if i == 0 or h in ("Seeds", "Verdict") else "right")
            for row in body:
                sub.add_row(*(Text(c) for c in row))
            out.append(sub)
        out.append(Text(_runs_line(claim.overall, RUNS_SHOWN)))
        out.extend(Text(f"- {n}", style="yellow") for n in claim.notes)
        out.append(Text(""))
    return out


def render_text(claims: Sequence[ClaimResult], width: int = 160) -> str:
    """The terminal output as plain text (no colour codes)."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    for item in table_renderables(claims):
        console.print(item)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


# -- Markdown -------------------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    return (["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(_md(c) for c in row) + " |" for row in body])


def render_markdown(claims: Sequence[ClaimResult], level: int = 1) -> str:
    """Markdown; ``level`` is the heading level of the title (the report nests it deeper)."""
    h = "#" * level
    lines = [f"{h} {_md(TITLE)}", "", _md(RULE), ""]
    lines += _md_table(*summary_table(claims)) + [""]
    for claim in claims:
        lines += [f"{h}# {_md(claim.id)} ({_md(claim.spec.source)}): {_md(claim.verdict)}", ""]
        lines += [f"- {_md(line)}" for line in detail_lines(claim)] + [""]
        head, body = breakdown_table(claim)
        if body:
            lines += _md_table(head, body) + [""]
        lines += [_md(_runs_line(claim.overall, None)), ""]
        if claim.notes:
            lines += [f"- {_md(n)}" for n in claim.notes] + [""]
    return "\n".join(lines)


# -- HTML -----------------------------------------------------------------------------------------------------------

_ENV = jinja2.Environment(loader=template_loader(), autoescape=True, undefined=jinja2.StrictUndefined)


def render_html(claims: Sequence[ClaimResult], standalone: bool = True) -> str:
    """A self-contained page, or (``standalone=False``) the ``<section>`` alone for the report."""
    summary_head, summary_body = summary_table(claims)
    items = []
    for claim in claims:
        head, body = breakdown_table(claim)
        items.append({"id": claim.id, "source": claim.spec.source, "verdict": claim.verdict,
                      "lines": detail_lines(claim), "head": head, "body": body, "runs": list(claim.overall.runs),
                      "notes": list(claim.notes)})
    context = {"title": TITLE, "rule": RULE, "summary_head": summary_head, "summary_body": summary_body,
               "claims": items}
    return _ENV.get_template("claims.html" if standalone else "claims_section.html").render(**context)


RENDERERS = {"table": render_text, "md": render_markdown, "json": render_json, "html": render_html}


def render_claims(claims: Sequence[ClaimResult], fmt: str = "table") -> str:
    """The claims in one of :data:`FORMATS` (``table`` is plain text without colour)."""
    if fmt not in RENDERERS:
        raise unknown("format", fmt, FORMATS)
    return RENDERERS[fmt](claims)


def format_for(path, fmt: str | None) -> str:
    """The explicit format, else the one the output file's suffix names, else the terminal table."""
    if fmt:
        return fmt
    if path is not None:
        from pathlib import Path

        return SUFFIX_FORMATS.get(Path(path).suffix.lower(), "table")
    return "table"
