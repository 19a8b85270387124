"""Figures a reader can read (issue 17): in the report (matplotlib, :mod:`bench.report.drawing`) and on the
leaderboard site (inline SVG, :func:`bench.report.leaderboard_render.classwise_figure`).

Each test draws a figure from a small spec and inspects the matplotlib objects, the way a reader would look at
the image: its width against an 800 px column, the size of every text, labelled ticks on every axis and panel,
the under-represented classes marked (which classes: :func:`bench.analysis.metrics.class_groups`), each series
spread over its axis rather than flattened by a neighbour's scale, legends next to their axes, no blank band.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from factories import add_run, flags_for_accuracy

from bench.report import drawing
from bench.report.drawing import DPI, FONT, UNDER_GID, UNDER_LABEL, FigureSpec, build

COLUMN_PX = 768  # an 800 px window less the report's 1rem padding on each side
MIN_TEXT_PX = 10  # smallest text height (px) as shown in that column
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LABELS = np.repeat(np.arange(10), 10)


# -- specs: as bench.report.figures hands them over ---------------------------------------------------------------
def classwise_spec(n_panels: int = 4, n_classes: int = 10, under=(5, 6, 7, 8, 9), names=NAMES * 10) -> FigureSpec:
    rng = np.random.default_rng(0)
    series = ["adversarial training · standard", "adversarial training · robust", "natural training · standard",
              "natural training · robust"]
    panels = [{"title": f"method-{p}", "series": [{"label": s, "values": rng.uniform(5, 95, n_classes)}
                                                  for s in series]} for p in range(n_panels)]
    return FigureSpec("classwise", "classwise-x", "t", "c",
                      {"panels": panels, "class_names": list(names)[:n_classes] if names else [],
                       "under": list(under)})


def curves_spec() -> FigureSpec:
    """LDAM's loss ~60 and CE's ~2, as in the issue: on one linear axis CE's curves were flat."""
    epochs = np.arange(10, dtype=float)
    lines = []
    for label, start, end in (("ce", 2.1, 1.2), ("ldam", 62.0, 41.0), ("srat-ldam", 58.0, 44.0), ("focal", 1.1, 0.6),
                              ("drcb-ldam", 61.0, 47.0)):
        lines.append({"label": label, "epoch": epochs, "loss": np.linspace(start, end, 10),
                      "train_accuracy": np.linspace(0.2, 0.7, 10)})
    return FigureSpec("curves", "curves-x", "t", "c", {"lines": lines})


def profile_spec(low: float = 5, under=(5, 6, 7, 8, 9), ratios=(2, 10)) -> FigureSpec:
    classes = np.arange(10, dtype=float)
    profiles = [{"label": f"digits · step-{k}", "classes": classes, "counts": np.array([500.0] * 5 + [500 / k] * 5),
                 "under": list(under)} for k in ratios]
    profiles.append({"label": "cifar10 · low", "classes": classes, "counts": np.array([500.0] * 5 + [low] * 5),
                     "under": list(under)})
    return FigureSpec("profile", "class-counts", "t", "c", {"profiles": profiles})


def sweep_spec(log: bool = True) -> FigureSpec:
    x = np.array([2.0, 5.0, 10.0, 20.0, 50.0, 100.0]) if log else np.array([0.5, 1.0, 2.0])
    lines = [{"label": label, "x": x, "overall": np.linspace(60, 40, len(x)) + i,
              "under": np.linspace(40, 10, len(x)) + i} for i, label in enumerate(["ce", "ldam", "srat-ldam [lam=2]"])]
    panels = [{"xlabel": "imbalance ratio K (step)", "lines": lines, "log": log},
              {"xlabel": "lam", "lines": lines, "log": False}]  # linear: 2, 5 and 10 would crowd together
    return FigureSpec("sweep", "sweep-x", "t", "c", {"panels": panels, "ylabel": "Robust accuracy (%)"})


