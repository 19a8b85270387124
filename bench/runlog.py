"""A run's log file: what third-party code prints while bench works on one run goes there, not to the terminal.

AutoAttack (``pyautoattack``, the reference code) prints and logs its own progress and sanity checks; on a
terminal they would tear through the progress bars of ``bench evaluate``. :func:`run_log` sends, for the length of
a ``with`` block, ``print`` output (``sys.stdout``), Python warnings and the records of the loggers in
:data:`CAPTURED` to a log file such as ``runs/<cell>/evaluate.log``, and restores everything afterwards. bench's
own lines (progress, one-line errors) go to the console and are not captured.

The file is opened (appended to, after a header line naming the command) only when something is written, so a run
with nothing to say gets no file. A log that cannot be written loses the captured text, never the work:
:attr:`RunLog.failed` then says so.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

CAPTURED = ("auto-attack", "bench.attacks")  # loggers whose records belong in the run's log


class RunLog(io.TextIOBase):
    """The log as a text stream: opened on the first write; ``failed`` when it could not be."""

    def __init__(self, path: Path, header: str = "") -> None:
        self.path, self.header = Path(path), header
        self.handle = None
        self.failed = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.handle is None and not self.failed and text:
            try:
                self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
                self.handle.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {self.header}".rstrip() + "\n")
            except OSError:
                self.failed = True
        if self.handle is not None:
            self.handle.write(text)
        return len(text)

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        super().close()


@contextlib.contextmanager
def run_log(path: Path, header: str = "") -> Iterator[RunLog]:
    """Capture prints, warnings and the :data:`CAPTURED` loggers into ``path`` inside the block."""
    log = RunLog(path, header)
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in CAPTURED:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.level))
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        log.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.showwarning = show
            yield log
    finally:
        for logger, propagate, level in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
        failed = log.failed
        log.close()
        log.failed = failed
