"""Imbalance profiles (methods.md §1): how many training images each class keeps.

Profiles are strings so they can be grid values and table labels:

* ``step-K`` — the first ``C // 2`` classes keep ``n_max``, the rest ``int(n_max / K)``.
* ``exp-K`` — ``n_c = int(n_max · (1/K)^(c / (C − 1)))``.
* ``balanced`` — every class keeps ``n_max``.
* ``counts:N0,N1,…`` — explicit per-class counts.
* ``binary:A,B:NA,NB`` — a two-class problem of classes A and B (indices or names) with NA and NB training
  images; the classes are relabelled 0 and 1 and the test set keeps only those two classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.errors import BenchError

PROFILE_FORMS = "step-K, exp-K (K >= 1), balanced, counts:N0,N1,..., binary:A,B:NA,NB"


@dataclass(frozen=True)
class Profile:
    """A parsed imbalance profile."""

    kind: str  # step | exp | balanced | counts | binary
    factor: float = 1.0  # K for step/exp
    counts: tuple[int, ...] = ()  # explicit counts (counts, binary)
    classes: tuple[str, ...] = ()  # binary: the two classes as written (index or name)


def parse_profile(text: str) -> Profile:
    """Parse an imbalance string; a :class:`BenchError` naming the allowed forms otherwise."""
    value = str(text).strip()
    match = re.fullmatch(r"(step|exp)-([0-9]+(?:\.[0-9]+)?)", value)
    if match:
        factor = float(match.group(2))
        if factor < 1:
            raise BenchError(f"imbalance {value!r}: K must be >= 1, got {match.group(2)}; valid forms: {PROFILE_FORMS}")
        return Profile(match.group(1), factor=factor)
    if value == "balanced":
        return Profile("balanced")
    if value.startswith("counts:"):
        counts = _ints(value[len("counts:"):], value)
        return Profile("counts", counts=counts)
    if value.startswith("binary:"):
        parts = value[len("binary:"):].split(":")
        if len(parts) == 2:
            classes = tuple(p.strip() for p in parts[0].split(","))
            counts = _ints(parts[1], value)
            if len(classes) == 2 and len(counts) == 2 and classes[0].lstrip("0") != classes[1].lstrip("0"):
                return Profile("binary", counts=counts, classes=classes)
    raise BenchError(f"unknown imbalance profile {value!r}; valid forms: {PROFILE_FORMS}")


def _ints(text: str, whole: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise BenchError(
            f"imbalance {whole!r}: counts must be integers separated by commas; valid forms: {PROFILE_FORMS}"
        ) from None
    if not counts or any(c < 1 for c in counts):
        raise BenchError(f"imbalance {whole!r}: every count must be >= 1; valid forms: {PROFILE_FORMS}")
    return counts


def class_counts(profile: str, num_classes: int, n_max: int) -> list[int]:
    """Training images per class for ``profile`` on a dataset of ``num_classes`` with base count ``n_max``.

    >>> class_counts("exp-10", 10, 5000)
    [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]

    For ``binary:…`` the result is the two counts of the relabelled two-class problem.
    """
    parsed = parse_profile(profile)
    if num_classes < 1 or n_max < 1:
        raise BenchError(f"class_counts: num_classes and n_max must be >= 1, got {num_classes}, {n_max}")
    C = num_classes
    if parsed.kind == "balanced":
        return [int(n_max)] * C
    if parsed.kind == "step":
        under = int(n_max * (1.0 / parsed.factor))
        return [int(n_max)] * (C // 2) + [max(under, 1)] * (C - C // 2)
    if parsed.kind == "exp":
        if C == 1:
            return [int(n_max)]
        r = 1.0 / parsed.factor
        return [max(int(n_max * r ** (c / (C - 1.0))), 1) for c in range(C)]
    if parsed.kind == "counts":
        if len(parsed.counts) != C:
            raise BenchError(
                f"imbalance {profile!r}: gives {len(parsed.counts)} counts for {C} classes; valid forms: {PROFILE_FORMS}"
            )
        return list(parsed.counts)
    return list(parsed.counts)  # binary
