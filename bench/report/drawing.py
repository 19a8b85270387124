"""Drawing the report's figures: one :class:`FigureSpec` (plain numbers) in, one :class:`Figure` (PNG and PDF
bytes) out, with matplotlib's object API (Agg, no pyplot state).

:mod:`bench.report.figures` decides *what* to draw (which tables, methods and numbers, within its limits) and
hands over specs; this module only draws them, so it needs neither pandas nor the database and runs as well in
a forked worker (:mod:`bench.report.workers`) as in the report's own process. One drawing function per spec
``kind``; user text goes through :func:`_t` so a ``$`` in a name never starts mathtext.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

import numpy as np

DPI = 90  # PNG resolution: a 9-inch figure is 810 px wide, sharp on screen, ~30 kB


@dataclass(frozen=True)
class FigureSpec:
    """What to draw, as plain data: ``kind`` picks the drawing function; ``payload`` its numbers."""

    kind: str  # classwise | curves | sweep | profile
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


def draw(spec: FigureSpec) -> Figure:
    """Draw one spec into PNG and PDF bytes (deterministic: no timestamps in either file)."""
    from matplotlib.figure import Figure as MplFigure  # imported here: only reports pay for matplotlib

    # No title inside the figure, as in a paper: the HTML, Markdown and LaTeX captions carry it.
    fig: MplFigure = _DRAW[spec.kind](spec.payload)
    png, pdf = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    fig.savefig(pdf, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    return Figure(spec.name, spec.kind, spec.title, spec.caption, png.getvalue(), pdf.getvalue())


def warm_up() -> None:
    """Load the font and both backends' text machinery (~0.5 s, once per process) by drawing one word."""
    fig = _new_figure(1.0, 0.5)
    fig.text(0.1, 0.1, "0.5 accuracy (%)", fontsize=8)
    fig.savefig(io.BytesIO(), format="png", dpi=DPI)
    fig.savefig(io.BytesIO(), format="pdf")


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height))


def _bars(ax, x, heights, width: float, color: str) -> None:
    """Bars as one PolyCollection: one artist instead of one patch per bar (3x faster to draw)."""
    from matplotlib.collections import PolyCollection

    heights = np.nan_to_num(np.asarray(heights, dtype=float))
    verts = [[(a, 0.0), (a, h), (a + width, h), (a + width, 0.0)] for a, h in zip(x, heights)]
    ax.add_collection(PolyCollection(verts, facecolors=color, edgecolors="none"))


