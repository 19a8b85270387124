"""`bench report`: numbers, marks, statuses, reference values, escaping, bad inputs, atomic writes, browser.

Every expected number is computed here from the per-class correct counts the test database is built with
(numpy, by hand), never by the code under test. The test sets have 10 samples per class and 10 classes, so a
run's overall accuracy in percent is its total correct count, and its under-represented accuracy (classes 5–9,
the five with fewest training examples) is twice the correct count of those classes.
"""

from __future__ import annotations

import csv
import filecmp
import html
import io
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from factories import add_run, flags_for_accuracy
from sqlalchemy import text

from bench.errors import BenchError
from bench.analysis.metrics import group_accuracies
from bench.cli.report import report_command
from bench.report import compare_render, make_report, resources
from bench.report import render as render_module
from bench.report.load import load_report_data
from bench.report.tables import run_accuracies
from bench.results.read import load_results
from bench.results.store import Store

REPO = Path(__file__).resolve().parents[1]
LABELS = np.repeat(np.arange(10), 10)  # 10 test samples per class
COUNTS = [500] * 5 + [50] * 5  # classes 0-4 well-represented, 5-9 under-represented
XSS = "<script>alert(1)</script>"
XSS_SUITE = '<i>odd</i> & "suite"'

# method -> one (clean, pgd-20) pair of per-class correct counts per finished seed (suite "paper", cifar10,
# step-10, adversarial training). Chosen so that ce is best on standard overall, srat-ldam beats both LDAM
# baselines on the under-represented columns but not on standard overall, and srat-focal (one seed) beats focal.
KNOWN = {
    "ce": [
        ([10, 10, 9, 9, 10, 3, 2, 2, 1, 2], [6, 5, 5, 4, 6, 1, 1, 0, 0, 1]),
        ([10, 9, 9, 10, 10, 2, 2, 3, 2, 1], [5, 5, 4, 5, 5, 0, 1, 1, 0, 0]),
        ([10, 10, 10, 9, 9, 2, 3, 2, 2, 2], [5, 6, 5, 4, 4, 1, 0, 0, 1, 0]),
    ],
    "focal": [
        ([9, 9, 9, 9, 9, 2, 2, 2, 2, 2], [5, 5, 5, 5, 5, 0, 0, 1, 0, 0]),
        ([9, 9, 8, 9, 9, 3, 2, 2, 2, 2], [5, 4, 5, 5, 5, 1, 0, 0, 0, 1]),
    ],
    "ldam": [
        ([8, 8, 8, 8, 8, 4, 4, 3, 3, 3], [5, 5, 5, 4, 4, 2, 2, 1, 1, 1]),
        ([8, 8, 9, 8, 8, 4, 3, 3, 3, 3], [5, 5, 4, 5, 4, 2, 1, 1, 1, 2]),
        ([8, 9, 8, 8, 8, 3, 3, 4, 3, 4], [4, 5, 5, 5, 5, 1, 2, 1, 2, 1]),
    ],
    "drcb-ldam": [
        ([9, 9, 9, 9, 9, 5, 5, 5, 4, 4], [5, 5, 5, 5, 5, 3, 2, 2, 2, 2]),
        ([9, 9, 9, 9, 8, 5, 5, 4, 4, 4], [5, 5, 5, 5, 4, 2, 2, 2, 2, 3]),
        ([9, 9, 8, 9, 9, 5, 4, 5, 4, 5], [5, 5, 5, 4, 5, 2, 3, 2, 3, 2]),
    ],
    "srat-ldam": [
        ([7, 7, 7, 7, 7, 6, 6, 6, 5, 5], [5, 5, 4, 4, 4, 4, 3, 3, 3, 3]),
        ([7, 7, 7, 6, 7, 6, 6, 5, 5, 6], [4, 4, 5, 4, 4, 3, 4, 3, 3, 4]),
        ([7, 6, 7, 7, 7, 6, 5, 6, 6, 5], [4, 5, 4, 4, 5, 3, 3, 4, 4, 3]),
    ],
    "srat-focal": [
        ([9, 9, 9, 9, 9, 3, 3, 3, 3, 3], [6, 6, 6, 5, 5, 1, 1, 1, 1, 1]),
    ],
}
# Runs without numbers: method -> statuses.
UNFINISHED = {"srat-ce": ["running", "failed"], "cb-focal": ["failed", "failed"], "srat-focal": ["diverged", "running"]}
CE_LOSS = [2.0, 1.5, 1.2]  # training curve of every ce seed
PAPER_ORDER = ["ce", "focal", "ldam", "cb-focal", "drcb-ldam", "srat-ce", "srat-focal", "srat-ldam"]  # registry order
FAMILY = {"ce": "ce", "cb-reweight": "ce", "drcb-ce": "ce", "srat-ce": "ce", "focal": "focal", "cb-focal": "focal",
          "drcb-focal": "focal", "srat-focal": "focal", "ldam": "ldam", "drcb-ldam": "ldam", "srat-ldam": "ldam"}
