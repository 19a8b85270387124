"""Every suite shipped in suites/ resolves: known methods, datasets and keys, the cell counts README states."""

from __future__ import annotations

from pathlib import Path

import pytest

import methods
from bench.settings import load_settings
from bench.suite import load_suite
from bench.values import read_toml

SUITES = Path(__file__).resolve().parents[1] / "suites"
GRID_SUITES = sorted(p for p in SUITES.glob("*.toml") if read_toml(p).get("kind", "grid") != "theory")


@pytest.mark.parametrize("path", GRID_SUITES, ids=lambda p: p.name)
def test_shipped_suite_resolves(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no bench.toml here: built-in defaults only
    suite = load_suite(path, load_settings())
    assert suite.cells and len({c.cell_hash for c in suite.cells}) == len(suite.cells)


@pytest.mark.parametrize("name,cells", [("beyond_paper.toml", 190), ("beyond_paper_digits.toml", 76)])
def test_beyond_paper_suites_run_every_registered_method(name, cells, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = load_suite(SUITES / name, load_settings())
    assert len(suite.cells) == cells
    assert [m for m in methods.names() if m in {c.config["method"] for c in suite.cells}] == methods.names()
