"""Guards, worst case over attacks, and `bench evaluate` (issue 8).

The guard tests use a linear classifier on the digits (trained in a fraction of a second) and the same
classifier with its logits multiplied by 1e4: its softmax saturates, the cross-entropy input gradient of every
confidently classified image is exactly zero, and PGD on cross-entropy stops working — the guards must fire on it
and stay quiet on the plain one. `bench evaluate` runs end to end on a database made by a tiny `bench run`.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from factories import add_run, trained_linear_digits

import methods
from bench.cli import cli
from bench.errors import BenchError
from bench.evaluate import attack_specs, evaluate
from bench.cli.evaluate import evaluate_command
from bench.guards import (
    DEFAULT_GUARDS,
    GUARDS,
    GuardContext,
    class_correct,
    load_guards,
    pgd_aa_gap,
    pgd_aa_gap_frame,
    run_guards,
    worst_case,
    worst_case_frame,
    zero_gradient_flags,
)
from bench.results.read import done_runs, load_results, load_sample_flags
from bench.results.store import Store
from bench.suite import eval_attack

N_TEST = 200  # test images the guard tests attack


# -- pure functions -----------------------------------------------------------------------------------------


def test_worst_case_and_class_counts_by_hand():
    flags = {"clean": np.array([1, 1, 1, 0, 1], bool), "pgd": np.array([1, 0, 1, 0, 1], bool),
             "aa": np.array([1, 1, 0, 1, 1], bool)}
    assert worst_case(flags).tolist() == [True, False, False, False, True]
    correct, total = class_correct(worst_case(flags), np.array([0, 0, 1, 1, 2]), 4)
    assert correct.tolist() == [1, 0, 1, 0] and total.tolist() == [2, 2, 1, 0]
    with pytest.raises(ValueError, match="differ"):
        worst_case({"a": np.ones(3, bool), "b": np.ones(4, bool)})


def test_pgd_aa_gap_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1])
    pgd = np.array([1, 1, 1, 0, 1, 0], bool)  # 4/6; class 0: 3/4, class 1: 1/2
    aa = np.array([1, 0, 1, 0, 0, 1], bool)  # 3/6; class 0: 2/4, class 1: 1/2
    value, detail = pgd_aa_gap(pgd, aa, labels, ["a", "b"])
    assert value == pytest.approx(1 / 6)
    assert detail["per_class"] == pytest.approx({"a": 0.25, "b": 0.0})
    assert detail["pgd_only"] == pytest.approx(2 / 6) and detail["aa_only"] == pytest.approx(1 / 6)
    assert detail["max_class_gap"] == pytest.approx(0.25)


# -- guards on a plain and a logit-scaled model -------------------------------------------------------------


class Scaled(torch.nn.Module):
    """A model whose logits are multiplied by ``factor`` (saturates the softmax for large factors)."""

    def __init__(self, model: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    model, data = trained_linear_digits(tmp_path_factory.mktemp("digits"))
    for p in model.parameters():
        p.requires_grad_(False)
    small = dataclasses.replace(data, test_x=data.test_x[:N_TEST], test_y=data.test_y[:N_TEST])
    return model, small


CONFIG = {
    "seed": 0,
    "eval_batch_size": 512,
    "eval_attacks": [eval_attack(t, "t") for t in (
        {"kind": "pgd", "eps": 0.05, "alpha": 0.0125, "steps": 20},
        {"kind": "autoattack", "eps": 0.05, "attacks": ["apgd-ce", "apgd-t"]},
    )],
}


def _guards(model, data, method, config=CONFIG):
    correct = evaluate(model, data, config)
    specs = {s.label: s for s in attack_specs(config)}
    results = run_guards(GuardContext(model, data, config, method, correct, specs))
    return {g.name: g for g in results}, correct


def test_guards_fire_on_a_logit_scaled_model(digits):
    base, data = digits
    model = Scaled(base, 1e4).eval()
    # "trained on logits × 1e-4": the LDAM family declares its scale, so scaled-pgd attacks the base logits
    method = methods.get("ldam", s=1e-4)
    assert method.scale_sensitive and method.logit_scale == pytest.approx(1e-4)
    guards, correct = _guards(model, data, method)
    assert set(guards) == set(DEFAULT_GUARDS)
    assert all(g.flagged for g in guards.values()), {k: g.value for k, g in guards.items()}
    zero = guards["zero-grad-share"]
    assert zero.value > 0.9 and zero.value == pytest.approx(zero.detail["zero"] / N_TEST)
    assert zero.detail["share_among_correct"] == pytest.approx(1.0)
    # PGD on CE is stuck (robust ≈ clean); the scaled attack and AutoAttack's scale-free DLR loss are not
    assert correct["pgd-20"].mean() > correct["clean"].mean() - 0.05
    assert guards["scaled-pgd"].value > 0.15 and guards["scaled-pgd"].detail["factor"] == pytest.approx(1e-4)
    assert guards["pgd-aa-gap"].value > 0.15
    assert guards["pgd-aa-gap"].detail["pgd"] == "pgd-20" and guards["pgd-aa-gap"].detail["autoattack"] == "apgd-ce+apgd-t"
    assert set(guards["pgd-aa-gap"].detail["per_class"]) == set(data.class_names)


def test_guards_stay_quiet_on_a_plain_model(digits):
    model, data = digits
    guards, correct = _guards(model, data, methods.get("ce"))
    assert set(guards) == {"zero-grad-share", "pgd-aa-gap"}  # ce is not scale-sensitive
    assert guards["zero-grad-share"].value == 0 and not guards["zero-grad-share"].flagged
    gap = guards["pgd-aa-gap"]
    assert not gap.flagged and -0.02 <= gap.value <= 0.02
    assert gap.value == pytest.approx(correct["pgd-20"].mean() - correct["apgd-ce+apgd-t"].mean())


def test_guards_apply_only_where_they_apply(digits):
    model, data = digits
    pgd_only = {**CONFIG, "eval_attacks": CONFIG["eval_attacks"][:1]}
    guards, _ = _guards(model, data, methods.get("ce"), pgd_only)
    assert set(guards) == {"zero-grad-share"}
    chosen = {**pgd_only, "guards": ["scaled-pgd"]}
    assert set(_guards(model, data, methods.get("srat-ldam"), chosen)[0]) == {"scaled-pgd"}
    assert _guards(model, data, methods.get("srat-ldam"), {**pgd_only, "guards": []})[0] == {}
    # every method answers the capability without a name check: those training on s-scaled logits but attacked at
    # another scale (the LDAM family, at 1x) are scale-sensitive; RoBal trains and is evaluated at 10x (the
    # reference's PostProc head), so it is not, unless its two scales differ
    flags = {name: methods.get(name).scale_sensitive for name in methods.names()}
    assert {n for n, f in flags.items() if f} == {"ldam", "drcb-ldam", "srat-ldam"}
    assert not methods.get("ldam", s=1.0).scale_sensitive
    assert methods.get("robal", s=1.0).scale_sensitive and methods.get("robal", eval_scale=1.0).scale_sensitive
    assert not methods.get("robal", s=4.0, eval_scale=4.0).scale_sensitive


def test_zero_gradient_flags_per_sample(digits):
    model, data = digits
    x, y = data.test_x[:20], data.test_y[:20]

    pixel = x.flatten(1)[:, 20]
    cut = float(pixel.median())

    def stopped(v):  # a stop-gradient on the inputs whose pixel 20 is at most the median
        logits = model(v)
        keep = v.flatten(1)[:, 20:21] > cut
        return torch.where(keep, logits, logits.detach())

    expected = (pixel <= cut).tolist()
    assert 0 < sum(expected) < 20
    assert zero_gradient_flags(stopped, x, y, batch_size=7).tolist() == expected
    assert not zero_gradient_flags(model, x, y, batch_size=20).any()


def test_guard_registry_contract():
    assert list(GUARDS) == list(DEFAULT_GUARDS)
    for name in GUARDS:
        guard = GUARDS.get(name)
        assert guard.name == name and 0 < guard.threshold < 0.1 and guard.description
    with pytest.raises(BenchError, match="unknown guard 'zero'"):
        GUARDS.get("zero")


# -- readers over a database --------------------------------------------------------------------------------


def test_worst_case_and_gap_frames_from_stored_flags(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store(url)
    labels = [0, 0, 1, 1]
    config = {"eval_attacks": [{"kind": "pgd", "eps": 0.1, "alpha": 0.1, "steps": 2, "random_start": True}]}
    add_run(store, method="ce", seed=0, test_labels=labels, train_counts=[10, 2], config=config,
            correct={"clean": [1, 1, 1, 0], "pgd-2": [1, 0, 1, 0]})
    run_id = done_runs(store)[0].id
    aa_table = {"kind": "autoattack", "eps": 0.1, "version": "standard"}
    added = store.add_evaluation(run_id, correct={"autoattack": np.array([1, 0, 0, 0], bool), "pgd-2": np.zeros(4, bool)},
                                 attack_specs={"autoattack": aa_table}, class_names=["0", "1"], train_counts=[10, 2],
                                 test_labels=np.array(labels),
                                 guards=[{"name": "pgd-aa-gap", "value": 0.0, "threshold": 0.02, "flagged": False,
                                          "detail": {"x": 1}}])
    assert added == ["autoattack"]  # pgd-2 is stored already and left alone
    results = load_results(url)
    assert results.drop_duplicates("attack").set_index("attack")["attack_order"].to_dict() == {
        "clean": 0, "pgd-2": 1, "autoattack": 2}
    stored = load_sample_flags(url)[run_id]
    assert list(stored["flags"]) == ["clean", "pgd-2", "autoattack"] and stored["labels"].tolist() == labels
    assert stored["attacks"]["autoattack"] == aa_table and stored["attacks"]["pgd-2"]["kind"] == "pgd"

    worst = worst_case_frame(url)
    assert list(worst.columns) == list(results.columns)
    assert (worst["attack"] == "worst-case").all() and (worst["attack_order"] == 3).all()
    # sample 0 only survives clean, pgd-2 and autoattack
    assert worst["correct"].tolist() == [1, 0] and worst["accuracy"].tolist() == [0.5, 0.0]

    gap = pgd_aa_gap_frame(url)
    assert gap[["class_index", "pgd", "autoattack"]].values.tolist() == [[0, "pgd-2", "autoattack"], [1, "pgd-2", "autoattack"]]
    assert gap["gap"].tolist() == pytest.approx([0.0, 0.5])  # class 1: pgd 1/2, autoattack 0/2

    frame = load_guards(url)
    assert list(frame.columns[:10]) == ["run_id", "cell_hash", "suite", "method", "dataset", "imbalance", "seed",
                                        "model", "name", "value"]
    assert frame[["name", "flagged"]].values.tolist() == [["pgd-aa-gap", False]]
    assert json.loads(frame["detail"][0]) == {"x": 1}
    assert load_guards(url, suite="other").empty


def test_readers_on_a_database_without_the_new_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    add_run(Store(url), method="ce", seed=0, test_labels=[0, 1], train_counts=[3, 1],
            correct={"clean": [1, 1], "pgd-20": [1, 0]})
    with sqlite3.connect(tmp_path / "old.db") as conn:
        for table in ("guards", "test_labels", "attack_specs"):
            conn.execute(f"drop table {table}")
    assert load_guards(url).empty
    assert worst_case_frame(url).empty  # no test labels stored: left out
    assert load_sample_flags(url)[1]["labels"] is None


# -- bench evaluate end to end ------------------------------------------------------------------------------

TINY = """
name = "tiny"
seeds = [0]

