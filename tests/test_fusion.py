"""Fused cells (issue 16): a member's numbers do not depend on its company, stay within tolerance of the unfused
path, a diverging member ends alone, a killed group resumes exactly, and a fused cell's result is an unfused one's.

Tolerance against the unfused runner: after the fixed short run below (2 epochs, PGD-2), every epoch's training loss
within 1 % and clean test accuracy within 2 points (the stacked convolution sums in another order; measured: CE and
SRAT-CE identical accuracy, LDAM 0.3 points apart)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import methods
from bench.attacks import crafting_mode
from bench.data import prepare
from bench.errors import Diverged
from bench.evaluate import evaluate
from bench.fusion.groups import check_fuse, plan, why_not
from bench.fusion.train import Member, train_fused
from bench.settings import Settings
from bench.suite import load_suite
from bench.train import train

# A fixed tiny problem: the quick suite's digits cells at seed 0, 2 epochs, PGD-2.
OVERRIDES = {"epochs": 2, "method_args": {"drw_epoch": 1}, "train_attack": {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 2}}
METHODS = ("ce", "ldam", "srat-ce", "cb-reweight")


@pytest.fixture(scope="module")
def problem():
    suite = load_suite(Path(__file__).parents[1] / "suites" / "quick.toml", Settings(), overrides=OVERRIDES)
    cells = {c.config["method"]: c for c in suite.cells
             if c.config["seed"] == 0 and c.config["imbalance"] == "step-10" and c.config["train_attack"] != "none"}
    cfg = cells["ce"].config
    data = prepare(cfg["dataset"], cfg["imbalance"], cfg["seed"], root=Path("data"), args=cfg["dataset_args"],
                   device=torch.device("cpu"))
    return [cells[m] for m in METHODS], data


def _fused(cells, data, run_dir: Path, method_for=methods.for_cell):
    members = [Member(c.config, method_for(c.config), run_dir / c.cell_hash) for c in cells]
    return train_fused(members, data)


def _same(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa) and [r["loss"] for r in a.curves] == [r["loss"] for r in b.curves]


def test_a_member_is_bit_identical_whatever_its_company(problem, tmp_path):
    cells, data = problem
    alone = [_fused([c], data, tmp_path / f"alone{i}")[0] for i, c in enumerate(cells)]
    pair = _fused(cells[:2], data, tmp_path / "pair")
    four = _fused(cells, data, tmp_path / "four")
    for i in range(2):
        assert _same(alone[i], pair[i])
    for i in range(4):
        assert _same(alone[i], four[i]), METHODS[i]
    # the checkpoint is the unfused format: bench.train resumes it
    assert set(torch.load(tmp_path / "four" / cells[0].cell_hash / "checkpoint.pt", weights_only=True)) >= {
        "epoch", "model", "optimizer", "order_rng", "noise_rng", "curves", "method_state"}


def test_a_member_does_not_depend_on_the_thread_count(problem, tmp_path):
    """Every stacked operation computes a member's slice in a fixed order, so the torch thread count (which moves
    the unfused runner's numbers) leaves a fused member's bit for bit as it is."""
    cells, data = problem
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _fused(cells[:2], data, tmp_path / "one")
        torch.set_num_threads(2)
        two = _fused(cells[:2], data, tmp_path / "two")
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert _same(a, b)


def test_within_tolerance_of_the_unfused_path(problem, tmp_path):
    cells, data = problem
    fused = _fused(cells[:2], data, tmp_path / "f")
    for cell, out in zip(cells[:2], fused):
        ref = train(cell.config, methods.for_cell(cell.config), data, tmp_path / "u" / cell.cell_hash)
        for a, b in zip(out.curves, ref.curves):  # training losses within 1 % (LDAM's s = 30 amplifies rounding)
            assert abs(a["loss"] - b["loss"]) <= 0.01 * abs(b["loss"])
        acc_f = evaluate(out.model, data, cell.config)["clean"].mean()
        acc_u = evaluate(ref.model, data, cell.config)["clean"].mean()
        assert abs(acc_f - acc_u) <= 0.02


def _one_epoch_cell(tmp_path: Path, method: str, extra: str = ""):
    """A one-epoch digits cell of ``method`` at its own attack recipe (PGD-2)."""
    suite = tmp_path / "r.toml"
    suite.write_text('name = "r"\nseeds = [0]\n[defaults]\nepochs = 1\n'
                     'train_attack = { kind = "pgd", eps = 0.1, alpha = 0.025, steps = 2 }\n'
                     f'[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = "{method}"\n{extra}')
    return load_suite(suite, Settings()).cells[0]


def _first_epoch_within_tolerance(cell, data, tmp_path: Path):
    """The cell fused alone and unfused: the first epoch's losses within the stated 1 %; both outcomes."""
    fused = _fused([cell], data, tmp_path / "f")[0]
    ref = train(cell.config, methods.for_cell(cell.config), data, tmp_path / "u")
    assert abs(fused.curves[0]["loss"] - ref.curves[0]["loss"]) <= 0.01 * abs(ref.curves[0]["loss"])
    return fused, ref


