"""The method registry: ``@register("name")`` on a :class:`~methods.base.Method` subclass; :func:`get` builds a
method from its name and hyperparameters, :func:`for_cell` the one a cell trains with. Torch-free."""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any

from bench.errors import BenchError, valid_choices
from bench.registry import Registry
from bench.values import parse_number
from methods.base import Method

METHODS: Registry[type[Method]] = Registry("method")


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Register a method class under ``name`` (lower case, hyphenated) and stamp the name on it."""

    def decorate(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register({name!r}) expects a Method subclass, got {cls!r}")
        cls.name = name
        return METHODS.register(name)(cls)

    return decorate


def names(pattern: str = "*") -> list[str]:
    """Registered method names matching a glob, in registration order (the order of the paper's tables)."""
    return METHODS.names(pattern)


def get(name: str, **overrides) -> Method:
    """The method ``name`` with hyperparameter ``overrides``, validated (types coerced, ranges checked)."""
    cls = METHODS.get(name)
    fields = cls.hyperparameters()
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in overrides.items():
        if key not in fields:
            raise BenchError(f"method {name}: unknown hyperparameter {key!r}{valid_choices(key, fields)}")
        values[key] = _coerce(name, key, value, hints[key])
    try:
        return cls(**values)
    except ValueError as exc:
        raise BenchError(str(exc)) from None


def default_augment(name: object) -> str | None:
    """The augmentation method ``name`` declares (:attr:`Method.default_augment`); ``None`` if none or unknown."""
    return METHODS.get(name).default_augment if isinstance(name, str) and name in METHODS else None


def default_attack_recipe(name: object) -> dict[str, str]:
    """The training-attack keys method ``name`` declares (:attr:`Method.attack_recipe`); empty if none or unknown."""
    return dict(METHODS.get(name).attack_recipe) if isinstance(name, str) and name in METHODS else {}


def for_cell(config: Mapping[str, Any]) -> Method:
    """The method a resolved cell trains with: ``method`` with its ``method_args``, the run-dependent defaults
    filled in from ``epochs`` and ``milestones`` (:meth:`Method.for_run`). The suite stores its fields as the
    cell's ``method_params``; the runner and ``bench evaluate`` train and guard with it."""
    method = get(config["method"], **config["method_args"])
    return method.for_run(epochs=config["epochs"], milestones=config["milestones"])


def as_stored(config: Mapping[str, Any]) -> Method:
    """The method a stored cell trained with (``bench evaluate`` re-attacks its weights): built from the record's
    ``method_params``, the fields resolved when it ran, not from today's defaults; a field added since takes the
    method's :attr:`~methods.base.Method.legacy` value (what the code did before the field existed). A record
    without ``method_params`` is resolved as a new cell (:func:`for_cell`)."""
    params = config.get("method_params")
    if not isinstance(params, Mapping) or config.get("method") not in METHODS:
        return for_cell(config)
    cls = METHODS.get(config["method"])
    fields = cls.hyperparameters()
    known = {k: v for k, v in params.items() if k in fields}
    legacy = {k: v for k, v in cls.legacy.items() if k not in known}
    method = get(config["method"], **known, **legacy)
    return method.for_run(epochs=config["epochs"], milestones=config["milestones"])


def _coerce(method: str, key: str, value, annotation):
    """Coerce a TOML/CLI value to the field's annotated type (``"8/255"`` for floats, ints for ints)."""
    allowed = [a for a in typing.get_args(annotation)] or [annotation]
    if value is None:
        if type(None) in allowed:
            return None
        raise BenchError(f"method {method}: {key} may not be empty")
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and not isinstance(value, bool):
            number = parse_number(value, f"method {method}: {key}")
            if float(number).is_integer():
                return int(number)
        if kind is float and not isinstance(value, bool):
            return float(parse_number(value, f"method {method}: {key}"))
        if kind is str and isinstance(value, str):
            return value
    names_ = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
    raise BenchError(f"method {method}: {key} = {value!r} must be {names_}")

