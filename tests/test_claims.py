"""`bench claims`: each claim's verdict known by construction, effects and Holm against hand computations, the Fisher
ratio by hand, every format, and bad input as one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from bench.analysis.claims import (
    CLAIM_IDS,
    SPECS,
    ClaimTest,
    claims_section,
    decide,
    fisher_ratio,
    weight_slope,
)
from bench.report.claims_render import FORMATS, render_claims, render_html, to_records
from bench.cell import CellRecord, CellResult
from bench.cli import cli
from bench.errors import BenchError
from bench.results.store import Store, save_theory

try:  # tests/ is a rootdir-relative package in some layouts, a plain folder on sys.path in others
    from tests.factories import add_run, flags_for_accuracy
except ModuleNotFoundError:
    from factories import add_run, flags_for_accuracy

ROOT = Path(__file__).resolve().parent.parent
# 4 classes × 25 test samples: one sample of a group (2 classes, 50 samples) is 2 percentage points.
LABELS = np.repeat(np.arange(4), 25)
TRAIN = [100, 50, 10, 5]  # well = classes 0, 1; under = classes 2, 3
PGD = {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 10}


def put(store, method, seed, clean, robust=None, *, adversarial=True, config=None, labels=LABELS, train=TRAIN, **kw):
    """One finished run with per-class correct counts (clean and the first attack)."""
    correct = {"clean": flags_for_accuracy(labels, clean)}
    if robust is not None:
        correct["pgd-20"] = flags_for_accuracy(labels, robust)
    config = {"train_attack": PGD if adversarial else "none", "epochs": 5, **(config or {})}
    return add_run(store, method=method, seed=seed, correct=correct, test_labels=labels, train_counts=train,
                   adversarial=adversarial, config=config, **kw)


def put_features(store, method, seed, vectors, labels, *, adversarial, suite="test"):
    """A finished run that kept a train feature dump (the factory's add_run does not write dumps)."""
    config = {"method": method, "seed": seed, "suite": suite, "dataset": "digits", "imbalance": "step-10",
              "model": "cnn-small", "train_attack": PGD if adversarial else "none", "features": len(labels)}
    cell_hash = f"{method}-{seed}-{'adv' if adversarial else 'nat'}"
    store.create()
    assert store.claim(CellRecord(cell_hash, suite, method, "digits", "step-10", seed, "cnn-small", adversarial, config))
    flags = flags_for_accuracy(LABELS, [20, 20, 10, 10])
    store.finish(cell_hash, CellResult(
        status="done", class_names=[str(c) for c in range(4)], train_counts=TRAIN, test_labels=LABELS,
        correct={"clean": flags, "pgd-20": flags}, provenance={"device": "cpu", "host": "t", "git_commit": "0",
                                                               "versions": {}, "subset_hash": "x"},
        wall_seconds=1.0, train_seconds=1.0, images_per_second=1.0, epochs_done=1,
        features={("train", "clean"): (np.asarray(labels), np.asarray(vectors, dtype=np.float32)),
                  ("test", "clean"): (np.asarray(labels), np.asarray(vectors, dtype=np.float32))}))
    return cell_hash


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    return url, Store(url)


def by_id(claims):
    return {c.id: c for c in claims}


def pp(counts):
    """A group's accuracy in percent from its two classes' correct counts (25 samples each)."""
    return 100 * sum(counts) / 50


def holm_by_hand(p):
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def t_interval(d):
    d = np.asarray(d, dtype=float)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return d.mean() - half, d.mean() + half


# -- the verdict rule ------------------------------------------------------------------------------------------------


def _t(n, effect, lo, hi):
    return ClaimTest("x", n, (), 0.0, 0.0, effect, 1.0, lo, hi, 0.01)


def test_verdict_rule():
    assert decide(_t(0, math.nan, math.nan, math.nan), math.nan)[0] == "inconclusive"
    assert decide(_t(2, 5.0, 1.0, 9.0), 0.001)[0] == "inconclusive"  # too few pairs, however small p is
    assert decide(_t(5, 5.0, 1.0, 9.0), 0.01)[0] == "supported"
    assert decide(_t(5, -5.0, -9.0, -1.0), 0.01)[0] == "not supported"  # significant, the wrong way
    assert decide(_t(5, -5.0, -9.0, -1.0), 0.20)[0] == "not supported"  # interval rules out every positive effect
    assert decide(_t(5, 0.0, 0.0, 0.0), math.nan)[0] == "not supported"  # all differences zero
    assert decide(_t(5, 5.0, -1.0, 9.0), 0.20)[0] == "inconclusive"
    assert decide(_t(5, -1.0, -4.0, 2.0), 0.60)[0] == "inconclusive"


def test_every_claim_names_suites_that_exist():
    assert CLAIM_IDS == ("C1", "C2", "C3", "C4-ce", "C4-focal", "C4-ldam", "C5", "C6")
    for spec in SPECS.values():
        assert spec.suites and all((ROOT / s).is_file() for s in spec.suites), spec.id


# -- C1 and Holm -------------------------------------------------------------------------------------------------------


def test_c1_supported_with_effect_interval_and_holm_by_hand(db):
    url, store = db
    adv = {s: [25, 24, 5 + s, 3] for s in range(4)}
    nat = {s: [24, 24, 20, 18 + s % 2] for s in range(4)}
    for s in range(4):
        put(store, "ce", s, adv[s], adversarial=True)
        put(store, "ce", s, nat[s], adversarial=False)
    # C4-ce gets a second tested p-value, so Holm has a family of two.
    for s in range(3):
        put(store, "srat-ce", s, [20, 20, 10, 10], [10, 10, 8 + s, 6], imbalance="exp-10")
        put(store, "drcb-ce", s, [20, 20, 10, 10], [10, 10, 5, 5 + s % 2], imbalance="exp-10")
    claims = by_id(claims_section(url))
    c1 = claims["C1"]
    d = [(pp(adv[s][:2]) - pp(adv[s][2:])) - (pp(nat[s][:2]) - pp(nat[s][2:])) for s in range(4)]
    assert d == [62, 62, 58, 58]
    assert c1.overall.n == 4 and c1.overall.seeds == (0, 1, 2, 3)
    assert c1.overall.effect == pytest.approx(np.mean(d))
    assert (c1.overall.ci_low, c1.overall.ci_high) == pytest.approx(t_interval(d))
    assert len(c1.overall.runs) == 8
    c4 = claims["C4-ce"]
    d4 = [pp([8 + s, 6]) - pp([5, 5 + s % 2]) for s in range(3)]
    assert c4.overall.effect == pytest.approx(np.mean(d4))
    raw = [stats.ttest_1samp(d, 0).pvalue, stats.ttest_1samp(d4, 0).pvalue]
    assert [c1.overall.p, c4.overall.p] == pytest.approx(raw)
    assert [c1.overall.p_holm, c4.overall.p_holm] == pytest.approx(holm_by_hand(raw))
    assert c1.verdict == "supported" and c4.verdict == "supported"
    for other in ("C2", "C3", "C4-focal", "C4-ldam", "C6"):
        assert math.isnan(claims[other].overall.p_holm) and claims[other].verdict == "inconclusive"


def test_c1_not_supported_when_natural_training_has_the_larger_gap(db):
    url, store = db
    for s in range(4):
        put(store, "ce", s, [24, 24, 20, 18 + s % 2], adversarial=True)
        put(store, "ce", s, [25, 24, 5 + s, 3], adversarial=False)
    c1 = by_id(claims_section(url))["C1"]
    assert c1.overall.effect == pytest.approx(-60)
    assert c1.verdict == "not supported" and "opposite" in c1.overall.reason


def test_c1_leaves_out_sweeps_and_names_unpaired_seeds(db):
    url, store = db
    for s in range(3):
        put(store, "ce", s, [25, 24, 5, 3], adversarial=True)
        put(store, "ce", s, [24, 24, 20, 18], adversarial=False)
        put(store, "cb-reweight", s, [25, 24, 5, 3], adversarial=True, config={"method_args": {"under_weight": 5}})
        put(store, "cb-reweight", s, [24, 24, 20, 18], adversarial=False, config={"method_args": {"under_weight": 5}})
    lone = put(store, "ce", 7, [25, 24, 5, 3], adversarial=True)
    c1 = by_id(claims_section(url))["C1"]
    assert c1.overall.n == 3 and [t.label for t in c1.breakdown] == ["ce · digits step-10 [test]"]
    assert c1.used_suites == ("test",)
    assert any(lone in note and "seed 7" in note for note in c1.notes)


# -- C2 --------------------------------------------------------------------------------------------------------------


def test_weight_slope_is_ols_on_log2():
    w, y = [1, 4, 16, 50], [100.0, 81.0, 58.0, 55.0]
    assert weight_slope(w, y) == pytest.approx(np.polyfit(np.log2(w), y, 1)[0])


def test_c2_supported_effect_by_hand(db):
    url, store = db
    labels = np.repeat(np.arange(2), 50)  # binary: one sample is 2 pp of its class
    weights = [1, 4, 16]
    adv = {s: [50, 40 - s, 30 - 2 * s] for s in range(3)}
    nat = {s: [50, 49, 48 - s] for s in range(3)}
    for s in range(3):
        for w, a, n in zip(weights, adv[s], nat[s]):
            cfg = {"method_args": {"under_weight": w}}
            put(store, "cb-reweight", s, [a, 10], adversarial=True, config=cfg, labels=labels, train=[87, 9],
                imbalance="binary:3,8:87,9")
            put(store, "cb-reweight", s, [n, 40], adversarial=False, config=cfg, labels=labels, train=[87, 9],
                imbalance="binary:3,8:87,9")
    c2 = by_id(claims_section(url))["C2"]
    x = np.log2(weights)
    d = [-np.polyfit(x, [2.0 * k for k in adv[s]], 1)[0] + np.polyfit(x, [2.0 * k for k in nat[s]], 1)[0]
         for s in range(3)]
    assert c2.overall.n == 3 and c2.overall.effect == pytest.approx(np.mean(d))
    assert (c2.overall.ci_low, c2.overall.ci_high) == pytest.approx(t_interval(d))
    assert c2.overall.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert c2.verdict == "supported" and len(c2.overall.runs) == 18


# -- C3, C6 and the Fisher ratio -------------------------------------------------------------------------------------


def test_fisher_ratio_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 2.0], [100.0, 100.0]])
    # centres (1, 0) and (10, 1); their mean (5.5, 0.5); B = mean(4.5² + 0.5², 4.5² + 0.5²) = 20.5;
    # W = mean over classes of the mean squared distance to the centre = mean(1, 1) = 1. Class 2 (1 point) is out.
    assert fisher_ratio(labels, x) == pytest.approx(20.5)
    assert fisher_ratio(labels, 3.0 * x @ np.array([[0.6, -0.8], [0.8, 0.6]]) + 5.0) == pytest.approx(20.5)
    assert math.isnan(fisher_ratio(np.array([0, 0, 1]), x[:3]))
    with pytest.raises(ValueError):
        fisher_ratio(labels, x[:4])


