"""Each method's own training-attack recipe (issue 19): batch-norm mode and random start, one precedence chain.

What the reference codes do (read from them, see each method's card): TRADES' ``trades_loss``, MART's
``mart_loss``, AT-BSL's ``train`` and RoBal's ``pgd_adv_train`` call ``model.eval()`` before crafting; RoBal starts
at ``x + ε·U(0, 1)``; RobustLT crafts in train mode with ``track_running_stats = False``; AT-AWP crafts in train
mode; the SRAT family keeps SRAT's train-mode attack. TRADES (``trades.py``: ``x_adv = x + 0.001·randn`` then the
loop), TRADES-AWP, MART, AT-BSL, REAT, TAET (``HARL.py``) and RoBal (``train_modes.py``) clip the random start to
[0, 1] only after the first step; SRAT's protocol, AT-AWP (``attack_pgd``: ``clamp(delta, lower − X, upper − X)``)
and RobustLT (``core/methods/utils.py``) clip it before the first gradient.
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
# methods whose reference clips the random start only after the first step (train_attack.clip_start = false)
UNCLIPPED = {"trades", "trades-awp", "mart", "balanced-softmax", "at-bsl-ra", "at-bsl-aua", "reat", "taet", "robal"}

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
        # left out of the table at its default (true), so the other methods' hashes did not move
        assert attack.get("clip_start") == (False if cell.config["method"] in UNCLIPPED else None), cell.config["method"]


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
    ('[defaults]\ntrain_attack = { clip_start = "no" }', ["clip_start", "true or false", "'no'"]),
])
def test_bad_recipe_values_are_one_line(tmp_path, extra, words):
    with pytest.raises(BenchError) as info:
        _suite(tmp_path, ["ce"], extra)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words)


def test_clip_start_is_overridden_like_the_other_recipe_keys(tmp_path):
    cell = _suite(tmp_path, ["robal"], '[defaults]\ntrain_attack = { clip_start = true }').cells[0]
    assert "clip_start" not in cell.config["train_attack"] and cell.config["train_attack"]["start"] == "positive"
    cell = _suite(tmp_path, ["ce"], overrides=parse_overrides(["train_attack.clip_start=false"])).cells[0]
    assert cell.config["train_attack"]["clip_start"] is False
    assert cell.cell_hash != _suite(tmp_path, ["ce"]).cells[0].cell_hash  # another protocol, another cell


def _reference_pgd(model, x, y, eps, alpha, steps, start):
    """The references' loop (TRADES ``trades.py``, RoBal ``pgd_adv_train``): the start is not clipped, each step is
    ``min(max(x_adv + α·sign(g), x − ε), x + ε)`` then clipped to [0, 1]."""
    x_adv = x + start
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


@pytest.mark.parametrize("kind", ["positive", "gaussian"])
def test_an_unclipped_start_is_the_references_loop(kind):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = torch.rand(256, 6, dtype=torch.float64) ** 0.2  # many pixels near 1, so an unclipped start leaves [0, 1]
    x[:, 0] = 1.0
    y = torch.randint(0, 4, (256,))
    eps, alpha = 0.3, 0.05
    gen = torch.Generator().manual_seed(7)
    if kind == "positive":
        start = eps * torch.rand(x.shape, generator=gen, dtype=x.dtype)
        options = {"start": "positive"}
    else:
        start = 0.001 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        options = {"start_std": 0.001}
    expected = _reference_pgd(model, x, y, eps, alpha, 3, start)
    got = pgd(model, x, y, eps=eps, alpha=alpha, steps=3, generator=torch.Generator().manual_seed(7),
              clip_start=False, **options)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    clipped = pgd(model, x, y, eps=eps, alpha=alpha, steps=3, generator=torch.Generator().manual_seed(7), **options)
    assert not torch.equal(clipped, got)  # the first gradient is taken elsewhere, so the result moves
    start_only = pgd(model, x, y, eps=eps, alpha=alpha, steps=0, generator=torch.Generator().manual_seed(7),
                     clip_start=False, **options)
    assert start_only.max() > 1.0  # no step: the start itself, outside the valid range


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
    assert "pgd-10 train-BN" in rows["ce"] and "pgd-10 eval-BN U[0,eps] unclipped" in rows["robal"]
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
    assert '"bn_mode": "eval"' in config and '"start": "positive"' in config and '"clip_start": false' in config
    best = max(scores, key=lambda row: (row[1], -row[0]))  # highest robust score, earliest epoch on ties
    assert selected == best[0]
    show = subprocess.run([*bench, "show", cell, "--db", db], capture_output=True, text=True, cwd=tmp_path)
    assert f"reported weights: after epoch {selected + 1} of 3 (best-val-robust)" in show.stdout
