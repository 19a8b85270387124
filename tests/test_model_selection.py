"""Model selection without the test set: ``val_split``, ``select``, ``val_every`` and ``val_attack``.

The keys (one-line errors, cell identity unchanged without them, the stated default attack), the split (the same
held-out images for every method at a seed, other images at another seed), training (validation perturbs none of
training's streams, the selected epoch is the argmax of the stored scores and its weights are the ones evaluated,
a killed cell resumes to the same choice, the test set is not read before the end) and ``bench run`` end to end.
Cells are tiny (digits, cnn-small, 3–4 epochs, PGD-2) so the file runs in well under a minute.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import bench.runner
import methods
from bench import train as train_module
from bench.cell import CellRecord, CellResult
from bench.cli import cli
from bench.data import PreparedData, derived_seed, prepare, select_subset
from bench.data.profiles import class_counts, held_out
from bench.data.subset import split_validation
from bench.errors import BenchError
from bench.evaluate import evaluate
from bench.results import files
from bench.results.read import run_record
from bench.settings import Settings
from bench.suite import load_suite
from bench.train import train

TINY = """
name = "sel"
seeds = {seeds}

[defaults]
epochs = {epochs}
milestones = []
warmup_epochs = 0
batch_size = 128
guards = []
train_attack = {{ eps = 0.1, alpha = 0.05, steps = 2 }}
eval_attacks = [{{ kind = "pgd", eps = 0.1, alpha = 0.05, steps = 2 }}]
{extra}

