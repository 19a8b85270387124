"""Drawing the report's figures: one :class:`FigureSpec` (plain numbers) in, one :class:`Figure` (PNG and PDF
bytes) out, with matplotlib's object API (Agg, no pyplot state).

:mod:`bench.report.figures` decides *what* to draw (which tables, methods and numbers, within its limits) and
hands over specs; this module only draws them, so it needs neither pandas nor the database and runs as well in
a forked worker (:mod:`bench.report.workers`) as in the report's own process. One drawing function per spec
``kind``; :func:`build` returns the matplotlib figure (what the tests inspect), :func:`draw` its files. User text
goes through :func:`_t` so a ``$`` in a name never starts mathtext.

Every figure is drawn for an 800 px column: at most :data:`WIDTH` inches wide (756 px at :data:`DPI`, so the
report's ``max-width: 100%`` never shrinks it in an 800 px window), no text smaller than :data:`FONT` points
(12.5 px), ``layout="constrained"`` so nothing is cut off and no band is left blank, every axis labelled with its
unit, tick labels on every panel, legends right next to their axes, and the under-represented classes (the one
definition: :func:`bench.analysis.metrics.class_groups`, applied in :mod:`~bench.report.figures`) shaded in
:data:`UNDER_COLOR` with a legend entry :data:`UNDER_LABEL`.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

import numpy as np

DPI = 90  # PNG resolution (px per inch)
WIDTH = 8.4  # inches: 756 px at DPI, inside an 800 px window less the page's padding
FONT = 10  # points: the smallest text in any figure, 12.5 px at DPI
CHAR_PX = 0.52 * FONT * DPI / 72  # a generous average character width (px), to fit labels before drawing
UNDER_COLOR = "#fbe3c8"  # the leaderboard site's shade for the same classes
UNDER_LABEL = "under-represented classes"
UNDER_GID = "under-represented"  # gid of the artist that marks them (the tests find it by this)


@dataclass(frozen=True)
class FigureSpec:
    """What to draw, as plain data: ``kind`` picks the drawing function; ``payload`` its numbers."""

    kind: str  # classwise | curves | sweep | profile | tsne
    name: str  # file stem, [a-z0-9-] only
    title: str
    caption: str
    payload: dict = field(hash=False, compare=False)


@dataclass(frozen=True)
class Figure:
    name: str
    kind: str
    title: str
    caption: str
    png: bytes
    pdf: bytes

    @property
    def png_base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


def build(spec: FigureSpec):
    """The matplotlib figure of one spec, not yet saved. No title inside the figure, as in a paper: the HTML,
    Markdown and LaTeX captions carry it."""
    return _DRAW[spec.kind](spec.payload)


def draw(spec: FigureSpec) -> Figure:
    """Draw one spec into PNG and PDF bytes (deterministic: no timestamps in either file)."""
    fig = build(spec)
    png, pdf = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    fig.set_layout_engine("none")  # keep the layout the PNG computed (in inches): a second pass is half a draw
    fig.savefig(pdf, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    return Figure(spec.name, spec.kind, spec.title, spec.caption, png.getvalue(), pdf.getvalue())


def warm_up() -> None:
    """Load the font and both backends' text machinery (~0.5 s, once per process) by drawing one word."""
    fig = _new_figure(0.5, width=1.0)
    fig.text(0.1, 0.1, "0.5 accuracy (%)", fontsize=FONT)
    fig.savefig(io.BytesIO(), format="png", dpi=DPI)
    fig.savefig(io.BytesIO(), format="pdf")


def _new_figure(height: float, width: float = WIDTH):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.05, h_pad=0.06, wspace=0.03, hspace=0.05)
    return fig


def _rows(n: int, max_cols: int) -> list[int]:
    """Panels per row, balanced so no slot is left blank: 4 -> [2, 2], 5 -> [3, 2], 7 -> [3, 2, 2]."""
    n_rows = math.ceil(n / max_cols)
    base, extra = divmod(n, n_rows)
    return [base + 1] * extra + [base] * (n_rows - extra)


def _panel_axes(fig, rows: list[int]) -> list:
    """Axes in rows of ``rows[i]`` equal panels filling the width (a 6-column grid: 1, 2 or 3 per row)."""
    assert max(rows) <= 3, rows
    grid = fig.add_gridspec(len(rows), 6)
    axes = []
    for r, k in enumerate(rows):
        w = 6 // k
        axes.extend(fig.add_subplot(grid[r, j * w:(j + 1) * w]) for j in range(k))
    return axes


