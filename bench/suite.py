"""Suites: TOML grids of cells, resolved to fully specified configurations.

A suite has ``name``, ``description``, ``seeds``, ``[defaults]`` and one or more ``[[grid]]`` tables; each grid is
the cartesian product of its list-valued keys, the suite the union of its grids. Inside a table-valued key
(``train_attack``, ``method_args``, ``dataset_args``) a list value is an axis too, so ``method_args.lam = [1, 2]``
sweeps λ. ``eval_attacks`` is a list of attack tables; a list of such lists sweeps it.

Precedence, lowest first: built-in defaults (the dataset's own, then the general ones below) < ``bench.toml``
``[defaults]`` < the suite's ``[defaults]`` < the grid's keys < CLI overrides; a method's default ``augment`` and its
training-attack recipe (``train_attack.bn_mode``, ``.start``, ``.clip_start``: :attr:`methods.Method.attack_recipe`) sit
just above the dataset's (built-in < dataset < method < ``bench.toml`` < …). A cell's identity is the hash of its
fully resolved configuration (suite name and the method's resolved hyperparameters included), which is the cache
key in the results store.

A suite file is read and parsed once (:func:`read_suite_file`, a :class:`SuiteFile`): ``bench run`` learns its
kind from it (a ``kind = "theory"`` file goes to :mod:`bench.analysis.theory_suite`), expands a cell suite from it
(:func:`load_suite`) and hands its ``[slurm]`` / ``[ray]`` tables to the executors
(:func:`bench.executors.executor_options`). Validation reads the torch-free declarations of the plug-ins
(:mod:`bench.catalog`, the dataset registry, the method registry), so loading a suite imports neither torch nor
the results store.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import methods
from bench import accel_keys, catalog, selection_keys, suite_checks
from bench.catalog import DEFAULT_GUARDS, GUARD_NAMES, KINDS, MODEL_NAMES
from bench.cell import Cell, cell_hash
from bench.data import DATASETS, parse_profile
from bench.errors import BenchError, check_keys, valid_choices
from bench.settings import Settings
from bench.suite_attacks import (  # noqa: F401
    BN_MODES,
    RESERVED_LABELS,
    TRAIN_ATTACK_KEYS,
    attack_label,
    eval_attack,
    train_attack,
    with_method_recipe,
)
from bench.suite_attacks import real as _float
from bench.suite_attacks import whole as _int
from bench.values import parse_number, read_toml

# ``slurm`` and ``ray``: the suite's executor tables over bench.toml's (bench.executors); never part of a cell.
# ``fuse``: how many cells may train as one stacked model (bench.fusion), over bench.toml's; never part of a cell.
SUITE_KEYS = ("name", "description", "seeds", "defaults", "grid", "slurm", "ray", "fuse")
MAX_SEED = 2**31 - 1  # runs.seed is a SQL INTEGER: 32 bits on PostgreSQL
MAX_LR = 3.4e38  # the largest float32: the optimiser holds lr in the parameters' dtype (a larger one overflows)
AUGMENTATIONS = catalog.AUGMENTATIONS  # or several joined by "+" (bench.augment)

# General built-in defaults; a dataset's own defaults sit on top of these.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "model": "cnn-small",
    "epochs": 15,
    "batch_size": 128,
    "eval_batch_size": 512,  # evaluation batches; as large as memory allows
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_epochs": 0,
    "milestones": [],
    "lr_decay": 0.01,
    "augment": "none",
    "train_attack": {"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 10},
    "eval_attacks": [{"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 20}],
    "method_args": {},
    "dataset_args": {},
    "features": 0,  # penultimate features of this many train and test points to keep (t-SNE); 0 = none
    **accel_keys.ACCEL_DEFAULTS,  # precision, eval_precision, compile, channels_last: speed knobs (bench.accel)
}
# ``guards`` (names from bench.catalog.GUARD_NAMES, default DEFAULT_GUARDS) is a cell key without a built-in default
# entry: it appears in a resolved config only when it differs from the default, so adding it changed no cell hash.
# The model-selection keys (bench.selection_keys: val_split, select, val_every, val_attack) have no entry either:
# a cell carries them only when it holds out a validation set.
CELL_KEYS = ("dataset", "imbalance", "method", "seed", *BUILTIN_DEFAULTS, "guards", *selection_keys.SELECTION_KEYS)
TABLE_KEYS = ("train_attack", "method_args", "dataset_args")
# Keys of an eval_attacks table: kind, eps and name for every kind, plus the kind's own (bench.catalog.KINDS).
ATTACK_KEYS = ("kind", "eps", "name", *dict.fromkeys(k for kind in KINDS.values() for k in kind.keys))


@dataclass(frozen=True)
class SuiteFile:
    """A suite file, read and parsed once: its path, its TOML document and what kind of suite it is."""

    path: Path
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        """``theory`` for a Section 3 suite (``kind = "theory"``), else ``cells``; the loaders report mistakes."""
        return "theory" if self.data.get("kind") == "theory" else "cells"

    def executor_table(self, name: str) -> dict[str, Any]:
        """The file's ``[name]`` table (``slurm``, ``ray``), empty when absent; never part of a cell."""
        table = self.data.get(name, {})
        if not isinstance(table, dict):
            raise BenchError(f"{self.path}: {name} must be a table ([{name}]), got {table!r}")
        return table


