"""The ``bench`` command line (click): one small module per command group, registered here explicitly.

==============  ===============================================================================================
module          commands
==============  ===============================================================================================
``run``         ``bench run`` (a suite on any executor, a theory suite, ``--dry-run``)
``results``     ``bench show``, ``bench status``, ``bench collect``
``listing``     ``bench list``
``report``      ``bench report``
``compare``     ``bench compare``
``evaluate``    ``bench evaluate``
``db``          ``bench db upgrade`` (an older results database brought to this bench's schema)
``claims``      ``bench claims`` (the paper's claims, each with a verdict from the database)
``leaderboard`` ``bench leaderboard`` (ranked tables per setting, overall ranking; a static site)
``bundle``      ``bench export``, ``bench import`` (results that travel: a SQLite bundle, merged by cell hash)
==============  ===============================================================================================

Each module imports only click at the top; what a command needs (torch, pandas, SQLAlchemy) it imports when it
runs, so ``bench --help`` answers at once. User mistakes (:class:`~bench.errors.BenchError`) are one line and
exit status 2, never a traceback.
"""

from __future__ import annotations

import click

from bench.cli import bundle, claims, compare, db, evaluate, leaderboard, listing, report, results, run
from bench.errors import BenchError


class BenchGroup(click.Group):
    """Turns :class:`BenchError` into ``Error: <one line>`` with exit status 2, and so click's own usage errors
    (a bad option value, an unknown option or command), which click would print as usage, hint and error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            message = " ".join(str(exc).split())
            click.echo(f"Error: {message}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            message = " ".join(exc.format_message().split())
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"Error: {message} (`{where} --help` lists what is allowed)", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=BenchGroup)
@click.version_option(package_name="bench")
def cli() -> None:
    """Benchmark adversarial training on class-imbalanced data.

    \b
    bench run suites/quick.toml          run a suite (resumes where it stopped)
    bench report --format html           paper-style tables and figures
    bench compare srat-ldam drcb-ldam    paired comparison of two methods
    """


for command in (run.run, listing.list_, results.show, results.status, results.collect, report.report_command,
                compare.compare_command, evaluate.evaluate_command, db.db_group, claims.claims_command,
                leaderboard.leaderboard_command, bundle.export_command, bundle.import_command):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="bench")
