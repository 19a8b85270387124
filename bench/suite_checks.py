"""What a suite is checked for beyond one key at a time, before any cell is claimed or any row written.

:mod:`bench.suite` checks each key's type and range; this module adds what needs more than one key or the
dataset's metadata (:meth:`bench.data.datasets.Dataset.metadata`, torch-free and file-free):

* every layer (``bench.toml``'s ``[defaults]``, the suite's ``[defaults]``, each ``[[grid]]``, ``--set``): no
  non-finite number anywhere (:func:`check_finite`), no empty axis in a grid (:func:`check_axes`);
* a resolved cell (:func:`check_cell`): its ``dataset_args``; its imbalance profile against the dataset (class
  count, class names and indices, training images per class, a test image for every class kept); ε and α of the
  training attack and every evaluation attack within the dataset's input range; what its model, augmentation and
  AutoAttack components need (images, enough classes); warm-up and momentum a run can train with; a validation
  split (``val_split``) that leaves every class a training image, and ε and α of its ``val_attack``;
* :func:`blamed`: a cell that is valid without ``--set`` (or without ``bench.toml``'s ``[defaults]``) is reported
  under that name, not under the grid it was merged into.

Every mistake is one :class:`~bench.errors.BenchError` line naming the file, the key and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from bench.catalog import AA_MIN_CLASSES, AA_STANDARD, VECTOR_MODELS
from bench.data import DATASETS
from bench.data.profiles import check_profile, held_out, parse_profile
from bench.errors import BenchError
from bench.settings import Settings

# Keys whose value is itself a list (an axis only as a list of lists: bench.suite.expand_grid); `[]` is a value.
LIST_VALUED = ("eval_attacks", "milestones", "guards")
TABLE_KEYS = ("train_attack", "method_args", "dataset_args")


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _leaves(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _leaves(inner, f"{path}[{i}]")
    else:
        yield path, value


def check_finite(table: Mapping[str, Any], where: str) -> None:
    """No NaN or infinity anywhere in ``table`` (TOML's ``nan`` and ``inf``; strings such as ``"nan"`` are refused
    where they are parsed as numbers, :func:`bench.values.parse_number`)."""
    for key, value in _leaves(table, ""):
        if isinstance(value, float) and not math.isfinite(value):
            raise BenchError(f"{where}: {key} = {value!r} is not a finite number; give a finite number such as 0.1")


def check_axes(grid: Mapping[str, Any], where: str) -> None:
    """No empty list where a list is an axis (``method = []`` would make a grid of no cells), and no value twice
    on one axis (``method = ["ce", "ce"]`` is a typo for another method, not a request for one cell twice)."""
    for key, value in grid.items():
        if key in TABLE_KEYS and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                if isinstance(inner_value, list):
                    _check_axis(f"{key}.{inner}", inner_value, where)
        elif isinstance(value, list) and key not in LIST_VALUED:
            _check_axis(key, value, where)


def _check_axis(key: str, values: list, where: str) -> None:
    if not values:
        _empty(key, where)
    twice = sorted({repr(b) for i, a in enumerate(values) for b in values[i + 1:] if a == b})  # 1 == 1.0 too
    if twice:
        raise BenchError(f"{where}: {key} lists {', '.join(twice)} more than once; give each value of an axis once")


def _empty(key: str, where: str) -> None:
    raise BenchError(f"{where}: {key} = [] is an empty axis (a grid would have no cells); list at least one value, "
                     f"e.g. {key} = [VALUE] or {key} = VALUE")


def check_cell(c: Mapping[str, Any], where: str) -> None:
    """Check a resolved, normalised cell against its dataset and across its keys (see the module's docstring)."""
    dataset = c["dataset"]
    plugin = DATASETS.get(dataset)
    args = c["dataset_args"]
    plugin.check_args(args, where)
    meta = plugin.metadata(args)
    try:
        kept = check_profile(c["imbalance"], meta, int(args.get("n_max", 0)), dataset)
    except BenchError as exc:
        raise BenchError(f"{where}: {exc}") from None
    check_validation_split(c, kept, where)
    attacks = [("train_attack", c["train_attack"])] if isinstance(c["train_attack"], dict) else []
    attacks += [("val_attack", c["val_attack"])] if isinstance(c.get("val_attack"), dict) else []
    check_attacks(c, attacks + [(f"eval_attacks[{i}]", a) for i, a in enumerate(c["eval_attacks"])], f"{where}: ")
    if not plugin.images:
        if c["model"] not in VECTOR_MODELS:
            raise BenchError(f"{where}: model = {c['model']!r} needs image inputs, but {dataset} gives vectors; "
                             f"valid: {', '.join(VECTOR_MODELS)}")
        if c["augment"] != "none":
            raise BenchError(f"{where}: augment = {c['augment']!r} transforms images, but {dataset} gives "
                             "vectors; valid: none")
    warmup, default_warmup = c["warmup_epochs"], plugin.defaults.get("warmup_epochs", 0)
    if warmup > c["epochs"] and warmup != default_warmup:  # the dataset's own warm-up may outlast a short run
        raise BenchError(f"{where}: warmup_epochs = {warmup} is longer than the run (epochs = {c['epochs']}); "
                         f"must be at most {c['epochs']}")
    if not c["momentum"] < 1:
        raise BenchError(f"{where}: momentum = {c['momentum']:g} makes SGD diverge; must be in [0, 1)")


def check_validation_split(c: Mapping[str, Any], kept: Sequence[int], where: str) -> None:
    """A validation split (``val_split``, :mod:`bench.selection_keys`) must leave every class a training image."""
    share = c.get("val_split", 0.0)
    for cls, (n, held) in enumerate(zip(kept, held_out(list(kept), share))):
        if held >= n:
            raise BenchError(f"{where}: val_split = {share:g} holds out {held} of the {n} training image(s) that "
                             f"imbalance {c['imbalance']!r} keeps of class {cls}, leaving none to train on; give a "
                             "smaller val_split, or keep more images of the class (a smaller imbalance ratio or a "
                             "larger n_max)")


def check_attacks(c: Mapping[str, Any], attacks: Sequence[tuple[str, Mapping[str, Any]]], prefix: str) -> None:
    """Validated attack tables (``(label, table)``) against a cell's dataset: ε and α are perturbation sizes in
    input units, so within its range (``8`` on [0, 1] pixels is a typo for ``8/255``); AutoAttack's components
    need enough classes (the DLR losses) and ``square`` needs images. Also what ``bench evaluate --attack`` adds."""
    plugin = DATASETS.get(c["dataset"])
    dataset = c["dataset"]
    if parse_profile(c["imbalance"]).kind == "binary":
        n_classes = 2
    else:
        n_classes = plugin.metadata(c.get("dataset_args", {})).num_classes
    for label, attack in attacks:
        for key in ("eps", "alpha"):
            value = attack.get(key)
            if plugin.bounds is not None and value is not None and value > plugin.bounds[1] - plugin.bounds[0]:
                low, high = plugin.bounds
                raise BenchError(f"{prefix}{label}.{key} = {value:g} is outside the input range [{low:g}, {high:g}] "
                                 f"of {dataset}; {key} must be in [0, {high - low:g}] (e.g. \"8/255\")")
        if attack["kind"] != "autoattack":
            continue
        names: Sequence[str] = AA_STANDARD if attack.get("version", "standard") == "standard" else attack["attacks"]
        for name in names:
            if n_classes < AA_MIN_CLASSES[name] or (name == "square" and not plugin.images):
                need = (f"at least {AA_MIN_CLASSES[name]} classes, but this cell has {n_classes} ({dataset}, "
                        f"imbalance {c['imbalance']!r})" if name != "square" else f"images, but {dataset} gives "
                        "vectors")
                raise BenchError(f"{prefix}{label}: autoattack's {name} needs {need}; use version = \"custom\" "
                                 "with attacks = [\"apgd-ce\", \"fab\"]")


def blamed(resolve: Callable[..., dict[str, Any]], point: Mapping[str, Any], seed: int, suite: str,
           settings: Settings, suite_defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None,
           where: str) -> dict[str, Any]:
    """``resolve(point, seed, suite, bench.toml's defaults, the suite's defaults, --set, where)``: one cell. Its
    error names the layer at fault when there is one: a cell that is valid without ``--set`` (or without
    bench.toml's ``[defaults]``) is reported under that name instead of the grid (``where``) it was merged into."""
    overrides = overrides or {}
    try:
        return resolve(point, seed, suite, settings.defaults, suite_defaults, overrides, where)
    except BenchError as exc:
        message = str(exc)
        layers = [("--set", settings.defaults, {})] if overrides else []
        layers += [(f"{settings.source}: defaults", {}, overrides)] if settings.defaults else []
        for source, project, cli in layers if message.startswith(where) else []:
            try:
                resolve(point, seed, suite, project, suite_defaults, cli, where)
            except BenchError:
                continue
            raise BenchError(source + message[len(where):]) from None
        raise
