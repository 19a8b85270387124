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

import math
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
            if len(classes) == 2 and len(counts) == 2 and classes[0].lstrip("0") == classes[1].lstrip("0"):
                raise BenchError(f"imbalance {value!r} names class {classes[0]} twice; binary:A,B:NA,NB needs two "
                                 "different classes")
            if len(classes) == 2 and len(counts) == 2:
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


def pick_classes(classes: tuple[str, ...], class_names: tuple[str, ...] | list[str], num_classes: int,
                 dataset: str = "this dataset") -> list[int | None]:
    """The label indices of a ``binary:`` profile's two classes: a whole number below ``num_classes`` is an index,
    anything else a class name. ``None`` for a name that cannot be checked yet (``class_names`` empty: the dataset
    names its classes only once loaded). A :class:`BenchError` for an index out of range, an unknown name, or one
    class named twice."""
    names = [str(n) for n in class_names]
    picked: list[int | None] = []
    for token in classes:
        if token.isdigit() and int(token) < num_classes:
            picked.append(int(token))
        elif token in names:
            picked.append(names.index(token))
        elif token.isdigit() or names:
            indices = [str(c) for c in range(num_classes)]
            valid = (", ".join(indices) if names == indices or not names else
                     f"{', '.join(names)} (or their indices 0-{num_classes - 1})")
            raise BenchError(f"class {token!r} is not a class of {dataset}; valid: {valid}")
        else:
            picked.append(None)
    if picked[0] is not None and picked[0] == picked[1]:
        raise BenchError(f"classes {classes[0]!r} and {classes[1]!r} are the same class (index {picked[0]}); "
                         "name two different classes")
    return picked


def check_profile(text: str, meta, n_max: int, dataset: str) -> list[int]:
    """Check a profile against a dataset's :class:`~bench.data.datasets.Metadata` before anything is loaded: the
    class count of ``counts:``, the classes of ``binary:``, the training images each class keeps (with ``n_max``,
    0 = the smallest class) against those the dataset has, and a test image for every class kept. One
    :class:`BenchError` line starting with the key at fault (``imbalance = …`` or ``dataset_args.n_max = …``);
    the caller adds the file. Returns the training images each kept class keeps (empty when the metadata does not
    say how many the dataset has)."""
    profile = parse_profile(text)
    key = f"imbalance = {text!r}"
    C = meta.num_classes
    if profile.kind == "binary":
        try:
            picked = pick_classes(profile.classes, meta.class_names, C, dataset)
        except BenchError as exc:
            raise BenchError(f"{key}: {exc}") from None
        wanted = list(profile.counts)
    else:
        if profile.kind == "counts" and len(profile.counts) != C:
            raise BenchError(f"{key} gives {len(profile.counts)} counts, but {dataset} has {C} classes; "
                             f"give one count per class (counts:N0,...,N{C - 1})")
        picked = list(range(C))
        base = n_max or (min(meta.train_counts) if meta.train_counts else 0)
        wanted = class_counts(text, C, base) if base else []
        if n_max and profile.kind != "counts":
            key = f"dataset_args.n_max = {n_max} with {key}"
        if profile.kind in ("step", "exp") and base and base < profile.factor:
            # the smallest class would keep base/K < 1 images, clamped to 1: another ratio than the one named
            raise BenchError(f"{key} would keep {base / profile.factor:.3g} images of the smallest class (clamped to "
                             f"1, a ratio of {base:g} instead of {profile.factor:g}); the largest class needs at "
                             f"least {math.ceil(profile.factor)} images")
    names = meta.class_names

    def shown(c: int) -> str:
        return f"class {c} ({names[c]})" if names and names[c] != str(c) else f"class {c}"

    for c, want in zip(picked, wanted):
        have = meta.train_counts[c] if meta.train_counts and c is not None else want
        if want > have:
            most = (f"n_max must be at most {largest_n_max(text, meta.train_counts)} for this profile"
                    if key.startswith("dataset_args") else f"at most {have}")
            raise BenchError(f"{key} keeps {want} training images of {shown(c)}, but {dataset} has {have}; {most}")
    for c in picked:
        if meta.test_counts and c is not None and meta.test_counts[c] < 1:
            raise BenchError(f"{key}: {shown(c)} of {dataset} has no test images, so its class-wise accuracy "
                             "would be undefined; every class kept needs at least one test image")
    return wanted


def held_out(counts: list[int], share: float) -> list[int]:
    """Validation images per class: ``max(1, round(share × n_c))`` (halves up) of a class's ``n_c`` kept images,
    none when ``share`` is 0. The one formula :mod:`bench.data.subset` and the suite's checks both use."""
    if share <= 0:
        return [0] * len(counts)
    return [max(1, math.floor(share * n + 0.5)) for n in counts]


def largest_n_max(text: str, train_counts: tuple[int, ...]) -> int:
    """The largest ``n_max`` with which ``text`` keeps no more images of any class than ``train_counts`` has
    (0 when not even 1 fits); the profile's counts grow with ``n_max``, so a bisection finds it."""
    lo, hi = 0, max(train_counts)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if all(w <= n for w, n in zip(class_counts(text, len(train_counts), mid), train_counts)):
            lo = mid
        else:
            hi = mid - 1
    return lo
