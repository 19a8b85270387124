"""Alembic migrations of the results database (see :mod:`bench.results.migrate`); shipped with the package."""
