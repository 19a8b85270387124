"""What ``bench compare A B`` can be asked for: metric names, the keys that pair runs, the output formats.

Only names, no numbers: this module imports nothing (no pandas, scipy or jinja2), so the command line
(:mod:`bench.cli.compare`) builds its options and help from it at no cost, the way :mod:`bench.report.options`
serves ``bench report``. The work lives in three rooms:

* :mod:`bench.analysis.paired` — the paired statistics (t interval, paired t-test, Wilcoxon, Holm);
* :mod:`bench.analysis.comparison` — pairing the runs of a database by seed within each :class:`PairGroup
  <bench.analysis.comparison.PairGroup>` and building the :class:`~bench.analysis.comparison.Comparison`;
* :mod:`bench.report.compare_render` — the comparison as a terminal table, Markdown, CSV, JSON or HTML (the
  template is ``compare.html`` beside the report's), written atomically.
"""

from __future__ import annotations

ACCURACY_KINDS = ("standard", "robust")  # clean accuracy, and accuracy under an evaluation attack
GROUP_ORDER = ("overall", "under", "well")  # class groups, in the order metrics are listed
METRICS = tuple(f"{kind}_{group}" for kind in ACCURACY_KINDS for group in GROUP_ORDER)
DEFAULT_METRICS = ("standard_overall", "standard_under", "robust_overall", "robust_under")
PAIR_KEYS = ("suite", "dataset", "imbalance", "model", "adversarial")  # runs sharing these are paired by seed
FORMATS = ("table", "md", "csv", "json", "html")
SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json", ".html": "html", ".htm": "html"}