[defaults]
model = "linear"
epochs = 2
milestones = [1]
train_attack = { eps = 0.1, alpha = 0.05, steps = 2 }
eval_attacks = [{ kind = "pgd", eps = 0.1, alpha = 0.05, steps = 2 }]

[[grid]]
dataset = "digits"
imbalance = "step-10"
method = ["ce", "ldam"]
"""
AA = '{kind="autoattack", eps=0.1, attacks=["apgd-ce"]}'
CW = '{kind="pgd-cw", eps=0.1, alpha=0.05, steps=2}'


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n')
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    (tmp_path / "tiny.toml").write_text(textwrap.dedent(TINY))
    result = CliRunner().invoke(cli, ["run", "tiny.toml", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp_path


def evaluate_cli(*args: str):
    return CliRunner().invoke(evaluate_command, list(args))


def rows(project: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(project / "results" / "bench.db") as conn:
        return conn.execute(sql).fetchall()


def test_bench_run_stores_guards_and_attack_tables(project):
    guards = rows(project, "select r.method, g.name, g.flagged from guards g join runs r on r.id = g.run_id order by r.method, g.name")
    assert guards == [("ce", "zero-grad-share", 0), ("ldam", "scaled-pgd", 0), ("ldam", "zero-grad-share", 0)]
    assert rows(project, "select distinct attack, kind from attack_specs") == [("pgd-2", "pgd")]
    assert len(rows(project, "select * from test_labels")) == 2


def test_bench_evaluate_adds_attacks_guards_and_resumes(project):
    result = evaluate_cli("--attack", AA, "--attack", CW)
    assert result.exit_code == 0, result.output
    assert "evaluate: 2 evaluated" in result.output and "pgd-aa-gap" in result.output
    orders = rows(project, "select distinct attack, attack_order from class_metrics order by attack_order")
    assert orders == [("clean", 0), ("pgd-2", 1), ("apgd-ce", 2), ("pgd-cw-2", 3)]
    assert len(rows(project, "select * from sample_flags")) == 2 * 4
    assert len(rows(project, "select * from class_metrics")) == 2 * 4 * 10
    gaps = rows(project, "select name, value, detail from guards where name = 'pgd-aa-gap'")
    assert len(gaps) == 2 and all(json.loads(d)["autoattack"] == "apgd-ce" for _, _, d in gaps)
    results = load_results(f"sqlite:///{project / 'results' / 'bench.db'}")
    overall = results.groupby(["run_id", "attack"])["correct"].sum().unstack()
    assert (overall["apgd-ce"] <= overall["pgd-2"] + 9).all()  # AutoAttack at least as strong, within 1 % of 899
    worst = worst_case_frame(f"sqlite:///{project / 'results' / 'bench.db'}")
    per_run = worst.groupby("run_id")["correct"].sum()
    assert (per_run <= overall[["pgd-2", "apgd-ce", "pgd-cw-2"]].min(axis=1)).all()

    before = rows(project, "select count(*) from class_metrics"), rows(project, "select count(*) from guards")
    again = evaluate_cli("--attack", AA, "--attack", CW)
    assert again.exit_code == 0 and "evaluate: 2 up-to-date" in again.output
    assert (rows(project, "select count(*) from class_metrics"), rows(project, "select count(*) from guards")) == before
    # the same label with other parameters is reported, never overwritten
    clash = evaluate_cli("--attack", '{kind="pgd", eps=0.2, alpha=0.05, steps=2}')
    assert "already stored with other parameters" in clash.output
    assert rows(project, "select count(*) from class_metrics") == before[0]


def test_bench_evaluate_resumes_after_an_interruption(project, monkeypatch):
    real = Store.add_evaluation
    calls = []

    def interrupted(self, run_id, **kwargs):
        calls.append(run_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, run_id, **kwargs)

    monkeypatch.setattr(Store, "add_evaluation", interrupted)
    result = evaluate_cli("--attack", CW)
    assert result.exit_code == 130 and "run the same command again to resume" in result.output
    assert rows(project, "select count(distinct run_id) from sample_flags where attack = 'pgd-cw-2'") == [(1,)]
    monkeypatch.setattr(Store, "add_evaluation", real)
    result = evaluate_cli("--attack", CW)
    assert "evaluate: 1 evaluated, 1 up-to-date" in result.output
    assert rows(project, "select count(distinct run_id) from sample_flags where attack = 'pgd-cw-2'") == [(2,)]


def test_bench_evaluate_skips_a_run_without_checkpoint(project):
    (cell,) = rows(project, "select cell_hash from runs where method = 'ldam'")[0]
    (project / "runs" / cell / "final.pt").unlink()
    result = evaluate_cli("--attack", CW, "--only", "method=*am")  # only ldam matches
    assert result.exit_code == 1
    assert f"{cell} ldam" in result.output and "skipped: no checkpoint at" in result.output
    assert "evaluate: 1 skipped" in result.output
    result = evaluate_cli("--attack", CW)  # the other run is still evaluated
    assert result.exit_code == 1 and "evaluate: 1 evaluated, 1 skipped" in result.output
    assert rows(project, "select r.method from sample_flags f join runs r on r.id = f.run_id where f.attack = 'pgd-cw-2'") == [("ce",)]


def test_bench_evaluate_refuses_a_checkpoint_of_another_model(project):
    ce, ldam = (rows(project, f"select cell_hash from runs where method = '{m}'")[0][0] for m in ("ce", "ldam"))
    state = torch.load(project / "runs" / ce / "final.pt", weights_only=True)
    state["model"] = {k: -v for k, v in state["model"].items()}  # another model, same shapes
    torch.save(state, project / "runs" / ldam / "final.pt")
    result = evaluate_cli("--attack", CW, "--only", "method=ldam")
    assert result.exit_code == 1 and "does not reproduce the stored clean predictions" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attack", '{kind="autoatack", eps=0.1}'], r"kind = 'autoatack' is unknown \(did you mean 'autoattack'\?\)"),
        (["--attack", '{kind="pgd", eps=-0.1, alpha=0.1}'], r"eps = -0.1 is negative"),
        (["--attack", "{kind="], r"not a TOML inline table"),
        (["--attack", CW, "--attack", CW], r"labels must be unique"),
        (["--db", "sqlite:///missing.db"], r"holds no results yet"),
        (["--db", "sqlite:///garbage.db"], r"cannot be read"),
        (["--suite", "other"], r"no finished run of suite 'other'"),
        (["--only", "methd=ce"], r"did you mean 'method'"),
    ],
)
def test_bench_evaluate_bad_input_is_one_line(project, monkeypatch, args, message):
    (project / "garbage.db").write_text("not a database")
    result = evaluate_cli(*args)
    assert isinstance(result.exception, BenchError) and result.exit_code != 0
    assert pd.Series([str(result.exception)]).str.contains(message).all(), str(result.exception)
    # through the bench group: one line, exit status 2
    grouped = CliRunner().invoke(cli, ["evaluate", *args])
    assert grouped.exit_code == 2 and grouped.output.startswith("Error: ") and grouped.output.count("\n") == 1