def _legend_columns(labels: list[str], width_px: float) -> int:
    widest = max(len(label) for label in labels) * CHAR_PX + 40  # marker and gap
    return max(1, min(len(labels), int(width_px // widest)))


def _bars(ax, x, heights, width: float, color: str) -> None:
    """Bars as one PolyCollection: one artist instead of one patch per bar (3x faster to draw)."""
    from matplotlib.collections import PolyCollection

    heights = np.nan_to_num(np.asarray(heights, dtype=float))
    verts = [[(a, 0.0), (a, h), (a + width, h), (a + width, 0.0)] for a, h in zip(x, heights)]
    ax.add_collection(PolyCollection(verts, facecolors=color, edgecolors="none", zorder=2))


def runs(indices) -> list[tuple[int, int]]:
    """Runs of consecutive integers, first and last: {1, 2, 3, 7} -> [(1, 3), (7, 7)] (one band per run)."""
    found: list[list[int]] = []
    for c in sorted(indices):
        if found and c == found[-1][1] + 1:
            found[-1][1] = c
        else:
            found.append([c, c])
    return [(a, b) for a, b in found]


def _shade_under(ax, under: list[int]) -> None:
    """One artist (gid :data:`UNDER_GID`) shading each run of consecutive under-represented classes, full height."""
    from matplotlib.collections import PolyCollection

    spans = runs(under)
    if not spans:
        return
    verts = [[(a - 0.5, 0.0), (a - 0.5, 1.0), (b + 0.5, 1.0), (b + 0.5, 0.0)] for a, b in spans]
    band = PolyCollection(verts, facecolors=UNDER_COLOR, edgecolors="none", zorder=0.5, label=UNDER_LABEL,
                          transform=ax.get_xaxis_transform())
    band.set_gid(UNDER_GID)
    ax.add_collection(band, autolim=False)


def _under_patch():
    from matplotlib.patches import Patch

    return Patch(facecolor=UNDER_COLOR, edgecolor="0.6", label=UNDER_LABEL)


def _class_ticks(ax, n_classes: int, names: list[str], under: set[int], panel_px: float) -> float:
    """Class names (or indices) under the bars, rotated only as far as they need; returns their height (in)."""
    font_px = FONT * DPI / 72
    per_class = (panel_px - 60) / max(n_classes, 1)  # 60 px: the y tick labels
    text = [_t(n[:10]) for n in names[:n_classes]] if len(names) >= n_classes else [str(i) for i in range(n_classes)]
    label_px = max(len(s) for s in text) * CHAR_PX
    if label_px <= per_class * 0.9:
        rotation, height = 0, font_px
    elif per_class * 0.7 >= 1.15 * font_px:
        rotation, height = 45, (label_px + font_px) * 0.72
    elif per_class >= 1.15 * font_px:
        rotation, height = 90, label_px
    else:  # too many classes to name each: indices, a few of them
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=max(3, int(panel_px // 60)), integer=True))
        ax.tick_params(axis="x", labelsize=FONT)
        return font_px / DPI
    ax.set_xticks(np.arange(n_classes), text, fontsize=FONT, rotation=rotation,
                  ha="right" if rotation == 45 else "center", rotation_mode="anchor" if rotation == 45 else None)
    for i, label in enumerate(ax.get_xticklabels()):
        if i in under:
            label.set_fontweight("bold")
    return height / DPI


def _draw_classwise(payload: dict):
    panels, names = payload["panels"], payload["class_names"]
    under = {int(c) for c in payload.get("under", ())}
    n_classes = max(len(s["values"]) for p in panels for s in p["series"])
    max_cols = 1 if n_classes > 24 else 2 if n_classes > 12 else 3
    rows = _rows(len(panels), max_cols)
    labels = sorted({s["label"] for p in panels for s in p["series"]}, key=_series_order)
    colors = {label: f"C{i}" for i, label in enumerate(labels)}
    legend_labels = [_t(label) for label in labels] + ([UNDER_LABEL] if under else [])
    legend_cols = _legend_columns(legend_labels, WIDTH * DPI)
    tick_h = [0.0] * len(rows)

    fig = _new_figure(1.0)  # height set below, once the tick labels' height is known
    axes = _panel_axes(fig, rows)
    x = np.arange(n_classes)
    row_of = [r for r, k in enumerate(rows) for _ in range(k)]
    for ax, panel, r in zip(axes, panels, row_of):
        _shade_under(ax, [c for c in under if c < n_classes])
        width = 0.8 / len(panel["series"])
        for i, series in enumerate(panel["series"]):
            values = np.full(n_classes, np.nan)
            values[: len(series["values"])] = series["values"]
            _bars(ax, x - 0.4 + i * width, values, width, colors[series["label"]])
        ax.set_xlim(-0.6, n_classes - 0.4)
        ax.set_ylim(0, 100)
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.tick_params(labelsize=FONT)
        ax.grid(axis="y", color="0.88", lw=0.8, zorder=0)
        ax.set_axisbelow(True)
        ax.set_title(_fit(panel["title"], WIDTH * DPI / rows[r]), fontsize=FONT + 1)
        tick_h[r] = max(tick_h[r], _class_ticks(ax, n_classes, names, under, WIDTH * DPI / rows[r]))
    fig.supxlabel("class" + (" (index)" if n_classes > 24 else ""), fontsize=FONT + 1)
    fig.supylabel("accuracy (%)", fontsize=FONT + 1)
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[label], label=_t(label)) for label in labels] + ([_under_patch()] if under else [])
    fig.legend(handles=handles, loc="outside upper center", ncols=legend_cols, fontsize=FONT, frameon=False)
    legend_h = math.ceil(len(handles) / legend_cols) * 0.25 + 0.1
    fig.set_figheight(legend_h + sum(1.95 + 0.3 + h for h in tick_h) + 0.35)
    return fig


def _series_order(label: str) -> tuple:
    return ("natural" in label, "robust" in label, label)


def _draw_curves(payload: dict):
    """Training accuracy of every method on one axis (same unit, same range); the loss on one small panel per
    method, each on its own scale: losses differ in kind (LDAM's scaled margins sit ~30x above cross-entropy),
    so on one axis most of them would be flat lines."""
    lines = payload["lines"]
    rows = _rows(len(lines), 3)
    top_h, loss_h = 2.5, 1.85 * len(rows) + 0.6
    fig = _new_figure(top_h + loss_h)
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_h, loss_h], hspace=0.02)
    ax_acc = top.subplots()
    loss_axes = _panel_axes(bottom, rows)
    markers = "o" if max(len(line["epoch"]) for line in lines) <= 15 else None
    per_row = [k for k in rows for _ in range(k)]
    for i, (line, ax, k) in enumerate(zip(lines, loss_axes, per_row)):
        color = f"C{i}"
        accuracy = np.asarray(line["train_accuracy"], dtype=float)
        scale = 100.0 if np.nanmax(accuracy, initial=0.0) <= 1.0 else 1.0
        ax_acc.plot(line["epoch"], accuracy * scale, color=color, label=_t(line["label"]), lw=1.5, marker=markers,
                    ms=3)
        ax.plot(line["epoch"], line["loss"], color=color, lw=1.5, marker=markers, ms=3)
        ax.set_title(_fit(line["label"], WIDTH * DPI / k), color=color, fontsize=FONT)
        _few_ticks(ax, integer_x=True, nbins=4)
    for r in range(len(rows)):
        loss_axes[sum(rows[:r])].set_ylabel("loss", fontsize=FONT)
    ax_acc.set_xlabel("epoch", fontsize=FONT)
    ax_acc.set_ylabel("training accuracy (%)", fontsize=FONT)
    _few_ticks(ax_acc, integer_x=True)
    ax_acc.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=FONT, frameon=False)
    bottom.suptitle("training loss (mean per image), each method on its own scale", fontsize=FONT)
    bottom.supxlabel("epoch", fontsize=FONT)
    return fig


