"""Writing a file whole or not at all: :func:`write_atomic`, the one atomic writer of bench.

Every file bench writes for others to read — result files and state files in the run folder, checkpoints, the
report and its figures, ``bench compare --out`` — goes through :func:`write_atomic`: the bytes go to a fresh
temporary file in the target's folder (``.<name>.<random>.tmp``, created exclusively, so two writers — even on
two hosts sharing the folder — never share one), are flushed and fsynced, and the temporary file is renamed over
the target with :func:`os.replace`. A reader sees the old file or the new one, never half of one, and a crash
leaves at most a dot-file beside it; on any failure the temporary file is removed before the error propagates.
The file gets the mode :func:`open` would give it (``0o666`` less the umask), so nothing about the file tells
it was written atomically.

:func:`write_atomic` raises :class:`OSError` like :func:`open` does (library callers decide what a failure
means); :func:`write_output` is the same write for a file the user named, and turns the error into the one-line
``cannot write PATH: reason`` :class:`~bench.errors.BenchError`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from bench.errors import BenchError

Payload = bytes | str | Callable[[BinaryIO], object]


def write_atomic(path: str | os.PathLike, data: Payload) -> None:
    """Replace ``path`` with ``data`` atomically, creating its folder if needed; raises :class:`OSError`.

    ``data`` is bytes, text (written as UTF-8, newlines untranslated) or a function that writes to the open
    binary file (``lambda f: torch.save(state, f)``), so a large object is streamed, not copied into memory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_output(path: str | os.PathLike, data: Payload) -> None:
    """:func:`write_atomic` for a file the user asked for: a failure is ``cannot write PATH: reason``."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty ``.<name>.<random>.tmp`` beside ``path``, opened for writing with the mode open() gives.

    Unlike :func:`tempfile.mkstemp` (always ``0o600``) the file is created with ``0o666`` and the kernel applies
    the umask, as for :func:`open`; reading the umask instead would briefly change it for every thread.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"))
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")