PAPER_CSV = {  # the SRAT paper's Table 1 (cifar10 step-10), as published: method -> column -> (mean, std)
    "ce": {(0, "overall"): (63.26, 0.59), (0, "under"): (40.62, 1.10), (1, "overall"): (36.96, 0.36),
           (1, "under"): (14.23, 0.83)},
    "srat-ldam": {(0, "overall"): (73.99, 0.52), (0, "under"): (76.63, 0.39), (1, "overall"): (45.60, 0.18),
                  (1, "under"): (45.95, 0.51)},
}
SWEEP_LAMS = [0.5, 1.0, 2.0]


def aa(robust):
    """The third attack (autoattack) of the paper suite: one fewer correct per class than PGD-20."""
    return [max(0, r - 1) for r in robust]


def build_database(path: Path) -> str:
    url = f"sqlite:///{path}"
    store = Store(url)
    curves = [{"epoch": e, "lr": 0.1, "loss": v, "train_accuracy": 0.2 * (e + 1), "seconds": 1.0}
              for e, v in enumerate(CE_LOSS)]
    for method, seeds in KNOWN.items():
        for seed, (clean, robust) in enumerate(seeds):
            add_run(store, suite="paper", method=method, seed=seed, dataset="cifar10", imbalance="step-10",
                    test_labels=LABELS, train_counts=COUNTS,
                    correct={"clean": flags_for_accuracy(LABELS, clean),
                             "pgd-20": flags_for_accuracy(LABELS, robust),
                             "autoattack": flags_for_accuracy(LABELS, aa(robust))},
                    curves=curves if method == "ce" else (),
                    class_names=["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                 "truck"])
    for method, statuses in UNFINISHED.items():
        for i, status in enumerate(statuses):
            add_run(store, suite="paper", method=method, seed=10 + i, dataset="cifar10", imbalance="step-10",
                    test_labels=LABELS, train_counts=COUNTS, correct={}, status=status)
    # Natural training: its own table.
    add_run(store, suite="paper", method="ce", seed=0, adversarial=False, dataset="cifar10", imbalance="step-10",
            test_labels=LABELS, train_counts=COUNTS,
            correct={"clean": flags_for_accuracy(LABELS, [10] * 5 + [4] * 5),
                     "pgd-20": flags_for_accuracy(LABELS, [0] * 10),
                     "autoattack": flags_for_accuracy(LABELS, [0] * 10)})
    # Names that must be escaped, and an unregistered "srat-custom" that is never an SRAT variant.
    for method, total in ((XSS, 3), ("srat-custom", 9), ("ce", 5)):
        add_run(store, suite=XSS_SUITE, method=method, seed=0, dataset="digits", imbalance="exp-10",
                test_labels=LABELS, train_counts=COUNTS,
                correct={"clean": flags_for_accuracy(LABELS, [total] * 10),
                         "pgd-20": flags_for_accuracy(LABELS, [total - 2] * 10)},
                config={"note": "<img src=x onerror=alert(2)>"})
    # A sweep of lambda (two seeds each; a seed-derived data_seed must not split rows), and of the ratio K.
    for lam in SWEEP_LAMS:
        for seed in (0, 1):
            add_run(store, suite="sweep", method="srat-ldam", seed=seed, dataset="cifar10", imbalance="step-100",
                    test_labels=LABELS, train_counts=[500] * 5 + [5] * 5,
                    correct={"clean": flags_for_accuracy(LABELS, [8] * 10),
                             "pgd-20": flags_for_accuracy(LABELS, [5] * 5 + [int(2 * lam) + seed] * 5)},
                    config={"method_args": {"lam": lam}, "data_seed": 100 + seed})
    for k in (2, 5, 10):
        add_run(store, suite="sweep", method="ce", seed=0, dataset="digits", imbalance=f"step-{k}",
                test_labels=LABELS, train_counts=[100] * 5 + [100 // k] * 5,
                correct={"clean": flags_for_accuracy(LABELS, [9] * 5 + [10 - k // 2] * 5),
                         "pgd-20": flags_for_accuracy(LABELS, [5] * 5 + [5 - k // 3] * 5)})
    store.engine.dispose()
    return url


# -- expected values, computed from KNOWN alone ------------------------------------------------------------------------
def run_percent(correct: list[int]) -> dict[str, float]:
    c = np.asarray(correct)
    return {"overall": c.sum() / 100 * 100, "well": c[:5].sum() / 50 * 100, "under": c[5:].sum() / 50 * 100}


def expected_paper_cells() -> dict[str, dict[tuple[int, str], tuple[float, float | None, int]]]:
    """method -> (attack order, group) -> (mean %, sample std % or None, n) for the paper suite's main table."""
    out = {}
    for method, seeds in KNOWN.items():
        cells = {}
        for order in (0, 1, 2):
            per_run = [run_percent([clean, robust, aa(robust)][order]) for clean, robust in seeds]
            for group in ("overall", "well", "under"):
                values = np.array([r[group] for r in per_run])
                std = float(np.std(values, ddof=1)) if len(values) > 1 else None
                cells[(order, group)] = (float(values.mean()), std, len(values))
        out[method] = cells
    return out


def cell_text(mean: float, std: float | None) -> str:
    return f"{mean:.2f} ± {'–' if std is None else f'{std:.2f}'}"


def expected_marks(cells: dict, columns) -> tuple[set, set]:
    """(best, srat wins) as sets of (method, column), from printed values and the loss families above."""
    best, wins = set(), set()
    for column in columns:
        printed = {m: round(c[column][0] + 1e-9, 2) for m, c in cells.items()}
        top = max(printed.values())
        best |= {(m, column) for m, v in printed.items() if v == top}
        for m, v in printed.items():
            if not m.startswith("srat-"):
                continue
            rivals = [w for b, w in printed.items() if not b.startswith("srat-") and FAMILY[b] == FAMILY[m]]
            if rivals and all(v > w for w in rivals):
                wins.add((m, column))
    return best, wins


COLUMNS = [(o, g) for o in (0, 1, 2) for g in ("overall", "under")]


# -- fixtures -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_database(tmp_path_factory.mktemp("db") / "bench.db")


@pytest.fixture(scope="module")
def reports(db, tmp_path_factory):
    """One report of the whole database in every format (figures drawn once per format)."""
    out = {}
    for fmt in ("html", "md", "latex", "csv"):
        folder = tmp_path_factory.mktemp(fmt)
        result = make_report(db=db, fmt=fmt, out=folder)
        out[fmt] = (result, result.path.read_text(encoding="utf-8"))
    return out


# -- parsers for each format -------------------------------------------------------------------------------------
class ReportHTML(HTMLParser):
    """Tables of the HTML report: section title -> row label -> column -> {value, bold, underline, ref}."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self.notes = {}, {}
        self.section = self.row = self.column = None
        self.capture = None
        self.in_h2 = self.in_label = self.in_note = False
        self.marks: set = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self.in_h2, self.section = True, ""
        elif tag == "tr" and self.section in self.tables:
            self.row = ""
        elif tag == "th" and attrs.get("scope") == "row":
            self.in_label = True
        elif tag == "td" and "data-column" in attrs:
            order, group = attrs["data-column"].split("-")
            self.column = (int(order), group)
            self.tables[self.section][self.row][self.column] = {"value": "", "bold": False, "underline": False,
                                                                "ref": ""}
        elif tag == "td" and attrs.get("class") == "note":
            self.in_note = True
        elif tag == "span" and "v" in attrs.get("class", "").split() and self.column:
            self.capture = "value"
        elif tag == "div" and attrs.get("class") == "ref" and self.column:
            self.capture = "ref"
        elif tag in ("strong", "u") and self.capture == "value":
            self.tables[self.section][self.row][self.column]["bold" if tag == "strong" else "underline"] = True
        elif tag == "table" and self.section:
            self.tables[self.section] = {}

    def handle_endtag(self, tag):
        if tag == "h2":
            self.in_h2 = False
        elif tag == "th":
            if self.in_label:
                self.tables[self.section][self.row] = {}
            self.in_label = False
        elif tag == "td":
            self.column, self.capture, self.in_note = None, None, False
        elif tag in ("span", "div") and self.capture:
            self.capture = None

    def handle_data(self, data):
        if self.in_h2:
            self.section += data
        elif self.in_label:
            self.row += data
        elif self.capture and self.column:
            self.tables[self.section][self.row][self.column][self.capture] += data
        elif self.in_note:
            self.notes[(self.section, self.row)] = self.notes.get((self.section, self.row), "") + data


def parse_html(text: str) -> ReportHTML:
    parser = ReportHTML()
    parser.feed(text)
    return parser


def md_table(text: str, heading: str) -> dict[str, list[str]]:
    """Row label -> cells of the Markdown table under ``## heading``."""
    lines = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line for line in lines if line.startswith("| ")][1:]  # skip the header
    out = {}
    for line in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        out[cells[0]] = cells[1:]
    return out


def tex_rows(text: str, caption: str = "paper: cifar10, step-10, adversarial training") -> dict[str, list[str]]:
    """Row label -> cells of the LaTeX table with this caption (``paper`` rows under key ``label/paper``)."""
    block = text.split(r"\caption{" + caption, 1)[1].split(r"\end{tabular}", 1)[0]
    out, last = {}, None
    for line in block.splitlines():
        if not line.endswith(r"\\") or " & " not in line or line.startswith((r"\toprule", " &", "Method")):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)&", line[:-2])]
        if cells[0].startswith(r"\quad"):
            out[f"{last}/paper"] = cells[1:]
        else:
            last = cells[0]
            out[last] = cells[1:]
    return out


# -- numbers -----------------------------------------------------------------------------------------------------
def test_paper_table_numbers_in_every_format(reports):
    expected = expected_paper_cells()
    section = "paper · cifar10 · step-10 · adversarial training"
    parsed = parse_html(reports["html"][1]).tables[section]
    md = md_table(reports["md"][1], section)
    tex = tex_rows(reports["latex"][1])
    rows = [r for r in csv.DictReader(io.StringIO(reports["csv"][1])) if r["suite"] == "paper"
            and r["adversarial"] == "true"]
    order_kind = {0: "standard", 1: "robust", 2: "autoattack"}
    for method, cells in expected.items():
        for column in COLUMNS:
            mean, std, n = cells[column]
            want = cell_text(mean, std)
            assert parsed[method][column]["value"] == want, (method, column)
            index = COLUMNS.index(column)
            assert want in md[method][1 + index].replace("*", ""), (method, column)
            assert tex[method][1 + index].replace(r"\textbf{", "").replace(r"\underline{", "").rstrip("}") \
                == want.replace(" ± ", r"$\pm$").replace("–", "--"), (method, column)
            line = next(r for r in rows if r["method"] == method and r["attack_order"] == str(column[0])
                        and r["group"] == column[1])
            assert float(line["mean"]) == pytest.approx(round(mean, 2))
            assert line["std"] == ("" if std is None else f"{std:.2f}")
            assert line["n"] == str(n) and line["seeds"] == str(len(KNOWN[method]))
            assert line["accuracy"] == order_kind[column[0]]


def test_well_columns_only_with_groups_all(db, tmp_path):
    default = make_report(db=db, fmt="csv", out=tmp_path / "a", suite="paper")
    groups = {r["group"] for r in csv.DictReader(io.StringIO(default.path.read_text()))}
    assert groups == {"overall", "under"}
    full = make_report(db=db, fmt="csv", out=tmp_path / "b", suite="paper", groups="all")
    rows = list(csv.DictReader(io.StringIO(full.path.read_text())))
    want = expected_paper_cells()["srat-ldam"][(1, "well")]
    line = next(r for r in rows if r["method"] == "srat-ldam" and r["group"] == "well" and r["attack_order"] == "1")
    assert line["mean"] == f"{want[0]:.2f}" and line["std"] == f"{want[1]:.2f}"


def test_row_order_is_registry_order_then_unknown_alphabetically(reports):
    tables = parse_html(reports["html"][1]).tables
    assert list(tables["paper · cifar10 · step-10 · adversarial training"]) == PAPER_ORDER
    assert list(tables[f"{XSS_SUITE} · digits · exp-10 · adversarial training"]) == ["ce", XSS, "srat-custom"]


def test_extra_attack_gets_its_own_column_group(reports):
    text = reports["html"][1]
    assert "autoattack accuracy" in text
    assert "Robust accuracy" in text and "Standard accuracy" in text


def test_group_formula_is_bench_metrics(db):
    """The pooled computation equals group_accuracies run by run (two different count profiles in the DB)."""
    frame = load_results(db)
    direct = group_accuracies(frame).set_index(["run_id", "attack_order"]).sort_index()
    pooled = run_accuracies(load_report_data(db).class_rows).set_index(["run_id", "attack_order"]).sort_index()
    assert len(direct) == len(pooled) > 0
    for group in ("overall", "well", "under"):
        np.testing.assert_allclose(pooled[group].to_numpy(), direct[group].to_numpy(dtype=float))


# -- marks -------------------------------------------------------------------------------------------------------
def test_bold_and_underline_in_every_format(reports):
    expected = expected_paper_cells()
    best, wins = expected_marks(expected, COLUMNS)
    assert ("srat-ldam", (1, "under")) in wins and ("srat-ldam", (0, "overall")) not in wins  # data exercises both
    assert ("srat-focal", (1, "overall")) in wins
    section = "paper · cifar10 · step-10 · adversarial training"
    parsed = parse_html(reports["html"][1]).tables[section]
    md = md_table(reports["md"][1], section)
    tex = tex_rows(reports["latex"][1])
    rows = [r for r in csv.DictReader(io.StringIO(reports["csv"][1])) if r["suite"] == "paper"
            and r["adversarial"] == "true"]
    for method in expected:
        for column in COLUMNS:
            is_best, is_win = (method, column) in best, (method, column) in wins
            cell = parsed[method][column]
            assert (cell["bold"], cell["underline"]) == (is_best, is_win), (method, column)
            md_cell = md[method][1 + COLUMNS.index(column)]
            assert (md_cell.startswith("**"), "<u>" in md_cell) == (is_best, is_win), (method, column)
            tex_cell = tex[method][1 + COLUMNS.index(column)]
            assert (r"\textbf{" in tex_cell, r"\underline{" in tex_cell) == (is_best, is_win), (method, column)
            line = next(r for r in rows if r["method"] == method and (int(r["attack_order"]), r["group"]) == column)
            assert (line["best"], line["srat_beats_baselines"]) == (str(int(is_best)), str(int(is_win)))


def test_unregistered_srat_name_is_no_srat_variant(reports):
    """Roles come from the method classes: an unknown "srat-custom" is best but never underlined."""
    parsed = parse_html(reports["html"][1]).tables[f"{XSS_SUITE} · digits · exp-10 · adversarial training"]
    cell = parsed["srat-custom"][(1, "overall")]
    assert cell["bold"] and not cell["underline"]
    assert not any(c["underline"] for row in parsed.values() for c in row.values())


# -- statuses ----------------------------------------------------------------------------------------------------
def test_unfinished_runs_are_statuses_never_numbers(reports):
    section = "paper · cifar10 · step-10 · adversarial training"
    report = parse_html(reports["html"][1])
    parsed = report.tables[section]
    assert {c["value"] for c in parsed["srat-ce"].values()} == {"no result"}  # one running, one failed
    assert {c["value"] for c in parsed["cb-focal"].values()} == {"failed"}
    assert report.notes[(section, "srat-ce")] == "1 running, 1 failed"
    assert report.notes[(section, "cb-focal")] == "2 failed"
    assert report.notes[(section, "srat-focal")] == "1 running, 1 diverged"  # its one finished seed gives numbers
    one_seed = expected_paper_cells()["srat-focal"][(0, "overall")]
    assert parsed["srat-focal"][(0, "overall")]["value"] == cell_text(*one_seed[:2])
    md = md_table(reports["md"][1], section)
    assert md["srat-ce"][-1] == "1 running, 1 failed" and md["cb-focal"][1].startswith("*failed* (paper ")
    tex = tex_rows(reports["latex"][1])
    assert tex["cb-focal"][1] == r"\textit{failed}"
    rows = [r for r in csv.DictReader(io.StringIO(reports["csv"][1])) if r["method"] == "cb-focal"]
    assert rows and all(r["mean"] == "" and r["status"] == "failed" and r["note"] == "2 failed" for r in rows)


def test_header_counts_runs_by_status(reports):
    done = sum(len(v) for v in KNOWN.values()) + 1 + 3 + len(SWEEP_LAMS) * 2 + 3
    assert f"runs: {done} done, 2 running, 3 failed, 1 diverged" in reports["html"][1].replace("\n", " ")


# -- variants and figures ------------------------------------------------------------------------------------------
def test_swept_settings_are_rows_not_seeds(reports):
    parsed = parse_html(reports["html"][1]).tables["sweep · cifar10 · step-100 · adversarial training"]
    assert list(parsed) == [f"srat-ldam [lam={format(lam, 'g')}]" for lam in SWEEP_LAMS]  # data_seed is no variant
    for lam in SWEEP_LAMS:
        under = [2 * 5 * (int(2 * lam) + seed) for seed in (0, 1)]  # 5 under classes × correct, ×2 for percent
        want = cell_text(float(np.mean(under)), float(np.std(under, ddof=1)))
        assert parsed[f"srat-ldam [lam={format(lam, 'g')}]"][(1, "under")]["value"] == want
    # The paper's srat-ldam step-100 value is shown for the default lambda (2) only.
    refs = {label: row[(0, "overall")]["ref"] for label, row in parsed.items()}
    assert refs["srat-ldam [lam=2]"].startswith("paper 63.13 ± 1.17")
    assert refs["srat-ldam [lam=0.5]"] == refs["srat-ldam [lam=1]"] == ""


def test_figures_written_embedded_and_bounded(reports):
    result, text = reports["html"]
    kinds = sorted(f.kind for f in result.figures)
    # classwise: one per (suite, dataset, imbalance); curves: the ce table only; sweeps: lambda and ratio K.
    assert kinds.count("classwise") == 6 and kinds.count("curves") == 1 and kinds.count("profile") == 1
    assert {f.name.split("-")[0] for f in result.figures if f.kind == "sweep"} == {"sweep", "ratio"}
    assert text.count('src="data:image/png;base64,') == len(result.figures)
    for figure in result.figures:
        png, pdf = result.path.parent / f"{figure.name}.png", result.path.parent / f"{figure.name}.pdf"
        assert png.read_bytes().startswith(b"\x89PNG") and pdf.read_bytes().startswith(b"%PDF")
        assert re.fullmatch(r"[a-z0-9-]+", figure.name)
    for panel in next(f for f in result.figures if f.kind == "classwise" and "paper" in f.name).title.split():
        assert "<" not in panel
    md_result, md = reports["md"]
    assert all(f"]({f.name}.png)" in md for f in md_result.figures)
    tex_result, tex = reports["latex"]
    assert all(f"{{{f.name}.pdf}}" in tex for f in tex_result.figures)
    assert reports["csv"][0].figures == []


def test_curves_are_mean_over_seeds(db):
    from bench.report.figures import plan_figures
    from bench.report.tables import build_tables

    data = load_report_data(db, "paper")
    specs = [s for s in plan_figures(data, build_tables(data)).all() if s.kind == "curves"]
    assert len(specs) == 1
    (line,) = [l for l in specs[0].payload["lines"] if l["label"] == "ce"]
    np.testing.assert_allclose(line["loss"], CE_LOSS)
    np.testing.assert_allclose(line["epoch"], [0, 1, 2])


def test_figures_show_a_bounded_set_of_methods(tmp_path):
    """Eight methods: the class-wise figure shows the first row plus the three best on robust-under."""
    from bench.report.figures import MAX_METHOD_PANELS, plan_figures
    from bench.report.tables import build_tables

    url = f"sqlite:///{tmp_path / 'many.db'}"
    names = ["ce", "focal", "ldam", "cb-reweight", "cb-focal", "drcb-ce", "drcb-focal", "drcb-ldam"]
    under = [1, 6, 2, 8, 3, 7, 4, 5]  # robust correct per under-represented class
    curve = [{"epoch": 0, "lr": 0.1, "loss": 1.0, "train_accuracy": 0.5, "seconds": 1.0}]
    for name, u in zip(names, under):
        add_run(Store(url), method=name, seed=0, test_labels=LABELS, train_counts=COUNTS, curves=curve,
                correct={"clean": flags_for_accuracy(LABELS, [9] * 10),
                         "pgd-20": flags_for_accuracy(LABELS, [5] * 5 + [u] * 5)})
    data = load_report_data(url)
    specs = {s.kind: s for s in plan_figures(data, build_tables(data)).all()}
    panels = [p["title"] for p in specs["classwise"].payload["panels"]]
    assert MAX_METHOD_PANELS == 4 and panels == ["ce", "focal", "cb-reweight", "drcb-ce"]  # table order
    assert len(specs["curves"].payload["lines"]) == 6


def test_figure_count_is_capped(db, tmp_path, monkeypatch):
    from bench.report import figures

    monkeypatch.setattr(figures, "MAX_FIGURES", 3)
    result = make_report(db=db, fmt="md", out=tmp_path, workers=1)
    assert len(result.figures) == 3
    assert "figures of the last tables are left out" in result.path.read_text()


def test_no_finished_run_gives_statuses_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    add_run(Store(url), method="ce", seed=0, test_labels=LABELS, train_counts=COUNTS, correct={}, status="running")
    add_run(Store(url), method="ldam", seed=0, test_labels=LABELS, train_counts=COUNTS, correct={}, status="failed")
    result = make_report(db=url, fmt="md", out=tmp_path / "out")
    assert result.figures == []
    table = md_table(result.path.read_text(), "test · digits · step-10 · adversarial training")
    assert table == {"ce": ["0"] + ["*running*"] * 4 + ["1 running"], "ldam": ["0"] + ["*failed*"] * 4 + ["1 failed"]}


# -- reference ---------------------------------------------------------------------------------------------------
def test_paper_values_and_differences_in_every_format(reports):
    expected = expected_paper_cells()
    section = "paper · cifar10 · step-10 · adversarial training"
    parsed = parse_html(reports["html"][1]).tables[section]
    md = md_table(reports["md"][1], section)
    tex = tex_rows(reports["latex"][1])
    rows = list(csv.DictReader(io.StringIO(reports["csv"][1])))
    for method, columns in PAPER_CSV.items():
        for column, (paper_mean, paper_std) in columns.items():
            ours = round(expected[method][column][0] + 1e-9, 2)
            diff = f"{ours - paper_mean:+.2f}"
            assert parsed[method][column]["ref"] == f"paper {paper_mean:.2f} ± {paper_std:.2f} · Δ {diff}"
            assert f"(paper {paper_mean:.2f} ± {paper_std:.2f}, Δ {diff})" in md[method][1 + COLUMNS.index(column)]
            paper_cell = tex[f"{method}/paper"][1 + COLUMNS.index(column)]
            assert f"{paper_mean:.2f}$\\pm${paper_std:.2f} ({diff})" in paper_cell
            line = next(r for r in rows if r["suite"] == "paper" and r["method"] == method
                        and r["adversarial"] == "true" and (int(r["attack_order"]), r["group"]) == column)
            assert (line["paper_mean"], line["paper_std"], line["difference"]) == (
                f"{paper_mean:.2f}", f"{paper_std:.2f}", diff)
    # No paper value for the extra attack, the natural-training table or a dataset the paper has no table for.
    assert parsed["ce"][(2, "overall")]["ref"] == ""
    natural = parse_html(reports["html"][1]).tables["paper · cifar10 · step-10 · natural training"]
    assert natural["ce"][(0, "overall")]["ref"] == ""
    other = parse_html(reports["html"][1]).tables[f"{XSS_SUITE} · digits · exp-10 · adversarial training"]
    assert all(c["ref"] == "" for row in other.values() for c in row.values())


def test_no_reference_hides_paper_values(db, tmp_path):
    runner = CliRunner()
    result = runner.invoke(report_command, ["--db", db, "--suite", "paper", "--format", "csv", "--out",
                                            str(tmp_path), "--no-reference"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert rows and all(r["paper_mean"] == r["paper_std"] == r["difference"] == "" for r in rows)
    result = make_report(db=db, suite="paper", fmt="md", out=tmp_path / "md", reference=False)
    assert "(paper " not in result.path.read_text()


def test_one_copy_of_the_templates_and_the_paper_csv():
    """bench/report/resources/ is the only copy: reports/ is that folder, and the renderers load from it."""
    assert (REPO / "reports").resolve() == resources.RESOURCES == REPO / "bench" / "report" / "resources"
    assert resources.template_dir() == resources.RESOURCES / "templates"
    assert resources.reference_csv() == resources.RESOURCES / "srat-paper-tables.csv"
    names = sorted(p.name for p in resources.template_dir().iterdir())
    assert names == ["claims.html", "claims_section.html", "compare.html", "leaderboard.md", "leaderboard_base.html",
                     "leaderboard_index.html", "leaderboard_macros.html", "leaderboard_method.html",
                     "leaderboard_setting.html", "report.html", "report.md", "report.tex", "theory_table.html"]
    for fmt in ("html", "md", "latex"):  # what the report renders with
        template = render_module._environment(fmt).get_template(render_module.TEMPLATES[fmt])
        assert Path(template.filename) == resources.template_dir() / render_module.TEMPLATES[fmt]
    assert Path(compare_render._html_template().filename) == resources.template_dir() / "compare.html"
    from bench.report.reference import Reference

    assert Reference.load().get("cifar10", "step-10", "ce") is not None  # read from reference_csv()
    wanted = {*names, "srat-paper-tables.csv"}
    copies = sorted(str(p.relative_to(REPO)) for top in ("bench", "methods")
                    for p in (REPO / top).rglob("*") if p.name in wanted)
    assert copies == sorted(f"bench/report/resources/{'templates/' if n != 'srat-paper-tables.csv' else ''}{n}"
                            for n in wanted)
    shared = REPO.parent / "shared" / "paper" / "srat-paper-tables.csv"
    if shared.exists():  # the transcription this project was given
        assert filecmp.cmp(shared, resources.reference_csv(), shallow=False)


def test_package_data_ships_every_resource():
    """A non-editable install (a wheel) gets every file of the one copy, under the same path beside the code."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO / "bench" / "report"
    files = [p.relative_to(package).as_posix() for p in resources.RESOURCES.rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns["bench.report"]) for f in files), files


# -- escaping ---------------------------------------------------------------------------------------------------
def test_html_escapes_names_suites_and_config_values(reports):
    text = reports["html"][1]
    assert XSS not in text and "<i>odd</i>" not in text and "<img src=x" not in text
    assert html.escape(XSS) in text
    assert html.escape(XSS_SUITE) in text.replace("&#34;", "&quot;").replace("&#39;", "&#x27;")
    # Only our own tags are present: no script element at all, and every img is an embedded figure.
    assert "<script" not in text
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]*)"', text))
    assert XSS in parse_html(text).tables[f"{XSS_SUITE} · digits · exp-10 · adversarial training"]


def test_markdown_and_latex_escape_names(reports):
    md, tex = reports["md"][1], reports["latex"][1]
    assert XSS not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert XSS not in tex and r"\textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{}" in tex
    assert r"\textless{}i\textgreater{}odd\textless{}/i\textgreater{} \& " in tex


def test_markdown_escapes_pipes(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    add_run(Store(url), method="a|b", seed=0, test_labels=LABELS, train_counts=COUNTS,
            correct={"clean": flags_for_accuracy(LABELS, [5] * 10), "pgd-20": flags_for_accuracy(LABELS, [2] * 10)})
    text = make_report(db=url, fmt="md", out=tmp_path / "out").path.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| a"))
    assert row.startswith(r"| a\|b | 1 | 50.00 ± – |")


# -- bad inputs -----------------------------------------------------------------------------------------------------
def run_cli(args):
    result = CliRunner().invoke(report_command, args)
    return result


def test_missing_and_empty_database(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BenchError, match="holds no results yet"):
        make_report(db=f"sqlite:///{tmp_path / 'none.db'}", out=out)
    assert not (tmp_path / "none.db").exists() and not out.exists()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(url).create()
    result = run_cli(["--db", url, "--out", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, BenchError)
    assert "holds no runs yet" in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


def test_unknown_suite_lists_valid_ones(db, tmp_path):
    with pytest.raises(BenchError) as info:
        make_report(db=db, suite="papr", out=tmp_path / "out")
    message = str(info.value)
    assert "unknown suite 'papr' (did you mean 'paper'?)" in message
    assert f"valid: {XSS_SUITE}, paper, sweep" in message
    assert not (tmp_path / "out").exists()


def test_older_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    add_run(Store(url), method="ce", seed=0, test_labels=LABELS, train_counts=COUNTS,
            correct={"clean": flags_for_accuracy(LABELS, [5] * 10)})
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE bench_meta SET value = '0' WHERE key = 'schema_version'"))
    store.engine.dispose()
    with pytest.raises(BenchError, match="has schema version 0, this bench reads version 1"):
        make_report(db=url, out=tmp_path / "out")


def test_unwritable_output_folder(db, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BenchError, match=r"output folder .* is a file, not a folder"):
        make_report(db=db, fmt="csv", out=blocker)
    with pytest.raises(BenchError, match=r"output folder .*/file/sub cannot be written: Not a directory"):
        make_report(db=db, fmt="csv", out=blocker / "sub")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(BenchError, match="cannot be written"):
            make_report(db=db, fmt="csv", out=locked)
    assert blocker.read_text() == "not a folder"


def test_bad_options(db, tmp_path):
    result = run_cli(["--db", db, "--format", "pdf", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "'pdf' is not one of" in result.output
    with pytest.raises(BenchError, match="unknown report format 'pdf'; valid: html, md, latex, csv"):
        make_report(db=db, fmt="pdf", out=tmp_path)
    with pytest.raises(BenchError, match="unknown column groups 'some'; valid: overall-under, all"):
        make_report(db=db, groups="some", out=tmp_path)


def test_defaults_come_from_bench_toml(db, tmp_path, monkeypatch):
    config = tmp_path / "bench.toml"
    config.write_text(f'[bench]\ndb = "{db}"\nout_dir = "made-here"\n')
    monkeypatch.setenv("BENCH_CONFIG", str(config))
    result = CliRunner().invoke(report_command, ["--suite", "paper", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "made-here" / "report.csv").exists()
    assert f"wrote {tmp_path / 'made-here' / 'report.csv'} (2 tables)" in result.output


# -- atomic writes ------------------------------------------------------------------------------------------------
def test_failed_write_keeps_the_previous_report_and_leaves_no_temporary_file(db, tmp_path, monkeypatch):
    first = make_report(db=db, suite="paper", fmt="csv", out=tmp_path)
    before = first.path.read_bytes()
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("report.csv"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(render_module.os, "replace", failing_replace)
    with pytest.raises(BenchError, match=r"cannot write .*report.csv: No space left on device"):
        make_report(db=db, suite="sweep", fmt="csv", out=tmp_path)
    assert first.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_a_failure_before_writing_writes_nothing(db, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("template bug")

    monkeypatch.setattr("bench.report.build.render_text", broken)
    with pytest.raises(RuntimeError):
        make_report(db=db, suite=XSS_SUITE, fmt="html", out=tmp_path / "out", workers=1)
    assert list((tmp_path / "out").iterdir()) == []  # no figure without its report


def test_outputs_leave_no_temporary_files(reports):
    for result, _ in reports.values():
        assert not [p for p in result.path.parent.iterdir() if p.name.startswith(".")]


# -- the HTML in a real browser -----------------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_html_renders_in_a_browser(reports):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    result, _ = reports["html"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto(result.path.resolve().as_uri(), wait_until="load")
            assert page.title() == "bench report"
            assert page.locator("table.results").count() == len(result.tables)
            assert page.locator("table.results tbody tr").count() == sum(len(t.rows) for t in result.tables)
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) == len(result.figures) and all(w > 0 for w in widths)
            shown = page.locator("table.results tbody th", has_text="alert(1)").first.inner_text()
            assert shown == XSS  # shown as text, not run
            assert errors == []
            assert all(u.startswith(("file:", "data:")) for u in requests)  # self-contained
        finally:
            browser.close()


def test_flagged_guards_mark_the_row(tmp_path):
    """A run whose robustness guard fired is marked in its row's notes, in every format."""
    from bench.results.schema import GuardRow
    from bench.results.store import Store
    from bench.report.build import make_report

    url = f"sqlite:///{tmp_path / 'g.db'}"
    store = Store(url)
    labels = [0] * 4 + [1] * 4
    flags = {"clean": [True] * 8, "pgd-20": [True, False] * 4}
    add_run(store, method="ldam", seed=0, correct=flags, test_labels=labels, train_counts=[10, 1])
    add_run(store, method="ce", seed=0, correct=flags, test_labels=labels, train_counts=[10, 1])
    with store.session() as session, session.begin():
        session.add(GuardRow(run_id=1, name="zero-grad-share", value=0.09, threshold=0.01, flagged=True, detail="{}"))
        session.add(GuardRow(run_id=2, name="zero-grad-share", value=0.0, threshold=0.01, flagged=False, detail="{}"))
    result = make_report(db=url, fmt="md", out=tmp_path / "out", workers=1)
    text = result.path.read_text()
    ldam = next(line for line in text.splitlines() if line.startswith("| ldam"))
    ce = next(line for line in text.splitlines() if line.startswith("| ce"))
    assert "flagged: zero-grad-share ×1" in ldam
    assert "flagged" not in ce
