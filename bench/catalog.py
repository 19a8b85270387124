"""The names and facts of the torch-backed plug-ins, declared without torch: what a suite is validated against.

Why this module exists: :mod:`bench.suite` must check a cell's ``model``, ``guards`` and ``eval_attacks`` and
label its attacks, but the plug-ins that implement them (:mod:`bench.models`, :mod:`bench.guards`,
:mod:`bench.attacks`) import torch (and the guards the results store). Each fact is declared here once; those
modules register their implementations under these names and refuse a name not declared here, so the two sides
cannot drift apart:

* :data:`MODEL_NAMES` — the model factories of :mod:`bench.models`;
* :data:`GUARD_NAMES` (in the order guards run and are listed) and :data:`DEFAULT_GUARDS` — :mod:`bench.guards`;
* :data:`KINDS` — every attack kind's extra config keys and default label (:class:`AttackConfig`), and
  AutoAttack's attack names and versions — :mod:`bench.attacks`;
* :data:`EXECUTOR_NAMES` — :mod:`bench.executors` (bench.toml's ``executor`` is checked when the file is read).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

# -- models -------------------------------------------------------------------------------------------------------
MODEL_NAMES = ("resnet18", "cnn-small", "linear", "preact-resnet18", "wrn-34-10", "wrn-28-10")
VECTOR_MODELS = ("linear",)  # the models that take vectors [N, D]; the others need images [N, C, H, W]

# -- executors ----------------------------------------------------------------------------------------------------
EXECUTOR_NAMES = ("local", "slurm", "ray", "submitit-local")

# -- augmentations ------------------------------------------------------------------------------------------------
# bench.augment's kinds; a cell's ``augment`` is one of them or several joined by "+", applied in order.
AUGMENTATIONS = ("none", "crop-flip", "crop", "flip", "randaugment", "autoaugment")


def augment_parts(value: object) -> list[str] | None:
    """The augmentations of an ``augment`` value in order (``"randaugment+crop-flip"`` → two), or ``None`` when it
    is not a valid value (``none`` only alone, each name once)."""
    if not isinstance(value, str):
        return None
    parts = value.split("+")
    if any(p not in AUGMENTATIONS for p in parts) or len(set(parts)) != len(parts) or ("none" in parts
                                                                                        and len(parts) > 1):
        return None
    return parts


# -- guards -------------------------------------------------------------------------------------------------------
GUARD_NAMES = ("zero-grad-share", "scaled-pgd", "pgd-aa-gap")
DEFAULT_GUARDS = GUARD_NAMES  # a cell's guards when it names none: every one

# -- attacks ------------------------------------------------------------------------------------------------------
# AutoAttack's attacks by the reference implementation's names, and its standard (Linf) ensemble.
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
AA_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
AA_VERSIONS = ("standard", "custom")
# Fewest classes each AutoAttack component works with: the DLR loss reads the 3rd largest logit, its targeted
# form the 4th; the others need a wrong class to exist.
AA_MIN_CLASSES = {"apgd-ce": 2, "apgd-dlr": 3, "apgd-t": 4, "fab": 2, "fab-t": 2, "square": 2}
AA_TARGET_CLASSES = 9  # target classes of apgd-t and fab-t in the standard version (capped at C − 1)
# The logit-scaled attack's factor: AT-BSL's eval.py runs its LSA as PGD on CE(10 · logits) (``alpha=10.``).
LSA_SCALE = 10.0


@dataclass(frozen=True)
class AttackConfig:
    """A configured attack without its implementation: ``kind`` from :data:`KINDS`, its parameters, its label.

    :class:`bench.attacks.AttackSpec` adds ``run``. Keys a kind does not read keep their defaults (FGSM ignores
    ``alpha``, ``steps`` and ``random_start``).
    """

    kind: str
    eps: float
    alpha: float = 0.0
    steps: int = 0
    random_start: bool = True
    name: str = ""
    restarts: int = 1
    version: str = "standard"
    attacks: tuple[str, ...] = field(default=())
    scale: float = LSA_SCALE  # the logits' factor inside the loss of kind ``lsa``

    @property
    def label(self) -> str:
        """``name`` when set, else the kind's default label (``pgd-20``, ``fgsm``, ``autoattack`` …)."""
        return self.name or KINDS[self.kind].label(self)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Self:
        """The spec of a validated ``eval_attacks`` table (see ``bench.suite``); absent keys take defaults."""
        return cls(kind=table["kind"], eps=float(table["eps"]), alpha=float(table.get("alpha", 0.0)),
                   steps=int(table.get("steps", 0)), random_start=bool(table.get("random_start", True)),
                   name=str(table.get("name", "")), restarts=int(table.get("restarts", 1)),
                   version=str(table.get("version", "standard")), attacks=tuple(table.get("attacks", ())),
                   scale=float(table.get("scale", LSA_SCALE)))


@dataclass(frozen=True)
class AttackKind:
    """What the suite validator and the labeller need to know of a kind: its extra keys and default label."""

    keys: tuple[str, ...]  # config keys it reads besides kind, eps and name
    label: Callable[[AttackConfig], str]


def _restart_suffix(spec: AttackConfig) -> str:
    return f"x{spec.restarts}" if spec.restarts > 1 else ""


PGD_KEYS = ("alpha", "steps", "random_start", "restarts")
# The kinds in the order ``bench list attacks`` and error messages show them.
KINDS: dict[str, AttackKind] = {
    "pgd": AttackKind(PGD_KEYS, lambda s: f"pgd-{s.steps}{_restart_suffix(s)}"),
    "pgd-cw": AttackKind(PGD_KEYS, lambda s: f"pgd-cw-{s.steps}{_restart_suffix(s)}"),
    "lsa": AttackKind((*PGD_KEYS, "scale"), lambda s: f"lsa{s.scale:g}-{s.steps}{_restart_suffix(s)}"),
    "fgsm": AttackKind((), lambda s: "fgsm"),
    "autoattack": AttackKind(("version", "attacks"),
                             lambda s: "autoattack" if s.version == "standard" else "+".join(s.attacks)),
}


def declared(kind: str, name: str, names: Mapping[str, Any] | tuple[str, ...]) -> str:
    """``name`` if it is declared here among ``names``, else the ValueError a registering plug-in raises."""
    if name not in names:
        raise ValueError(f"{kind} {name!r} is not declared in bench.catalog; declared: {', '.join(names)}")
    return name
