"""``bench report``: paper-style tables and figures from a results database (:mod:`bench.report`)."""

from __future__ import annotations

import click

from bench.report.options import FORMATS, GROUP_SETS


@click.command("report")
@click.option("--db", "db", metavar="URL", default=None,
              help="Results database (SQLAlchemy URL); default: bench.toml's [bench] db.")
@click.option("--suite", metavar="NAME", default=None, help="Report this suite only (default: every suite).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="html", show_default=True,
              help="Output format; every format carries the same numbers (CSV: numbers only, no figures).")
@click.option("--out", "out", metavar="DIR", type=click.Path(file_okay=False), default=None,
              help="Output folder; default: bench.toml's [bench] out_dir.")
@click.option("--groups", type=click.Choice(list(GROUP_SETS)), default="overall-under", show_default=True,
              help="Class groups per accuracy: overall and under-represented, or all (adds well-represented).")
@click.option("--no-reference", "no_reference", is_flag=True,
              help="Hide the SRAT paper's published values and our difference to them.")
def report_command(db: str | None, suite: str | None, fmt: str, out: str | None, groups: str,
                   no_reference: bool) -> None:
    """Paper-style tables (mean ± std over seeds, bold best, underlined SRAT wins) and figures.

    One table per (suite, dataset, imbalance, training mode); runs still running, failed or diverged are listed
    as such, never as numbers. Example:

    \b
        bench report --suite cifar10_full --format html --out out/report
    """
    from bench.report.build import make_report  # here, so --help does not load pandas, matplotlib or torch

    result = make_report(db=db, suite=suite, fmt=fmt, out=out, groups=groups, reference=not no_reference)
    figures = f", {len(result.figures)} figures (PNG + PDF)" if result.figures else ""
    click.echo(f"wrote {result.path} ({len(result.tables)} tables{figures})")
