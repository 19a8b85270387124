"""``bench leaderboard``: ranked tables per setting and an overall ranking (:mod:`bench.analysis.leaderboard`),
as a static HTML site, Markdown, CSV or JSON (:mod:`bench.report.leaderboard_render`)."""

from __future__ import annotations

import click

from bench.cli.common import config_option, db_option, load_settings

FORMATS = ("html", "md", "csv", "json")


@click.command("leaderboard")
@click.option("--suite", metavar="NAME", default=None, help="Rank this suite's runs only (default: every suite).")
@click.option("--metric", metavar="M", default="worst_under", show_default=True,
              help="Ranking column, e.g. worst_under, robust_under, aa_overall, clean_under, device_hours.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="html", show_default=True,
              help="html: a static site in --out; md, csv, json: one file in --out, or standard output.")
@click.option("--out", "out", metavar="DIR", type=click.Path(file_okay=False), default=None,
              help="Output folder (html default: out/leaderboard).")
@click.option("--no-reference", "no_reference", is_flag=True, help="Leave out the SRAT paper's published values.")
@db_option
@config_option
def leaderboard_command(suite, metric, fmt, out, no_reference, db, config) -> None:
    """Rank methods per setting (dataset × imbalance × threat model) by worst-case robust accuracy on the
    under-represented classes (ties: overall), with an overall ranking by mean rank. Example:

    \b
        bench leaderboard --out site          # then open site/index.html
        bench leaderboard --format md --metric robust_under
    """
    import time
    from pathlib import Path

    from bench.analysis.leaderboard import check_metric, make_leaderboard
    from bench.io import write_output
    from bench.report.leaderboard_render import FORMATS as FILES
    from bench.report.leaderboard_render import render_csv, render_json, render_md, write_site
    from bench.report.reference import Reference
    from bench.results.store import hide_password

    check_metric(metric)  # before the database is read
    url = db or load_settings(config).db
    clock = time.perf_counter()
    lb = make_leaderboard(url, suite, metric, None if no_reference else Reference.load())
    if fmt == "html":
        folder = Path(out) if out is not None else Path("out/leaderboard")
        written = write_site(lb, folder, hide_password(url), suite)
        pages = sum(1 for p in written if p.suffix == ".html")
        click.echo(f"wrote {folder / FILES['html']} ({len(lb.boards)} settings, {len(lb.overall)} ranked rows, "
                   f"{pages} pages, {len(written) - pages} downloads) in {time.perf_counter() - clock:.1f} s")
        return
    text = {"md": render_md, "csv": render_csv, "json": render_json}[fmt](lb)
    if out is None:
        click.echo(text, nl=False)
        return
    path = Path(out) / FILES[fmt]
    write_output(path, text)
    click.echo(f"wrote {path} ({len(lb.boards)} settings, {len(lb.overall)} ranked rows)")