def test_a_positive_start_fuses_and_draws_the_unfused_start(problem, tmp_path):
    """RoBal's recipe (eval-mode batch norm, start x + eps·U(0, 1)) through the fused path, alone: its first
    epoch's loss is the unfused runner's within the stated tolerance, and a symmetric start would move it."""
    _, data = problem
    cell = _one_epoch_cell(tmp_path, "robal")
    assert cell.config["train_attack"]["start"] == "positive" and why_not(cell.config, "cpu") is None
    _, ref = _first_epoch_within_tolerance(cell, data, tmp_path)
    symmetric = {**cell.config, "train_attack": {**cell.config["train_attack"], "start": "symmetric"}}
    other = train(symmetric, methods.for_cell(symmetric), data, tmp_path / "s")
    assert other.curves[0]["loss"] != ref.curves[0]["loss"]


def test_the_fused_attack_honours_clip_start(problem, tmp_path):
    """RoBal's reference takes the first gradient at the unclipped start (``clip_start = false``): fused and unfused
    agree closely with it and with it switched off, and the two differ by more than that agreement."""
    _, data = problem
    cell = _one_epoch_cell(tmp_path, "robal")
    assert cell.config["train_attack"]["clip_start"] is False
    clipped = {**cell.config, "train_attack": {k: v for k, v in cell.config["train_attack"].items()
                                               if k != "clip_start"}}
    losses = {}
    for name, config in (("unclipped", cell.config), ("clipped", clipped)):
        fused = train_fused([Member(config, methods.for_cell(config), tmp_path / name / "f")], data)[0]
        ref = train(config, methods.for_cell(config), data, tmp_path / name / "u")
        losses[name] = ref.curves[0]["loss"]
        assert fused.curves[0]["loss"] == pytest.approx(losses[name], rel=1e-4), name
    assert abs(losses["unclipped"] - losses["clipped"]) > 1e-3 * losses["clipped"]