def _scatter_ratio(labels, x):
    """The same quantity through covariance matrices (an independent route): trace(S_B) / trace(S_W)."""
    classes = np.unique(labels)
    centres = np.stack([x[labels == c].mean(0) for c in classes])
    s_b = np.cov(centres.T, bias=True)
    s_w = np.mean([np.cov(x[labels == c].T, bias=True) for c in classes], axis=0)
    return np.trace(s_b) / np.trace(s_w)


def test_c3_supported_on_stored_dumps_and_c6_pairs_srat_with_drcb(db):
    url, store = db
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 12)
    ln = {}
    for s in range(3):
        for adversarial, spread in ((False, 8.0), (True, 1.5)):
            x = rng.normal(size=(48, 6)) + spread * np.eye(6)[labels]
            put_features(store, "ce", s, x, labels, adversarial=adversarial)
            ln[s, adversarial] = math.log(_scatter_ratio(labels, x.astype(np.float16).astype(np.float64)))
        for method, spread in (("srat-ldam", 4.0), ("drcb-ldam", 2.0)):
            put_features(store, method, s, rng.normal(size=(48, 6)) + spread * np.eye(6)[labels], labels,
                         adversarial=True)
    claims = by_id(claims_section(url))
    c3 = claims["C3"]
    d = [ln[s, False] - ln[s, True] for s in range(3)]
    assert c3.overall.n == 3 and c3.overall.effect == pytest.approx(np.mean(d), rel=1e-4)
    assert c3.verdict == "supported"
    c6 = claims["C6"]
    assert c6.overall.n == 3 and c6.overall.effect > 0
    assert [t.label for t in c6.breakdown] == ["srat-ldam vs drcb-ldam · digits step-10 [test]"]


