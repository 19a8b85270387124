"""``bench report``: paper-style tables and figures from a results database.

    from bench.report import make_report
    make_report(db="sqlite:///results/bench.db", fmt="html", out="out/report")

Modules: :mod:`~bench.report.load` reads the database, :mod:`~bench.report.tables` builds the numbers,
:mod:`~bench.report.reference` holds the paper's, :mod:`~bench.report.figures` plans figures and
:mod:`~bench.report.drawing` draws them (:mod:`~bench.report.workers` in parallel), :mod:`~bench.report.render`
turns it all into HTML / Markdown / LaTeX / CSV, :mod:`~bench.report.build` runs them in order and writes the
files (:func:`bench.io.write_output`); the command is :mod:`bench.cli.report`. ``bench compare``'s outputs are
rendered here too (:mod:`~bench.report.compare_render`). Templates and the paper's CSV: one copy, in
``bench/report/resources/`` (the repository's ``reports`` links to it; :mod:`~bench.report.resources`).

Importing this package (or the command) is cheap: the modules that pull in pandas, matplotlib and, through the
method registry, torch load on first use, so ``bench report --help`` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.report.options import FORMATS, GROUP_SETS

if TYPE_CHECKING:
    from bench.report.build import ReportResult, make_report

__all__ = ["FORMATS", "GROUP_SETS", "ReportResult", "make_report"]


def __getattr__(name: str):
    if name in ("make_report", "ReportResult"):
        from bench.report import build

        return getattr(build, name)
    raise AttributeError(f"module 'bench.report' has no attribute {name!r}")