def test_frozen_batch_norm_fuses_like_the_unfused_crafting_mode(problem, tmp_path):
    """RobustLT's recipe (frozen batch norm while crafting, class-wise budgets) through the fused path: the first
    epoch's loss is the unfused runner's within the stated tolerance; a frozen stacked forward uses the batch's
    statistics and leaves every member's running ones untouched."""
    from bench.fusion.stacked import StackedClassifier

    _, data = problem
    cell = _one_epoch_cell(tmp_path, "robustlt", "method_args.cw_eps_warmup = 0\n")
    assert cell.config["train_attack"]["bn_mode"] == "frozen" and why_not(cell.config, "cpu") is None
    fused, ref = _first_epoch_within_tolerance(cell, data, tmp_path)

    models = [fused.model, ref.model]
    before = [{k: v.clone() for k, v in m.state_dict().items() if "running" in k} for m in models]
    stack = StackedClassifier(models)
    x = data.train_x[:32].expand(2, *data.train_x[:32].shape).clone()
    with torch.no_grad(), stack.statistics_frozen(True):
        frozen_logits, _ = stack.forward_features(stack.weights(grad=False), x, True)
    stack.sync_buffers()
    assert all(torch.equal(b[k], m.state_dict()[k]) for b, m in zip(before, models) for k in b)
    for k, model in enumerate(models):  # the member alone in train mode with track_running_stats off
        with crafting_mode(model, "frozen"), torch.no_grad():
            alone = model(x[k])
        torch.testing.assert_close(frozen_logits[k], alone, rtol=1e-5, atol=1e-5)


def _ldam_with(name: str, replacement):
    """A ``method_for`` that gives the ldam cell a method whose ``name`` is ``replacement(base_class)``."""

    def method_for(config):
        method = methods.for_cell(config)
        if config["method"] != "ldam":
            return method
        base = type(method)
        return type("Changed", (base,), {name: replacement(base)})(
            **{f: getattr(method, f) for f in method.hyperparameters()})

    return method_for


@pytest.fixture(scope="module")
def untouched(problem, tmp_path_factory):
    """The four members trained together, none of them changed."""
    cells, data = problem
    return _fused(cells, data, tmp_path_factory.mktemp("untouched"))


def test_a_diverging_member_ends_alone(problem, untouched, tmp_path):
    cells, data = problem
    method_for = _ldam_with("loss", lambda base: lambda self, inputs: base.loss(self, inputs) * float("nan"))
    outs = _fused(cells, data, tmp_path / "nan", method_for)
    assert isinstance(outs[1], Diverged)
    for i in (0, 2, 3):
        assert _same(outs[i], untouched[i])


@pytest.mark.parametrize("where", ["loss", "attack_loss", "class_weights", "observe"])
def test_a_member_whose_own_code_raises_fails_alone(problem, untouched, tmp_path, where):
    """A bug in one member's method (its loss, attack objective, class weights or state update) ends that member
    with its own exception, at the point it raised; every other member trains on, bit for bit as without it."""
    cells, data = problem

    def replacement(base):
        def broken(self, *args, **kwargs):
            if where != "class_weights" or args[0] >= 1:  # class weights: from the second epoch on
                raise RuntimeError(f"boom in {where}")
            return getattr(base, where)(self, *args, **kwargs)

        return broken

    outs = _fused(cells, data, tmp_path / "boom", _ldam_with(where, replacement))
    assert isinstance(outs[1], RuntimeError) and f"boom in {where}" in str(outs[1])
    for i in (0, 2, 3):
        assert _same(outs[i], untouched[i])


def test_a_killed_group_resumes_to_the_uninterrupted_result(problem, tmp_path):
    cells, data = problem
    whole = _fused(cells[:2], data, tmp_path / "whole")

    class Killed(BaseException):  # a process death, not a member's own failure (which would end only it)
        pass

    def stop(done, total, row):
        raise Killed

    members = [Member(c.config, methods.for_cell(c.config), tmp_path / "cut" / c.cell_hash) for c in cells[:2]]
    members[1].on_epoch = stop  # dies after the second member's first checkpoint (the first's is written too)
    with pytest.raises(Killed):
        train_fused(members, data)
    resumed = _fused(cells[:2], data, tmp_path / "cut")
    assert resumed[0].resumed_from == 1 and resumed[1].resumed_from == 1
    for a, b in zip(whole, resumed):
        assert _same(a, b)
    # and a fused checkpoint resumes unfused
    members = [Member(c.config, methods.for_cell(c.config), tmp_path / "mixed" / c.cell_hash) for c in cells[:1]]
    members[0].on_epoch = stop
    with pytest.raises(Killed):
        train_fused(members, data)
    out = train(cells[0].config, methods.for_cell(cells[0].config), data, tmp_path / "mixed" / cells[0].cell_hash)
    assert out.resumed_from == 1 and len(out.curves) == 2