# -- C4 per (dataset, imbalance) --------------------------------------------------------------------------------------


def test_c4_breakdown_per_imbalance_holm_within_claim(db):
    url, store = db
    for s in range(3):
        for imbalance, gain in (("step-10", 3), ("exp-10", 0)):
            put(store, "srat-focal", s, [20, 20, 10, 10], [10, 10, 5 + gain + s, 5], imbalance=imbalance)
            put(store, "drcb-focal", s, [20, 20, 10, 10], [10, 10, 5, 5 + s % 2], imbalance=imbalance)
        # a lambda sweep cell is not the paper's SRAT-Focal: left out
        put(store, "srat-focal", s, [20, 20, 10, 10], [10, 10, 25, 25], config={"method_args": {"lam": 8}})
    c4 = by_id(claims_section(url))["C4-focal"]
    assert c4.overall.n == 6
    rows = {t.label: t for t in c4.breakdown}
    assert set(rows) == {"digits exp-10 [test]", "digits step-10 [test]"}
    d_step = [pp([8 + s, 5]) - pp([5, 5 + s % 2]) for s in range(3)]
    d_exp = [pp([5 + s, 5]) - pp([5, 5 + s % 2]) for s in range(3)]
    assert rows["digits step-10 [test]"].effect == pytest.approx(np.mean(d_step))
    raw = [stats.ttest_1samp(d_exp, 0).pvalue, stats.ttest_1samp(d_step, 0).pvalue]
    assert [rows["digits exp-10 [test]"].p_holm, rows["digits step-10 [test]"].p_holm] == pytest.approx(holm_by_hand(raw))
    assert c4.overall.effect == pytest.approx(np.mean(d_step + d_exp))