def tsne_spec() -> FigureSpec:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 6)
    vectors = rng.normal(size=(60, 8)) + labels[:, None]
    panels = [{"title": f"ce · adversarial · {kind}", "labels": labels, "vectors": vectors, "names": NAMES,
               "under": [5, 6, 7, 8, 9]} for kind in ("clean", "pgd-20")]
    return FigureSpec("tsne", "tsne-x", "t", "c", {"panels": panels})


SPECS = {"classwise": classwise_spec, "curves": curves_spec, "profile": profile_spec, "sweep": sweep_spec,
         "tsne": tsne_spec}


def drawn(spec: FigureSpec):
    """The figure, laid out as in the PNG (constrained layout and ticks resolved at the PNG's dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = build(spec)
    FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    fig.canvas.draw()
    return fig


def data_axes(fig):
    """The axes that hold data (not colorbars or legends)."""
    return [ax for ax in fig.get_axes() if ax.get_visible()]


def shown_tick_labels(ax, which: str) -> list[str]:
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    labels = []
    for tick in axis.get_major_ticks():
        if tick.label1.get_visible() and tick.label1.get_text().strip() and lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
            labels.append(tick.label1.get_text())
    return labels


def needs_sklearn(kind: str):
    if kind == "tsne":
        pytest.importorskip("sklearn")


# -- every figure -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(SPECS))
def test_fits_an_800px_column(kind):
    needs_sklearn(kind)
    fig = drawn(SPECS[kind]())
    assert fig.get_figwidth() * DPI <= COLUMN_PX, f"{kind}: {fig.get_figwidth() * DPI:.0f} px wide"


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_text_is_legible_at_800px(kind):
    from matplotlib.text import Text

    needs_sklearn(kind)
    fig = drawn(SPECS[kind]())
    shown = min(1.0, COLUMN_PX / (fig.get_figwidth() * DPI))  # the report shrinks wider images to the column
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert texts
    for text in texts:
        assert text.get_fontsize() >= FONT, (kind, text.get_text(), text.get_fontsize())
        assert text.get_fontsize() * DPI / 72 * shown >= MIN_TEXT_PX, (kind, text.get_text())


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_no_blank_band(kind):
    """The drawn artists fill the figure: no third of the image left empty (the old class-wise figure)."""
    needs_sklearn(kind)
    fig = drawn(SPECS[kind]())
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    assert box.width >= 0.9 * fig.get_figwidth() and box.height >= 0.9 * fig.get_figheight(), (kind, box)
    # ... and no artist cut off at an edge.
    assert box.x0 >= -0.02 and box.y0 >= -0.02
    assert box.x1 <= fig.get_figwidth() + 0.02 and box.y1 <= fig.get_figheight() + 0.02


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_legends_sit_next_to_their_axes(kind):
    """Within a line of text of the axes they explain (the old curves legend floated ~100 px to the right)."""
    needs_sklearn(kind)
    fig = drawn(SPECS[kind]())
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.get_axes() if ax.get_legend()]
    assert legends, kind
    boxes = [ax.get_tightbbox(renderer) for ax in data_axes(fig)]
    for legend in legends:
        lb = legend.get_window_extent(renderer)
        gap = min(max(b.x0 - lb.x1, lb.x0 - b.x1, b.y0 - lb.y1, lb.y0 - b.y1, 0.0) for b in boxes)
        assert gap <= 2 * FONT * DPI / 72, (kind, gap)


@pytest.mark.parametrize("kind", ["classwise", "curves", "profile", "sweep"])
def test_every_panel_has_labelled_ticks_and_axes_state_units(kind):
    fig = drawn(SPECS[kind]())
    from matplotlib.text import Text

    legend = set(legend_texts(fig))
    labels = " ".join(t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text() not in legend)
    for ax in data_axes(fig):
        assert len(shown_tick_labels(ax, "x")) >= 2, (kind, ax.get_title())
        assert len(shown_tick_labels(ax, "y")) >= 2, (kind, ax.get_title())
    want = {"classwise": ["accuracy (%)", "class"], "curves": ["training accuracy (%)", "epoch", "loss"],
            "profile": ["images", "class"], "sweep": ["accuracy (%)", "imbalance ratio K"]}[kind]
    for unit in want:
        assert unit in labels, (kind, unit, labels)


# -- the class-count figure ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("low, want", [(5, {"5", "10", "20", "50", "100", "200", "500"}),  # two decades
                                       (50, {"50", "100", "200", "500"}),  # exactly one
                                       (0.5, {"1", "10", "100"})])  # three and a bit
def test_class_count_axis_labels_every_decade_in_plain_numbers(low, want):
    """The issue: one lone '10¹' tick. Now a plain-number label at every power of ten (and 2x, 5x within a few
    decades), each one a count a reader can read off."""
    fig = drawn(profile_spec(low=low))
    (ax,) = data_axes(fig)
    assert ax.get_yscale() == "log"
    shown = set(shown_tick_labels(ax, "y"))
    assert want <= shown, shown
    assert len(shown) >= 2 and all(re.fullmatch(r"[0-9.]+", s) for s in shown), shown  # no 10^x mathtext


def test_class_count_axis_is_linear_from_zero_within_a_decade():
    fig = drawn(profile_spec(low=250, ratios=(2, 4)))  # at most 500 vs 125: no log axis needed
    (ax,) = data_axes(fig)
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    assert len(shown_tick_labels(ax, "y")) >= 3


def test_class_counts_mark_the_under_represented_classes():
    fig = drawn(profile_spec(under=(5, 6, 7, 8, 9)))
    (ax,) = data_axes(fig)
    assert covered_classes(ax) == {5, 6, 7, 8, 9}
    assert UNDER_LABEL in legend_texts(fig)


def test_class_counts_with_different_under_sets_use_open_markers():
    spec = profile_spec()
    spec.payload["profiles"][0]["under"] = [7, 8, 9]
    fig = drawn(spec)
    (ax,) = data_axes(fig)
    assert covered_classes(ax) == set()  # no common band: it would be wrong for some profile
    assert UNDER_LABEL in legend_texts(fig)
    open_markers = [line for line in ax.get_lines() if line.get_markerfacecolor() == "white" and len(line.get_xdata())]
    assert {tuple(np.asarray(line.get_xdata(), int)) for line in open_markers} >= {(7, 8, 9), (5, 6, 7, 8, 9)}


# -- class-wise panels ------------------------------------------------------------------------------------------
def covered_classes(ax) -> set[int]:
    """Classes whose centre lies in the under-represented band of ``ax`` (its artist found by gid)."""
    bands = [c for c in ax.collections if c.get_gid() == UNDER_GID]
    covered = set()
    for band in bands:
        for path in band.get_paths():
            x = path.vertices[:, 0]
            covered |= {c for c in range(-1, 200) if x.min() < c < x.max()}
    return covered


def legend_texts(fig) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.get_axes() if ax.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.mark.parametrize("under", [(5, 6, 7, 8, 9), (1, 3, 4, 9)])
def test_classwise_marks_the_under_represented_classes_in_every_panel(under):
    fig = drawn(classwise_spec(under=under))
    axes = data_axes(fig)
    assert len(axes) == 4
    for ax in axes:
        assert covered_classes(ax) == set(under)
        bold = {i for i, t in enumerate(ax.get_xticklabels()) if t.get_fontweight() in ("bold", 700)}
        assert bold == set(under)
    assert legend_texts(fig).count(UNDER_LABEL) == 1


@pytest.mark.parametrize("n_panels, n_classes, rows", [(1, 10, [1]), (2, 10, [2]), (3, 10, [3]), (4, 10, [2, 2]),
                                                       (3, 20, [2, 1]), (2, 100, [1, 1])])
def test_classwise_panels_fill_the_width_in_balanced_rows(n_panels, n_classes, rows):
    fig = drawn(classwise_spec(n_panels=n_panels, n_classes=n_classes, under=range(n_classes // 2, n_classes)))
    axes = data_axes(fig)
    assert len(axes) == n_panels
    by_row: dict[float, list] = {}
    for ax in axes:
        by_row.setdefault(round(ax.get_position().y0, 2), []).append(ax.get_position())
    assert sorted((len(v) for v in by_row.values()), reverse=True) == rows
    for boxes in by_row.values():  # every row spans the width: no empty slot
        assert min(b.x0 for b in boxes) < 0.15 and max(b.x1 for b in boxes) > 0.95
    for ax in axes:  # class tick labels on every panel, never overlapping
        labels = shown_tick_labels(ax, "x")
        assert len(labels) >= 2
        shown = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        rotation = shown[0].get_rotation()
        if rotation == 0:
            renderer = fig.canvas.get_renderer()
            extents = sorted((t.get_window_extent(renderer) for t in shown), key=lambda b: b.x0)
            assert all(not a.overlaps(b) for a, b in itertools.pairwise(extents))
        else:  # parallel slanted labels: the distance between their baselines is at least a line of text
            x = sorted(ax.transData.transform([(t.get_position()[0], 0) for t in shown])[:, 0])
            gap = min(np.diff(x)) * np.sin(np.radians(rotation))
            assert gap >= FONT * DPI / 72, (rotation, gap)


# -- training curves ----------------------------------------------------------------------------------------------
def test_each_loss_curve_spans_its_axis():
    """LDAM (~60) and CE (~2): every loss and accuracy series covers at least half of its own axis's range."""
    fig = drawn(curves_spec())
    spans = []
    for ax in data_axes(fig):
        lo, hi = ax.get_ylim()
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), float)
            spans.append((ax.get_title() or ax.get_ylabel(), (np.nanmax(y) - np.nanmin(y)) / (hi - lo)))
    assert len(spans) == 10  # five methods: accuracy on the shared axis, loss on one panel each
    assert all(frac >= 0.5 for _, frac in spans), spans
    titles = [ax.get_title() for ax in data_axes(fig) if ax.get_title()]
    assert titles == ["ce", "ldam", "srat-ldam", "focal", "drcb-ldam"]
    assert any("own scale" in s.get_suptitle() for s in fig.subfigs)