def test_grouping_uses_capabilities_and_keeps_hashes(problem):
    cells, _ = problem
    units = plan(cells, 4, "cpu").units
    assert [len(group) for fused, group in units if fused] == [4]
    assert plan(cells, "off", "cpu").units == [(False, [c]) for c in cells]
    assert why_not(dict(cells[0].config, val_split=0.1, select="best-val-robust"), "cpu") is None
    keyed = plan([cells[0]] + [type(cells[1])(dict(cells[1].config, val_split=0.1), cells[1].cell_hash)], 4, "cpu")
    assert [len(group) for _, group in keyed.units] == [1, 1]  # another validation split: another training set
    assert "auto" in why_not(dict(cells[0].config, model="resnet18"), "cpu", "auto")  # auto: where it pays only
    assert "auto" in why_not(cells[0].config, "cuda", "auto") and why_not(cells[0].config, "cpu", "auto") is None
    assert "stacked forward" in why_not(dict(cells[0].config, model="preact-resnet18"), "cpu")
    assert why_not(dict(cells[0].config, model="resnet18"), "cpu") is None
    assert "bf16" in why_not(dict(cells[0].config, model="resnet18"), "cuda")  # precision "auto" is bf16 there
    assert why_not(dict(cells[0].config, model="resnet18", precision="fp32"), "cuda") is None
    assert check_fuse(3, "x") == 3
    with pytest.raises(Exception, match="fuse = 'sometimes' is unknown"):
        check_fuse("sometimes", "x")


SUITE = """
name = "f"
seeds = [0]
{fuse}
[defaults]
epochs = 2
train_attack = {{ kind = "pgd", eps = 0.1, alpha = 0.025, steps = 2 }}
[[grid]]
dataset = "digits"
imbalance = "step-10"
method = ["ce", "focal", "awp"]
"""


def _bench(tmp_path, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=tmp_path)


def test_awp_runs_around_the_stacked_step(tmp_path):
    """AWP (the method contract's around_step) fuses: its member probes its own loss alone, perturbs its own
    weights around the one stacked step and restores them; bit-identical alone or with company, within the stated
    tolerance of the unfused step hook, and different from plain CE (the perturbation acts)."""
    (tmp_path / "s.toml").write_text(SUITE.format(fuse=""))
    cells = {c.config["method"]: c for c in load_suite(tmp_path / "s.toml", Settings()).cells}
    cfg = cells["awp"].config
    data = prepare(cfg["dataset"], cfg["imbalance"], cfg["seed"], root=Path("data"), args=cfg["dataset_args"],
                   device=torch.device("cpu"))
    alone = _fused([cells["awp"]], data, tmp_path / "alone")[0]
    group = _fused([cells["ce"], cells["awp"], cells["focal"]], data, tmp_path / "group")
    assert _same(alone, group[1])
    assert not _same(group[0], group[1])
    ref = train(cfg, methods.for_cell(cfg), data, tmp_path / "unfused")
    for a, b in zip(alone.curves, ref.curves):
        assert abs(a["loss"] - b["loss"]) <= 0.01 * abs(b["loss"])
    acc_f = evaluate(alone.model, data, cfg)["clean"].mean()
    acc_u = evaluate(ref.model, data, cfg)["clean"].mean()
    assert abs(acc_f - acc_u) <= 0.02


