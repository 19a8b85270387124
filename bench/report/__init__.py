"""``bench report``: paper-style tables and figures from a results database.

    from bench.report import make_report, report_command
    make_report(db="sqlite:///results/bench.db", fmt="html", out="out/report")

Modules: :mod:`~bench.report.load` reads the database, :mod:`~bench.report.tables` builds the numbers,
:mod:`~bench.report.reference` holds the paper's, :mod:`~bench.report.figures` plans and draws figures,
:mod:`~bench.report.render` writes HTML / Markdown / LaTeX / CSV, :mod:`~bench.report.cli` is the command.
Templates and the paper's CSV: ``reports/`` in a checkout, ``bench/report/resources/`` when installed
(:mod:`~bench.report.resources`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.errors import BenchError
from bench.report.figures import Figure, FigureSpec, draw, plan_figures
from bench.report.load import load_report_data
from bench.report.reference import Reference
from bench.report.render import FORMATS, ReportContext, prepare_out_dir, render_text, write_atomic
from bench.report.tables import GROUP_SETS, STATUS_ORDER, Table, build_tables

__all__ = ["FORMATS", "ReportResult", "make_report", "report_command"]


@dataclass
class ReportResult:
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
    ``workers``: processes drawing figures (default: up to 2, where fork is available). Raises
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
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    data = load_report_data(db, suite)  # empty / older / unknown-suite databases fail here
    prepare_out_dir(out)  # an unwritable folder fails here, before the work
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    tables = build_tables(data, groups, Reference.load() if reference else None)
    timings["tables"] = time.perf_counter() - clock

    clock = time.perf_counter()
    figures: list[Figure] = []
    by_table: dict = {}
    overall: list[Figure] = []
    if fmt != "csv":
        plan = plan_figures(data, tables)
        drawn = render_all(plan.all(), workers)
        by_name = {f.name: f for f in drawn}
        by_table = {key: [by_name[s.name] for s in specs] for key, specs in plan.by_table.items()}
        overall = [by_name[s.name] for s in plan.overall]
        figures = drawn
    timings["figures"] = time.perf_counter() - clock

    clock = time.perf_counter()
    counts = data.runs["status"].value_counts().to_dict()
    status_counts = {s: int(counts[s]) for s in [*STATUS_ORDER, *sorted(counts)] if s in counts}
    context = ReportContext(
        title=f"bench report · {suite}" if suite else "bench report",
        db=make_url(db).render_as_string(hide_password=True),
        suite=suite,
        suites=sorted(data.runs["suite"].unique().tolist()),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        status_counts=status_counts,
        tables=tables,
        table_ids={t.key: f"table-{i + 1}" for i, t in enumerate(tables)},
        figures_by_table=by_table,
        overall_figures=overall,
        reference=reference,
        groups=groups,
    )
    text = render_text(fmt, context)
    figure_paths = []
    for figure in figures:  # figures first: once the report file exists, everything it links to does
        for suffix, payload in ((".png", figure.png), (".pdf", figure.pdf)):
            path = out / f"{figure.name}{suffix}"
            write_atomic(path, payload)
            figure_paths.append(path)
    path = out / FORMATS[fmt]
    write_atomic(path, text)
    timings["write"] = time.perf_counter() - clock
    return ReportResult(path=path, figure_paths=figure_paths, tables=tables, figures=figures, timings=timings)


def render_all(specs: list[FigureSpec], workers: int | None = None) -> list[Figure]:
    """Draw every spec; in ``workers`` forked processes when there are enough figures to gain from it.

    Matplotlib draws ~0.1 s per panel and format, single-threaded; forked workers share the parent's imported
    modules and font cache, so two of them nearly halve figure time on two cores. Without fork (Windows, macOS
    spawn) figures are drawn in this process.
    """
    import multiprocessing

    import matplotlib.backends.backend_agg  # noqa: F401  loaded once here, inherited by forked workers
    import matplotlib.backends.backend_pdf  # noqa: F401
    import matplotlib.figure  # noqa: F401

    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(2, cpus) if len(specs) >= 4 else 1
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [draw(spec) for spec in specs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(draw, specs))


from bench.report.cli import report_command  # noqa: E402  (the command imports make_report from here)