def _draw_sweep(payload: dict):
    from matplotlib.lines import Line2D

    panels = payload["panels"]
    labels = list(dict.fromkeys(line["label"] for panel in panels for line in panel["lines"]))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    entries = [_t(label) for label in labels] + ["overall", "under-represented classes"]
    legend_cols = _legend_columns(entries, WIDTH * DPI)
    legend_h = math.ceil(len(entries) / legend_cols) * 0.25 + 0.1
    fig = _new_figure(2.9 + legend_h)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, panel in zip(axes, panels):
        for line in panel["lines"]:
            color = colors[line["label"]]
            ax.plot(line["x"], line["overall"], "o-", color=color, lw=1.5, ms=4)
            ax.plot(line["x"], line["under"], "s--", color=color, lw=1.5, ms=4, mfc="white")
        if panel["log"]:
            ax.set_xscale("log")
        ax.set_xlabel(_t(panel["xlabel"]), fontsize=FONT)
        ax.set_ylabel(payload["ylabel"], fontsize=FONT)
        _few_ticks(ax)
        values = sorted({float(v) for line in panel["lines"] for v in line["x"]})
        if len(values) <= 8 and _spaced(values, panel["log"], WIDTH * DPI / len(panels) - 80):
            ax.set_xticks(values, [format(v, "g") for v in values], fontsize=FONT)  # at the swept values
            ax.xaxis.set_minor_locator(_null_locator())
    handles = [Line2D([], [], color=colors[label], lw=1.5, label=_t(label)) for label in labels]
    handles += [Line2D([], [], color="0.3", ls="-", marker="o", ms=4, label="overall"),
                Line2D([], [], color="0.3", ls="--", marker="s", ms=4, mfc="white", label="under-represented classes")]
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_cols, fontsize=FONT, frameon=False)
    return fig


