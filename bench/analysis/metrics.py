"""Group accuracies from the tidy per-class results: one place for Overall / Well / Under.

Well-represented = the ``C // 2`` classes with the most training examples in that run (ties: lower class index),
under-represented = the rest (methods.md §1). A group's accuracy is its correct count over its test count, which
on the balanced test sets equals the mean of its class accuracies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUPS = ("overall", "well", "under")
RUN_KEYS = ["run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed", "model", "adversarial"]


def class_groups(frame: pd.DataFrame) -> pd.Series:
    """For each row of a tidy results frame, ``"well"`` or ``"under"`` by its run's training counts.

    Vectorised (one sort, no per-run Python): classes ranked by ``(−n_train, class_index)`` within their run; the
    first ``C // 2`` are well-represented — the same rule as :func:`methods.weights.well_represented`, which a
    test checks against this.
    """
    classes = frame[["run_id", "class_index", "n_train"]].drop_duplicates(["run_id", "class_index"])
    classes = classes.assign(neg=-classes["n_train"]).sort_values(["run_id", "neg", "class_index"])
    rank = classes.groupby("run_id", sort=False).cumcount()
    size = classes.groupby("run_id", sort=False)["class_index"].transform("size")
    classes = classes.assign(group=np.where(rank < size // 2, "well", "under"))
    keyed = frame[["run_id", "class_index"]].merge(classes[["run_id", "class_index", "group"]],
                                                   on=["run_id", "class_index"], how="left")
    return pd.Series(keyed["group"].to_numpy(), index=frame.index, dtype=object)


def group_accuracies(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run × attack with columns ``overall``, ``well``, ``under`` (accuracies in [0, 1]).

    ``frame`` is :func:`bench.results.read.load_results` output. Keeps the run keys and ``attack``/``attack_order``.
    """
    if frame.empty:
        return pd.DataFrame(columns=[*RUN_KEYS, "attack", "attack_order", *GROUPS])
    frame = frame.assign(group=class_groups(frame))
    keys = [k for k in RUN_KEYS if k in frame.columns] + ["attack", "attack_order"]
    sums = frame.groupby([*keys, "group"], sort=False)[["correct", "n_test"]].sum().unstack("group", fill_value=0)
    out = sums.index.to_frame(index=False)
    total_correct = sums["correct"].sum(axis=1).to_numpy()
    total_n = sums["n_test"].sum(axis=1).to_numpy()
    out["overall"] = total_correct / total_n
    for group in ("well", "under"):
        correct = sums["correct"][group].to_numpy() if group in sums["correct"] else 0
        n = sums["n_test"][group].to_numpy() if group in sums["n_test"] else 0
        out[group] = correct / n
    return out


# -- per-class summary (issue 19) ---------------------------------------------------------------------------------
CLASS_SUMMARY = ("mean", "worst", "best", "gap", "std", "worst_class", "many", "medium", "few")
MANY_SHOT, FEW_SHOT = 100, 20  # Liu et al. (OLTR, 2019): many > 100 training images, few < 20, medium between


def class_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run × attack summarising its class-wise accuracies (robust ones for an attack's rows).

    With ``a_c = correct_c / n_test_c`` the accuracy of class ``c`` in that run under that attack:

    * ``mean`` — the mean of ``a_c`` over classes (each class counts once; on a balanced test set it is the
      overall accuracy of :func:`group_accuracies`);
    * ``worst`` / ``best`` — ``min_c a_c`` / ``max_c a_c``, the worst- and best-class accuracy; ``worst_class`` the
      class index of the worst (ties: the lowest index); ``gap`` = ``best − worst``;
    * ``std`` — the population standard deviation of ``a_c`` over classes (ddof 0);
    * ``many`` / ``medium`` / ``few`` — the mean of ``a_c`` over the classes with more than 100, 20 to 100, and
      fewer than 20 training images (the shot split of the long-tailed literature, Liu et al. 2019); NaN when a
      run has no class in that split (CIFAR-10 exp-100 has no few-shot class).

    ``frame`` is :func:`bench.results.read.load_results` output (``class_index``, ``n_train``, ``n_test``,
    ``correct`` per row); the run keys and ``attack``/``attack_order`` are kept. Classes without test images are
    left out.
    """
    keys = [k for k in RUN_KEYS if k in frame.columns] + ["attack", "attack_order"]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, *CLASS_SUMMARY])
    rows = frame[frame["n_test"] > 0].assign(acc=lambda f: f["correct"] / f["n_test"])
    rows = rows.sort_values([*keys, "class_index"], kind="stable").reset_index(drop=True)
    grouped = rows.groupby(keys, sort=False, dropna=False)
    out = grouped["acc"].agg(mean="mean", worst="min", best="max", std=lambda a: float(np.std(a.to_numpy())))
    out["gap"] = out["best"] - out["worst"]
    out["worst_class"] = rows.loc[grouped["acc"].idxmin(), "class_index"].to_numpy()
    shots = np.select([rows["n_train"] > MANY_SHOT, rows["n_train"] >= FEW_SHOT], ["many", "medium"], "few")
    by_shot = rows.assign(shot=shots).groupby([*keys, "shot"], sort=False, dropna=False)["acc"].mean()
    by_shot = by_shot.unstack("shot").reindex(columns=["many", "medium", "few"])
    out = out.join(by_shot)
    return out.reset_index()[[*keys, *CLASS_SUMMARY]]
