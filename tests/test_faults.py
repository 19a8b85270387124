"""Nothing lost, nothing half-done: broken files, unwritable run folders, failures after a claim, stale claims,
bench.toml values, and what `bench evaluate` shows and logs.

Cells here are tiny (digits, linear model, natural training, 2 epochs, FGSM): a few seconds each.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import sys
import time
import warnings
from contextlib import closing
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bench.cell import Cell, CellResult, Status
from bench.cli import cli
from bench.errors import BenchError
from bench.results import files
from bench.results.claims import claim_abandoned, heartbeat_every
from bench.results.ledger import Ledger, check_run_folders
from bench.results.read import load_results
from bench.results.schema import utcnow
from bench.results.store import Store
from bench.settings import Settings, available_cores, load_settings

SUITE = """
name = "faults"
seeds = [0]

[defaults]
epochs = 2
milestones = [1]
warmup_epochs = 0
model = "linear"
train_attack = "none"
eval_attacks = [{ kind = "fgsm", eps = 0.1 }]
guards = []

[[grid]]
dataset = "digits"
imbalance = "step-10"
method = ["ce"]
"""


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    (tmp_path / "faults.toml").write_text(SUITE)
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    monkeypatch.delenv("BENCH_DB", raising=False)
    return tmp_path


def bench(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    for needle in needles:
        assert needle in result.output, result.output


def the_cell(project: Path) -> Cell:
    from bench.suite import load_suite

    return load_suite(project / "faults.toml", load_settings()).cells[0]


def db_rows(project: Path, sql: str) -> list[tuple]:
    path = project / "results" / "bench.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


# ------------------------------------------------------------------------------------------- broken files


@pytest.fixture(scope="module")
def clean_metrics(tmp_path_factory):
    """The metrics of the cell run without any fault (a project of its own)."""
    root = tmp_path_factory.mktemp("clean")
    old = os.getcwd()
    os.chdir(root)
    try:
        (root / "faults.toml").write_text(SUITE)
        result = CliRunner().invoke(cli, ["run", "faults.toml", "--quiet", "--db", f"sqlite:///{root / 'c.db'}",
                                          "--config", os.devnull])
        assert result.exit_code == 0, result.output
        return load_results(f"sqlite:///{root / 'c.db'}")[["attack", "class_index", "correct"]]
    finally:
        os.chdir(old)


def _truncated_checkpoint(path: Path) -> None:
    torch.save({"epoch": 0, "model": {"w": torch.zeros(3)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPTIONS = {
    "truncated": _truncated_checkpoint,
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("not a checkpoint\n"),
    "a list": lambda p: torch.save([1, 2, 3], p),
    "no model": lambda p: torch.save({"epoch": 0}, p),
    "epoch beyond the cell": lambda p: torch.save({"epoch": 99, "model": {}}, p),
    "another model": lambda p: torch.save({"epoch": 0, "model": {"w": torch.zeros(2)}, "optimizer": {}}, p),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_checkpoint_is_kept_aside_and_the_cell_restarts(project, clean_metrics, kind, capfd):
    cell = the_cell(project)
    folder = project / "runs" / cell.cell_hash
    folder.mkdir(parents=True)
    CORRUPTIONS[kind](folder / "checkpoint.pt")
    broken = (folder / "checkpoint.pt").read_bytes()
    result = bench("run", "faults.toml", "--quiet")
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output
    kept = list(folder.glob("checkpoint.pt.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == broken  # moved aside, never deleted
    err = capfd.readouterr().err + result.output
    lines = [line for line in err.splitlines() if "cannot be resumed" in line]
    assert len(lines) == 1 and kept[0].name in lines[0] and "restarts from scratch" in lines[0], err
    frame = load_results(f"sqlite:///{project / 'results' / 'bench.db'}")[["attack", "class_index", "correct"]]
    assert frame.reset_index(drop=True).equals(clean_metrics.reset_index(drop=True))  # exactly a clean run


def test_a_corrupt_final_weights_file_is_one_line_in_bench_evaluate(project):
    assert bench("run", "faults.toml", "--quiet").exit_code == 0
    final = project / "runs" / the_cell(project).cell_hash / "final.pt"
    final.write_bytes(final.read_bytes()[:100])
    result = bench("evaluate", "--attack", '{kind="pgd", eps=0.1, alpha=0.05, steps=2}')
    assert result.exit_code == 1
    assert "skipped: checkpoint" in result.output and "cannot be read" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------- run folder before the claim


def test_a_run_folder_that_cannot_be_made_is_one_line_and_nothing_is_claimed(project):
    (project / "runs").write_text("a file where the run folder should be")
    one_line_error(bench("run", "faults.toml"), "run folder", "cannot be created", "nothing was claimed")
    assert db_rows(project, "SELECT status FROM runs") == []


def test_a_cell_folder_that_is_not_a_folder_is_one_line_and_nothing_is_claimed(project):
    cell = the_cell(project)
    (project / "runs").mkdir()
    (project / "runs" / cell.cell_hash).write_text("not a folder")
    one_line_error(bench("run", "faults.toml"), f"runs/{cell.cell_hash}", "nothing was claimed")
    assert db_rows(project, "SELECT status FROM runs") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_one_line_and_nothing_is_claimed(project):
    (project / "runs").mkdir(mode=0o500)
    try:
        one_line_error(bench("run", "faults.toml"), "cannot be written", "nothing was claimed")
    finally:
        (project / "runs").chmod(0o700)
    assert db_rows(project, "SELECT status FROM runs") == []


def test_the_ledger_checks_the_cell_folder_before_the_claim(project, monkeypatch):
    cell = the_cell(project)
    store = Store(f"sqlite:///{project / 'l.db'}")
    store.create()
    (project / "runs").mkdir()
    (project / "runs" / cell.cell_hash).write_text("not a folder")
    with pytest.raises(BenchError, match="nothing was claimed"):
        Ledger(store, project / "runs").claim(cell)
    assert store.statuses([cell.cell_hash]) == {}
    writable = project / "ok"
    check_run_folders(writable, [cell])  # a folder that does not exist yet: its parent is checked, nothing made
    assert not writable.exists()


# -------------------------------------------------------------------------------- failures after a claim


def _claimed(project: Path) -> tuple[Store, Ledger, Cell]:
    store = Store(f"sqlite:///{project / 'l.db'}")
    store.create()
    ledger = Ledger(store, project / "runs")
    cell = the_cell(project)
    assert ledger.claim(cell)
    return store, ledger, cell


def test_a_failed_delivery_releases_the_cell(project, monkeypatch):
    store, ledger, cell = _claimed(project)

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files, "write_result", broken)
    with pytest.raises(OSError, match="Input/output error"):
        ledger.settle(cell, lambda: CellResult(status=Status.DONE))
    record = store.claims([cell.cell_hash])[cell.cell_hash]
    assert record[0] == Status.FAILED  # not left `running` by this live process
    with store.session() as session:
        from bench.results.schema import Run

        error = session.query(Run).one().error
    assert "the outcome could not be recorded" in error and "Input/output error" in error


def test_a_full_disk_stops_the_run_in_one_line_and_leaves_the_cell_to_resume(project, monkeypatch):
    """ENOSPC under the run folder is the machine's problem: the run stops (one line, exit 2), the cell is left
    ``interrupted`` — not ``failed`` — and the next run, with space again, finishes it."""
    real = files.write_result

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "runs/x/result.json")

    monkeypatch.setattr(files, "write_result", disk_full)
    result = bench("run", "faults.toml", "--quiet")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "run the same command again" in errors[0]
    store = Store("sqlite:///results/bench.db")
    cell = the_cell(project)
    assert store.statuses([cell.cell_hash]) == {cell.cell_hash: Status.INTERRUPTED}
    monkeypatch.setattr(files, "write_result", real)
    assert bench("run", "faults.toml", "--quiet").exit_code == 0
    assert store.statuses([cell.cell_hash]) == {cell.cell_hash: Status.DONE}


def test_a_database_that_cannot_be_written_at_delivery_stops_the_run_and_keeps_the_result(project, monkeypatch):
    """The database fails when a finished cell is stored (disk I/O error, disk full, made read-only): one line, exit
    2, the result file stays in the run folder, and `bench collect` stores it once the database works again."""
    from sqlalchemy.exc import OperationalError

    def unwritable(self, *args, **kwargs):
        raise OperationalError("INSERT INTO runs ...", {}, Exception("disk I/O error"))

    with monkeypatch.context() as patched:
        patched.setattr(Store, "ingest", unwritable)
        result = bench("run", "faults.toml", "--quiet")
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(errors) == 1 and "could not be written (disk I/O error)" in errors[0] and "bench collect" in errors[0]
    cell = the_cell(project)
    assert files.result_path(project / "runs", cell.cell_hash).exists()
    assert bench("collect").exit_code == 0
    assert Store("sqlite:///results/bench.db").statuses([cell.cell_hash]) == {cell.cell_hash: Status.DONE}


def test_ctrl_c_while_delivering_marks_the_cell_interrupted(project, monkeypatch):
    store, ledger, cell = _claimed(project)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "ingest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ledger.settle(cell, lambda: CellResult(status=Status.DONE))
    assert store.statuses([cell.cell_hash]) == {cell.cell_hash: Status.INTERRUPTED}


def test_an_exception_in_progress_code_releases_the_cell(project):
    from bench.progress import Progress
    from bench.runner import run_cells

    class Broken(Progress):
        def cell_started(self, cell):
            raise RuntimeError("a bug in the progress display")

    store = Store(f"sqlite:///{project / 'l.db'}")
    settings = Settings(run_dir=project / "runs", data_root=project / "data")
    summary = run_cells([the_cell(project)], store, settings, torch.device("cpu"), progress=Broken(enabled=False))
    assert summary.counts.get(Status.FAILED) == 1
    assert store.statuses([the_cell(project).cell_hash]) == {the_cell(project).cell_hash: Status.FAILED}


def test_a_job_keeps_its_cell_when_preempted(project):
    """A job (interruptible=False) leaves pre-emption to its driver: the cell stays its, to resume."""
    store, ledger, cell = _claimed(project)

    def preempted():
        raise SystemExit(0)

    with pytest.raises(SystemExit):
        ledger.settle(cell, preempted, interruptible=False)
    assert store.statuses([cell.cell_hash]) == {cell.cell_hash: Status.RUNNING}


# ------------------------------------------------------------------------------------------ stale claims


def test_claims_are_abandoned_when_stale_on_any_host():
    now = utcnow()
    fresh, old = now - timedelta(seconds=5), now - timedelta(days=400)
    me = socket.gethostname()
    assert claim_abandoned(f"{me}:1", old, now)  # pid 1 is alive (pid reuse after a reboot): stale wins
    assert claim_abandoned(f"other-host:{os.getpid()}", old, now)
    assert claim_abandoned("slurm:7_0", old, now)
    assert not claim_abandoned(f"{me}:1", fresh, now)
    assert not claim_abandoned("other-host:123", fresh, now)
    assert claim_abandoned(f"{me}:{2**22 + 12345}", fresh, now)  # same host, dead pid: at once
    assert claim_abandoned(None, fresh, now) and claim_abandoned(f"{me}:1", None, now)
    window = timedelta(minutes=1)
    assert claim_abandoned("other-host:1", now - timedelta(minutes=2), now, window)
    assert not claim_abandoned("other-host:1", now - timedelta(minutes=2), now)  # default window: 10 minutes
    assert heartbeat_every(timedelta(minutes=10)) == 60 and heartbeat_every(timedelta(seconds=3)) == 1


def _plant(store: Store, cell: Cell, status: str, worker: str, age: timedelta) -> None:
    from sqlalchemy import update

    from bench.results.schema import Run

    store.create()
    assert store.claim(cell.record())
    with store.session() as session, session.begin():
        session.execute(update(Run).values(status=status, worker=worker, heartbeat_at=utcnow() - age))


@pytest.mark.parametrize("status", [Status.RUNNING, Status.QUEUED])
def test_a_years_old_claim_of_a_live_pid_on_this_host_is_taken_over(project, status):
    cell = the_cell(project)
    store = Store(f"sqlite:///{project / 'l.db'}")
    _plant(store, cell, status, f"{socket.gethostname()}:1", timedelta(days=400))
    assert store.claim(cell.record())
    assert store.claims([cell.cell_hash])[cell.cell_hash][0] == Status.RUNNING


def test_the_staleness_window_is_the_setting(project):
    cell = the_cell(project)
    (project / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nstale_after_minutes = 1\n')
    assert load_settings().stale_after_minutes == 1
    url = f"sqlite:///{project / 'results' / 'bench.db'}"
    _plant(Store(url), cell, Status.RUNNING, "other-host:5", timedelta(minutes=2))
    assert not Store(url).claim(cell.record())  # the default window (10 min) keeps it
    result = bench("run", "faults.toml", "--quiet")  # bench run reads the setting: 2 min > 1 min, taken over
    assert result.exit_code == 0 and "1 done" in result.output, result.output


def test_a_live_holder_keeps_its_heartbeat_fresh(project):
    store = Store(f"sqlite:///{project / 'l.db'}", stale_after=timedelta(seconds=0.6))
    store.create()
    ledger = Ledger(store, project / "runs")
    cell = the_cell(project)
    assert ledger.claim(cell)
    other = Store(store.url, stale_after=timedelta(seconds=0.6))

    def slow_epoch() -> CellResult:
        time.sleep(1.5)  # longer than the window: only the heartbeat thread keeps the claim
        assert not other.claim(cell.record())
        return CellResult(status=Status.FAILED, error="done sleeping")

    ledger.settle(cell, slow_epoch)
    assert store.statuses([cell.cell_hash]) == {cell.cell_hash: Status.FAILED}


# ------------------------------------------------------------------------------------------ bench.toml


@pytest.mark.parametrize("line, needle", [
    ('threads = "many"', 'bench.threads = \'many\': expected a whole number >= 0 (0: torch\'s default) or "auto"'),
    ("threads = -1", "bench.threads = -1"),
    ("threads = true", "bench.threads = True"),
    ("threads = 1.5", "bench.threads = 1.5"),
    ('download = "yes"', "bench.download = 'yes': expected true or false"),
    ('device = "gpu"', "bench.device = 'gpu': expected auto, cpu, cuda, cuda:N or mps"),
    ("db = 5", "bench.db = 5: expected a database URL"),
    ('db = "results.db"', "bench.db = 'results.db': expected a database URL"),
    ("data_root = 5", "bench.data_root = 5: expected a folder path"),
    ('run_dir = ""', "bench.run_dir = '': expected a folder path"),
    ("out_dir = []", "bench.out_dir = []: expected a folder path"),
    ("executor = 3", "bench.executor = 3: expected one of local, slurm, ray, submitit-local"),
    ('executor = "kubernetes"', "bench.executor: unknown executor 'kubernetes'; valid: local, slurm, ray, submitit-local"),
    ("stale_after_minutes = 0", "bench.stale_after_minutes = 0: expected a number of minutes > 0"),
    ('stale_after_minutes = "10"', "bench.stale_after_minutes = '10'"),
    ("stale_after_minutes = inf", "bench.stale_after_minutes = inf"),
    ("stale_after_minute = 3", "unknown key bench.stale_after_minute (did you mean 'stale_after_minutes'?)"),
])
def test_every_bench_toml_value_is_checked_in_one_line(project, line, needle):
    (project / "bench.toml").write_text(f"[bench]\n{line}\n")
    with pytest.raises(BenchError) as info:
        load_settings()
    assert needle in str(info.value) and "bench.toml" in str(info.value) and "\n" not in str(info.value)
    one_line_error(bench("status"), "bench.toml")


@pytest.mark.parametrize("text, needle", [("bench = 5", "bench must be a table"),
                                           ("defaults = 3", "defaults must be a table"),
                                           ("slurm = []", "slurm must be a table")])
def test_tables_that_are_not_tables(project, text, needle):
    (project / "bench.toml").write_text(text + "\n")
    one_line_error(bench("status"), needle)


def test_threads_auto_is_every_core_this_process_may_use(project):
    (project / "bench.toml").write_text('[bench]\nthreads = "auto"\n')
    assert load_settings().threads == available_cores() >= 1
    (project / "bench.toml").write_text("[bench]\nthreads = 2\n")
    assert load_settings().threads == 2


def test_bench_db_in_the_environment_overrides_bench_toml(project, monkeypatch):
    monkeypatch.setenv("BENCH_DB", f"sqlite:///{project / 'env.db'}")
    assert load_settings().db == f"sqlite:///{project / 'env.db'}"
    monkeypatch.setenv("BENCH_DB", "nonsense")
    with pytest.raises(BenchError, match=r"\$BENCH_DB = 'nonsense': expected a database URL"):
        load_settings()
    monkeypatch.setenv("BENCH_DB", "postgresql://me:hunter2@db/bench")
    (project / "bench.toml").unlink()
    assert load_settings().db == "postgresql://me:hunter2@db/bench"


# ------------------------------------------------------------------------------- bench evaluate's output


def test_evaluate_shows_progress_and_sends_library_prints_to_the_run_log(project, monkeypatch):
    from bench import attacks

    assert bench("run", "faults.toml", "--quiet").exit_code == 0
    fgsm = attacks.ATTACKS.get("fgsm")

    def chatty(spec, forward, x, y, **kwargs):
        print("initial accuracy: 42.00%")  # what AutoAttack's reference code prints
        logging.getLogger("auto-attack").warning("zero gradients detected")
        warnings.warn("a library warning")
        return fgsm(spec, forward, x, y, **kwargs)

    monkeypatch.setitem(attacks.ATTACKS._items, "fgsm", chatty)
    result = bench("evaluate", "--attack", '{kind="fgsm", eps=0.05, name="fgsm-small"}')
    assert result.exit_code == 0, result.output
    assert "[1/1]" in result.output and "left" in result.output and "+ fgsm-small" in result.output
    for noise in ("initial accuracy", "zero gradients", "a library warning"):
        assert noise not in result.output
    log = (project / "runs" / the_cell(project).cell_hash / "evaluate.log").read_text()
    assert "bench evaluate --attack" in log and "initial accuracy: 42.00%" in log
    assert "zero gradients detected" in log and "a library warning" in log and "+ fgsm-small" in log


def test_evaluate_progress_bars_name_the_attack_on_a_terminal():
    from rich.console import Console

    from bench.progress import EvaluateProgress

    out = StringIO()
    progress = EvaluateProgress(console=Console(file=out, force_terminal=True, width=120))
    with progress.session(total=2):
        progress.run_started("abc ce · digits")
        progress.step("autoattack", 3, 10)
        progress._bars.refresh()
        assert progress.run_finished()[0] == "[1/2]"
    assert "runs" in out.getvalue() and "autoattack · abc ce" in out.getvalue()


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _status(db: Path) -> str | None:
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(db)) as conn:
            row = conn.execute("select status from runs").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def test_sigterm_stops_a_run_like_ctrl_c(project):
    """`kill PID` (or a scheduler's SIGTERM) leaves the held cell ``interrupted`` with its reason and exits 143,
    not ``running`` until a later run notices the dead process."""
    import signal
    import subprocess
    import sys

    (project / "faults.toml").write_text(SUITE.replace("epochs = 2", "epochs = 5000"))
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "faults.toml", "--quiet"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _status(project / "results" / "bench.db") == "running")
        time.sleep(1.0)  # inside the first epochs
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "run the same command again" in err and "Traceback" not in err
    assert _status(project / "results" / "bench.db") == "interrupted"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a parent-death signal is Linux's")
def test_a_worker_ends_with_its_driver():
    """A ``--workers`` driver killed outright (SIGKILL, the OOM killer) takes its workers with it: each is started
    with a parent-death signal, so none trains on holding its cells."""
    import subprocess
    import sys

    driver = ("import subprocess, sys, time\n"
              "from bench.executors.local import parent_death_signal\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
              "preexec_fn=parent_death_signal())\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        proc.kill()
        proc.wait()

        def gone() -> bool:
            try:
                return Path(f"/proc/{child}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
            except (FileNotFoundError, IndexError):
                return True

        _wait_for(gone, timeout=10)
    finally:
        proc.kill()


def test_the_executors_are_the_ones_bench_toml_is_checked_against():
    from bench.catalog import EXECUTOR_NAMES
    from bench.executors import EXECUTORS

    assert sorted(EXECUTORS) == sorted(EXECUTOR_NAMES)
