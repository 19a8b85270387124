"""bench leaderboard: ranked tables per setting, the overall ranking and the static site.

Every number is checked against a value computed here, independently, from the per-sample flags the database
was built with (tests/factories.py): group accuracies, the per-sample worst case, the ranking with its tie-break
and shared ranks, and the mean rank across settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from factories import add_run

from bench.analysis.leaderboard import METRICS, build_leaderboard, make_leaderboard
from bench.analysis.leaderboard_data import load_leaderboard_data
from bench.cli import cli
from bench.errors import BenchError
from bench.report.leaderboard_render import method_page, write_site
from bench.report.reference import Reference
from bench.results.store import Store

LABELS = np.repeat([0, 1, 2, 3], 10)  # 40 test images, 10 a class
TRAIN = [100, 100, 10, 10]  # classes 2 and 3 are under-represented
UNDER = LABELS >= 2
ATTACKS = [{"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 5}, {"kind": "fgsm", "eps": 0.1}]
TRAIN_ATTACK = {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 10}
XSS = "<img src=x onerror=alert(1)>"


def config(**extra) -> dict:
    return {"train_attack": TRAIN_ATTACK, "eval_attacks": ATTACKS, "epochs": 3, "lr": 0.05, **extra}


def random_flags(rng, levels: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Clean, pgd-5 and fgsm flags, not nested, so the worst case is below the worst single attack."""
    return {label: rng.random(LABELS.size) < p for label, p in zip(("clean", "pgd-5", "fgsm"), levels)}


def expected(flags: dict[str, np.ndarray]) -> dict[str, float]:
    """The six accuracies of one run, in percent, computed directly from its flags."""
    worst = np.logical_and.reduce(list(flags.values()))
    out = {}
    for kind, f in (("clean", flags["clean"]), ("robust", flags["pgd-5"]), ("worst", worst)):
        out[f"{kind}_overall"] = 100.0 * f.mean()
        out[f"{kind}_under"] = 100.0 * f[UNDER].mean()
    return out