[[grid]]
dataset = "digits"
imbalance = "step-10"
method = {methods}
"""


def suite_file(tmp_path: Path, extra: str = "", *, epochs: int = 4, methods: str = '["ce"]',
               seeds: str = "[0]") -> Path:
    path = tmp_path / "sel.toml"
    path.write_text(textwrap.dedent(TINY.format(extra=textwrap.dedent(extra), epochs=epochs, methods=methods,
                                                seeds=seeds)))
    return path


def cells(tmp_path: Path, extra: str = "", overrides: dict | None = None, **kw):
    return load_suite(suite_file(tmp_path, extra, **kw), Settings(), overrides=overrides).cells


def data_for(config: dict, root: Path) -> PreparedData:
    return prepare(config["dataset"], config["imbalance"], config["seed"], root=root,
                   val_split=config.get("val_split", 0.0))


# -- the keys -----------------------------------------------------------------------------------------------------
def test_a_cell_without_a_validation_set_keeps_its_hash_and_carries_no_key(tmp_path):
    plain = cells(tmp_path)
    explicit = cells(tmp_path, 'val_split = 0\nselect = "last"\nval_every = 3\n')
    assert [c.cell_hash for c in plain] == [c.cell_hash for c in explicit]
    assert not {"val_split", "select", "val_every", "val_attack"} & set(plain[0].config)


def test_a_cell_with_a_validation_set_carries_every_key_resolved(tmp_path):
    [cell] = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-robust"\n')
    c = cell.config
    assert (c["val_split"], c["select"], c["val_every"]) == (0.2, "best-val-robust", 1)
    # the stated default: L∞ PGD-10 with the training attack's ε and α, random start
    assert c["val_attack"] == {"kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 10, "random_start": True}
    [other] = cells(tmp_path, 'val_split = 0.3\nselect = "best-val-robust"\n')
    assert other.cell_hash != cell.cell_hash


def test_default_validation_attack_of_natural_training_and_of_clean_selection(tmp_path):
    [natural] = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-robust"\n', {"train_attack": "none"})
    assert natural.config["val_attack"] == {"kind": "pgd", "eps": 0.1, "alpha": 0.05, "steps": 10,
                                            "random_start": True}  # the first evaluation attack's ε and α
    [clean] = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-clean"\n')
    assert clean.config["val_attack"] == "none"
    [given] = cells(tmp_path, 'val_split = 0.2\nval_attack = { kind = "fgsm", eps = 0.05 }\n')
    assert given.config["val_attack"] == {"kind": "fgsm", "eps": 0.05} and given.config["select"] == "last"


@pytest.mark.parametrize("extra, needles", [
    ("val_split = 1.0", ["val_split = 1.0", "[0, 1)"]),
    ("val_split = -0.1", ["val_split = -0.1", "[0, 1)"]),
    ('val_split = "a lot"', ["val_split", "expected a number"]),
    ('val_split = 0.1\nselect = "best"', ["select = 'best' is unknown", "best-val-robust", "best-val-clean"]),
    ('val_split = 0.1\nval_every = 0', ["val_every", "integer >= 1"]),
    ('select = "best-val-robust"', ["select = 'best-val-robust' needs a validation set", "val_split"]),
    ('val_split = 0.1\nselect = "best-val-robust"\nval_attack = "none"', ["needs a val_attack"]),
    ('val_split = 0.1\nval_attack = { kind = "pgdx", eps = 0.1 }', ["val_attack", "kind = 'pgdx' is unknown"]),
    ('val_split = 0.1\nval_attack = { kind = "pgd", eps = 8, alpha = 0.1 }', ["val_attack.eps = 8", "input range"]),
    ("val_split = 0.95", ["val_split = 0.95 holds out 8 of the 8", "class 5", "leaving none to train on"]),
])
def test_bad_selection_keys_are_one_line_naming_the_key(tmp_path, extra, needles):
    with pytest.raises(BenchError) as info:
        cells(tmp_path, extra)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "sel.toml"))
    for needle in needles:
        assert needle in message, message


def test_a_bad_key_through_the_cli_exits_2_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    file = suite_file(tmp_path, 'select = "best-val-clean"\n')
    result = CliRunner().invoke(cli, ["run", str(file), "--dry-run", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "select = 'best-val-clean' needs a validation set" in result.output
    assert not (tmp_path / "x.db").exists()


# -- the split ----------------------------------------------------------------------------------------------------
def test_every_method_at_a_seed_holds_out_the_same_images_and_another_seed_others(tmp_path):
    grid = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-robust"\n', methods='["ce", "srat-ldam"]',
                 seeds="[0, 1]")
    data = {(c["method"], c["seed"]): data_for(c.config, tmp_path) for c in grid}
    for seed in (0, 1):
        a, b = data[("ce", seed)], data[("srat-ldam", seed)]
        assert torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)
        assert torch.equal(a.train_x, b.train_x) and a.subset_hash == b.subset_hash
    assert not torch.equal(data[("ce", 0)].val_x, data[("ce", 1)].val_x)
    d = data[("ce", 0)]
    kept = class_counts("step-10", 10, int(np.bincount(_digits_labels(tmp_path)).min()))
    assert d.val_counts == held_out(kept, 0.2) and [t + v for t, v in zip(d.train_counts, d.val_counts)] == kept
    assert d.train_counts == np.bincount(d.train_y.numpy(), minlength=10).tolist()  # the methods' weights see these


def _digits_labels(root: Path) -> np.ndarray:
    from bench.data import DATASETS

    return DATASETS.get("digits")().load(root, False, {}).train_y


def test_the_split_partitions_the_kept_images_and_depends_on_no_method(tmp_path):
    labels = _digits_labels(tmp_path)
    counts = class_counts("exp-10", 10, 80)
    kept = select_subset(labels, counts, derived_seed("subset", "digits", "exp-10", 0))
    seed = derived_seed("val-split", "digits", "exp-10", 0)
    train, val = split_validation(labels, kept, 0.25, seed)
    assert np.array_equal(np.sort(np.concatenate([train, val])), kept) and not set(train) & set(val)
    assert np.bincount(labels[val], minlength=10).tolist() == held_out(counts, 0.25)
    assert min(held_out(counts, 0.01)) == 1  # at least one per class
    smaller, _ = split_validation(labels, kept, 0.1, seed)
    assert set(split_validation(labels, kept, 0.1, seed)[1]) <= set(val)  # a larger share holds out a superset
    assert smaller.size > train.size
    same, none = split_validation(labels, kept, 0.0, seed)
    assert np.array_equal(same, kept) and none.size == 0
    plain = prepare("digits", "exp-10", 0, root=tmp_path)
    assert plain.val_x is None and plain.val_counts == [] and plain.subset_hash == prepare(
        "digits", "exp-10", 0, root=tmp_path, val_split=0.0).subset_hash


# -- training -----------------------------------------------------------------------------------------------------
@dataclass
class Watched(PreparedData):
    """PreparedData that records every read of the test set."""

    def __getattribute__(self, name: str):
        if name in ("test_x", "test_y"):
            object.__getattribute__(self, "__dict__").setdefault("_reads", []).append(name)
        return object.__getattribute__(self, name)

    @property
    def reads(self) -> list[str]:
        return self.__dict__.get("_reads", [])


def watched(data: PreparedData) -> Watched:
    return Watched(**{f.name: getattr(data, f.name) for f in fields(PreparedData)})


def trained(config: dict, data: PreparedData, run_dir: Path, **kw):
    return train(config, methods.for_cell(config), data, run_dir, **kw)


def checkpointed_weights(monkeypatch) -> dict[int, dict[str, torch.Tensor]]:
    """Each epoch's weights as checkpointed, by epoch (filled while a cell trains)."""
    states: dict[int, dict[str, torch.Tensor]] = {}
    save = train_module._save_atomic

    def keep(obj, path):
        states[obj["epoch"]] = {k: v.clone() for k, v in obj["model"].items()}
        save(obj, path)

    monkeypatch.setattr(train_module, "_save_atomic", keep)
    return states