# -- sweeps -----------------------------------------------------------------------------------------------------
def test_sweep_log_axis_is_labelled_at_the_swept_values():
    fig = drawn(sweep_spec(log=True))
    ax = data_axes(fig)[0]
    assert ax.get_xscale() == "log"
    assert shown_tick_labels(ax, "x") == ["2", "5", "10", "20", "50", "100"]
    assert "under-represented classes" in legend_texts(fig)
    renderer = fig.canvas.get_renderer()
    for ax in data_axes(fig):  # the same values on a linear axis would collide: fewer, round ticks there
        extents = sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()),
                         key=lambda b: b.x0)
        assert len(extents) >= 2 and all(not a.overlaps(b) for a, b in itertools.pairwise(extents))


# -- from a database: which classes are under-represented comes from class_groups --------------------------------
def test_report_figures_take_the_under_represented_classes_from_class_groups(tmp_path):
    from bench.analysis.metrics import class_groups
    from bench.report.figures import plan_figures
    from bench.report.load import load_report_data
    from bench.report.tables import build_tables
    from bench.results.store import Store

    counts = [50, 500, 50, 500, 500, 20, 500, 80, 500, 50]  # not sorted: the rule, not the order, decides
    url = f"sqlite:///{tmp_path / 'b.db'}"
    for method in ("ce", "ldam"):
        add_run(Store(url), method=method, seed=0, test_labels=LABELS, train_counts=counts, class_names=NAMES,
                correct={"clean": flags_for_accuracy(LABELS, [9] * 10),
                         "pgd-20": flags_for_accuracy(LABELS, [5] * 10)},
                curves=[{"epoch": e, "lr": 0.1, "loss": 2.0 - e / 10, "train_accuracy": 0.5, "seconds": 1.0}
                        for e in range(3)])
    data = load_report_data(url)
    rows = data.class_rows[data.class_rows["run_id"] == data.class_rows["run_id"].min()]
    rows = rows.drop_duplicates("class_index")
    want = sorted(int(c) for c, g in zip(rows["class_index"], class_groups(rows)) if g == "under")
    assert want == [0, 2, 5, 7, 9]
    specs = {s.kind: s for s in plan_figures(data, build_tables(data)).all()}
    assert specs["classwise"].payload["under"] == want
    assert [p["under"] for p in specs["profile"].payload["profiles"]] == [want]
    for kind in ("classwise", "profile", "curves"):
        fig = drawn(specs[kind])
        assert fig.get_figwidth() * DPI <= COLUMN_PX
        if kind != "curves":
            assert covered_classes(data_axes(fig)[0]) == set(want)


