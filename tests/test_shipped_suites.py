"""Every suite shipped in suites/ resolves: known methods, datasets and keys, the cell counts README states."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import methods
from bench.settings import load_settings
from bench.suite import load_suite
from bench.values import read_toml

SUITES = Path(__file__).resolve().parents[1] / "suites"
GRID_SUITES = sorted(p for p in SUITES.glob("*.toml") if read_toml(p).get("kind", "grid") != "theory")


@pytest.mark.parametrize("path", GRID_SUITES, ids=lambda p: p.name)
def test_shipped_suite_resolves(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no bench.toml here: built-in defaults only
    suite = load_suite(path, load_settings())
    assert suite.cells and len({c.cell_hash for c in suite.cells}) == len(suite.cells)


@pytest.mark.parametrize("name,cells", [("beyond_paper.toml", 260), ("beyond_paper_digits.toml", 104)])
def test_beyond_paper_suites_run_every_registered_method(name, cells, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = load_suite(SUITES / name, load_settings())
    assert len(suite.cells) == cells
    assert [m for m in methods.names() if m in {c.config["method"] for c in suite.cells}] == methods.names()


def test_lt_2026_is_the_fields_protocol(tmp_path, monkeypatch):
    """CIFAR-10-LT exp 10/50/100 and CIFAR-100-LT exp 10/50, two models, 14 methods, 3 seeds; the AT-BSL recipe
    (decays when the 1-indexed epoch reaches 75 and 90), each method's own attack, selection on a validation split."""
    monkeypatch.chdir(tmp_path)
    cells = [c.config for c in load_suite(SUITES / "lt_2026.toml", load_settings()).cells]
    assert len(cells) == 5 * 2 * 14 * 3
    assert {(c["dataset"], c["imbalance"]) for c in cells} == {
        ("cifar10", "exp-10"), ("cifar10", "exp-50"), ("cifar10", "exp-100"), ("cifar100", "exp-10"),
        ("cifar100", "exp-50")}
    assert {c["model"] for c in cells} == {"resnet18", "wrn-34-10"}
    for c in cells:
        assert (c["epochs"], c["lr"], c["lr_decay"], c["milestones"], c["warmup_epochs"]) == (100, 0.1, 0.1, [74, 89], 0)
        assert (c["batch_size"], c["weight_decay"], c["select"], c["val_split"]) == (128, 5e-4, "best-val-robust", 0.1)
        assert [a["kind"] for a in c["eval_attacks"]] == ["pgd", "autoattack"]
        expected_bn = "train" if c["method"] in ("ce", "awp", "srat-ldam", "srat-trades") else (
            "frozen" if c["method"] == "robustlt" else "eval")
        assert c["train_attack"]["bn_mode"] == expected_bn, c["method"]


# A digest of every shipped suite's cell hashes, in order (built-in defaults only). A cell's hash is its identity in
# every results database: a change here means stored cells are no longer found done. Update a digest only when that
# suite file itself changed on purpose.
CELL_HASH_DIGESTS = {
    "ablation_k.toml": "ec3d19c863f942e7",
    "ablation_lambda.toml": "5906dd8def735a17",
    "ablation_weight.toml": "7bb5a82a6883b726",
    # issue 19: each method's own attack recipe (bn_mode, start); then clip_start = false for the methods whose
    # reference clips the random start only after the first step (TRADES, MART, AT-BSL, REAT, TAET, RoBal), and
    # RoBal's reference heads (CosPlus; evaluated on the 10x post-processed head, eval_scale)
    "beyond_paper.toml": "a4004c70f68b6c37",
    "beyond_paper_digits.toml": "18e7e1c67557d95e",  # issue 19: recipes; the quick suite's schedule (DRW at 5)
    "lt_2026.toml": "328c535fefc31efd",  # issue 19: the field's common settings
    "binary_reweight.toml": "e3d78b5e5cedfdb0",
    "cifar100_full.toml": "e7d64b4ec61dc747",
    "cifar10_full.toml": "528f4d2a3642caa4",
    "digits_studies.toml": "8763733a151c73b7",
    "prelim_classwise.toml": "53a3a96b00a7393b",
    "quick.toml": "3e2e2e6a21110a06",  # issue 15: batch 64, milestones 0.8/0.9, DRW from epoch 5, natural CE
    "svhn_full.toml": "d828207a9a82e827",
    "tsne_features.toml": "4d32191c4ac37e9f",
}


@pytest.mark.parametrize("path", GRID_SUITES, ids=lambda p: p.name)
def test_shipped_cell_hashes_do_not_change(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hashes = " ".join(c.cell_hash for c in load_suite(path, load_settings()).cells)
    assert hashlib.sha256(hashes.encode()).hexdigest()[:16] == CELL_HASH_DIGESTS[path.name]