def test_the_test_set_is_not_read_until_training_ends(tmp_path):
    [cell] = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-robust"\n', epochs=3)
    data = watched(data_for(cell.config, tmp_path))
    outcome = trained(cell.config, data, tmp_path / "run")
    assert data.reads == []  # training, validation and selection never looked at the test set
    assert outcome.selection is not None
    evaluate(outcome.model, data, cell.config)
    assert "test_x" in data.reads  # the watch works: evaluation reads it, after the selection


def test_run_cell_reads_the_test_set_only_after_training(tmp_path, monkeypatch):
    [cell] = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-robust"\n', epochs=2)
    seen = {}
    original = bench.runner.prepare

    def prepare_watched(*args, **kwargs):
        seen["data"] = watched(original(*args, **kwargs))
        return seen["data"]

    def train_then_check(*args, **kwargs):
        outcome = train_module.train(*args, **kwargs)
        seen["reads_after_training"] = list(seen["data"].reads)
        return outcome

    monkeypatch.setattr(bench.runner, "prepare", prepare_watched)
    monkeypatch.setattr(bench.runner, "train", train_then_check)
    result = bench.runner.run_cell(cell, Settings(run_dir=tmp_path / "runs", data_root=tmp_path), torch.device("cpu"))
    assert seen["reads_after_training"] == []
    assert seen["data"].reads and result.selection["epoch"] in range(2)


def test_the_selected_epoch_is_the_argmax_of_the_stored_scores_and_its_weights_are_returned(tmp_path, monkeypatch):
    [cell] = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-robust"\n', epochs=4)
    states = checkpointed_weights(monkeypatch)
    outcome = trained(cell.config, data_for(cell.config, tmp_path), tmp_path / "run")
    scores = [row["val_robust"] for row in outcome.curves]
    chosen = outcome.selection["epoch"]
    assert chosen == int(np.argmax(scores))  # the first maximum: ties go to the earlier epoch
    assert outcome.selection["val_robust"] == scores[chosen]
    assert outcome.selection["val_clean"] == outcome.curves[chosen]["val_clean"]
    assert outcome.selection["val_attack"] == "pgd-10" and outcome.selection["val_images"] == 95
    final = outcome.model.state_dict()
    for key, value in states[chosen].items():
        if key != "logit_bias":
            assert torch.equal(final[key], value), key


def test_ties_keep_the_earlier_epoch(tmp_path, monkeypatch):
    [cell] = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-clean"\n', epochs=3)
    from bench import selection

    monkeypatch.setattr(selection, "balanced_accuracy", lambda correct, y, n: 0.5)
    states = checkpointed_weights(monkeypatch)
    outcome = trained(cell.config, data_for(cell.config, tmp_path), tmp_path / "run")
    assert outcome.selection["epoch"] == 0 and [r["val_clean"] for r in outcome.curves] == [0.5] * 3
    final = outcome.model.state_dict()  # the first epoch's weights, not the last's
    assert all(torch.equal(final[k], v) for k, v in states[0].items() if k != "logit_bias")
    assert not all(torch.equal(final[k], v) for k, v in states[2].items() if k != "logit_bias")
    assert "val_robust" not in outcome.curves[0]  # best-val-clean validates clean only by default


