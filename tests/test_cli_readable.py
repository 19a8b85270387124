"""The everyday commands read as well as the report: ``bench status`` as a table, ``bench show CELL`` readable by
default (``--json`` the record as before), ``bench list suites`` with cells, done and an estimated time left.

Databases here are written through the store with known contents (no training), so every number asserted is
computed independently in the test.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from factories import bench, one_line_error

from bench.cell import CellRecord, CellResult, Status
from bench.cli import cli
from bench.results.read import run_record
from bench.results.store import Store

ROOT = Path(__file__).resolve().parent.parent
STATUS_COLUMNS = ["suite", "done", "running", "queued", "failed", "diverged", "interrupted", "total",
                  "oldest heartbeat"]
CLASSES = ["cat", "dog", "owl", "yak"]
TRAIN_COUNTS = [50, 50, 5, 5]
LABELS = np.repeat(np.arange(4), 10)  # ten test images a class
CLEAN = [9, 8, 3, 1]  # correct test images per class
ROBUST = [5, 4, 1, 0]
PGD20 = {"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 20}
GUARDS = [{"name": "zero-grad-share", "value": 0.0125, "threshold": 0.01, "flagged": True, "detail": {"zero": 1}},
          {"name": "scaled-pgd", "value": 0.0, "threshold": 0.02, "flagged": False, "detail": {}}]
PROVENANCE = {"device": "cuda:0 (NVIDIA H100)", "host": "node17", "git_commit": "c0ffee1234",
              "versions": {"torch": "2.4.1", "bench": "0.1.0"}, "subset_hash": "5ub5e7"}


def table_rows(output: str) -> dict[str, list[str]]:
    """A rich table's body rows by their first cell (header included, under its first column's name)."""
    rows = {}
    for line in output.splitlines():
        if line.startswith(("│", "┃")):
            cells = [c.strip() for c in line.strip("│┃").split("│" if line.startswith("│") else "┃")]
            rows.setdefault(cells[0], cells)
    return rows


def flags(per_class: list[int]) -> np.ndarray:
    out = np.zeros(LABELS.size, dtype=bool)
    for c, k in enumerate(per_class):
        out[np.flatnonzero(LABELS == c)[:k]] = True
    return out


def record(suite: str, method: str, seed: int, *, dataset: str = "digits", imbalance: str = "step-10",
           model: str = "cnn-small", config: dict | None = None, cell_hash: str | None = None) -> CellRecord:
    config = {"suite": suite, "method": method, "seed": seed, "dataset": dataset, "imbalance": imbalance,
              "model": model, "epochs": 7, "train_attack": {"kind": "pgd", "eps": 8 / 255, "alpha": 2 / 255,
                                                              "steps": 10},
              "eval_attacks": [PGD20], "method_params": {"lam": 2.0, "s": 30.0}, **(config or {})}
    name = cell_hash or f"{suite}-{method}-{seed}-{model}-{dataset}"[:32]
    return CellRecord(cell_hash=name, suite=suite, method=method, dataset=dataset, imbalance=imbalance, seed=seed,
                      model=model, adversarial=True, config=config)


def outcome(status: str = Status.DONE, *, speed: float = 1234.0, guards=()) -> CellResult:
    if status != Status.DONE:
        return CellResult(status=status, error="Traceback (most recent call last):\nRuntimeError: [boom] at epoch 3",
                          provenance=PROVENANCE)
    return CellResult(status=status, class_names=CLASSES, train_counts=TRAIN_COUNTS, test_labels=LABELS,
                      correct={"clean": flags(CLEAN), "pgd-20": flags(ROBUST)}, provenance=PROVENANCE,
                      wall_seconds=100.0, train_seconds=80.0, images_per_second=speed, peak_memory_mb=2048.0,
                      epochs_done=7, guards=list(guards))


def set_heartbeat(path: Path, cell_hash: str, when: datetime) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET heartbeat_at = ? WHERE cell_hash = ?", (when.isoformat(sep=" "), cell_hash))


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    monkeypatch.delenv("BENCH_DB", raising=False)
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///results.db"\nrun_dir = "runs"\n')
    return tmp_path


@pytest.fixture()
def filled(project):
    """Suite alpha: 3 done, 1 failed, 1 running with a heartbeat two hours old; suite beta: 2 queued now."""
    store = Store("sqlite:///results.db")
    store.create()
    for method, seed in (("ce", 0), ("ce", 1), ("focal", 0)):
        assert store.ingest(record("alpha", method, seed), outcome(guards=GUARDS if method == "focal" else ()))
    assert store.ingest(record("alpha", "focal", 1), outcome(Status.FAILED))
    running = record("alpha", "ldam", 0)
    assert store.claim(running)
    now = datetime.now(UTC).replace(tzinfo=None)
    set_heartbeat(project / "results.db", running.cell_hash, now - timedelta(hours=2))
    queued = [record("beta", "ce", s) for s in (0, 1)]
    assert store.enqueue(queued, ["slurm:1_0", "slurm:1_1"]) == [r.cell_hash for r in queued]
    return store


# -- bench status ----------------------------------------------------------------------------------------------------

def test_status_is_a_table_of_counts_per_suite_with_the_oldest_heartbeat(filled):
    result = bench("status")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows["suite"] == STATUS_COLUMNS
    assert rows["alpha"][1:8] == ["3", "1", "0", "1", "0", "0", "5"]
    assert rows["alpha"][8] == "2.0 h ago, stale"
    assert rows["beta"][1:8] == ["0", "0", "2", "0", "0", "0", "2"]
    assert rows["beta"][8].endswith(" s ago") and "stale" not in rows["beta"][8]
    assert rows["all"][1:8] == ["3", "1", "2", "1", "0", "0", "7"]
    assert "no heartbeat for over 10 min" in result.output and "takes those cells over" in result.output


def test_status_says_when_a_fresh_claims_process_is_gone(project):
    """A run killed a moment ago (SIGKILL) leaves its cell ``running`` with a fresh heartbeat; its pid on this host
    is gone, so the next run takes the cell over, and status says so instead of showing it live."""
    import socket
    import subprocess
    import sys

    store = Store("sqlite:///results.db")
    store.create()
    cell = record("alpha", "ce", 0)
    assert store.claim(cell)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with sqlite3.connect(project / "results.db") as conn:
        conn.execute("UPDATE runs SET worker = ? WHERE cell_hash = ?", (f"{socket.gethostname()}:{dead.pid}",
                                                                        cell.cell_hash))
    result = bench("status")
    assert table_rows(result.output)["alpha"][8].endswith(" s ago, gone"), result.output
    assert "gone: its process on this host has ended" in result.output


def test_status_of_one_suite_and_no_heartbeat_once_nothing_is_held(filled):
    result = bench("status", "--suite", "alpha")
    rows = table_rows(result.output)
    assert set(rows) == {"suite", "alpha"}  # no other suite, no total row for one suite
    done_only = bench("status", "--suite", "beta", "--db", "sqlite:///results.db")
    assert table_rows(done_only.output)["beta"][3] == "2"
    Store("sqlite:///results.db").ingest(record("gamma", "ce", 0), outcome())
    assert table_rows(bench("status", "--suite", "gamma").output)["gamma"][8] == "—"


def test_status_names_the_suites_when_one_is_unknown(filled):
    one_line_error(bench("status", "--suite", "alpah"), "unknown suite 'alpah'", "did you mean 'alpha'",
                   "valid: alpha, beta")


def test_status_of_an_empty_missing_or_unreadable_database_is_one_line(project):
    one_line_error(bench("status"), "holds no results yet", "bench run")
    Store("sqlite:///results.db").create()
    one_line_error(bench("status"), "holds no runs yet", "bench run SUITE.toml")
    (project / "junk.db").write_bytes(b"this is not a database" * 100)
    one_line_error(bench("status", "--db", "sqlite:///junk.db"), "cannot be read")
    one_line_error(bench("status", "--db", "postgresql://nobody@127.0.0.1:1/bench"), "127.0.0.1")


# -- bench show ------------------------------------------------------------------------------------------------------

def test_show_is_readable_config_classes_guards_provenance(filled):
    cell = record("alpha", "focal", 0).cell_hash
    result = bench("show", cell[:14])  # a unique prefix
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith(f"cell {cell} · suite alpha · done\n")
    assert "focal · digits step-10 · seed 0 · model cnn-small · adversarial training · epoch 7 of 7" in out
    assert "epochs 7" in out and "pgd-10 (alpha=2/255, eps=8/255, steps=10)" in out  # the training attack
    assert "eval_attacks pgd-20 (alpha=2/255, eps=8/255, steps=20)" in out and "lam=2, s=30" in out
    rows = table_rows(out)
    assert rows["class"] == ["class", "train", "test", "clean %", "pgd-20 %"]
    for c, name in enumerate(CLASSES):  # accuracy = correct / 10 test images
        assert rows[name] == [name, str(TRAIN_COUNTS[c]), "10", f"{CLEAN[c] * 10:.1f}", f"{ROBUST[c] * 10:.1f}"]
    # groups: the two classes with most training images are well-represented; correct over test images
    assert rows["overall"][3:] == [f"{100 * sum(CLEAN) / 40:.1f}", f"{100 * sum(ROBUST) / 40:.1f}"]
    assert rows["well-represented"][3:] == [f"{100 * sum(CLEAN[:2]) / 20:.1f}", f"{100 * sum(ROBUST[:2]) / 20:.1f}"]
    assert rows["under-represented"][3:] == [f"{100 * sum(CLEAN[2:]) / 20:.1f}", f"{100 * sum(ROBUST[2:]) / 20:.1f}"]
    assert rows["guard"] == ["guard", "value", "threshold", "verdict"]
    assert rows["zero-grad-share"] == ["zero-grad-share", "0.0125", "0.0100", "FLAGGED"]
    assert rows["scaled-pgd"] == ["scaled-pgd", "0.0000", "0.0200", "ok"]
    for text in ("host node17", "device cuda:0 (NVIDIA H100)", "git c0ffee1234", "data subset 5ub5e7",
                 "1,234 images/s", "peak memory 2,048 MB", "torch 2.4.1", "wall 2 min", "training 80.0 s"):
        assert text in out, text
    assert "error" not in out


def test_show_json_keeps_the_record_as_it_was(filled):
    """``--json``: exactly what ``bench show`` printed before it became readable (the record, then the error)."""
    url = "sqlite:///results.db"
    for cell, failed in ((record("alpha", "ce", 0).cell_hash, False), (record("alpha", "focal", 1).cell_hash, True)):
        expected = run_record(url, cell)
        error = expected.pop("error", None)
        result = bench("show", cell, "--json")
        assert result.exit_code == 0, result.output
        text = json.dumps(expected, indent=2, default=str) + "\n" + (error + "\n" if error else "")
        assert result.output == text
        assert bool(error) == failed
        parsed = json.loads(result.output[: len(json.dumps(expected, indent=2, default=str))])
        assert parsed["class_accuracy"] == ({} if failed else {
            "clean": {n: CLEAN[c] / 10 for c, n in enumerate(CLASSES)},
            "pgd-20": {n: ROBUST[c] / 10 for c, n in enumerate(CLASSES)}})


def test_show_of_a_failed_cell_prints_its_error_as_stored(filled):
    result = bench("show", record("alpha", "focal", 1).cell_hash)
    assert result.exit_code == 0, result.output
    assert "· failed" in result.output.splitlines()[0]
    assert "class-wise accuracy: none stored (status failed)" in result.output
    assert "guards: none stored" in result.output
    assert result.output.endswith("error (failed):\nTraceback (most recent call last):\n"
                                  "RuntimeError: [boom] at epoch 3\n")  # brackets kept: no markup


def test_show_of_an_unknown_or_ambiguous_cell_is_one_line(filled):
    one_line_error(bench("show", "zzzz"), "cell 'zzzz' matches no run")
    one_line_error(bench("show", "alpha-"), "is ambiguous")


# -- bench list suites -----------------------------------------------------------------------------------------------
SUITE = """
name = "{name}"
description = "{description}"
seeds = {seeds}

