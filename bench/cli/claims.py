"""``bench claims``: the SRAT paper's claims, each with a verdict from the database (:mod:`bench.analysis.claims`)."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.common import config_option, db_option, load_settings

FORMATS = ("table", "md", "json", "html")  # bench.report.claims_render.FORMATS, kept here so --help stays light


@click.command("claims")
@click.option("--suite", metavar="NAME", default=None, help="Only the runs (and theory grid) of this suite.")
@db_option
@config_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: a terminal table, or the --out file's suffix).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (atomically) instead of the terminal.")
def claims_command(suite, db, config, fmt, out) -> None:
    """Check the paper's claims C1-C6 against the stored runs: a verdict (supported / not supported /
    inconclusive) for each, with the effect, its 95% interval, a Holm-corrected paired test, the seeds and the
    runs used. A claim without data names the suite that produces it (docs/claims.md defines every claim).
    """
    from bench.analysis.claims import claims_section
    from bench.report.claims_render import format_for, render_claims, table_renderables

    url = db or load_settings(config).db
    claims = claims_section(url, suite=suite)
    fmt = format_for(out, fmt)
    if out is not None:
        from bench.io import write_output

        write_output(out, render_claims(claims, fmt))
        click.echo(f"wrote {out}")
        for claim in claims:
            click.echo(f"{claim.id}: {claim.verdict}")
        return
    if fmt == "table":
        from rich.console import Console

        console = Console(highlight=False)
        if not console.is_terminal:  # piped or captured: plain text wide enough not to fold the tables
            click.echo(render_claims(claims, "table"), nl=False)
            return
        for item in table_renderables(claims):
            console.print(item)
        return
    click.echo(render_claims(claims, fmt), nl=False)