def read_suite_file(path: str | Path | SuiteFile) -> SuiteFile:
    """Read and parse a suite file once (a :class:`SuiteFile` is returned as is); a missing, unreadable or
    malformed file is one :class:`BenchError` line."""
    if isinstance(path, SuiteFile):
        return path
    return SuiteFile(Path(path), read_toml(path))


@dataclass(frozen=True)
class Suite:
    """A cell suite, validated and expanded: every cell fully resolved, in grid order, without duplicates."""

    name: str
    description: str
    seeds: list[int]
    path: Path
    cells: list[Cell]
    file: SuiteFile  # the file it was read from (its executor tables)


def load_suite(
    path: str | Path | SuiteFile,
    settings: Settings,
    *,
    seeds: list[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Suite:
    """Validate and expand a suite file (a path, or a :class:`SuiteFile` already read) into cells; every
    mistake is one :class:`BenchError` line."""
    file = read_suite_file(path)
    path, data = file.path, file.data
    where = str(path)
    check_keys(data, SUITE_KEYS, where)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise BenchError(f"{where}: name must be a non-empty string, got {name!r}")
    description = str(data.get("description", ""))
    suite_seeds = seeds if seeds is not None else data.get("seeds", [0])
    if not isinstance(suite_seeds, list) or not suite_seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in suite_seeds
    ):
        raise BenchError(f"{where}: seeds must be a non-empty list of integers in [0, 2**31 - 1], got {suite_seeds!r}")
    twice = sorted({s for s in suite_seeds if suite_seeds.count(s) > 1})
    if twice:
        raise BenchError(f"{where}: seeds lists {', '.join(map(str, twice))} more than once; give each seed once")
    suite_defaults = data.get("defaults", {})
    _check_table(suite_defaults, f"{where}: defaults")
    _check_keys(settings.defaults, f"{settings.source}: defaults")
    _check_keys(suite_defaults, f"{where}: defaults")
    grids = data.get("grid")
    if not isinstance(grids, list) or not grids:
        raise BenchError(f"{where}: needs at least one [[grid]] table with dataset and method")
    cells: dict[str, Cell] = {}
    for g, grid in enumerate(grids):
        gwhere = f"{where}: grid[{g}]"
        _check_table(grid, gwhere)
        _check_keys(grid, gwhere)
        suite_checks.check_axes(grid, gwhere)
        if "seed" in grid:
            raise BenchError(f"{gwhere}: set seeds with the top-level `seeds` list, not a grid key")
        for point in expand_grid(grid):
            for seed in suite_seeds:
                config = suite_checks.blamed(resolve, point, seed, name, settings, suite_defaults, overrides, gwhere)
                cell = Cell(config, cell_hash(config))
                cells.setdefault(cell.cell_hash, cell)
    return Suite(name, description, list(suite_seeds), path, list(cells.values()), file)


def _check_table(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise BenchError(f"{where}: must be a table, got {value!r}")


def _check_keys(table: Mapping[str, Any], where: str) -> None:
    """Defaults, grids and ``--set`` may name any cell key but ``seed`` (the suite's ``seeds`` list sets it); no
    number anywhere in them may be NaN or infinite."""
    check_keys(table, [k for k in CELL_KEYS if k != "seed"], where)
    suite_checks.check_finite(table, where)


def expand_grid(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The cartesian product of a grid's axes (list values, also inside table-valued keys)."""
    axes: list[tuple[tuple[str, ...], list[Any]]] = []
    for key, value in grid.items():
        if key in TABLE_KEYS and isinstance(value, dict):
            for inner, inner_value in value.items():
                axes.append(((key, inner), inner_value if isinstance(inner_value, list) else [inner_value]))
        elif key in ("eval_attacks", "milestones", "guards"):
            is_axis = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
            axes.append(((key,), value if is_axis else [value]))
        else:
            axes.append(((key,), value if isinstance(value, list) else [value]))
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        point: dict[str, Any] = {}
        for (path, _), value in zip(axes, combo):
            if len(path) == 2:
                point.setdefault(path[0], {})[path[1]] = value
            else:
                point[path[0]] = value
        points.append(point)
    return points


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """Layer ``layer`` over ``base``; table-valued keys merge key by key (``train_attack.eps`` alone overrides ε)."""
    out = dict(base)
    for key, value in layer.items():
        if key in TABLE_KEYS and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(
    point: Mapping[str, Any],
    seed: int,
    suite: str,
    project_defaults: Mapping[str, Any],
    suite_defaults: Mapping[str, Any],
    overrides: Mapping[str, Any],
    where: str,
) -> dict[str, Any]:
    """The fully resolved, validated configuration of one cell."""
    layers = [project_defaults, suite_defaults, point, overrides]
    dataset = next((layer["dataset"] for layer in reversed(layers) if "dataset" in layer), None)
    if dataset is None:
        raise BenchError(f"{where}: no dataset given; valid: {', '.join(DATASETS)}")
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise BenchError(f"{where}: dataset = {dataset!r} is unknown{valid_choices(str(dataset), DATASETS)}")
    config = _merge(copy.deepcopy(BUILTIN_DEFAULTS), DATASETS.get(dataset).defaults)
    for layer in layers:
        config = _merge(config, layer)
    augment = methods.default_augment(config.get("method"))  # above the dataset's, below every layer naming one
    if augment and not any("augment" in layer for layer in layers):
        config["augment"] = augment
    named = [key for layer in layers if isinstance(layer.get("train_attack"), dict) for key in layer["train_attack"]]
    config["train_attack"] = with_method_recipe(config["train_attack"],  # same place in the chain as augment
                                                methods.default_attack_recipe(config.get("method")), named)
    config["seed"] = seed
    config["suite"] = suite
    config = validate(config, where)
    if "start" in named and isinstance(config["train_attack"], dict):  # even "symmetric", which the table leaves out
        _check_start(config, [layer["train_attack"]["start"] for layer in layers
                              if isinstance(layer.get("train_attack"), dict) and "start" in layer["train_attack"]][-1],
                     where)
    return config


def _check_start(c: Mapping[str, Any], start: Any, where: str) -> None:
    """A uniform ``train_attack.start`` is meaningless for a method whose attack starts from a Gaussian."""
    std = methods.get(c["method"]).attack_start_std
    if std is not None:
        raise BenchError(f"{where}: train_attack.start = {start!r} is a uniform start, but {c['method']} starts its "
                         f"attack at x + {std:g}·N(0, 1); leave start out for this method")


def validate(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Check and normalise every key of a merged config (numbers from ``"8/255"``, names against registries)."""
    c = dict(config)
    if "method" not in c:
        raise BenchError(f"{where}: no method given; valid: {', '.join(methods.names())}")
    if "imbalance" not in c:
        raise BenchError(f"{where}: no imbalance given; valid forms: step-K, exp-K, balanced, counts:..., binary:...")
    for key, registry in (("method", methods.METHODS), ("model", MODEL_NAMES)):
        value = c[key]
        if not isinstance(value, str) or value not in registry:
            raise BenchError(f"{where}: {key} = {value!r} is unknown{valid_choices(str(value), registry)}")
    try:
        parse_profile(c["imbalance"])
    except BenchError as exc:
        raise BenchError(f"{where}: imbalance: {exc}") from None
    for key in ("epochs", "batch_size", "eval_batch_size"):
        c[key] = _int(c[key], f"{where}: {key}", minimum=1)
    c["warmup_epochs"] = _int(c["warmup_epochs"], f"{where}: warmup_epochs", minimum=0)
    c["features"] = _int(c["features"], f"{where}: features", minimum=0)
    c["lr"] = _float(c["lr"], f"{where}: lr", minimum=0.0, strict=True)
    if c["lr"] > MAX_LR:
        raise BenchError(f"{where}: lr = {c['lr']!r} does not fit a float32; give a learning rate in (0, {MAX_LR:g}]")
    for key in ("momentum", "weight_decay"):
        c[key] = _float(c[key], f"{where}: {key}", minimum=0.0)
    c["lr_decay"] = _float(c["lr_decay"], f"{where}: lr_decay", minimum=0.0, strict=True)
    if not isinstance(c["milestones"], list):
        raise BenchError(f"{where}: milestones must be a list of epochs or fractions of the run, "
                         f"got {c['milestones']!r}")
    epochs = [schedule_epoch(m, c["epochs"], f"{where}: milestones") for m in c["milestones"]]
    written = [parse_number(m, f"{where}: milestones") for m in c["milestones"]]
    if any(b < a for a, b in zip(epochs, epochs[1:])) or len(set(written)) != len(written):
        # equal epochs stay allowed: fractions of a short run (0.8 and 0.9 of 5 epochs) can meet
        raise BenchError(f"{where}: milestones = {c['milestones']!r} must be given in increasing order, each once")
    c["milestones"] = epochs
    if catalog.augment_parts(c["augment"]) is None:
        raise BenchError(f"{where}: augment = {c['augment']!r} is unknown; valid: {', '.join(AUGMENTATIONS)}, or "
                         "several joined by + (applied in order, each once)")
    c["train_attack"] = train_attack(c["train_attack"], f"{where}: train_attack")
    if not isinstance(c["eval_attacks"], list):
        raise BenchError(f"{where}: eval_attacks must be a list of attack tables, got {c['eval_attacks']!r}")
    c["eval_attacks"] = [eval_attack(a, f"{where}: eval_attacks[{i}]") for i, a in enumerate(c["eval_attacks"])]
    labels = [attack_label(a) for a in c["eval_attacks"]]
    if len(set(labels)) != len(labels) or RESERVED_LABELS & set(labels):
        raise BenchError(f"{where}: eval_attacks labels must be unique and not {' or '.join(sorted(RESERVED_LABELS))}, "
                         f"got {labels}; set `name`")
    if "guards" in c:
        guards = _guards(c["guards"], f"{where}: guards")
        if guards == list(DEFAULT_GUARDS):
            del c["guards"]
        else:
            c["guards"] = guards
    c.update(accel_keys.validate(c, where))
    selection_keys.apply(c, where)  # val_split, select, val_every, val_attack: only with a validation set
    _check_table(c["method_args"], f"{where}: method_args")
    _check_table(c["dataset_args"], f"{where}: dataset_args")
    plugin = DATASETS.get(c["dataset"])
    for key, value in c["dataset_args"].items():
        if key not in plugin.params:
            raise BenchError(f"{where}: dataset_args.{key} is unknown for {c['dataset']}"
                             f"{valid_choices(key, plugin.params or ['none'])}")
        c["dataset_args"][key] = parse_number(value, f"{where}: dataset_args.{key}")
    try:
        method = methods.for_cell(c)
    except BenchError as exc:
        raise BenchError(f"{where}: method_args: {exc}") from None
    drw = c["method_args"].get("drw_epoch")
    if drw is not None and method.drw_epoch is not None and method.drw_epoch >= c["epochs"]:
        raise BenchError(f"{where}: method_args.drw_epoch = {drw!r} is at or beyond the end of the run "
                         f"(epochs = {c['epochs']}); give an epoch below {c['epochs']}")
    c["method_params"] = method.params()  # capability fields (AWP, class-wise ε) only when switched on
    suite_checks.check_cell(c, where)  # against the dataset's metadata, and across keys
    return c


def schedule_epoch(value: Any, epochs: int, where: str) -> int:
    """An epoch of the schedule: a whole number is an epoch (0-indexed, below ``epochs``); a number strictly
    between 0 and 1 is a fraction of the run, resolved as ``floor(fraction × epochs)`` — the recipe's 0.8 and 0.9
    are epochs 160 and 180 of 200, 8 and 9 of 10, 4 and 4 of 5 — so a short run keeps the recipe's shape."""
    number = parse_number(value, where)
    if isinstance(number, bool):
        raise BenchError(f"{where}: must be an epoch or a fraction of the run, got {value!r}")
    if 0 < number < 1:
        return math.floor(number * epochs + 1e-9)  # 1e-9: 2/3 × 15 is 9.999… in floating point
    epoch = _int(value, where, minimum=0)
    if epoch >= epochs:
        raise BenchError(f"{where}: {value!r} is at or beyond the end of the run (epochs = {epochs}); give an epoch "
                         f"below {epochs} or a fraction of the run such as 0.8")
    return epoch


def _guards(value: Any, where: str) -> list[str]:
    """Guard names, deduplicated, in the registry's order."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchError(f"{where}: must be a list of guard names, e.g. {list(DEFAULT_GUARDS)}; "
                         f"valid: {', '.join(GUARD_NAMES)}")
    for name in value:
        if name not in GUARD_NAMES:
            raise BenchError(f"{where}: unknown guard {name!r}{valid_choices(name, GUARD_NAMES)}")
    return [name for name in GUARD_NAMES if name in value]


def select(cells: list[Cell], only: Iterable[str]) -> list[Cell]:
    """Cells matching every ``KEY=PATTERN`` (glob; dotted keys reach into tables, e.g. ``method_args.lam=2*``)."""
    filters = []
    for item in only:
        key, sep, pattern = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--only {item!r}: expected KEY=PATTERN, e.g. method=srat-*")
        filters.append((key.strip(), pattern.strip()))
    known = set(CELL_KEYS) | {"suite", "method_params"}
    for key, _ in filters:
        if key.split(".")[0] not in known:
            raise BenchError(f"--only {key}=...: unknown key{valid_choices(key, sorted(known))}")

    def value_of(config: Mapping[str, Any], key: str) -> str:
        value: Any = config
        for part in key.split("."):
            value = value.get(part, "") if isinstance(value, dict) else ""
        return value if isinstance(value, str) else json.dumps(value)

    return [c for c in cells if all(fnmatch.fnmatchcase(value_of(c.config, k), p) for k, p in filters)]


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items to a layer (VALUE parsed as TOML when it can be, else taken as a string)."""
    layer: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--set {item!r}: expected KEY=VALUE, e.g. epochs=5")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        parts = key.strip().split(".")
        if len(parts) == 2 and parts[0] in TABLE_KEYS:
            layer.setdefault(parts[0], {})[parts[1]] = value
        elif len(parts) == 1:
            layer[parts[0]] = value
        else:
            raise BenchError(f"--set {key}: only one level of nesting (e.g. method_args.lam=1)")
    _check_keys(layer, "--set")
    return layer