[defaults]
epochs = 3
train_attack = {{ eps = 0.1, alpha = 0.05, steps = 2 }}
eval_attacks = [{{ kind = "pgd", eps = 0.1, alpha = 0.05, steps = 2 }}]

[[grid]]
dataset = "digits"
imbalance = "step-10"
method = {methods}
model = {models}
"""
DIGITS_STEP10 = 5 * 87 + 5 * int(87 / 10)  # digits' smallest class has 87 training images; step-10 keeps a tenth


def write_suite(folder: Path, name: str, methods: str, models: str, seeds: str = "[0]", description: str = "") -> Path:
    path = folder / "suites" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(SUITE.format(name=name, description=description or f"the {name} suite",
                                                 seeds=seeds, methods=methods, models=models)))
    return path


@pytest.fixture()
def suites(project):
    """small: 4 cells on (digits, linear), one done at 0.5 images/s and one failed; mixed: a linear and a cnn-small
    cell; conv: a cnn-small cell only. Elsewhere in the database: (digits, linear) at 0.6875 images/s, and
    (svhn, linear) at 1000 images/s, which no digits cell may use."""
    from bench.cli.common import load_settings
    from bench.suite import load_suite

    small = write_suite(project, "small", '["ce", "focal"]', '"linear"', seeds="[0, 1]")
    write_suite(project, "mixed", '"ce"', '["linear", "cnn-small"]')
    write_suite(project, "conv", '"ce"', '"cnn-small"')
    (project / "suites" / "theory.toml").write_text((ROOT / "suites" / "theory.toml").read_text())
    (project / "suites" / "broken.toml").write_text("name = [unclosed\n")
    cells = load_suite(small, load_settings(None)).cells
    store = Store("sqlite:///results.db")
    store.create()
    assert store.ingest(cells[0].record(), outcome(speed=0.5))
    assert store.ingest(cells[1].record(), outcome(Status.FAILED))
    assert store.ingest(record("elsewhere", "ce", 0, model="linear"), outcome(speed=0.6875))
    assert store.ingest(record("elsewhere", "ce", 0, model="linear", dataset="svhn"), outcome(speed=1000.0))
    return cells


def test_list_suites_counts_cells_and_done_and_estimates_the_time_left(suites):
    result = bench("list", "suites")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert rows["suite file"] == ["suite file", "name", "cells", "done", "est. time left *", "description"]
    # small: 3 cells to run × 3 epochs × 475 images ÷ mean(0.5, 0.6875) images/s = 7200 s
    assert 3 * 3 * DIGITS_STEP10 / ((0.5 + 0.6875) / 2) == 7200
    assert rows["suites/small.toml"] == ["suites/small.toml", "small", "4", "1", "~2.0 h", "the small suite"]
    # mixed: the linear cell is priced (3 × 475 ÷ 0.59375 = 2400 s), the cnn-small one has no recorded speed
    assert rows["suites/mixed.toml"][2:5] == ["2", "0", "~40 min (1 of 2 cells)"]
    assert rows["suites/conv.toml"][2:5] == ["1", "0", "—"]
    assert rows["suites/theory.toml"][2:5] == ["theory", "—", "—"]
    # a file that is not even TOML is listed too, with where to see why (it is not silently left out)
    assert rows["suites/broken.toml"][:5] == ["suites/broken.toml", "broken", "—", "—", "—"]
    assert "not valid" in " ".join(rows["suites/broken.toml"])
    assert "* estimate" in result.output and "images/s" in result.output


def test_list_suites_when_every_cell_is_done(suites):
    store = Store("sqlite:///results.db")
    for cell in suites[1:]:
        assert store.ingest(cell.record(), outcome(speed=0.5))  # the failed one too: only done is never rewritten
    assert table_rows(bench("list", "suites").output)["suites/small.toml"][2:5] == ["4", "4", "0"]


def test_list_suites_without_a_database_or_with_an_unreadable_one(project):
    write_suite(project, "small", '["ce", "focal"]', '"linear"', seeds="[0, 1]")
    result = bench("list", "suites")
    assert result.exit_code == 0, result.output
    assert table_rows(result.output)["suites/small.toml"][2:5] == ["4", "0", "—"]
    assert not (project / "results.db").exists()  # listing never creates the database
    (project / "junk.db").write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(cli, ["list", "suites", "--db", "sqlite:///junk.db"])
    assert result.exit_code == 0
    assert table_rows(result.output)["suites/small.toml"][2:5] == ["4", "—", "—"]
    assert "done and time left unknown: database sqlite:///junk.db cannot be read" in result.output


def test_list_suites_of_the_shipped_suites_counts_what_bench_run_expands(project, monkeypatch):
    from bench.cli.common import load_settings
    from bench.suite import load_suite

    (project / "suites").symlink_to(ROOT / "suites")
    rows = table_rows(bench("list", "suites").output)
    assert rows["suites/quick.toml"][2] == str(len(load_suite(ROOT / "suites" / "quick.toml", load_settings(None)).cells))
    assert rows["suites/cifar10_full.toml"][2] == "220"  # README: 4 imbalances × 11 methods × 5 seeds


def test_the_estimate_leaves_out_a_validation_splits_held_out_images():
    from bench.analysis.cost import train_images

    cell = {"dataset": "cifar10", "imbalance": "exp-100", "dataset_args": {}}
    # CIFAR-10 exp-100: 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50 (12,406); 10 % held out, halves up:
    # 500, 300, 180, 108, 65, 39, 23, 14, 8, 5 (1,242)
    assert train_images(cell) == 12406
    assert train_images({**cell, "val_split": 0.1}) == 12406 - 1242