def test_validation_selection_fuses(tmp_path):
    """Model selection on a validation split (the lt_2026 protocol) fuses: each member is validated unfused on
    the group's split and keeps its own best epoch; bit-identical alone or in company, the record of the choice
    an unfused cell's, its scores within tolerance of the unfused run."""
    text = SUITE.format(fuse="").replace("epochs = 2", 'epochs = 3\nval_split = 0.2\nselect = "best-val-robust"\n'
                                                       "val_every = 1")
    (tmp_path / "s.toml").write_text(text)
    cells = {c.config["method"]: c for c in load_suite(tmp_path / "s.toml", Settings()).cells}
    cfg = cells["focal"].config
    data = prepare(cfg["dataset"], cfg["imbalance"], cfg["seed"], root=Path("data"), args=cfg["dataset_args"],
                   device=torch.device("cpu"), val_split=cfg["val_split"])
    alone = _fused([cells["focal"]], data, tmp_path / "alone")[0]
    group = _fused([cells["ce"], cells["focal"], cells["awp"]], data, tmp_path / "group")
    assert _same(alone, group[1]) and alone.selection == group[1].selection
    assert all("val_robust" in row for row in alone.curves)
    ref = train(cfg, methods.for_cell(cfg), data, tmp_path / "unfused")
    assert set(alone.selection) == set(ref.selection) and alone.selection["val_images"] == ref.selection["val_images"]
    for a, b in zip(alone.curves, ref.curves):
        assert abs(a["val_clean"] - b["val_clean"]) <= 0.05  # balanced accuracy of ~110 validation images
    # the best epoch is chosen, and its weights are the ones returned: validating them again gives its scores
    epoch = alone.selection["epoch"]
    assert alone.selection["val_robust"] == alone.curves[epoch]["val_robust"] == max(r["val_robust"]
                                                                                     for r in alone.curves)
    from bench.selection import Selector

    again = Selector(cfg, methods.for_cell(cfg), data).validate(alone.model, epoch)
    assert again == {"val_clean": alone.curves[epoch]["val_clean"], "val_robust": alone.curves[epoch]["val_robust"]}


