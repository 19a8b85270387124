"""Parsing of user-written values: ``"8/255"`` where a float is expected, and friends."""

from __future__ import annotations

import math
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def parse_number(value: object, where: str) -> float | int:
    """A finite int or float from a number or a string such as ``"8/255"``, ``"0.1"`` or ``"1e-3"``; NaN and
    infinities (TOML's ``nan`` and ``inf``, ``"nan"``, ``"1e999"``) are refused."""
    if isinstance(value, bool):
        raise BenchError(f"{where}: expected a number, got {value!r}")
    number: float | int | None = None
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                number = float(Fraction(text))
            else:
                number = float(text)
                number = int(number) if text.lstrip("+-").isdigit() else number
        except (ValueError, ZeroDivisionError, OverflowError):
            pass
    if number is None:
        raise BenchError(f"{where}: expected a number such as 0.1 or \"8/255\", got {value!r}")
    if isinstance(number, float) and not math.isfinite(number):
        raise BenchError(f"{where}: {value!r} is not a finite number; expected a number such as 0.1 or \"8/255\"")
    return number


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


def fmt_setting(value) -> str:
    """A config value as a label shows it (report rows, leaderboard variants): ``0.5``, ``2``, ``none``, ``true``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format(value, "g")
    return str(value)