def _spaced(values: list[float], log: bool, axis_px: float) -> bool:
    """Whether labels at ``values`` keep clear of each other on an axis ``axis_px`` long."""
    if len(values) < 2 or (log and values[0] <= 0):
        return len(values) >= 1
    at = np.log10(values) if log else np.asarray(values)
    gaps = np.diff(at) / (at[-1] - at[0]) * axis_px
    widths = [len(format(v, "g")) * CHAR_PX for v in values]
    return all(gap >= (a + b) / 2 + 8 for gap, a, b in zip(gaps, widths, widths[1:]))


def _draw_profile(payload: dict):
    from matplotlib.lines import Line2D

    profiles = payload["profiles"]
    unders = [tuple(sorted(int(c) for c in p.get("under", ()))) for p in profiles]
    common = unders[0] if unders and all(u == unders[0] for u in unders) and unders[0] else None
    entries = [_t(p["label"]) for p in profiles] + [UNDER_LABEL]
    legend_cols = _legend_columns(entries, WIDTH * DPI)
    legend_h = math.ceil(len(entries) / legend_cols) * 0.25 + 0.1
    fig = _new_figure(3.0 + legend_h)
    ax = fig.subplots()
    top, bottom = 1.0, math.inf
    n_classes = 0
    for i, (profile, under) in enumerate(zip(profiles, unders)):
        classes, counts = np.asarray(profile["classes"], float), np.asarray(profile["counts"], float)
        color = f"C{i % 10}"
        ax.plot(classes, counts, "-", color=color, lw=1.5, label=_t(profile["label"]))
        is_under = np.isin(classes, under)
        ax.plot(classes[~is_under], counts[~is_under], "o", color=color, ms=4)
        ax.plot(classes[is_under], counts[is_under], "o", color=color, ms=4, mfc="white")
        if len(counts):
            top, bottom = max(top, float(np.max(counts))), min(bottom, float(np.min(counts)))
            n_classes = max(n_classes, int(np.max(classes)) + 1)
    handles = ax.get_legend_handles_labels()[0]
    if common is not None:
        _shade_under(ax, list(common))
        handles.append(_under_patch())
    else:  # classes differ between profiles: open markers mark each profile's own
        handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="none", label=UNDER_LABEL))
    if bottom > 0 and top / bottom >= 10:
        ax.set_yscale("log")
        ax.set_ylim(bottom / 1.3, top * 1.3)
    else:
        ax.set_ylim(0, top * 1.08)
    ax.set_xlim(-0.5, max(n_classes, 1) - 0.5)
    ax.set_xlabel("class index", fontsize=FONT)
    ax.set_ylabel("training images per class", fontsize=FONT)
    _few_ticks(ax, integer_x=True, nbins=min(max(n_classes, 2), 12))
    ax.grid(axis="y", color="0.9", lw=0.8)
    ax.set_axisbelow(True)
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_cols, fontsize=FONT, frameon=False)
    return fig


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _few_ticks(ax, integer_x: bool = False, nbins: int = 5) -> None:
    """A few labelled major ticks and no minor ones: each tick is a Line2D and a Text, and making them is most of
    what a draw costs. Log axes get plain numbers at 1, 2 and 5 times each power of ten (:func:`_log_ticks`)."""
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            _log_ticks(axis)
        else:
            axis.set_major_locator(MaxNLocator(nbins=nbins if axis is ax.xaxis else 5,
                                               integer=integer_x and axis is ax.xaxis))
            axis.set_minor_locator(_null_locator())
    ax.tick_params(labelsize=FONT)


