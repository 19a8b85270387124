"""The offline default suite is evidence: its schedule lets every mechanism act, and its DRCB cells are not CE.

Issue 15 found ``drcb-ce`` equal to ``ce`` to the last digit on the old quick suite: deferred re-weighting started
with the first learning-rate decay at epoch 7 of 10 and got a handful of tiny steps. These tests check the shape
of the new schedule from the resolved cells, and, on a short run with the same shape (DRW half-way, decays at 80 %
and 90 %), that at every (imbalance, seed) the DRCB cells' per-sample outcomes differ from CE's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.results.read import load_results, load_sample_flags
from bench.results.store import Store
from bench.runner import run_cells
from bench.settings import load_settings
from bench.suite import load_suite, parse_overrides

QUICK = "suites/quick.toml"


def steps_per_epoch(cell) -> int:
    from bench.data import prepare

    data = prepare(cell["dataset"], cell["imbalance"], cell["seed"], root="data")
    return -(-int(data.train_y.shape[0]) // cell["batch_size"])


def test_quick_suite_schedule_lets_the_reweighting_act():
    suite = load_suite(QUICK, load_settings(None))
    deferred = [c for c in suite.cells if c["method"].startswith(("drcb-", "srat-"))]
    assert deferred
    for cell in deferred:
        epochs, drw = cell["epochs"], cell["method_params"]["drw_epoch"]
        first_decay = min(cell["milestones"])
        assert epochs - drw >= epochs / 2  # the class-balanced weights act on at least half the epochs
        assert first_decay - drw >= (epochs - drw) / 2  # and most of those at the base learning rate
    # ... and each epoch has enough steps for them to move the weights (~8 on digits at batch 64)
    assert steps_per_epoch(deferred[0]) >= 6
    srat = [c for c in suite.cells if c["method"].startswith("srat-")]
    assert all(c["method_params"]["lam"] > 0 for c in srat)  # the separation term acts from the first step


def test_quick_suite_has_natural_training_cells_for_figure_1():
    suite = load_suite(QUICK, load_settings(None))
    natural = {(c["imbalance"], c["seed"]) for c in suite.cells if c["method"] == "ce" and c["train_attack"] == "none"}
    adversarial = {(c["imbalance"], c["seed"]) for c in suite.cells if c["method"] == "ce" and c["train_attack"] != "none"}
    assert natural == adversarial and len(natural) == 6
    paper = {"ce", "focal", "ldam", "cb-reweight", "cb-focal", "drcb-ce", "drcb-focal", "drcb-ldam", "srat-ce",
             "srat-focal", "srat-ldam"}
    assert {c["method"] for c in suite.cells} == paper


@pytest.fixture()
def short_quick(tmp_path, monkeypatch):
    """CE and DRCB-CE of the quick suite on a 4-epoch run of the same shape (DRW half-way). DRCB-CE is the pair
    that matters: it differs from CE only by the deferred weights (focal and LDAM differ by their loss anyway)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text(f'[bench]\ndb = "sqlite:///{tmp_path}/q.db"\nrun_dir = "runs"\n')
    (tmp_path / "suites").symlink_to(Path(__file__).resolve().parent.parent / "suites")
    settings = load_settings(None)
    overrides = parse_overrides(["epochs=4", "method_args.drw_epoch=2"])
    suite = load_suite(QUICK, settings, overrides=overrides)
    cells = [c for c in suite.cells
             if c["method"] in ("ce", "drcb-ce") and c["train_attack"] != "none"]
    store = Store(settings.db)
    import torch

    summary = run_cells(cells, store, settings, torch.device("cpu"))
    assert summary.counts.get("done") == len(cells) == 12
    return settings.db


def test_drcb_ce_differs_from_ce_at_every_imbalance_and_seed(short_quick):
    results = load_results(short_quick)
    flags = load_sample_flags(short_quick)
    runs = results.drop_duplicates("run_id").set_index(["method", "imbalance", "seed"])["run_id"]
    for imbalance in ("step-10", "exp-10"):
        for seed in (0, 1, 2):
            ce = flags[runs[("ce", imbalance, seed)]]["flags"]
            drcb = flags[runs[("drcb-ce", imbalance, seed)]]["flags"]
            assert any(not np.array_equal(ce[label], drcb[label]) for label in ce), (imbalance, seed)