def competition_ranks(scores: dict[str, tuple[float, float]]) -> dict[str, int]:
    """1, 2, 2, 4 ranks by (score, tie-break), both higher first."""
    order = sorted(scores, key=lambda k: (-scores[k][0], -scores[k][1]))
    ranks = {}
    for i, name in enumerate(order):
        same = i and np.allclose(scores[name], scores[order[i - 1]])
        ranks[name] = ranks[order[i - 1]] if same else i + 1
    return ranks


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Three methods × two imbalances × three seeds with random flags, plus a λ variant in step-10."""
    url = f"sqlite:///{tmp_path_factory.mktemp('lb') / 'lb.db'}"
    store = Store(url)
    rng = np.random.default_rng(7)
    truth: dict[tuple[str, str], list[dict]] = {}
    levels = {"ce": (0.8, 0.5, 0.55), "ldam": (0.7, 0.55, 0.5), "srat-ce": (0.75, 0.6, 0.6)}
    for imbalance in ("step-10", "exp-10"):
        for method, level in levels.items():
            for seed in range(3):
                flags = random_flags(rng, level)
                add_run(store, method=method, seed=seed, imbalance=imbalance, correct=flags, test_labels=LABELS,
                        train_counts=TRAIN, config=config(method_args={"lam": 2.0} if method == "srat-ce" else {}))
                truth.setdefault((imbalance, method), []).append(expected(flags))
        if imbalance == "step-10":
            for seed in range(2):
                flags = random_flags(rng, (0.75, 0.65, 0.62))
                add_run(store, method="srat-ce", seed=seed, imbalance=imbalance, correct=flags,
                        test_labels=LABELS, train_counts=TRAIN, config=config(method_args={"lam": 0.5}))
                truth.setdefault((imbalance, "srat-ce [lam=0.5]"), []).append(expected(flags))
    means = {key: {k: float(np.mean([run[k] for run in runs])) for k in runs[0]} for key, runs in truth.items()}
    return url, means


def test_numbers_are_group_accuracies_of_the_flags(built):
    url, means = built
    lb = make_leaderboard(url)
    assert len(lb.boards) == 2
    for board in lb.boards:
        assert board.setting.train == "pgd ε 0.1" and board.setting.attack == "pgd-5 ε 0.1"
        for entry in board.entries:
            want = means[(board.setting.imbalance, entry.label)]
            for key, value in want.items():
                assert entry.values[key] == pytest.approx(value, abs=1e-9), (entry.label, key)
            assert entry.values["aa_overall"] is None  # no AutoAttack evaluated
            assert entry.seeds == ([0, 1] if "lam=0.5" in entry.label else [0, 1, 2])
    labels = {e.label for e in lb.boards[1].entries}
    assert labels == {"ce", "ldam", "srat-ce", "srat-ce [lam=0.5]"}  # lam = 2 explicit is the default row


def test_worst_case_agrees_with_the_guards_reader(built):
    """The leaderboard's worst case (packed bits, no torch) equals bench.guards.worst_case_frame's."""
    from bench.analysis.metrics import group_accuracies
    from bench.guards import worst_case_frame

    url, _ = built
    data = load_leaderboard_data(url)
    frame = group_accuracies(worst_case_frame(url))
    for rec in frame.itertuples():
        assert data.runs.at[rec.run_id, "worst_overall"] == pytest.approx(100 * rec.overall)
        assert data.runs.at[rec.run_id, "worst_under"] == pytest.approx(100 * rec.under)


def test_ranking_by_the_default_metric_and_mean_rank(built):
    url, means = built
    lb = make_leaderboard(url)
    ranks_by_setting = {}
    for board in lb.boards:
        scores = {label: (m["worst_under"], m["worst_overall"])
                  for (imbalance, label), m in means.items() if imbalance == board.setting.imbalance}
        want = competition_ranks(scores)
        assert {e.label: e.rank for e in board.entries} == want
        assert [e.rank for e in board.entries] == sorted(want.values())  # listed in rank order
        ranks_by_setting[board.setting.imbalance] = want
    mean_rank = {}
    for ranks in ranks_by_setting.values():
        for label, r in ranks.items():
            mean_rank.setdefault(label, []).append(r)
    got = {o.label: (o.mean_rank, o.n_settings) for o in lb.overall}
    assert got == {label: (pytest.approx(np.mean(r)), len(r)) for label, r in mean_rank.items()}
    order = [o.label for o in lb.overall]
    assert order == sorted(order, key=lambda k: (np.mean(mean_rank[k]), -len(mean_rank[k]), k))


def test_metric_option_ranks_by_any_column(built):
    url, means = built
    lb = make_leaderboard(url, metric="clean_overall")
    for board in lb.boards:
        scores = {label: (m["clean_overall"], m["clean_under"])
                  for (imbalance, label), m in means.items() if imbalance == board.setting.imbalance}
        assert {e.label: e.rank for e in board.entries} == competition_ranks(scores)
    cheap = make_leaderboard(url, metric="device_hours")  # lower first: every run took 1 s
    first = cheap.boards[0].entries
    assert first[0].device_hours == pytest.approx(min(e.device_hours for e in first))
    with pytest.raises(BenchError, match="worst_under"):
        make_leaderboard(url, metric="worst-under")
    assert set(METRICS) >= {"worst_under", "robust_under", "aa_overall", "clean_under", "seeds", "images_per_second"}


def test_ties_are_broken_by_overall_and_equal_rows_share_a_rank(tmp_path):
    url = f"sqlite:///{tmp_path / 'tie.db'}"
    store = Store(url)
    base = np.zeros(LABELS.size, dtype=bool)
    a = base.copy()
    a[[0, 1, 2, 20, 21]] = True  # under 2/20, overall 5/40
    b = base.copy()
    b[[0, 20, 21]] = True  # under 2/20 (tie with a), overall 3/40 (loses the tie-break)
    c = base.copy()
    c[[30, 31, 32]] = True  # under 3/20: first
    for method, flags in (("ce", a), ("ldam", b), ("focal", a.copy()), ("cb-focal", c)):
        add_run(store, method=method, seed=0, correct={"clean": flags, "pgd-5": flags, "fgsm": flags},
                test_labels=LABELS, train_counts=TRAIN, config=config())
    board = make_leaderboard(url).boards[0]
    assert [(e.label, e.rank) for e in board.entries] == [("cb-focal", 1), ("ce", 2), ("focal", 2), ("ldam", 4)]


def test_autoattack_column_guard_flags_cost_and_the_paper(tmp_path):
    from bench.results.schema import GuardRow

    url = f"sqlite:///{tmp_path / 'aa.db'}"
    store = Store(url)
    rng = np.random.default_rng(1)
    attacks = [*ATTACKS, {"kind": "autoattack", "eps": 0.1}]
    aa_flags = {}
    for seed in range(2):
        flags = random_flags(rng, (0.8, 0.6, 0.6))
        flags["autoattack"] = flags["pgd-5"] & (rng.random(LABELS.size) < 0.8)
        aa_flags[seed] = flags["autoattack"]
        add_run(store, method="ce", seed=seed, dataset="cifar10", imbalance="step-10", correct=flags,
                test_labels=LABELS, train_counts=TRAIN, config=config(eval_attacks=attacks))
    with store.session() as session, session.begin():
        session.add(GuardRow(run_id=2, name="pgd-aa-gap", value=0.05, threshold=0.02, flagged=True,
                             detail=json.dumps({"note": XSS})))
    lb = make_leaderboard(url, reference=Reference.load())
    (entry,) = lb.boards[0].entries
    assert entry.values["aa_under"] == pytest.approx(np.mean([100 * f[UNDER].mean() for f in aa_flags.values()]))
    assert entry.guards == {"pgd-aa-gap": 1}
    assert entry.device_hours == pytest.approx(2 / 3600) and entry.images_per_second == pytest.approx(100.0)
    published = Reference.load().get("cifar10", "step-10", "ce").values
    assert entry.paper["paper_robust_under"] == published[(1, "under")][0]
    assert entry.hosts == {"test": 2}
    out = tmp_path / "site"
    write_site(lb, out, url, None)
    page = (out / method_page("ce")).read_text()
    assert "pgd-aa-gap" in page and XSS not in page and "&lt;img src=x" in page
    index = (out / "index.html").read_text()
    assert "AutoAttack · under" in index and "⚠ pgd-aa-gap ×1" in index


def test_every_registered_method_has_a_card():
    import methods

    for name in methods.names():
        card = methods.METHODS.get(name).card
        assert isinstance(card, dict) and card["paper"] and card["venue"] and int(card["year"]) > 1990, name
        assert card["repository"] is None or card["repository"].startswith("https://"), name


def test_cli_formats_and_one_line_errors(built, tmp_path):
    url, _ = built
    runner = CliRunner()
    result = runner.invoke(cli, ["leaderboard", "--db", url, "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["metric"] == "worst_under" and len(doc["settings"]) == 2 and doc["overall"][0]["rank"] == 1
    result = runner.invoke(cli, ["leaderboard", "--db", url, "--format", "csv", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "c" / "leaderboard.csv").read_text().splitlines()
    assert len(lines) == 1 + 7 and lines[0].startswith("setting,dataset,imbalance")
    result = runner.invoke(cli, ["leaderboard", "--db", url, "--format", "md"])
    assert result.exit_code == 0 and "| 1 |" in result.output and "Overall ranking" in result.output
    for args, message in ((["--metric", "bogus"], "not a leaderboard column"), (["--suite", "nope"], "unknown suite"),
                          ([], "no runs")):
        db = url if args else f"sqlite:///{tmp_path / 'empty.db'}"
        if not args:
            Store(db).create()
        result = runner.invoke(cli, ["leaderboard", "--db", db, "--format", "md", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


# -- the site -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(built, tmp_path_factory):
    url, _ = built
    store = Store(url)
    flags = random_flags(np.random.default_rng(3), (0.9, 0.7, 0.7))
    add_run(store, method=XSS, seed=0, suite="other", correct=flags, test_labels=LABELS, train_counts=TRAIN,
            class_names=["a", "b", XSS, "d"], config=config())
    out = tmp_path_factory.mktemp("site")
    result = CliRunner().invoke(cli, ["leaderboard", "--db", url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_site_files_downloads_and_escaping(site):
    import pandas as pd

    names = {p.name for p in site.iterdir()}
    assert {"index.html", "results.csv", "runs.csv", "leaderboard.csv", "leaderboard.json"} <= names
    assert sum(n.startswith("setting-") for n in names) == 2 and sum(n.startswith("method-") for n in names) == 4
    runs = pd.read_csv(site / "runs.csv")
    assert len(runs) == 3 * 2 * 3 + 2 + 1
    results = pd.read_csv(site / "results.csv")
    assert set(results["attack"]) == {"clean", "pgd-5", "fgsm", "worst-case"} and len(results) == len(runs) * 4 * 4
    if "results.parquet" in names:
        assert pd.read_parquet(site / "results.parquet").equals(
            pd.read_parquet(site / "results.parquet"))  # readable
        assert len(pd.read_parquet(site / "runs.parquet")) == len(runs)
    for page in site.glob("*.html"):
        text = page.read_text()
        assert XSS not in text and "<script>" not in text.replace("<script>\n(function", "")
        assert "http" not in text.replace("https://github.com", "").replace('xmlns="http://www.w3.org/2000/svg"', "")


CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_site_sorts_filters_and_links_in_a_browser(site):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto((site / "index.html").resolve().as_uri(), wait_until="load")
            assert page.title() == "bench leaderboard"
            table = page.locator("table#setting-1")
            rows = table.locator("tbody tr")

            def column(key: str) -> list[str]:
                index = page.eval_on_selector_all(
                    "table#setting-1 thead th", f"hs => hs.findIndex(h => h.dataset.key === '{key}')")
                return [r.locator("td").nth(index).get_attribute("data-value") for r in rows.all()]

            def floats(values):
                return [float(v) for v in values if v]

            ranks = floats(column("rank"))
            assert ranks == sorted(ranks)  # as written: by rank
            header = table.locator("thead th[data-key='clean_overall']")
            header.click()
            clean = floats(column("clean_overall"))
            assert clean == sorted(clean) and clean != floats([v for v in column("rank")])
            header.click()
            assert floats(column("clean_overall")) == sorted(clean, reverse=True)
            table.locator("thead th[data-key='method']").click()
            methods_ = column("method")
            assert methods_ == sorted(methods_, key=str)
            total = rows.count()
            page.fill("input[data-table='setting-1']", "ldam")
            visible = [r for r in rows.all() if r.is_visible()]
            assert len(visible) == 1 and "ldam" in visible[0].inner_text()
            assert page.locator("#setting-1-count").inner_text() == f"1 of {total} rows"
            page.fill("input[data-table='setting-1']", "")
            assert sum(r.is_visible() for r in rows.all()) == total
            escaped = page.locator("table#overall tbody a", has_text="onerror").first.inner_text()
            assert escaped == XSS  # shown as text, not run
            page.locator("table#overall tbody a", has_text="srat-ce").first.click()
            page.wait_for_load_state("load")
            assert page.url.split("#")[0].endswith(method_page("srat-ce"))
            assert page.locator("h1").inner_text() == "srat-ce"
            assert page.locator("figure.classwise svg").count() >= 2
            assert errors == []
            assert all(u.startswith(("file:", "data:")) for u in requests)
        finally:
            browser.close()


def test_class_counts_on_packed_bits_equal_bincount():
    from bench.analysis.leaderboard_data import _class_counts

    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 63, 64, 65, 1000, 10001):
        labels = rng.integers(0, 13, n)
        flags = rng.random((5, n)) < 0.5
        want = np.stack([np.bincount(labels[f], minlength=13) for f in flags])
        assert (_class_counts(np.packbits(flags, axis=1), labels, 13) == want).all(), n


def test_build_is_reusable_for_a_second_metric(built):
    """The loaded data ranks again without reading the database (what --metric costs)."""
    url, _ = built
    data = load_leaderboard_data(url)
    first = build_leaderboard(data, "worst_under")
    second = build_leaderboard(data, "robust_under")
    assert [e.label for e in first.boards[0].entries] != [] and second.metric.name == "robust_under"