def _log_ticks(axis) -> None:
    """Plain-number ticks on a log axis (``5, 10, 20, 50, 100`` rather than ``10¹``): every power of ten within
    the axis, and 2x and 5x while the axis spans at most three decades (3x past that), so at least two labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    lo, hi = axis.get_view_interval()
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and math.isfinite(hi)):
        lo, hi = axis.get_data_interval()
    lo, hi = max(min(lo, hi), 1e-12), max(lo, hi, 1e-12)
    decades = math.log10(hi / lo)
    subs = (1, 2, 5) if decades <= 3 else (1, 3) if decades <= 6 else (1,)
    ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in subs if lo * 0.999 <= m * 10.0 ** k <= hi * 1.001]
    if len(ticks) < 2:  # within one decade: the ends, rounded
        ticks = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: format(v, "g")))
    axis.set_minor_locator(_null_locator())


def _fit(text, width_px: float) -> str:
    """User text shortened (with an ellipsis) to fit ``width_px`` at :data:`FONT` points."""
    text = _t(text)
    limit = max(8, int(width_px // CHAR_PX) - 2)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _t(text) -> str:
    """User text for matplotlib: a ``$`` would start mathtext (and a lone one fails the whole figure)."""
    return str(text).replace("$", r"\$")


def _draw_tsne(payload: dict):
    from matplotlib.lines import Line2D
    from sklearn.manifold import TSNE

    panels = payload["panels"]
    rows = _rows(len(panels), 2 if len(panels) == 4 else 3)
    names = next((p.get("names") for p in panels if p.get("names")), None)
    classes = sorted({int(c) for p in panels for c in np.unique(np.asarray(p["labels"]))})
    under = {int(c) for p in panels for c in p["under"]}
    handles = []
    if len(classes) <= 10:  # a colour per class only while colours do not repeat
        handles = [Line2D([], [], ls="none", marker="x" if c in under else "o", color=f"C{c}", ms=5,
                          label=_t(names[c] if names and c < len(names) else c)) for c in classes]
    handles += [Line2D([], [], ls="none", marker="o", color="0.3", ms=5, label="well-represented class"),
                Line2D([], [], ls="none", marker="x", color="0.3", ms=5, label="under-represented class")]
    legend_px = max(len(h.get_label()) for h in handles) * CHAR_PX + 40
    panel_px = min((WIDTH * DPI - legend_px) / max(rows), 320)
    fig = _new_figure(len(rows) * (panel_px / DPI + 0.35), width=min(WIDTH, max(rows) * panel_px / DPI + legend_px
                                                                     / DPI + 0.2))
    axes = _panel_axes(fig, rows)
    for ax, panel in zip(axes, panels):
        vectors = np.asarray(panel["vectors"], dtype=np.float32)
        labels = np.asarray(panel["labels"])
        perplexity = float(min(30, max(2, (len(vectors) - 1) // 3)))
        embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(vectors)
        for c in np.unique(labels):
            mask = labels == c
            marker = "x" if int(c) in panel["under"] else "o"
            ax.scatter(embedded[mask, 0], embedded[mask, 1], s=8, marker=marker, color=f"C{int(c) % 10}",
                       linewidths=0.8)
        ax.set_title(_fit(panel["title"], panel_px), fontsize=FONT)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    fig.legend(handles=handles, loc="outside right upper", fontsize=FONT, frameon=False)
    return fig


_DRAW = {"classwise": _draw_classwise, "curves": _draw_curves, "sweep": _draw_sweep, "profile": _draw_profile,
         "tsne": _draw_tsne}