# -- C5 ----------------------------------------------------------------------------------------------------------------


def _theory_frame(agree_nat: int, agree_adv: int) -> pd.DataFrame:
    rows = []
    for i in range(10):
        rows.append({"d": 1, "eps": 0.0, "numeric_bias": 0.1, "agrees_with_paper": i < agree_nat,
                     "agrees_at_effective_eta": i < agree_nat})
        rows.append({"d": 10, "eps": 0.1, "numeric_bias": 0.2, "agrees_with_paper": False,
                     "agrees_at_effective_eta": i < agree_adv})
    rows.append({"d": 10, "eps": 0.1, "numeric_bias": math.nan, "agrees_with_paper": None,
                 "agrees_at_effective_eta": None})  # no unique optimum: left out
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("agree_adv", "share", "verdict"), [(9, 95.0, "supported"), (8, 90.0, "not supported")])
def test_c5_share_of_agreeing_grid_points(db, agree_adv, share, verdict):
    url, store = db
    save_theory(store, "theory", "test grid", _theory_frame(10, agree_adv))
    c5 = by_id(claims_section(url))["C5"]
    assert c5.overall.n == 20 and c5.overall.effect == pytest.approx(share) and c5.verdict == verdict
    assert math.isnan(c5.overall.p) and math.isnan(c5.overall.p_holm)  # deterministic: no test, outside Holm
    assert {t.label: t.effect for t in c5.breakdown} == {"d = 1, eps = 0 [theory]": 100.0,
                                                        "d = 10, eps = 0.1 [theory]": pytest.approx(agree_adv * 10.0)}
    assert any("as printed" in n and "10 of 20" in n for n in c5.notes)
    assert c5.used_suites == ("theory",) and c5.overall.runs == ("theory",)


