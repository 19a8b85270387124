"""The executor contract, its registry, and the options tables executors read from bench.toml and suites.

An executor decides *where* cells run; what a cell is and how its outcome is stored is the same everywhere
(:func:`bench.runner.run_cell`, :func:`bench.runner.deliver`). Each one is a class registered under the name that
``bench run --executor NAME`` takes, with two methods:

* ``check()`` — everything that can be found wrong before a cell starts (``sbatch`` missing, a Ray address that
  does not answer), raised as one :class:`~bench.errors.BenchError` line;
* ``run() -> int`` — run the cells not yet done, return the process's exit code.

An executor that reads a table (``[slurm]``, ``[ray]``) declares its keys in ``OPTIONS``; bench.toml's table is
overridden key by key by the suite file's table of the same name, and unknown keys or wrong types are one line
naming the file, the key and the valid keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.catalog import EXECUTOR_NAMES, declared
from bench.errors import BenchError, valid_choices
from bench.registry import Registry
from bench.settings import Settings
from bench.suite import SuiteFile, read_suite_file
from bench.results.store import Store
from bench.cell import Cell


@dataclass(frozen=True)
class Option:
    """One key of an executor's table: accepted types, default, and what it means (for errors and docs)."""

    types: tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None  # an extra condition, e.g. > 0
    requirement: str = ""  # how the condition reads in an error

    def validate(self, value: Any, where: str) -> Any:
        bad_type = not isinstance(value, self.types) or (isinstance(value, bool) and bool not in self.types)
        if bad_type:
            names = " or ".join(t.__name__ for t in self.types)
            raise BenchError(f"{where} = {value!r}: expected {names}")
        if self.check is not None and not self.check(value):
            raise BenchError(f"{where} = {value!r}: must be {self.requirement}")
        return value


def at_least(minimum: float) -> dict[str, Any]:
    """``Option(..., **at_least(1))``: a number no smaller than ``minimum``."""
    return {"check": lambda v: v >= minimum, "requirement": f">= {minimum:g}"}


@dataclass
class RunContext:
    """What ``bench run`` hands an executor: the cells (already selected) and how to run them."""

    suite_name: str
    suite_path: Path
    cells: list[Cell]
    store: Store
    settings: Settings
    device: str  # as given (auto | cpu | cuda[:N]); each worker resolves it on its own machine
    download: bool = False
    debug: bool = False
    quiet: bool = False
    workers: int = 1
    ray_address: str | None = None
    cli_args: list[str] = field(default_factory=list)  # to start `bench run` again in worker processes
    options: dict[str, Any] = field(default_factory=dict)  # the executor's table, validated


class Executor:
    """Base class; subclasses set ``table`` and ``OPTIONS`` when they read a bench.toml table."""

    table: ClassVar[str | None] = None
    OPTIONS: ClassVar[dict[str, Option]] = {}
    description: ClassVar[str] = ""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def check(self) -> None:
        """Raise :class:`BenchError` for anything that would stop the run, before any cell starts."""

    def run(self) -> int:
        raise NotImplementedError


EXECUTORS: Registry[type[Executor]] = Registry("executor")


def register_executor(name: str):
    """Decorator: register an executor under ``name``, which :data:`bench.catalog.EXECUTOR_NAMES` must declare (so
    bench.toml's ``executor`` is checked without importing the executors)."""
    return EXECUTORS.register(declared("executor", name, EXECUTOR_NAMES))


def executor_options(executor: type[Executor], settings: Settings,
                     suite: SuiteFile | str | Path | None) -> dict[str, Any]:
    """The executor's table: defaults < bench.toml's ``[table]`` < the suite's ``[table]``, validated.

    ``suite`` is the suite file ``bench run`` has already read (:func:`bench.suite.read_suite_file`), or its path.
    """
    options = {key: option.default for key, option in executor.OPTIONS.items()}
    if executor.table is None:
        return options
    layers = [(settings.executor_tables.get(executor.table, {}), str(settings.source or "bench.toml"))]
    if suite is not None:
        file = read_suite_file(suite)
        layers.append((file.executor_table(executor.table), str(file.path)))
    for table, where in layers:
        for key, value in table.items():
            if key not in executor.OPTIONS:
                raise BenchError(f"{where}: unknown key {executor.table}.{key}{valid_choices(key, executor.OPTIONS)}")
            options[key] = executor.OPTIONS[key].validate(value, f"{where}: {executor.table}.{key}")
    return options
