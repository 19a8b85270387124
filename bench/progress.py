"""Progress of a long run: cells done / total, the current cell's epoch, and time left (``bench run``); runs done /
total, the current attack, and time left (``bench evaluate``, :class:`EvaluateProgress`).

On a terminal, rich draws two bars (cells, epochs) with estimates of time left; elsewhere (CI logs, pipes) one
plain line per finished cell carries the same facts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from bench.cell import Status

if TYPE_CHECKING:
    from bench.cell import Cell, CellResult


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _bars(console: Console) -> RichProgress:
    """The live bars of a long job (a cells or runs bar over an epoch or attack bar): done of total, time elapsed
    and the estimate of time left."""
    return RichProgress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("left"), TimeRemainingColumn(), console=console, transient=True,
    )


class Progress:
    """Reports cells and epochs; ``enabled=False`` is silent (tests, library use)."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.total = 0
        self.finished = 0
        self.started_at = 0.0
        self.cell_started_at = 0.0
        self._bars: RichProgress | None = None
        self._cells: TaskID | None = None
        self._epochs: TaskID | None = None

    @contextmanager
    def session(self, total: int, skipped: int = 0) -> Iterator[Progress]:
        self.total, self.finished, self.started_at = total, 0, time.perf_counter()
        if self.enabled:
            if skipped:
                self.console.print(f"{skipped} cell(s) already done, skipped; {total} to run")
            if self.console.is_terminal and total:
                self._bars = _bars(self.console)
                self._cells = self._bars.add_task("cells", total=total)
                self._epochs = self._bars.add_task("epoch", total=1)
                self._bars.start()
        try:
            yield self
        finally:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None

    def cell_started(self, cell: Cell) -> None:
        self.cell_started_at = time.perf_counter()
        if self._bars is not None:
            self._bars.reset(self._epochs, total=cell.config["epochs"], description=f"epoch · {cell.label()}")

    def epoch(self, done: int, total: int, row: dict) -> None:
        if self._bars is not None:
            self._bars.update(self._epochs, completed=done, total=total)

    def cell_skipped(self, cell: Cell, why: str) -> None:
        self.finished += 1
        if self.enabled:
            self.console.print(f"[{self.finished}/{self.total}] skipped {cell.label()}: {why}", highlight=False,
                               markup=False)
        if self._bars is not None:
            self._bars.advance(self._cells)

    def cell_finished(self, cell: Cell, status: str, result: CellResult | None = None) -> None:
        self.finished += 1
        if self._bars is not None:
            self._bars.advance(self._cells)
        if not self.enabled:
            return
        now = time.perf_counter()
        per_cell = (now - self.started_at) / self.finished
        left = per_cell * (self.total - self.finished)
        extra = ""
        if result is not None and result.status == Status.DONE and result.correct:
            accs = [f"{label} {100 * flags.mean():.1f}%" for label, flags in result.correct.items()]
            extra = " · " + ", ".join(accs)
        elif result is not None and result.error:
            extra = " · " + result.error.strip().splitlines()[-1][:160]
        fused = (result.provenance or {}).get("fused", 1) if result is not None else 1
        group = f" (with its fused group of {fused})" if fused > 1 else ""  # the group's time, shared
        self.console.print(
            f"[{self.finished}/{self.total}] {status} {cell.label()} in {_duration(now - self.cell_started_at)}"
            f"{group}{extra} · about {_duration(left)} left",
            highlight=False, markup=False,
        )


class EvaluateProgress:
    """``bench evaluate``: runs done / total with the time left, and the current run's attack (batches done).

    On a terminal two rich bars (runs, the attack now running); elsewhere one line per run. ``enabled=False``
    draws no bars (``--quiet``); the per-run lines are the command's own.
    """

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.total = self.finished = 0
        self.started_at = 0.0
        self._bars: RichProgress | None = None
        self._runs: TaskID | None = None
        self._attack: TaskID | None = None
        self._run = ""

    @contextmanager
    def session(self, total: int) -> Iterator[EvaluateProgress]:
        self.total, self.finished, self.started_at = total, 0, time.perf_counter()
        if self.enabled and self.console.is_terminal and total:
            self._bars = _bars(self.console)
            self._runs = self._bars.add_task("runs", total=total)
            self._attack = self._bars.add_task("attack", total=1)
            self._bars.start()
        try:
            yield self
        finally:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None

    def run_started(self, label: str) -> None:
        self._run = label
        if self._bars is not None:
            self._bars.reset(self._attack, total=1, description=f"loading · {label}")

    def step(self, attack: str, done: int, total: int) -> None:
        """The attack ``attack`` starts on a batch: ``done`` of ``total`` attack-batches of this run finished."""
        if self._bars is not None:
            self._bars.update(self._attack, completed=done, total=max(total, 1), description=f"{attack} · {self._run}")

    def phase(self, what: str) -> None:
        """A step without batches (the guards, writing rows)."""
        if self._bars is not None:
            self._bars.update(self._attack, description=f"{what} · {self._run}")

    def run_finished(self) -> tuple[str, str]:
        """Advance the runs bar; returns ``[i/N]`` and ``about X left`` for the run's line."""
        self.finished += 1
        if self._bars is not None:
            self._bars.advance(self._runs)
        per_run = (time.perf_counter() - self.started_at) / self.finished
        return f"[{self.finished}/{self.total}]", f"about {_duration(per_run * (self.total - self.finished))} left"