# -- missing data, formats, the command line ---------------------------------------------------------------------------


def test_empty_database_every_claim_inconclusive_naming_its_suite(db):
    url, store = db
    store.create()
    claims = claims_section(url)
    assert [c.id for c in claims] == list(CLAIM_IDS)
    for claim in claims:
        assert claim.verdict == "inconclusive" and claim.missing
        assert all(s in claim.overall.reason for s in claim.spec.suites)
    result = CliRunner().invoke(cli, ["claims", "--db", url])
    assert result.exit_code == 0, result.output
    assert "suites/theory.toml" in result.output and "suites/prelim_classwise.toml" in result.output


def _small_db(url, store, suite="s|<b>x</b>"):
    for s in range(3):
        put(store, "ce", s, [25, 24, 5 + s, 3], [20, 20, 1, 1], adversarial=True, suite=suite)
        put(store, "ce", s, [24, 24, 20, 18], [5, 5, 1, 1], adversarial=False, suite=suite)
    save_theory(store, "theory", "test grid", _theory_frame(10, 10))


def test_every_format_renders_and_escapes(db):
    url, store = db
    _small_db(url, store)
    claims = claims_section(url)
    outputs = {fmt: render_claims(claims, fmt) for fmt in FORMATS}
    records = json.loads(outputs["json"])
    assert [c["id"] for c in records["claims"]] == list(CLAIM_IDS)
    first = records["claims"][0]
    assert first["verdict"] == "supported" and first["overall"]["n"] == 3 and len(first["overall"]["runs"]) == 6
    assert {"effect", "ci_low", "ci_high", "p", "p_holm", "seeds", "runs"} <= set(first["overall"])
    assert records == json.loads(json.dumps(to_records(claims)))
    assert "<b>x</b>" not in outputs["html"] and "&lt;b&gt;x&lt;/b&gt;" in outputs["html"]
    assert outputs["html"].startswith("<!DOCTYPE html>")
    fragment = render_html(claims, standalone=False)
    assert fragment.startswith('<section class="claims">') and "<html" not in fragment
    assert "s\\|<b>x</b>" in outputs["md"]
    assert "C5" in outputs["table"] and "supported" in outputs["table"]
    assert "ce · digits step-10 [s|<b>x</b>]" in outputs["table"]  # brackets are text, not rich markup
    with pytest.raises(BenchError):
        render_claims(claims, "pdf")


def test_cli_suite_filter_out_file_and_bad_input(db, tmp_path):
    url, store = db
    _small_db(url, store, suite="quick")
    runner = CliRunner()
    result = runner.invoke(cli, ["claims", "--db", url, "--suite", "quick", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = {c["id"]: c for c in json.loads(result.output)["claims"]}
    assert records["C1"]["verdict"] == "supported" and records["C5"]["missing"]  # theory is another suite
    out = tmp_path / "claims.html"
    result = runner.invoke(cli, ["claims", "--db", url, "--out", str(out)])
    assert result.exit_code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    for args, words in ((["--suite", "quik"], "unknown suite 'quik' (did you mean 'quick'?)"),
                        (["--db", f"sqlite:///{tmp_path / 'none.db'}"], "holds no results yet")):
        argv = ["claims", *(["--db", url] if "--db" not in args else []), *args]
        result = runner.invoke(cli, argv)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0]
