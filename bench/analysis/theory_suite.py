"""Section 3 theory suites (``kind = "theory"``): the ``[theory]`` grid's keys, defaults and validation.

Why this module exists: ``bench run`` reads a suite file once (:func:`bench.suite.read_suite_file`) and a theory
suite is validated from that parsed document, before anything is computed; the validation needs neither numpy nor
scipy, so it lives apart from the model's numerics (:mod:`bench.analysis.theory`, which re-exports these names
and evaluates the grid).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.errors import BenchError, check_keys, valid_choices
from bench.suite import SuiteFile, read_suite_file
from bench.values import parse_number

NORMS = ("linf", "l2")
GRID_KEYS = ("d", "eta", "sigma", "K", "rho", "eps")  # the axes; one frame row per combination
OPTION_KEYS = ("norm", "monte_carlo_samples", "seed")  # scalars
THEORY_KEYS = GRID_KEYS + OPTION_KEYS
SUITE_KEYS = ("name", "kind", "description", "theory")
DEFAULT_MONTE_CARLO_SAMPLES = 100_000  # per row; the MC bias error is ~ n^(-1/3) of the projected std


def validate_grid(grid: Mapping[str, Any], where: str = "theory grid") -> dict[str, Any]:
    """The grid with every value checked and parsed; one BenchError line naming ``where``, the key and the value.

    Axes (a list, or one value): ``d`` (integers >= 1), ``eta`` (> 0), ``sigma`` (> 0), ``K`` (>= 1), ``rho`` (> 0),
    ``eps`` (>= 0; default [0]). Options: ``norm`` (one of NORMS, default "linf"), ``monte_carlo_samples``
    (integer >= 0, 0 skips Monte Carlo; default DEFAULT_MONTE_CARLO_SAMPLES), ``seed`` (integer >= 0, default 0).
    Numbers may be strings such as "8/255".
    """
    if not isinstance(grid, Mapping):
        raise BenchError(f"{where}: must be a table of lists such as d = [1, 10], got {grid!r}")
    check_keys(grid, THEORY_KEYS, where)
    rules = {
        "d": (lambda v: isinstance(v, int) and v >= 1, "integers >= 1"),
        "eta": (lambda v: v > 0, "numbers > 0"),
        "sigma": (lambda v: v > 0, "numbers > 0"),
        "K": (lambda v: v >= 1, "numbers >= 1 (K = majority/minority prior ratio)"),
        "rho": (lambda v: v > 0, "numbers > 0"),
        "eps": (lambda v: v >= 0, "numbers >= 0"),
    }
    out: dict[str, Any] = {}
    for key, (ok, allowed) in rules.items():
        if key not in grid:
            if key == "eps":
                out[key] = [0.0]
                continue
            raise BenchError(f"{where}: missing key {key!r}; needs {', '.join(GRID_KEYS[:5])} (and optionally eps)")
        raw = grid[key]
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            raise BenchError(f"{where}: {key} = []: must be a non-empty list of {allowed}")
        parsed = []
        for value in values:
            number = parse_number(value, f"{where}: {key}")
            if not math.isfinite(number) or not ok(number):
                raise BenchError(f"{where}: {key} = {value!r} is not allowed; {key} must be {allowed}")
            parsed.append(number if key == "d" else float(number))
        out[key] = parsed
    norm = grid.get("norm", "linf")
    if norm not in NORMS:
        raise BenchError(f"{where}: norm = {norm!r} is unknown{valid_choices(str(norm), NORMS)}")
    out["norm"] = norm
    for key, default in (("monte_carlo_samples", DEFAULT_MONTE_CARLO_SAMPLES), ("seed", 0)):
        value = grid.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BenchError(f"{where}: {key} = {value!r} is not allowed; {key} must be an integer >= 0")
        out[key] = value
    return out


def load_theory_suite(path: str | Path | SuiteFile) -> dict[str, Any]:
    """Validate a ``kind = "theory"`` suite file (a path, or a :class:`~bench.suite.SuiteFile` already read):
    {"name", "description", "grid"} (grid validated)."""
    file = read_suite_file(path)
    where = str(file.path)
    data = file.data
    check_keys(data, SUITE_KEYS, where)
    if data.get("kind") != "theory":
        raise BenchError(f"{where}: kind = {data.get('kind')!r}; a theory suite needs kind = \"theory\"")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BenchError(f"{where}: name must be a non-empty string, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise BenchError(f"{where}: description must be a string, got {description!r}")
    if "theory" not in data:
        raise BenchError(f"{where}: needs a [theory] table with d, eta, sigma, K, rho (and optionally eps)")
    return {"name": name, "description": description, "grid": validate_grid(data["theory"], f"{where}: [theory]")}
