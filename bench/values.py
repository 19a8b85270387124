"""Parsing of user-written values: ``"8/255"`` where a float is expected, and friends."""

from __future__ import annotations

from fractions import Fraction

from bench.errors import BenchError


def parse_number(value: object, where: str) -> float | int:
    """An int or float from a number or a string such as ``"8/255"``, ``"0.1"`` or ``"1e-3"``."""
    if isinstance(value, bool):
        raise BenchError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                return float(Fraction(text))
            number = float(text)
            return int(number) if text.lstrip("+-").isdigit() else number
        except (ValueError, ZeroDivisionError):
            pass
    raise BenchError(f"{where}: expected a number such as 0.1 or \"8/255\", got {value!r}")