def test_png_is_the_width_it_was_drawn_for():
    figure = drawing.draw(classwise_spec())
    width = int.from_bytes(figure.png[16:20], "big")  # IHDR
    assert width <= COLUMN_PX


# -- the leaderboard site's SVG -------------------------------------------------------------------------------------
def site_figure(n_series: int = 4, under=(5, 6, 7, 8, 9), n_classes: int = 10):
    from bench.report.leaderboard_render import classwise_figure

    labels = ["clean", "pgd-20 with a long attack name", "AutoAttack", "worst case"][:n_series]
    classwise = {"classes": (NAMES * 10)[:n_classes], "under": list(under),
                 "series": [{"label": label, "values": [50.0] * n_classes} for label in labels]}
    return classwise_figure(classwise)


def rendered_svg(fig) -> str:
    from bench.report.leaderboard_render import _environment

    template = _environment().from_string('{% import "leaderboard_macros.html" as m %}{{ m.classwise(fig, "x") }}')
    return template.render(fig=fig)


@pytest.mark.parametrize("n_series", [1, 2, 4])
def test_site_figure_legend_stays_inside_and_names_the_under_represented(n_series):
    fig = site_figure(n_series)
    assert fig["width"] <= COLUMN_PX
    for item in fig["legend"]:
        assert item["x"] + 16 + len(item["text"]) * 7.0 <= fig["width"], item
        assert item["y"] + 12 < fig["top"]  # above the plot
    assert fig["legend"][-1]["text"] == UNDER_LABEL
    svg = rendered_svg(fig)
    sizes = [int(s) for s in re.findall(r'font-size="(\d+)"', svg)]
    assert sizes and min(sizes) >= 12  # px in a viewBox no wider than the column: shown at least that size
    assert ">class<" in svg and ">accuracy (%)<" in svg and UNDER_LABEL in svg


@pytest.mark.parametrize("under, spans", [((5, 6, 7, 8, 9), [(5, 9)]), ((0, 2, 3, 9), [(0, 0), (2, 3), (9, 9)])])
def test_site_figure_shades_each_run_of_under_represented_classes_once(under, spans):
    fig = site_figure(under=under)
    group = fig["plot_w"] / 10
    got = [(round((s["x"] - fig["left"]) / group), round((s["x"] + s["w"] - fig["left"]) / group) - 1)
           for s in fig["shades"]]
    assert got == spans
    assert {label["text"] for label in fig["labels"] if label["under"]} == {NAMES[c] for c in under}


def test_site_figure_labels_fit_below_the_plot():
    fig = site_figure(n_classes=40)
    assert fig["rotate"] and fig["xlabel"]["y"] > fig["top"] + fig["plot_h"] + 12
    assert fig["xlabel"]["y"] <= fig["height"]
    assert len(fig["labels"]) <= 25
