"""Attack tables of a suite: the training attack and the evaluation attacks, checked and normalised.

A training attack is a PGD table (``kind``, ``eps``, ``alpha``, ``steps``, ``random_start``, ``bn_mode``, ``start``,
``clip_start``) or ``"none"``; an evaluation attack names a kind of :data:`bench.catalog.KINDS` and only the keys
that kind reads.
Keys added after the first release are left out of the normalised table at their defaults, so the hash of a cell
that does not use them did not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bench.catalog import AA_ATTACKS, AA_VERSIONS, KINDS, LSA_SCALE, AttackConfig
from bench.errors import BenchError, check_keys, valid_choices
from bench.values import parse_number

# Batch norm while the training attack is crafted: train (batch statistics, running ones updated: SRAT's code),
# eval (running statistics, kept: TRADES, MART, AT-BSL, RoBal), frozen (batch statistics, running ones not
# updated: RobustLT's track_running_stats=False). The uniform random start: in [-eps, eps], or in [0, eps] (RoBal).
# clip_start: whether the random start is clipped to the valid range before the first gradient (SRAT's protocol,
# AT-AWP, RobustLT) or only after the first step (TRADES, MART, AT-BSL, REAT, TAET, RoBal).
BN_MODES = ("train", "eval", "frozen")
STARTS = ("symmetric", "positive")
TRAIN_ATTACK_KEYS = ("kind", "eps", "alpha", "steps", "random_start", "bn_mode", "start", "clip_start")
TRAIN_ATTACK_KINDS = ("pgd",)  # training runs bench.attacks.pgd itself


def whole(value: Any, where: str, minimum: int) -> int:
    number = parse_number(value, where)
    if not float(number).is_integer() or number < minimum:
        raise BenchError(f"{where}: must be an integer >= {minimum}, got {value!r}")
    return int(number)


def real(value: Any, where: str, minimum: float, strict: bool = False) -> float:
    number = float(parse_number(value, where))
    if number < minimum or (strict and number == minimum):
        raise BenchError(f"{where}: must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return number


def train_attack(value: Any, where: str) -> dict[str, Any] | str:
    """A PGD table, or ``"none"`` for natural (non-adversarial) training.

    ``bn_mode`` (default ``train``), ``start`` (default ``symmetric``) and ``clip_start`` (default ``true``) are
    the recipe's choices (``start`` and ``clip_start`` left out of the table at their defaults, so cells that never
    name them kept their hash); a method's own recipe fills them in below every layer of the suite
    (:func:`with_method_recipe`).
    """
    if value in ("none", False):
        return "none"
    if not isinstance(value, dict):
        raise BenchError(f"{where}: must be \"none\" or a table like "
                         "{ kind = \"pgd\", eps = \"8/255\", alpha = \"2/255\", steps = 10 }")
    check_keys(value, TRAIN_ATTACK_KEYS, where)
    kind = value.get("kind", "pgd")
    if kind not in TRAIN_ATTACK_KINDS:
        raise BenchError(f"{where}: kind = {kind!r} cannot train{valid_choices(str(kind), TRAIN_ATTACK_KINDS)}")
    out: dict[str, Any] = {"kind": kind}
    out.update({key: _nonnegative(value, key, where) for key in ("eps", "alpha")})
    out["steps"] = whole(value.get("steps", 10), f"{where}.steps", minimum=0)
    for key in ("random_start", "clip_start"):
        flag = value.get(key, True)
        if not isinstance(flag, bool):
            raise BenchError(f"{where}.{key} must be true or false, got {flag!r}")
        if key == "random_start" or not flag:
            out[key] = flag
    if "name" in value:
        out["name"] = str(value["name"])
    for key, choices in (("bn_mode", BN_MODES), ("start", STARTS)):
        choice = value.get(key, choices[0])
        if choice not in choices:
            raise BenchError(f"{where}.{key} = {choice!r} is unknown; valid: {', '.join(choices)}")
        if key == "bn_mode" or choice != choices[0]:
            out[key] = choice
    return out


def with_method_recipe(table: Any, recipe: Mapping[str, Any], named: Iterable[str]) -> Any:
    """``table`` with the method's training-attack ``recipe`` filled in for every key no layer ``named``."""
    if not isinstance(table, dict):
        return table  # "none", or a mistake train_attack() will name
    named = set(named)
    return {**{k: v for k, v in recipe.items() if k not in named}, **table}


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
        out["steps"] = whole(table.get("steps", 10), f"{where}.steps", minimum=0)
        random_start = table.get("random_start", True)
        if not isinstance(random_start, bool):
            raise BenchError(f"{where}.random_start must be true or false, got {random_start!r}")
        out["random_start"] = random_start
        restarts = whole(table.get("restarts", 1), f"{where}.restarts", minimum=1)
        if restarts != 1:
            out["restarts"] = restarts
        if kind == "lsa":  # the logits' factor (bench.catalog.LSA_SCALE: AT-BSL's 10)
            out["scale"] = real(table.get("scale", LSA_SCALE), f"{where}.scale", minimum=0.0, strict=True)
    elif kind == "fgsm":
        if "alpha" in table and _nonnegative(table, "alpha", where) != out["eps"]:
            raise BenchError(f"{where}.alpha = {table['alpha']!r}: fgsm takes one step of size eps; leave alpha out")
        if "steps" in table and whole(table["steps"], f"{where}.steps", minimum=0) != 1:
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


def attack_label(attack: Mapping[str, Any]) -> str:
    """The label results are stored under: the attack's ``name``, else its kind's label (``pgd-20``, ``fgsm``)."""
    return AttackConfig.from_table(attack).label
