"""Where the report's templates and reference data are.

The canonical files live in the repository's ``reports/`` folder (``reports/templates/*`` and
``reports/srat-paper-tables.csv``), where people edit them. A non-editable install has no repository, so the
same files ship inside the package as ``bench/report/resources/`` (package data); a test keeps the two copies
identical. A checkout reads ``reports/`` (recognised by the ``pyproject.toml`` beside it, so an unrelated
``reports`` folder next to an installed package is never picked up); anything else reads the package copy.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_RESOURCES = Path(__file__).resolve().parent / "resources"
REFERENCE_CSV = "srat-paper-tables.csv"
TEMPLATES = "templates"


def repo_reports() -> Path | None:
    """The checkout's ``reports/`` folder, or ``None`` when bench is installed without its repository."""
    root = Path(__file__).resolve().parents[2]
    reports = root / "reports"
    if (root / "pyproject.toml").is_file() and (reports / TEMPLATES).is_dir() and (reports / REFERENCE_CSV).is_file():
        return reports
    return None


def resource_dir() -> Path:
    """The folder holding ``templates/`` and the reference CSV."""
    return repo_reports() or PACKAGE_RESOURCES


def reference_csv() -> Path:
    return resource_dir() / REFERENCE_CSV


def template_dir() -> Path:
    return resource_dir() / TEMPLATES