def test_validation_perturbs_no_training_stream(tmp_path, monkeypatch):
    """The same cell validated every epoch or never (before the last) trains bit for bit alike; ``last`` keeps
    the last epoch's weights."""
    [cell] = cells(tmp_path, "val_split = 0.2\n", epochs=3)
    data = data_for(cell.config, tmp_path)
    every = trained(cell.config, data, tmp_path / "every")
    from bench.selection import Selector

    monkeypatch.setattr(Selector, "due", lambda self, epoch: False)
    never = trained(cell.config, data, tmp_path / "never")
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in every.curves]
    assert [{k: v for k, v in r.items() if not k.startswith("val_")} for r in strip] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in never.curves]
    for (name, a), b in zip(every.model.state_dict().items(), never.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert every.selection["epoch"] == 2 and "val_robust" in every.curves[0]  # last, monitored under PGD-10


def test_a_cell_without_a_validation_set_checkpoints_as_before(tmp_path, monkeypatch):
    [cell] = cells(tmp_path, epochs=1)
    saved = []
    monkeypatch.setattr(train_module, "_save_atomic", lambda obj, path: saved.append(set(obj)))
    outcome = trained(cell.config, data_for(cell.config, tmp_path), tmp_path / "run")
    assert saved == [{"epoch", "model", "optimizer", "order_rng", "noise_rng", "curves", "train_seconds", "images",
                      "method_state"}]
    assert outcome.selection is None and set(outcome.curves[0]) == {"epoch", "lr", "loss", "train_accuracy",
                                                                    "seconds"}


def test_a_killed_cell_resumes_to_the_same_selection(tmp_path):
    [cell] = cells(tmp_path, 'val_split = 0.2\nselect = "best-val-robust"\nval_every = 2\n', epochs=4)
    data = data_for(cell.config, tmp_path)
    whole = trained(cell.config, data, tmp_path / "whole")

    def kill(done, total, row):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trained(cell.config, data, tmp_path / "killed", on_epoch=kill)
    resumed = trained(cell.config, data, tmp_path / "killed")
    assert resumed.resumed_from == 3
    assert resumed.selection == whole.selection
    assert [r.get("val_robust") for r in resumed.curves] == [r.get("val_robust") for r in whole.curves]
    assert [r.get("val_robust") is None for r in whole.curves] == [True, False, True, False]  # every 2nd, and last
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_result_file_keeps_the_selection(tmp_path):
    record = CellRecord("h" * 16, "s", "ce", "digits", "step-10", 0, "cnn-small", True, {})
    selection = {"select": "best-val-robust", "epoch": 2, "val_clean": 0.5, "val_robust": 0.25,
                 "val_attack": "pgd-10", "val_images": 95}
    _, back = files.loads(files.dumps(record, CellResult(status="done", selection=selection)))
    assert back.selection == selection


# -- end to end ---------------------------------------------------------------------------------------------------
def test_bench_run_stores_the_selected_epoch_and_its_scores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    monkeypatch.delenv("BENCH_DB", raising=False)
    file = suite_file(tmp_path, 'val_split = 0.2\nselect = "best-val-robust"\n', epochs=3)
    result = CliRunner().invoke(cli, ["run", str(file), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0 and "1 done" in result.output, result.output
    db = tmp_path / "results" / "bench.db"
    with sqlite3.connect(db) as conn:
        [(cell_hash, epoch, clean, robust, config)] = conn.execute(
            "select cell_hash, selected_epoch, val_clean, val_robust, config_json from runs").fetchall()
        curve = conn.execute("select epoch, val_clean, val_robust from epoch_metrics order by epoch").fetchall()
        n_train = dict(conn.execute("select class_index, n_train from class_metrics where attack = 'clean'"))
    assert json.loads(config)["select"] == "best-val-robust"
    assert len(curve) == 3 and all(r is not None for row in curve for r in row)
    assert epoch == int(np.argmax([r for _, _, r in curve])) and (clean, robust) == curve[epoch][1:]
    assert n_train[0] == 70 and n_train[9] == 6  # training counts after the split (87 and 8 kept)
    record = run_record(f"sqlite:///{db}", cell_hash[:8])
    assert record["selected_epoch"] == epoch and [v["epoch"] for v in record["validation"]] == [0, 1, 2]
    again = CliRunner().invoke(cli, ["evaluate", "--attack", '{kind="fgsm", eps=0.1}'], catch_exceptions=False)
    assert again.exit_code == 0 and "evaluated" in again.output, again.output  # same subset: re-evaluable
