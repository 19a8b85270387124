"""Each method's own training-attack recipe (issue 19): batch-norm mode and random start, one precedence chain.

What the reference codes do (read from them, see each method's card): TRADES' ``trades_loss``, MART's
``mart_loss``, AT-BSL's ``train`` and RoBal's ``pgd_adv_train`` call ``model.eval()`` before crafting; RoBal starts
at ``x + ε·U(0, 1)``; RobustLT crafts in train mode with ``track_running_stats = False``; AT-AWP crafts in train
mode; the SRAT family keeps SRAT's train-mode attack.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from bench.attacks import crafting_mode, pgd
from bench.errors import BenchError
from bench.settings import Settings, load_settings
from bench.suite import load_suite, parse_overrides

EXPECTED = {  # method -> (bn_mode, start or None = symmetric, left out of the table)
    "ce": ("train", None), "focal": ("train", None), "ldam": ("train", None), "cb-reweight": ("train", None),
    "cb-focal": ("train", None), "drcb-ce": ("train", None), "drcb-focal": ("train", None),
    "drcb-ldam": ("train", None), "srat-ce": ("train", None), "srat-focal": ("train", None),
    "srat-ldam": ("train", None), "srat-trades": ("train", None), "logit-adjust": ("train", None),
    "logit-adjust-posthoc": ("train", None), "resample": ("train", None), "awp": ("train", None),
    "trades": ("eval", None), "mart": ("eval", None), "balanced-softmax": ("eval", None),
    "at-bsl-ra": ("eval", None), "at-bsl-aua": ("eval", None), "trades-awp": ("eval", None),
    "reat": ("eval", None), "taet": ("eval", None), "robal": ("eval", "positive"), "robustlt": ("frozen", None),
}

# Cell hashes of methods whose recipe did not change, as computed before the recipes existed (digits step-10,
# seed 0, suite "t"): adding the recipe must not move them.
UNCHANGED = {"ce": "8c1fdae6c0a3b376", "srat-trades": "84780c09ebe028ff", "awp": "0d5440910e5207ca",
             "logit-adjust": "1332ef1ce9752673", "srat-ldam": "42caa0bcf7dda929", "resample": "d0603744827a5e17",
             "drcb-ldam": "7089bccfd96d642e"}


def _suite(tmp_path: Path, methods: list[str], extra: str = "", settings: Settings | None = None,
           overrides: dict | None = None):
    text = f'name = "t"\nseeds = [0]\n{extra}\n[[grid]]\ndataset = "digits"\nimbalance = "step-10"\nmethod = {methods!r}\n'
    path = tmp_path / "s.toml"
    path.write_text(text.replace("'", '"'))
    kwargs = {"overrides": overrides} if overrides else {}
    return load_suite(path, settings or Settings(), **kwargs)


def test_every_method_gets_its_references_recipe(tmp_path):
    import methods

    assert set(EXPECTED) == set(methods.names()), "a new method needs its recipe checked here"
    for cell in _suite(tmp_path, sorted(EXPECTED)).cells:
        attack = cell.config["train_attack"]
        bn_mode, start = EXPECTED[cell.config["method"]]
        assert attack["bn_mode"] == bn_mode, cell.config["method"]
        assert attack.get("start") == start, cell.config["method"]


def test_hashes_of_unchanged_recipes_did_not_move(tmp_path):
    hashes = {c.config["method"]: c.cell_hash for c in _suite(tmp_path, sorted(UNCHANGED)).cells}
    assert hashes == UNCHANGED


def test_every_layer_of_the_chain_beats_the_method(tmp_path):
    # suite [defaults]
    cell = _suite(tmp_path, ["trades"], '[defaults]\ntrain_attack = { bn_mode = "train" }').cells[0]
    assert cell.config["train_attack"]["bn_mode"] == "train"
    # the grid's own key
    path = tmp_path / "g.toml"
    path.write_text('name = "t"\nseeds = [0]\n[[grid]]\ndataset = "digits"\nimbalance = "step-10"\n'
                    'method = "robal"\ntrain_attack.start = "symmetric"\n')
    attack = load_suite(path, Settings()).cells[0].config["train_attack"]
    assert attack["bn_mode"] == "eval" and "start" not in attack  # start overridden, bn_mode still the method's
    # --set
    cell = _suite(tmp_path, ["robal"], overrides=parse_overrides(["train_attack.bn_mode=train"])).cells[0]
    assert cell.config["train_attack"]["bn_mode"] == "train" and cell.config["train_attack"]["start"] == "positive"
    # bench.toml [defaults]
    toml = tmp_path / "bench.toml"
    toml.write_text('[defaults]\ntrain_attack = { bn_mode = "frozen" }\n')
    cell = _suite(tmp_path, ["trades"], settings=load_settings(toml)).cells[0]
    assert cell.config["train_attack"]["bn_mode"] == "frozen"
    # and the same run named explicitly gives the same cell as the method's default
    explicit = _suite(tmp_path, ["trades"], '[defaults]\ntrain_attack = { bn_mode = "eval" }').cells[0]
    assert explicit.cell_hash == _suite(tmp_path, ["trades"]).cells[0].cell_hash


@pytest.mark.parametrize("extra, words", [
    ('[defaults]\ntrain_attack = { bn_mode = "frozen-ish" }', ["bn_mode", "frozen-ish", "train, eval, frozen"]),
    ('[defaults]\ntrain_attack = { start = "outward" }', ["start", "outward", "symmetric, positive"]),
])
def test_bad_recipe_values_are_one_line(tmp_path, extra, words):
    with pytest.raises(BenchError) as info:
        _suite(tmp_path, ["ce"], extra)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words)


def test_a_uniform_start_cannot_be_given_to_a_gaussian_start_method(tmp_path):
    with pytest.raises(BenchError, match="trades starts its attack at x \\+ 0.001"):
        _suite(tmp_path, ["trades"], '[defaults]\ntrain_attack = { start = "positive" }')


def test_positive_start_is_uniform_in_zero_eps_and_draws_like_the_symmetric_one():
    x = torch.full((4000, 3), 0.5)
    y = torch.zeros(4000, dtype=torch.long)
    gens = [torch.Generator().manual_seed(3) for _ in range(2)]
    pos = pgd(lambda t: t, x, y, eps=0.1, alpha=0.01, steps=0, generator=gens[0], start="positive") - x
    sym = pgd(lambda t: t, x, y, eps=0.1, alpha=0.01, steps=0, generator=gens[1]) - x
    assert pos.min() >= 0 and pos.max() <= 0.1 + 1e-7
    assert abs(pos.mean().item() - 0.05) < 0.003  # U(0, 0.1) has mean 0.05
    assert sym.min() < -0.09 and abs(sym.mean().item()) < 0.003
    # the same uniform draw u: sym = 0.1·(2u − 1), pos = 0.1·u
    torch.testing.assert_close(sym, 2 * pos - 0.1, atol=1e-6, rtol=0)
    assert torch.equal(gens[0].get_state(), gens[1].get_state())


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


@pytest.mark.parametrize("mode", ["train", "eval", "frozen"])
def test_crafting_mode_uses_and_keeps_the_statistics_its_name_says(mode):
    net = _net()
    net[1].running_mean.fill_(0.3)
    net[1].running_var.fill_(2.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(16, 3) * 3 + 1
    with crafting_mode(net, mode):
        out = net(x)
    h = net[0](x).detach()
    batch_normed = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)
    running_normed = (h - 0.3) / torch.sqrt(torch.tensor(2.0) + 1e-5)
    expected = batch_normed if mode in ("train", "frozen") else running_normed
    torch.testing.assert_close(out, expected * net[1].weight + net[1].bias)
    moved = not torch.equal(net[1].running_mean, before["1.running_mean"])
    assert moved == (mode == "train")
    assert net.training and net[1].track_running_stats  # train mode again, nothing left switched off


def test_dry_run_lists_each_cells_recipe(tmp_path):
    import subprocess
    import sys

    (tmp_path / "s.toml").write_text(textwrap.dedent('''
        name = "r"
        seeds = [0]
        [[grid]]
        dataset = "digits"
        imbalance = "step-10"
        method = ["ce", "robal", "robustlt"]
    '''))
    out = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(tmp_path / "s.toml"), "--dry-run",
                          "--db", f"sqlite:///{tmp_path / 'r.db'}"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split("│")[3].strip(): line for line in out.stdout.splitlines() if line.count("│") > 5}
    assert "pgd-10 train-BN" in rows["ce"] and "pgd-10 eval-BN U[0,eps]" in rows["robal"]
    assert "pgd-10 frozen-BN" in rows["robustlt"]
    assert not (tmp_path / "r.db").exists()  # a dry run writes nothing


def test_a_selected_cell_trains_with_its_recipe_and_show_names_the_epoch(tmp_path):
    """Issue 19's done-when on digits: val_split + best-val-robust end to end, RoBal's recipe, the epoch shown."""
    import sqlite3
    import subprocess
    import sys

    (tmp_path / "s.toml").write_text(textwrap.dedent('''
        name = "sel"
        seeds = [0]
        [defaults]
        epochs = 3
        model = "linear"
        val_split = 0.2
        select = "best-val-robust"
        [[grid]]
        dataset = "digits"
        imbalance = "step-10"
        method = "robal"
    '''))
    db = f"sqlite:///{tmp_path / 'b.db'}"
    bench = [sys.executable, "-m", "bench.cli"]
    run = subprocess.run([*bench, "run", "s.toml", "--quiet", "--db", db], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(tmp_path / "b.db") as con:
        (cell, config, selected), = con.execute("select cell_hash, config_json, selected_epoch from runs").fetchall()
        scores = con.execute("select epoch, val_robust from epoch_metrics order by epoch").fetchall()
    assert '"bn_mode": "eval"' in config and '"start": "positive"' in config
    best = max(scores, key=lambda row: (row[1], -row[0]))  # highest robust score, earliest epoch on ties
    assert selected == best[0]
    show = subprocess.run([*bench, "show", cell, "--db", db], capture_output=True, text=True, cwd=tmp_path)
    assert f"reported weights: after epoch {selected + 1} of 3 (best-val-robust)" in show.stdout
