"""Suites: TOML grids of cells, resolved to fully specified configurations.

A suite has ``name``, ``description``, ``seeds``, ``[defaults]`` and one or more ``[[grid]]`` tables; each grid is
the cartesian product of its list-valued keys, the suite the union of its grids. Inside a table-valued key
(``train_attack``, ``method_args``, ``dataset_args``) a list value is an axis too, so ``method_args.lam = [1, 2]``
sweeps λ. ``eval_attacks`` is a list of attack tables; a list of such lists sweeps it.

Precedence, lowest first: built-in defaults (the dataset's own, then the general ones below) < ``bench.toml``
``[defaults]`` < the suite's ``[defaults]`` < the grid's keys < CLI overrides; a method's default ``augment`` sits
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
from bench import accel_keys, catalog, suite_checks
from bench.catalog import (AA_ATTACKS, AA_VERSIONS, DEFAULT_GUARDS, GUARD_NAMES, KINDS, LSA_SCALE, MODEL_NAMES,
                           AttackConfig)
from bench.cell import Cell, cell_hash
from bench.data import DATASETS, parse_profile
from bench.errors import BenchError, check_keys, valid_choices
from bench.settings import Settings
from bench.values import parse_number, read_toml

# ``slurm`` and ``ray``: the suite's executor tables over bench.toml's (bench.executors); never part of a cell.
SUITE_KEYS = ("name", "description", "seeds", "defaults", "grid", "slurm", "ray")
AUGMENTATIONS = catalog.AUGMENTATIONS  # or several joined by "+" (bench.augment)
BN_MODES = ("train", "eval")

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
CELL_KEYS = ("dataset", "imbalance", "method", "seed", *BUILTIN_DEFAULTS, "guards")
TABLE_KEYS = ("train_attack", "method_args", "dataset_args")
# Keys of an eval_attacks table: kind, eps and name for every kind, plus the kind's own (bench.catalog.KINDS).
ATTACK_KEYS = ("kind", "eps", "name", *dict.fromkeys(k for kind in KINDS.values() for k in kind.keys))
TRAIN_ATTACK_KEYS = ("kind", "eps", "alpha", "steps", "random_start", "bn_mode")
TRAIN_ATTACK_KINDS = ("pgd",)  # training runs bench.attacks.pgd itself


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
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in suite_seeds
    ):
        raise BenchError(f"{where}: seeds must be a non-empty list of integers >= 0, got {suite_seeds!r}")
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
    config["seed"] = seed
    config["suite"] = suite
    return validate(config, where)


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
    for key in ("lr", "momentum", "weight_decay"):
        c[key] = _float(c[key], f"{where}: {key}", minimum=0.0)
    c["lr_decay"] = _float(c["lr_decay"], f"{where}: lr_decay", minimum=0.0, strict=True)
    if not isinstance(c["milestones"], list):
        raise BenchError(f"{where}: milestones must be a list of epochs or fractions of the run, "
                         f"got {c['milestones']!r}")
    c["milestones"] = sorted(schedule_epoch(m, c["epochs"], f"{where}: milestones") for m in c["milestones"])
    if catalog.augment_parts(c["augment"]) is None:
        raise BenchError(f"{where}: augment = {c['augment']!r} is unknown; valid: {', '.join(AUGMENTATIONS)}, or "
                         "several joined by + (applied in order, each once)")
    c["train_attack"] = _train_attack(c["train_attack"], f"{where}: train_attack")
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


def _int(value: Any, where: str, minimum: int) -> int:
    number = parse_number(value, where)
    if not float(number).is_integer() or number < minimum:
        raise BenchError(f"{where}: must be an integer >= {minimum}, got {value!r}")
    return int(number)


def _float(value: Any, where: str, minimum: float, strict: bool = False) -> float:
    number = float(parse_number(value, where))
    if number < minimum or (strict and number == minimum):
        raise BenchError(f"{where}: must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return number


def _attack(table: Any, where: str, allowed: Iterable[str]) -> dict[str, Any]:
    allowed = tuple(allowed)
    if not isinstance(table, dict):
        raise BenchError(f"{where}: must be a table like {{ kind = \"pgd\", eps = \"8/255\", alpha = \"2/255\", steps = 20 }}")
    check_keys(table, allowed, where)
    kind = table.get("kind", "pgd")
    if kind not in TRAIN_ATTACK_KINDS:
        raise BenchError(f"{where}: kind = {kind!r} cannot train{valid_choices(str(kind), TRAIN_ATTACK_KINDS)}")
    out: dict[str, Any] = {"kind": kind}
    out.update({key: _nonnegative(table, key, where) for key in ("eps", "alpha")})
    out["steps"] = _int(table.get("steps", 10), f"{where}.steps", minimum=0)
    random_start = table.get("random_start", True)
    if not isinstance(random_start, bool):
        raise BenchError(f"{where}.random_start must be true or false, got {random_start!r}")
    out["random_start"] = random_start
    if "name" in table:
        out["name"] = str(table["name"])
    if "bn_mode" in allowed:
        bn_mode = table.get("bn_mode", "train")
        if bn_mode not in BN_MODES:
            raise BenchError(f"{where}.bn_mode = {bn_mode!r} is unknown; valid: {', '.join(BN_MODES)}")
        out["bn_mode"] = bn_mode
    return out


def _train_attack(value: Any, where: str) -> dict[str, Any] | str:
    """A PGD table, or ``"none"`` for natural (non-adversarial) training."""
    if value in ("none", False):
        return "none"
    return _attack(value, where, TRAIN_ATTACK_KEYS)


RESERVED_LABELS = frozenset({"clean", "worst-case"})  # standard accuracy; bench.guards.worst_case_frame


def eval_attack(table: Any, where: str) -> dict[str, Any]:
    """A validated, normalised ``eval_attacks`` table (also what ``bench evaluate --attack`` takes).

    Only the keys its kind reads are kept (``bench.catalog.KINDS``). Keys added after the first release are left
    out at their defaults (``restarts = 1``), so the hash of a cell that does not use them did not change.
    """
    if not isinstance(table, dict):
        raise BenchError(f"{where}: must be a table like {{ kind = \"pgd\", eps = \"8/255\", alpha = \"2/255\", steps = 20 }}")
    kind = table.get("kind", "pgd")
    if not isinstance(kind, str) or kind not in KINDS:
        raise BenchError(f"{where}: kind = {kind!r} is unknown{valid_choices(str(kind), KINDS)}")
    allowed = ("kind", "eps", "name", *KINDS[kind].keys)
    if kind == "fgsm":
        allowed += ("alpha", "steps")  # accepted when they say what FGSM does: one step of size eps
    check_keys(table, allowed, where, f" for kind {kind}")
    out: dict[str, Any] = {"kind": kind, "eps": _nonnegative(table, "eps", where)}
    if kind in ("pgd", "pgd-cw", "lsa"):
        out["alpha"] = _nonnegative(table, "alpha", where)
        out["steps"] = _int(table.get("steps", 10), f"{where}.steps", minimum=0)
        random_start = table.get("random_start", True)
        if not isinstance(random_start, bool):
            raise BenchError(f"{where}.random_start must be true or false, got {random_start!r}")
        out["random_start"] = random_start
        restarts = _int(table.get("restarts", 1), f"{where}.restarts", minimum=1)
        if restarts != 1:
            out["restarts"] = restarts
        if kind == "lsa":  # the logits' factor (bench.catalog.LSA_SCALE: AT-BSL's 10)
            out["scale"] = _float(table.get("scale", LSA_SCALE), f"{where}.scale", minimum=0.0, strict=True)
    elif kind == "fgsm":
        if "alpha" in table and _nonnegative(table, "alpha", where) != out["eps"]:
            raise BenchError(f"{where}.alpha = {table['alpha']!r}: fgsm takes one step of size eps; leave alpha out")
        if "steps" in table and _int(table["steps"], f"{where}.steps", minimum=0) != 1:
            raise BenchError(f"{where}.steps = {table['steps']!r}: fgsm takes one step; leave steps out")
    elif kind == "autoattack":
        attacks = table.get("attacks")
        version = table.get("version", "standard" if attacks is None else "custom")
        if version not in AA_VERSIONS:
            raise BenchError(f"{where}.version = {version!r} is unknown; valid: {', '.join(AA_VERSIONS)}")
        out["version"] = version
        if version == "custom":
            if not isinstance(attacks, list) or not attacks:
                raise BenchError(f"{where}.attacks: version = \"custom\" needs a non-empty list, e.g. "
                                 f"[\"apgd-ce\", \"apgd-t\"]; valid: {', '.join(AA_ATTACKS)}")
            for name in attacks:
                if name not in AA_ATTACKS:
                    raise BenchError(f"{where}.attacks: {name!r} is not an AutoAttack attack"
                                     f"{valid_choices(str(name), AA_ATTACKS)}")
            if len(set(attacks)) != len(attacks):
                raise BenchError(f"{where}.attacks lists an attack twice: {attacks}")
            out["attacks"] = list(attacks)
        elif attacks is not None:
            raise BenchError(f"{where}.attacks is only for version = \"custom\" (standard runs "
                             "apgd-ce, apgd-t, fab-t, square)")
    if "name" in table:
        name = table["name"]
        if not isinstance(name, str) or not name or len(name) > 64:
            raise BenchError(f"{where}.name must be a non-empty string of at most 64 characters, got {name!r}")
        out["name"] = name
    return out


def _nonnegative(table: Mapping[str, Any], key: str, where: str) -> float:
    if key not in table:
        raise BenchError(f"{where}: missing {key}")
    value = float(parse_number(table[key], f"{where}.{key}"))
    if value < 0:
        raise BenchError(f"{where}.{key} = {table[key]!r} is negative; must be >= 0")
    return value


def _guards(value: Any, where: str) -> list[str]:
    """Guard names, deduplicated, in the registry's order."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchError(f"{where}: must be a list of guard names, e.g. {list(DEFAULT_GUARDS)}; "
                         f"valid: {', '.join(GUARD_NAMES)}")
    for name in value:
        if name not in GUARD_NAMES:
            raise BenchError(f"{where}: unknown guard {name!r}{valid_choices(name, GUARD_NAMES)}")
    return [name for name in GUARD_NAMES if name in value]


def attack_label(attack: Mapping[str, Any]) -> str:
    """The label results are stored under: the attack's ``name``, else its kind's label (``pgd-20``, ``fgsm``)."""
    return AttackConfig.from_table(attack).label


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
