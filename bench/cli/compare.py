"""``bench compare A B``: a paired, per-cell comparison of two methods.

Only :mod:`bench.compare` (names, no numbers) is imported here, for the options; the command imports the
comparison (:mod:`bench.analysis.comparison`, pandas and scipy) and its renderers (:mod:`bench.report.compare_render`)
when it runs, so ``bench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.common import load_settings
from bench.compare import DEFAULT_METRICS, FORMATS, METRICS


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--db", "db", metavar="URL", default=None, help="Results database (default: bench.toml's db).")
@click.option("--suite", metavar="NAME", default=None, help="Only runs of this suite.")
@click.option("--metric", "metric", metavar="NAME", multiple=True,
              help=f"Metric(s), repeatable or comma-separated: {', '.join(METRICS)} "
                   f"(default: {','.join(DEFAULT_METRICS)}).")
@click.option("--attack", metavar="LABEL", default=None,
              help="Attack label used for robust_* (default: each run's first evaluation attack).")
@click.option("--per-class", is_flag=True, help="Also the paired difference per class, for each cell.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: a terminal table, or the --out file's suffix).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (atomically) instead of the terminal.")
def compare_command(a, b, db, suite, metric, attack, per_class, fmt, out) -> None:
    """Paired comparison of methods A and B, cell by cell, over the seeds both finished.

    Differences are A − B in percentage points with 95% t intervals; paired t-test and Wilcoxon p-values are
    Holm-corrected across the cells of each metric. Unpaired seeds and one-method cells are listed, not dropped.
    """
    from bench.analysis.comparison import compare
    from bench.report.compare_render import format_for, render, render_text, table_renderables, write_compare

    if db is None:
        db = load_settings(None).db
    comparison = compare(db, a, b, suite=suite, metrics=metric, attack=attack, per_class=per_class)
    fmt = format_for(out, fmt)
    if out is not None:
        write_compare(comparison, out, fmt)
        click.echo(f"wrote {out}")
        for line in comparison.summary_lines():
            click.echo(line)
        return
    if fmt == "table":
        from rich.console import Console

        console = Console(highlight=False)
        if not console.is_terminal:  # piped or captured: plain text wide enough not to fold the tables
            click.echo(render_text(comparison), nl=False)
            return
        for item in table_renderables(comparison):
            console.print(item)
        return
    click.echo(render(comparison, fmt), nl=False)
