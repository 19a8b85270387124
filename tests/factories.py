"""Build results databases with known contents, for tests of readers (report, compare); and the CLI checks the
bad-input tests share (:func:`bench`, :func:`one_line_error`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np

from click.testing import CliRunner

from bench.cell import CellRecord, CellResult
from bench.cli import cli
from bench.results.store import Store


def add_run(
    store: Store,
    *,
    method: str,
    seed: int,
    correct: Mapping[str, Sequence[bool]],
    test_labels: Sequence[int],
    train_counts: Sequence[int],
    suite: str = "test",
    dataset: str = "digits",
    imbalance: str = "step-10",
    model: str = "cnn-small",
    adversarial: bool = True,
    status: str = "done",
    class_names: Sequence[str] | None = None,
    config: dict | None = None,
    curves: Sequence[dict] = (),
) -> str:
    """Insert one finished run; ``correct`` maps attack label (``clean`` first) to per-test-sample flags.

    Returns the cell hash. ``status`` other than ``done`` stores the run without metrics (failed, running …).
    """
    config = dict(config or {})
    config.update(method=method, seed=seed, suite=suite, dataset=dataset, imbalance=imbalance, model=model,
                  adversarial=adversarial)
    cell_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    store.create()
    record = CellRecord(cell_hash=cell_hash, suite=suite, method=method, dataset=dataset, imbalance=imbalance,
                        seed=seed, model=model, adversarial=adversarial, config=config)
    assert store.claim(record), f"cell {cell_hash} already exists"
    if status == "running":
        return cell_hash
    names = list(class_names or [str(c) for c in range(len(train_counts))])
    store.finish(
        cell_hash,
        CellResult(
            status=status,
            error=None if status == "done" else "RuntimeError: synthetic failure",
            class_names=names,
            train_counts=list(train_counts),
            test_labels=np.asarray(test_labels),
            correct={k: np.asarray(v, dtype=bool) for k, v in correct.items()},
            curves=list(curves),
            provenance={"device": "cpu", "host": "test", "git_commit": "0" * 7, "versions": {}, "subset_hash": "x"},
            wall_seconds=1.0,
            train_seconds=1.0,
            images_per_second=100.0,
            epochs_done=len(curves),
        ),
    )
    return cell_hash


def flags_for_accuracy(test_labels: Sequence[int], per_class_correct: Sequence[int]) -> np.ndarray:
    """Flags that make exactly ``per_class_correct[c]`` test samples of class ``c`` correct (the first ones)."""
    labels = np.asarray(test_labels)
    flags = np.zeros(labels.size, dtype=bool)
    for c, k in enumerate(per_class_correct):
        idx = np.flatnonzero(labels == c)[:k]
        flags[idx] = True
    return flags


def trained_linear_digits(root, steps: int = 150):
    """A linear classifier on balanced 8×8 digits, trained full-batch (about a second), in eval mode.

    Returns ``(model, data)``; the caller decides whether parameters keep ``requires_grad``.
    """
    import torch
    import torch.nn.functional as F

    from bench.data import prepare
    from bench.models import build_model

    data = prepare("digits", "balanced", 0, root=root)
    torch.manual_seed(0)
    model = build_model("linear", 10, (1, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(data.train_x), data.train_y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, data


def bench(*args: str):
    """``bench ARGS`` in-process (exceptions become the result's exit code and output, as on a terminal)."""
    return CliRunner().invoke(cli, list(args))


def one_line_error(result, *needles: str) -> None:
    """The project's rule for a user mistake: exit 2, one ``Error:`` line naming it (``needles``), no traceback."""
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