def test_the_suite_and_the_command_line_set_fuse_and_the_dry_run_shows_groups(tmp_path):
    (tmp_path / "s.toml").write_text(SUITE.format(fuse="fuse = 4"))
    out = _bench(tmp_path, "run", "s.toml", "--dry-run", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert out.returncode == 0, out.stderr
    assert "fuse = 4: 3 cell(s) in 1 fused group(s)" in out.stdout
    assert "not fused" not in out.stdout  # awp's step hook fuses too
    off = _bench(tmp_path, "run", "s.toml", "--dry-run", "--fuse", "off", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert off.returncode == 0 and "fused group(s)" not in off.stdout  # --fuse beats the suite's
    gpu = _bench(tmp_path, "run", "s.toml", "--dry-run", "--device", "cuda", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert gpu.returncode == 0, gpu.stderr  # planning for a GPU this machine lacks: the bf16 default is not fused
    assert "not fused: 3 cell(s), bf16 training (the fused path is fp32)" in gpu.stdout
    (tmp_path / "bad.toml").write_text(SUITE.format(fuse='fuse = "sometimes"'))
    bad = _bench(tmp_path, "run", "bad.toml", "--dry-run", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and '"auto", "off" or a whole number' in bad.stderr
    assert not (tmp_path / "x.db").exists()


def test_fused_cells_store_what_unfused_cells_store(tmp_path):
    """Through `bench run`: the same cells, rows and shapes fused (--fuse 3) and unfused (--fuse off); the numbers
    within the stated tolerance; the result file records the group size, and the progress line says so."""
    import sqlite3

    import numpy as np

    (tmp_path / "s.toml").write_text(SUITE.format(fuse=""))
    tables = {}
    for name, fuse in (("fused", "3"), ("unfused", "off")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "s.toml").write_text(SUITE.format(fuse=""))
        out = _bench(tmp_path / name, "run", "s.toml", "--fuse", fuse, "--db", f"sqlite:///{tmp_path / name / 'b.db'}")
        assert out.returncode == 0, out.stderr
        progress = " ".join(out.stderr.split())  # one line per cell, wrapped: the group's time, shared
        assert progress.count("(with its fused group of 3)") == (3 if name == "fused" else 0), progress
        with sqlite3.connect(tmp_path / name / "b.db") as con:
            tables[name] = {
                "runs": sorted(con.execute("select cell_hash, status, epochs_done from runs").fetchall()),
                "metrics": sorted(con.execute("select r.cell_hash, m.attack, m.class_name, m.accuracy from "
                                              "class_metrics m join runs r on r.id = m.run_id").fetchall()),
                "curves": con.execute("select count(*) from epoch_metrics").fetchone(),
            }
    fused, unfused = tables["fused"], tables["unfused"]
    assert fused["runs"] == unfused["runs"] and fused["curves"] == unfused["curves"]
    assert [row[:3] for row in fused["metrics"]] == [row[:3] for row in unfused["metrics"]]
    clean = [(a[3], b[3]) for a, b in zip(fused["metrics"], unfused["metrics"]) if a[1] == "clean"]
    overall = np.array(clean).reshape(3, -1, 2).mean(axis=1)  # per cell: mean class accuracy, fused vs unfused
    assert np.abs(overall[:, 0] - overall[:, 1]).max() <= 0.02 + 1e-9
    with sqlite3.connect(tmp_path / "fused" / "b.db") as con:
        fused_members = dict(con.execute("select method, fused_members from runs").fetchall())
    with sqlite3.connect(tmp_path / "unfused" / "b.db") as con:
        assert {m for (m,) in con.execute("select fused_members from runs")} == {None}
    assert fused_members == {"ce": 3, "focal": 3, "awp": 3}  # awp's step hook runs around the stacked step
    show = _bench(tmp_path / "fused", "show", fused["runs"][0][0], "--db", f"sqlite:///{tmp_path / 'fused' / 'b.db'}")
    assert show.returncode == 0, show.stderr


def test_sigkill_of_a_fused_group_resumes_to_the_uninterrupted_result(tmp_path):
    """A real SIGKILL mid-group: every member resumes from its own checkpoint, fused again, to exactly what an
    uninterrupted fused run gives (CPU)."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    text = SUITE.format(fuse="fuse = 2").replace("epochs = 2", "epochs = 6").replace('"awp"', '"cb-reweight"')
    for name in ("killed", "fresh"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "s.toml").write_text(text)
    code = "from bench.cli import main; import torch; torch.set_num_threads(1); main()"
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "s.toml", "--quiet", "--db",
                             f"sqlite:///{killed / 'b.db'}"], cwd=killed, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and len(list(killed.glob("runs/*/checkpoint.pt"))) < 2:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epochs = [torch.load(p, weights_only=True)["epoch"] for p in killed.glob("runs/*/checkpoint.pt")]
    assert len(epochs) == 2 and max(epochs) < 5, "the group finished before it could be killed"
    for name in ("killed", "fresh"):
        out = _bench(tmp_path / name, "run", "s.toml", "--quiet", "--db", f"sqlite:///{tmp_path / name / 'b.db'}")
        assert out.returncode == 0, out.stderr
    rows = {}
    for name in ("killed", "fresh"):
        with sqlite3.connect(tmp_path / name / "b.db") as con:
            rows[name] = (
                sorted(con.execute("select r.method, r.status, r.fused_members, m.attack, m.class_index, m.correct "
                                   "from runs r join class_metrics m on m.run_id = r.id").fetchall()),
                sorted(con.execute("select r.method, e.epoch, e.loss from runs r join epoch_metrics e "
                                   "on e.run_id = r.id").fetchall()),
            )
    assert rows["killed"] == rows["fresh"]
    # fuse = 2: ce and focal as one group, cb-reweight the fused path alone
    assert {r[:3] for r in rows["killed"][0]} == {("ce", "done", 2), ("focal", "done", 2), ("cb-reweight", "done", 1)}
