"""User-facing errors: one clear line, no traceback.

Anything the user can fix (a malformed suite, an unknown name, a bad value, an unreachable database) is raised
as :class:`BenchError`; the CLI prints its message on one line and exits non-zero. Everything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(ValueError):
    """A mistake the user can fix; the message is shown as is, on one line."""


class Halt(BenchError):
    """The run cannot go on here (the disk under the run folder is full, the database became unwritable): one
    line, the cells held are left ``interrupted`` (not ``failed``: nothing was wrong with them) for the next run,
    and nothing already stored is lost."""


class Diverged(RuntimeError):
    """The training loss went NaN: the cell's outcome is ``diverged`` (data, not a crash)."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix when a close match exists, else ''."""
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def valid_choices(value: str, choices: Iterable[str]) -> str:
    """The tail of every 'X is not allowed' line: a close match if there is one, then every valid choice."""
    choices = [str(c) for c in choices]
    return f"{did_you_mean(value, choices)}; valid: {', '.join(choices)}"


def check_keys(table: Iterable[str], allowed: Iterable[str], where: str, context: str = "") -> None:
    """Raise the one-line error for the first key of ``table`` that is not ``allowed`` (``context`` follows the key,
    e.g. " for kind pgd")."""
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            raise BenchError(f"{where}: unknown key {key!r}{context}{valid_choices(key, allowed)}")


def unknown(kind: str, value: str, choices: Iterable[str], where: str = "") -> BenchError:
    """The error for a name that is not among the valid ones, listing them and a close match."""
    prefix = f"{where}: " if where else ""
    return BenchError(f"{prefix}unknown {kind} {value!r}{valid_choices(value, choices)}")
