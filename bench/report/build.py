"""Making a report: read the database, build tables, draw figures, render, write (see :func:`make_report`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.errors import BenchError
from bench.io import write_output
from bench.report.drawing import Figure
from bench.report.figures import plan_figures
from bench.report.load import load_report_data
from bench.report.options import FORMATS, GROUP_SETS
from bench.report.reference import Reference
from bench.report.render import ReportContext, prepare_out_dir, render_text
from bench.report.tables import STATUS_ORDER, Table, build_tables
from bench.report.workers import FigureWorkers
from bench.results.read import has_runs
from bench.results.store import hide_password


@dataclass
class ReportResult:
    """What :func:`make_report` wrote."""

    path: Path  # the report file
    figure_paths: list[Path]
    tables: list[Table]
    figures: list[Figure]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: load, tables, figures, write


def make_report(
    db: str | None = None,
    suite: str | None = None,
    fmt: str = "html",
    out: str | os.PathLike | None = None,
    groups: str = "overall-under",
    reference: bool = True,
    workers: int | None = None,
) -> ReportResult:
    """Write the report of ``db`` (default: bench.toml's) to ``out`` (default: bench.toml's ``out_dir``).

    ``fmt``: html | md | latex | csv (CSV carries the numbers only, no figures). ``groups``: overall-under | all
    (adds the well-represented classes). ``reference``: show the paper's values and our difference.
    ``workers``: processes drawing figures (default: 2 where there are two CPUs and fork; 1 draws here). Raises
    :class:`BenchError` for anything the user can fix; nothing is written before the inputs are checked.
    """
    if fmt not in FORMATS:
        raise BenchError(f"unknown report format {fmt!r}; valid: {', '.join(FORMATS)}")
    if groups not in GROUP_SETS:
        raise BenchError(f"unknown column groups {groups!r}; valid: {', '.join(GROUP_SETS)}")
    if db is None or out is None:
        from bench.settings import load_settings

        settings = load_settings()
        db = db or settings.db
        out = out if out is not None else settings.out_dir
    out = Path(out)
    with FigureWorkers(workers if fmt != "csv" else 1) as drawer:
        return _make_report(db, suite, fmt, out, groups, reference, drawer)


def theory_sections(db: str, suite: str | None) -> list[dict]:
    """Stored Section 3 theory suites (``bench run suites/theory.toml``), rendered for the report."""
    from bench.results.read import has_theory, load_theory

    if not has_theory(db):
        return []
    items = [item for item in load_theory(db) if suite is None or item["suite"] == suite]
    if not items:
        return []
    from bench.report.theory_render import render_theory

    sections = []
    for item in items:
        frame, pairs = item["frame"], item["pairs"]
        agree = int(frame["agrees_with_paper"].sum())
        sections.append({
            "suite": item["suite"], "description": item["description"],
            "summary": f"The numeric optimum agrees with the paper's Lemma 3.1 closed form in {agree} of "
                       f"{len(frame)} grid points.",
            "html": render_theory(frame, "html"), "md": render_theory(frame, "md"),
            "pairs_html": None if pairs is None else render_theory(pairs, "html"),
            "pairs_md": None if pairs is None else render_theory(pairs, "md"),
        })
    return sections


def claims_of(db: str, suite: str | None) -> dict:
    """The Claims section: the paper's claims given verdicts from this database (``bench claims``)."""
    from bench.analysis.claims import claims_section
    from bench.report.claims_render import render_html, render_markdown

    claims = claims_section(db, suite)
    return {"html": render_html(claims, standalone=False), "md": render_markdown(claims, level=2)}


def _make_report(db: str, suite: str | None, fmt: str, out: Path, groups: str, reference: bool,
                 drawer: FigureWorkers) -> ReportResult:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    theory = theory_sections(db, suite)
    theory_only = bool(theory) and (suite is not None or not has_runs(db))
    data = None if theory_only else load_report_data(db, suite)  # empty / older / unknown-suite databases fail here
    prepare_out_dir(out)  # an unwritable folder fails here, before the work
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    claims = None if fmt in ("csv", "latex") else claims_of(db, suite)
    timings["claims"] = time.perf_counter() - clock

    clock = time.perf_counter()
    tables = [] if data is None else build_tables(data, groups, Reference.load() if reference else None)
    timings["tables"] = time.perf_counter() - clock

    clock = time.perf_counter()
    figures: list[Figure] = []
    by_table: dict = {}
    overall: list[Figure] = []
    omitted = 0
    if fmt != "csv" and data is not None:
        plan = plan_figures(data, tables)
        drawn = drawer.draw(plan.all())
        by_name = {f.name: f for f in drawn}
        by_table = {key: [by_name[s.name] for s in specs] for key, specs in plan.by_table.items()}
        overall = [by_name[s.name] for s in plan.overall]
        figures, omitted = drawn, plan.omitted
    timings["figures"] = time.perf_counter() - clock

    clock = time.perf_counter()
    counts = {} if data is None else data.runs["status"].value_counts().to_dict()
    status_counts = {s: int(counts[s]) for s in [*STATUS_ORDER, *sorted(counts)] if s in counts}
    context = ReportContext(
        title=f"bench report · {suite}" if suite else "bench report",
        db=hide_password(db),
        suite=suite,
        suites=sorted({*([] if data is None else data.runs["suite"].unique().tolist()), *(t["suite"] for t in theory)}),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        status_counts=status_counts,
        tables=tables,
        table_ids={t.key: f"table-{i + 1}" for i, t in enumerate(tables)},
        figures_by_table=by_table,
        overall_figures=overall,
        reference=reference,
        groups=groups,
        omitted_figures=omitted,
        theory=theory,
        claims=claims,
    )
    text = render_text(fmt, context)
    figure_paths = []
    for figure in figures:  # figures first: once the report file exists, everything it links to does
        for suffix, payload in ((".png", figure.png), (".pdf", figure.pdf)):
            path = out / f"{figure.name}{suffix}"
            write_output(path, payload)
            figure_paths.append(path)
    path = out / FORMATS[fmt]
    write_output(path, text)
    timings["write"] = time.perf_counter() - clock
    return ReportResult(path=path, figure_paths=figure_paths, tables=tables, figures=figures, timings=timings)