def _draw_classwise(payload: dict):
    from matplotlib.patches import Patch

    panels, names = payload["panels"], payload["class_names"]
    n_classes = max(len(s["values"]) for p in panels for s in p["series"])
    fig = _new_figure(min(3.0 * len(panels) + 1.0, 13.0), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    labels = sorted({s["label"] for p in panels for s in p["series"]}, key=_series_order)
    colors = {label: f"C{i}" for i, label in enumerate(labels)}
    x = np.arange(n_classes)
    for ax, panel in zip(axes, panels):
        width = 0.8 / len(panel["series"])
        for i, series in enumerate(panel["series"]):
            values = np.full(n_classes, np.nan)
            values[: len(series["values"])] = series["values"]
            _bars(ax, x - 0.4 + i * width, values, width, colors[series["label"]])
        ax.set_xlim(-0.6, n_classes - 0.4)
        ax.set_ylim(0, 100)
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.set_title(_t(panel["title"]), fontsize=9)
        ax.set_xticks([])  # tick objects are the costliest part of a draw: class names on the first panel only
        ax.tick_params(labelsize=7)
    if n_classes <= 20:
        axes[0].set_xticks(x, [_t(n[:10]) for n in names[:n_classes]] if names else [str(i) for i in x],
                           fontsize=6, rotation=90)
    else:
        axes[0].set_xticks([0, n_classes - 1], ["0", str(n_classes - 1)], fontsize=6)
    axes[0].set_xlabel("class (same order in every panel)", fontsize=7)
    axes[0].set_ylabel("accuracy (%)", fontsize=8)
    fig.legend(handles=[Patch(color=colors[label], label=_t(label)) for label in labels], loc="upper center",
               ncols=min(len(labels), 4), fontsize=7, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.subplots_adjust(left=0.07, right=0.99, top=0.82, bottom=0.27, wspace=0.08)
    return fig


def _series_order(label: str) -> tuple:
    return ("natural" in label, "robust" in label, label)


def _draw_curves(payload: dict):
    fig = _new_figure(9.0, 2.9)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, line in enumerate(payload["lines"]):
        ax_loss.plot(line["epoch"], line["loss"], color=f"C{i}", label=_t(line["label"]), lw=1.2)
        ax_acc.plot(line["epoch"], line["train_accuracy"] * (100.0 if np.nanmax(line["train_accuracy"]) <= 1.0
                                                                else 1.0), color=f"C{i}", lw=1.2)
    ax_loss.set_xlabel("epoch", fontsize=8)
    ax_loss.set_ylabel("training loss", fontsize=8)
    ax_acc.set_xlabel("epoch", fontsize=8)
    ax_acc.set_ylabel("training accuracy (%)", fontsize=8)
    for ax in (ax_loss, ax_acc):
        _few_ticks(ax, integer_x=True)
    fig.legend(loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.07, right=0.8, top=0.95, bottom=0.16, wspace=0.28)
    return fig


def _draw_sweep(payload: dict):
    panels = payload["panels"]
    fig = _new_figure(4.2 * len(panels) + 2.2, 2.9)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    labelled = set()
    for ax, panel in zip(axes, panels):
        for i, line in enumerate(panel["lines"]):
            label = _t(line["label"]) if line["label"] not in labelled else None
            labelled.add(line["label"])
            ax.plot(line["x"], line["overall"], "o-", color=f"C{i}", lw=1.2, ms=3, label=label)
            ax.plot(line["x"], line["under"], "o--", color=f"C{i}", lw=1.2, ms=3)
        if panel["log"]:
            ax.set_xscale("log")
        ax.set_xlabel(_t(panel["xlabel"]), fontsize=8)
        _few_ticks(ax)
        values = sorted({float(v) for line in panel["lines"] for v in line["x"]})
        if len(values) <= 8:  # ticks at the swept values themselves
            ax.set_xticks(values, [format(v, "g") for v in values])
    axes[0].set_ylabel(payload["ylabel"], fontsize=8)
    from matplotlib.lines import Line2D

    styles = [Line2D([], [], color="0.4", ls="-", label="overall"), Line2D([], [], color="0.4", ls="--", label="under")]
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]  # each series labelled once
    fig.legend(handles=[*handles, *styles], loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.72, top=0.95, bottom=0.16, wspace=0.25)
    return fig


def _draw_profile(payload: dict):
    fig = _new_figure(7.5, 2.9)
    ax = fig.subplots()
    top, bottom = 1.0, math.inf
    for i, profile in enumerate(payload["profiles"]):
        ax.plot(profile["classes"], profile["counts"], "o-", color=f"C{i % 10}", lw=1.2, ms=3,
                label=_t(profile["label"]))
        if len(profile["counts"]):
            top, bottom = max(top, float(np.max(profile["counts"]))), min(bottom, float(np.min(profile["counts"])))
    if bottom > 0 and top / bottom >= 10:
        ax.set_yscale("log")
    ax.set_xlabel("class index", fontsize=8)
    ax.set_ylabel("training examples", fontsize=8)
    _few_ticks(ax)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.1, right=0.7, top=0.95, bottom=0.16)
    return fig


def _few_ticks(ax, integer_x: bool = False) -> None:
    """At most ~5 major ticks and no minor ones: each tick is a Line2D and a Text, and making them is most of
    what a draw costs."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_locator(LogLocator(numticks=5))
        else:
            axis.set_major_locator(MaxNLocator(nbins=5, integer=integer_x and axis is ax.xaxis))
        axis.set_minor_locator(NullLocator())
    ax.tick_params(labelsize=7)


def _t(text) -> str:
    """User text for matplotlib: a ``$`` would start mathtext (and a lone one fails the whole figure)."""
    return str(text).replace("$", r"\$")


def _draw_tsne(payload: dict):
    from sklearn.manifold import TSNE

    panels = payload["panels"]
    fig = _new_figure(3.0 * len(panels), 3.1)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, panel in zip(axes, panels):
        vectors = np.asarray(panel["vectors"], dtype=np.float32)
        labels = np.asarray(panel["labels"])
        perplexity = float(min(30, max(2, (len(vectors) - 1) // 3)))
        embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(vectors)
        for c in np.unique(labels):
            mask = labels == c
            marker = "x" if int(c) in panel["under"] else "o"
            ax.scatter(embedded[mask, 0], embedded[mask, 1], s=5, marker=marker, color=f"C{int(c) % 10}",
                       linewidths=0.6)
        ax.set_title(_t(panel["title"]), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.03, wspace=0.08)
    return fig


_DRAW = {"classwise": _draw_classwise, "curves": _draw_curves, "sweep": _draw_sweep, "profile": _draw_profile,
         "tsne": _draw_tsne}
