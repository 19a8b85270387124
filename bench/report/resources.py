"""Where the report's templates and the paper's numbers are: one folder, ``bench/report/resources/``.

It holds ``templates/`` (``report.html``, ``report.md``, ``report.tex`` and ``compare.html``, the page of
``bench compare --format html``) and ``srat-paper-tables.csv`` (the paper's Tables 1–10). There is one copy of
each file, and it is found the same way however bench is installed: beside this module. A checkout or an
editable install reads the repository's folder; ``pip install .`` ships the same files as package data
(``pyproject.toml``), so a wheel reads its own copy. The repository's top-level ``reports`` is a link to this
folder, so ``reports/templates/`` and ``reports/srat-paper-tables.csv`` — the paths people know — are the
canonical files themselves, not a second copy.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

RESOURCES = Path(__file__).resolve().parent / "resources"
REFERENCE_CSV = "srat-paper-tables.csv"
TEMPLATES = "templates"


def reference_csv() -> Path:
    return RESOURCES / REFERENCE_CSV


def template_dir() -> Path:
    return RESOURCES / TEMPLATES


def template_loader() -> jinja2.FileSystemLoader:
    """The loader of every template bench renders (report and compare alike)."""
    return jinja2.FileSystemLoader(str(template_dir()))
