"""Parsing of user-written values: ``"8/255"`` where a float is expected, and friends."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any

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


def read_toml(path: str | Path, what: str = "suite file") -> dict[str, Any]:
    """A TOML file's tables; a missing, unreadable or malformed file is one :class:`BenchError` line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{what} {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: malformed TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot be read: {exc}") from None
