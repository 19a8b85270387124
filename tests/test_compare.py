"""`bench compare`: paired statistics against scipy, Holm by hand, seed pairing, notes, formats, bad input."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from bench.analysis.comparison import build_comparison, compare, parse_metrics
from bench.analysis.paired import holm, paired_difference
from bench.report.compare_render import fmt_ci, fmt_diff, fmt_p, fmt_pct, render, render_compare_html
from bench.cli.compare import compare_command
from bench.errors import BenchError
from bench.results.read import load_results
from bench.results.store import Store
try:  # tests/ is a rootdir-relative package in some layouts, a plain folder on sys.path in others
    from tests.factories import add_run, flags_for_accuracy
except ModuleNotFoundError:
    from factories import add_run, flags_for_accuracy

# 4 classes × 25 test samples: one sample is exactly 1 percentage point overall, 2 points of the under group.
LABELS = np.repeat(np.arange(4), 25)
TRAIN = [100, 50, 10, 5]  # well = classes 0, 1; under = classes 2, 3


def put(store, method, seed, clean, robust=None, *, attacks=None, **kw):
    """One finished run with per-class correct counts for clean and (optionally) the first attack."""
    correct = {"clean": flags_for_accuracy(LABELS, clean)}
    if robust is not None:
        correct["pgd-20"] = flags_for_accuracy(LABELS, robust)
    for label, counts in (attacks or {}).items():
        correct[label] = flags_for_accuracy(LABELS, counts)
    return add_run(store, method=method, seed=seed, correct=correct, test_labels=LABELS, train_counts=TRAIN, **kw)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    return url, Store(url)


def overall(counts):
    return float(sum(counts))  # percent, since the test set has 100 samples


# -- statistics --------------------------------------------------------------------------------------------------


def test_paired_difference_hand_computed():
    d = paired_difference([51, 52, 53], [50, 50, 50])
    half = stats.t.ppf(0.975, 2) * 1 / math.sqrt(3)  # sd of [1, 2, 3] is 1
    assert d.n == 3 and d.mean == 2 and d.sd == pytest.approx(1)
    assert d.mean_a == 52 and d.mean_b == 50
    assert d.ci_low == pytest.approx(2 - half) and d.ci_high == pytest.approx(2 + half)
    assert half == pytest.approx(4.302652729749462 / math.sqrt(3))
    assert (d.wins, d.ties, d.losses) == (3, 0, 0)
    assert math.isnan(d.wilcoxon_p)  # 3 non-zero differences < 6


def test_paired_difference_against_scipy():
    rng = np.random.default_rng(0)
    a = rng.integers(40, 60, size=9).astype(float)
    b = a - np.array([3, -1, 2, 0, 5, 4, -2, 1, 6], dtype=float)
    d = paired_difference(a, b)
    diff = a - b
    lo, hi = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    assert d.ci_low == pytest.approx(lo) and d.ci_high == pytest.approx(hi)
    assert d.t_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert d.wilcoxon_p == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert (d.wins, d.ties, d.losses) == (6, 1, 2)


def test_wilcoxon_needs_six_nonzero_differences():
    five = paired_difference([1, 2, 3, 4, 5, 0], [0, 0, 0, 0, 0, 0])
    assert math.isnan(five.wilcoxon_p) and not math.isnan(five.t_p)
    six = paired_difference([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0])
    assert six.wilcoxon_p == pytest.approx(stats.wilcoxon([1, 2, 3, 4, 5, 6]).pvalue)


def test_single_pair_has_no_interval_or_test():
    d = paired_difference([60], [55])
    assert d.mean == 5 and math.isnan(d.ci_low) and math.isnan(d.t_p)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.02, float("nan"), 0.5])  # NaN is not a test: m = 2
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)
    assert holm([0.2]) == pytest.approx([0.2])


def test_parse_metrics():
    assert parse_metrics(None) == ("standard_overall", "standard_under", "robust_overall", "robust_under")
    assert parse_metrics(["robust_under,standard_well", "robust_under"]) == ("robust_under", "standard_well")
    with pytest.raises(BenchError, match=r"unknown metric 'robust_undr' \(did you mean 'robust_under'\?\); valid:"):
        parse_metrics(["robust_undr"])


# -- building the table from a database --------------------------------------------------------------------------


def test_cell_statistics_match_scipy_and_holm_across_cells(db):
    url, store = db
    # Two cells; per seed the clean correct counts per class (overall = sum, in percent).
    a10 = [[20, 15, 10, 8], [21, 15, 9, 8], [20, 16, 11, 7], [22, 14, 10, 9], [19, 15, 12, 8], [20, 17, 10, 8],
           [21, 16, 11, 9]]
    b10 = [[20, 15, 8, 6], [20, 15, 8, 8], [19, 15, 10, 7], [22, 15, 9, 6], [19, 14, 10, 8], [20, 15, 9, 7],
           [20, 15, 10, 6]]
    a100 = [[22, 18, 4, 2], [21, 18, 5, 1], [23, 17, 3, 2]]
    b100 = [[22, 17, 4, 1], [22, 18, 3, 2], [22, 18, 4, 2]]
    for seed, (ca, cb) in enumerate(zip(a10, b10)):
        put(store, "srat-ce", seed, ca, ca, imbalance="step-10")
        put(store, "ce", seed, cb, cb, imbalance="step-10")
    for seed, (ca, cb) in enumerate(zip(a100, b100)):
        put(store, "srat-ce", seed, ca, ca, imbalance="step-100")
        put(store, "ce", seed, cb, cb, imbalance="step-100")

    comp = compare(url, "srat-ce", "ce")
    rows = {(r.cell.imbalance, r.metric): r for r in comp.rows}
    assert len(comp.rows) == 8 and comp.notes == ()
    raw = {}
    for imb, ca, cb in (("step-10", a10, b10), ("step-100", a100, b100)):
        for metric, f in (("standard_overall", overall), ("standard_under", lambda c: 2.0 * (c[2] + c[3]))):
            a = np.array([f(c) for c in ca])
            b = np.array([f(c) for c in cb])
            d = a - b
            r = rows[(imb, metric)]
            assert r.seeds == tuple(range(len(ca)))
            assert r.diff.mean_a == pytest.approx(a.mean()) and r.diff.mean_b == pytest.approx(b.mean())
            assert r.diff.mean == pytest.approx(d.mean())
            lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
            assert (r.diff.ci_low, r.diff.ci_high) == (pytest.approx(lo), pytest.approx(hi))
            assert r.diff.t_p == pytest.approx(stats.ttest_rel(a, b).pvalue)
            if np.count_nonzero(d) >= 6:
                assert r.diff.wilcoxon_p == pytest.approx(stats.wilcoxon(d).pvalue)
            else:
                assert math.isnan(r.diff.wilcoxon_p)
            assert (r.diff.wins, r.diff.ties, r.diff.losses) == ((d > 0).sum(), (d == 0).sum(), (d < 0).sum())
            raw[(imb, metric)] = stats.ttest_rel(a, b).pvalue
    for metric in ("standard_overall", "standard_under"):
        p10, p100 = raw[("step-10", metric)], raw[("step-100", metric)]
        lo_, hi_ = sorted([p10, p100])
        expected_small, expected_big = min(1, 2 * lo_), max(min(1, 2 * lo_), hi_)  # Holm, m = 2, by hand
        got = [rows[("step-10", metric)].t_p_holm, rows[("step-100", metric)].t_p_holm]
        expected = [expected_small, expected_big] if p10 <= p100 else [expected_big, expected_small]
        assert got == pytest.approx(expected)
    # robust = the first evaluation attack, here the same counts as clean
    assert rows[("step-10", "robust_under")].diff.mean == rows[("step-10", "standard_under")].diff.mean
    assert rows[("step-10", "robust_under")].attack == "pgd-20"
    # step-10 standard_under: A gains everywhere, significantly after Holm
    r = rows[("step-10", "standard_under")]
    assert r.t_p_holm < 0.05 and r.verdict == "better"
    s = comp.summary()["standard_under"]
    assert s["cells"] == 2 and s["better"] + s["worse"] + s["indistinguishable"] == 2


def test_missing_seed_does_not_shift_pairs_and_is_reported(db):
    url, store = db
    a = {0: [20, 20, 10, 10], 1: [25, 25, 25, 25], 2: [21, 20, 10, 10], 3: [22, 20, 10, 10]}
    b = {0: [20, 20, 10, 9], 2: [20, 20, 10, 9], 3: [20, 20, 10, 9]}
    for seed, c in a.items():
        put(store, "srat-ce", seed, c, c)
    for seed, c in b.items():
        put(store, "ce", seed, c, c)
    put(store, "ce", 1, [0, 0, 0, 0], status="failed")
    comp = compare(url, "srat-ce", "ce", metrics=["standard_overall"])
    (row,) = comp.rows
    assert row.seeds == (0, 2, 3)
    assert row.diff.mean_a == pytest.approx((60 + 61 + 62) / 3)  # seed 1 (100 %) is not paired with anything
    assert row.diff.mean == pytest.approx((1 + 2 + 3) / 3)
    (note,) = comp.notes
    assert "seed 1 finished for srat-ce only" in note.message and "ce: seed 1 failed" in note.message
    assert "not paired" in note.message


def test_one_method_cells_are_reported(db):
    url, store = db
    for seed in (0, 1):
        put(store, "srat-ce", seed, [20, 20, 10, 10], [10, 10, 5, 5], imbalance="step-10")
        put(store, "ce", seed, [20, 20, 9, 9], [10, 10, 4, 4], imbalance="step-10")
        put(store, "srat-ce", seed, [20, 20, 10, 10], imbalance="step-100")
        put(store, "ce", seed, [20, 20, 9, 9], dataset="cifar10")
    comp = compare(url, "srat-ce", "ce")
    assert {r.cell.imbalance for r in comp.rows} == {"step-10"}
    messages = {(n.cell.dataset, n.cell.imbalance): n.message for n in comp.notes}
    assert messages[("digits", "step-100")].startswith("only srat-ce has finished runs (seeds 0, 1)")
    assert messages[("cifar10", "step-10")].startswith("only ce has finished runs (seeds 0, 1)")
    for fmt in ("table", "md", "html", "json", "csv"):
        assert "only srat-ce has finished runs" in render(comp, fmt)


def test_suite_and_adversarial_cells_kept_apart(db):
    url, store = db
    put(store, "srat-ce", 0, [20, 20, 10, 10], [9, 9, 9, 9], suite="s1")
    put(store, "ce", 0, [20, 20, 5, 5], [9, 9, 9, 9], suite="s2")
    put(store, "srat-ce", 1, [20, 20, 10, 10], [9, 9, 9, 9], suite="s1", adversarial=False)
    put(store, "ce", 1, [20, 20, 5, 5], [9, 9, 9, 9], suite="s1")
    with pytest.raises(BenchError, match="nothing to compare"):
        compare(url, "srat-ce", "ce")


def test_attack_option_and_mismatched_attacks(db):
    url, store = db
    for seed in range(3):
        put(store, "srat-ce", seed, [20, 20, 10, 10], [10, 10, 5, 5], attacks={"fgsm": [15, 15, 8, 8]})
        put(store, "ce", seed, [20, 20, 10, 10], [10, 10, 4, 4], attacks={"fgsm": [15, 15, 8, 6 + seed]})
    first = compare(url, "srat-ce", "ce", metrics=["robust_overall"])
    assert first.rows[0].attack == "pgd-20" and first.rows[0].diff.mean == pytest.approx(2)
    fgsm = compare(url, "srat-ce", "ce", metrics=["robust_overall"], attack="fgsm")
    assert fgsm.rows[0].attack == "fgsm" and fgsm.rows[0].diff.mean == pytest.approx(1)
    assert [fgsm.rows[0].diff.wins, fgsm.rows[0].diff.ties] == [2, 1]
    with pytest.raises(BenchError, match=r"unknown attack 'fgsn' \(did you mean 'fgsm'\?\); valid: fgsm, pgd-20"):
        compare(url, "srat-ce", "ce", attack="fgsn")

    # a seed whose first attacks differ is not paired
    put(store, "srat-ce", 5, [20, 20, 10, 10], [10, 10, 5, 5])
    add_run(store, method="ce", seed=5, test_labels=LABELS, train_counts=TRAIN,
            correct={"clean": flags_for_accuracy(LABELS, [20, 20, 10, 10]),
                     "pgd-10": flags_for_accuracy(LABELS, [10, 10, 5, 5])})
    comp = compare(url, "srat-ce", "ce", metrics=["standard_overall", "robust_overall"])
    std, rob = comp.rows
    assert 5 in std.seeds and 5 not in rob.seeds
    assert any("attacks differ" in n.message and "'pgd-10'" in n.message for n in comp.notes)


def test_clean_only_run_reports_missing_robust(db):
    url, store = db
    for seed in range(2):
        put(store, "srat-ce", seed, [20, 20, 10, 10], [10, 10, 5, 5])
        put(store, "ce", seed, [20, 20, 10, 9], None if seed == 1 else [10, 10, 5, 4])
    comp = compare(url, "srat-ce", "ce", metrics=["robust_under"])
    assert comp.rows[0].seeds == (0,)
    assert any("robust: ce has no evaluation attack results at seed 1" in n.message for n in comp.notes)


def test_per_class_differences(db):
    url, store = db
    a = [[20, 20, 12, 10], [21, 20, 13, 10], [20, 21, 12, 11]]
    b = [[22, 20, 8, 10], [22, 21, 9, 10], [23, 20, 8, 10]]
    for seed, (ca, cb) in enumerate(zip(a, b)):
        put(store, "srat-ce", seed, ca, ca, class_names=["plane", "car", "bird", "cat"])
        put(store, "ce", seed, cb, cb, class_names=["plane", "car", "bird", "cat"])
    comp = compare(url, "srat-ce", "ce", metrics=["standard_overall"], per_class=True)
    rows = {r.class_name: r for r in comp.class_rows}
    assert [r.kind for r in comp.class_rows] == ["standard"] * 4  # only the kinds of the selected metrics
    plane = rows["plane"]
    d = 4 * (np.array([c[0] for c in a], float) - np.array([c[0] for c in b], float))  # 25 samples: 4 points each
    lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    assert plane.diff.mean == pytest.approx(d.mean()) and plane.diff.mean < 0  # the well class pays
    assert (plane.diff.ci_low, plane.diff.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert plane.group == "well" and rows["bird"].group == "under" and rows["bird"].diff.mean > 0
    assert rows["bird"].n_train == 10
    out = json.loads(render(comp, "json"))
    assert len(out["per_class"]) == 4 and "t_p" not in out["per_class"][0]
    for fmt in ("table", "md", "html"):
        text = render(comp, fmt)
        assert "Per class" in text and fmt_ci(plane.diff.ci_low, plane.diff.ci_high) in text


# -- output formats --------------------------------------------------------------------------------------------------


@pytest.fixture
def comparison(db):
    url, store = db
    a = [[20, 20, 12, 10], [21, 20, 13, 10], [20, 21, 12, 11], [22, 20, 12, 10], [20, 20, 13, 12], [21, 21, 12, 9]]
    b = [[22, 20, 8, 10], [22, 21, 9, 10], [23, 20, 8, 10], [21, 20, 10, 8], [20, 19, 9, 10], [22, 20, 8, 8]]
    for seed, (ca, cb) in enumerate(zip(a, b)):
        put(store, "srat-ce", seed, ca, [c // 2 for c in ca], suite="<b>s&1</b>")
        put(store, "ce", seed, cb, [c // 2 for c in cb], suite="<b>s&1</b>")
    put(store, "srat-ce", 9, [1, 1, 1, 1], suite="<b>s&1</b>")
    return compare(url, "srat-ce", "ce")


def test_every_format_carries_the_same_numbers(comparison):
    records = json.loads(render(comparison, "json"))
    rows = list(csv.DictReader(io.StringIO(render(comparison, "csv"))))
    metric_rows = [r for r in rows if r["row"] == "metric"]
    assert len(records["rows"]) == len(metric_rows) == len(comparison.rows) == 4
    assert [r["row"] for r in rows if r["row"] == "note"] == ["note"]
    texts = {fmt: render(comparison, fmt) for fmt in ("table", "md", "html")}
    for row, rec, line in zip(comparison.rows, records["rows"], metric_rows):
        d = row.diff
        for key in ("mean_a", "mean_b", "mean", "ci_low", "ci_high", "t_p", "wilcoxon_p"):
            assert rec[key] == pytest.approx(getattr(d, key), nan_ok=True) if rec[key] is not None else math.isnan(getattr(d, key))
            assert (float(line[key]) if line[key] else float("nan")) == pytest.approx(getattr(d, key), nan_ok=True)
        assert rec["t_p_holm"] == pytest.approx(row.t_p_holm)
        assert float(line["t_p_holm"]) == pytest.approx(row.t_p_holm)
        assert rec["verdict"] == line["verdict"] == row.verdict
        shown = [fmt_pct(d.mean_a), fmt_pct(d.mean_b), fmt_diff(d.mean), fmt_ci(d.ci_low, d.ci_high),
                 fmt_p(row.t_p_holm), fmt_p(row.wilcoxon_p_holm), f"{d.wins}/{d.ties}/{d.losses}"]
        for fmt, text in texts.items():
            for value in shown:
                assert value in text, (fmt, value)
    for fmt, text in texts.items():
        assert "Holm" in text, fmt
        for line in comparison.summary_lines():
            assert (line.replace("&", "&amp;") if fmt == "html" else line) in text
    assert records["summary"] == comparison.summary()
    assert "Holm" in records["correction"]


def test_html_is_self_contained_and_escaped(comparison):
    page = render_compare_html(comparison)
    assert page.startswith("<!DOCTYPE html>")
    assert "<b>s&1</b>" not in page and "&lt;b&gt;s&amp;1&lt;/b&gt;" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page and "<link" not in page


def test_markdown_escapes_pipes(db):
    url, store = db
    for seed in range(2):
        put(store, "srat-ce", seed, [20, 20, 10, 10], suite="a|b")
        put(store, "ce", seed, [20, 20, 10, 9], suite="a|b")
    text = render(compare(url, "srat-ce", "ce", metrics=["standard_overall"]), "md")
    assert "a\\|b" in text


# -- bad input ---------------------------------------------------------------------------------------------------------


def test_bad_inputs(db, tmp_path):
    url, store = db
    with pytest.raises(BenchError, match="holds no results yet"):
        compare(f"sqlite:///{tmp_path / 'absent.db'}", "srat-ce", "ce")
    assert not (tmp_path / "absent.db").exists()
    store.create()
    with pytest.raises(BenchError, match="holds no runs yet"):
        compare(url, "srat-ce", "ce")
    for seed in range(2):
        put(store, "srat-ce", seed, [20, 20, 10, 10])
        put(store, "my-method", seed, [20, 20, 10, 9])
    put(store, "ldam", 0, [0, 0, 0, 0], status="failed")
    with pytest.raises(BenchError, match=r"unknown method 'srat-cee' \(did you mean 'srat-ce'\?\); valid: ce, .*my-method"):
        compare(url, "srat-cee", "ce")
    with pytest.raises(BenchError, match="two different methods"):
        compare(url, "ce", "ce")
    with pytest.raises(BenchError, match="method ce has no runs"):
        compare(url, "srat-ce", "ce")
    with pytest.raises(BenchError, match=r"method ldam has no finished runs \(1 failed\)"):
        compare(url, "srat-ce", "ldam")
    with pytest.raises(BenchError, match=r"unknown suite 'tset' \(did you mean 'test'\?\); valid: test"):
        compare(url, "srat-ce", "my-method", suite="tset")
    comp = compare(url, "srat-ce", "my-method", metrics=["standard_overall"])  # a method only the DB knows
    assert comp.rows[0].diff.mean == 1


def test_build_comparison_without_pairs_raises(db):
    url, store = db
    put(store, "srat-ce", 0, [20, 20, 10, 10])
    put(store, "ce", 1, [20, 20, 10, 10])
    with pytest.raises(BenchError, match="nothing to compare.*no seed finished for both methods"):
        build_comparison(load_results(url), "srat-ce", "ce")


def test_duplicate_runs_at_one_seed_are_reported(db):
    url, store = db
    for seed in range(2):
        put(store, "srat-ce", seed, [20, 20, 10, 10])
        put(store, "ce", seed, [20, 20, 10, 9])
        put(store, "ce", seed, [20, 20, 10, 9], imbalance="exp-10")
        put(store, "srat-ce", seed, [20, 20, 10, 9], imbalance="exp-10")
    put(store, "ce", 0, [20, 20, 10, 8], config={"lr": 0.2})
    comp = compare(url, "srat-ce", "ce", metrics=["standard_overall"])
    assert [r.cell.imbalance for r in comp.rows] == ["exp-10"]
    assert any("several finished runs at seed 0" in n.message for n in comp.notes)


# -- command line -----------------------------------------------------------------------------------------------------


def test_cli_formats_and_out_file(comparison, db, tmp_path):
    url, _ = db
    runner = CliRunner()
    result = runner.invoke(compare_command, ["srat-ce", "ce", "--db", url, "--metric", "robust_under,standard_overall"])
    assert result.exit_code == 0, result.output
    assert "robust_under (attack: pgd-20)" in result.output and "Summary" in result.output
    assert result.output.index("robust_under") < result.output.index("standard_overall")
    result = runner.invoke(compare_command, ["srat-ce", "ce", "--db", url, "--format", "md", "--per-class"])
    assert result.exit_code == 0 and result.output.startswith("# bench compare") and "Per class" in result.output
    out = tmp_path / "sub" / "cmp.json"
    result = runner.invoke(compare_command, ["srat-ce", "ce", "--db", url, "--out", str(out)])
    assert result.exit_code == 0 and f"wrote {out}" in result.output
    assert json.loads(out.read_text())["rows"] and [p.name for p in out.parent.iterdir()] == ["cmp.json"]
    out_html = tmp_path / "cmp.txt"
    result = runner.invoke(compare_command, ["srat-ce", "ce", "--db", url, "--out", str(out_html), "--format", "html"])
    assert result.exit_code == 0 and out_html.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    "args, message",
    [
        (["srat-ce", "nope"], "unknown method 'nope'"),
        (["ce", "ce"], "two different methods"),
        (["srat-ce", "ce", "--metric", "robust"], "unknown metric 'robust'"),
        (["srat-ce", "ce", "--attack", "apgd"], "unknown attack 'apgd'"),
        (["srat-ce", "focal"], "method focal has no runs"),
    ],
)
def test_cli_errors(comparison, db, args, message):
    url, _ = db
    result = CliRunner().invoke(compare_command, [*args, "--db", url])
    assert result.exit_code != 0
    assert isinstance(result.exception, BenchError) and message in str(result.exception)


def test_cli_absent_database_and_default_db(tmp_path, monkeypatch):
    result = CliRunner().invoke(compare_command, ["srat-ce", "ce", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code != 0 and isinstance(result.exception, BenchError)
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///elsewhere.db"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    result = CliRunner().invoke(compare_command, ["srat-ce", "ce"])
    assert isinstance(result.exception, BenchError) and "elsewhere.db" in str(result.exception)
