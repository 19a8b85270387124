"""Everything that can be known before training is checked before any cell is claimed or any row written.

Each bad input goes through ``bench run`` (and ``bench run --dry-run``): exit status 2, one line naming the file
(or ``--set``) and the key and what is allowed, and no database created. Kinds: a profile against its dataset's
metadata (class count, class names and indices, images per class, ``n_max``), non-finite numbers anywhere, ε and α
against the input range, empty axes, and keys that would make a cell fail at once (model, augmentation and
AutoAttack against the inputs, warm-up, momentum, dataset_args).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.data import DATASETS, prepare
from bench.data.datasets import RawData
from bench.errors import BenchError
from bench.results.store import Store

SUITE = """
name = "t"
seeds = {seeds}

[defaults]
epochs = 2
model = "linear"
train_attack = "none"
eval_attacks = [{{ kind = "fgsm", eps = 0.1 }}]
guards = []
{defaults}

[[grid]]
dataset = {dataset}
imbalance = {imbalance}
method = {method}
{grid}
"""


def suite_text(dataset='"digits"', imbalance='"step-10"', method='"ce"', grid="", defaults="", seeds="[0]") -> str:
    return SUITE.format(dataset=dataset, imbalance=imbalance, method=method, grid=grid, defaults=defaults,
                        seeds=seeds)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n'
                                         'data_root = "data"\n')
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    monkeypatch.delenv("BENCH_DB", raising=False)
    return tmp_path


def bench(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    for needle in needles:
        assert needle in result.output, result.output


CIFAR = {"dataset": '"cifar10"'}
GAUSS = {"dataset": '"gaussian"'}
PGD = 'train_attack = {{ kind = "pgd", eps = {eps}, alpha = {alpha}, steps = 2 }}'
# id -> (suite keys, extra command-line arguments, what the line must say)
CASES = {
    # -- a profile against its dataset --------------------------------------------------------------------------
    "counts-too-few": ({"imbalance": '"counts:5,5,5"'}, [], ["s.toml: grid[0]", "imbalance = 'counts:5,5,5'",
                                                             "gives 3 counts", "digits has 10 classes"]),
    "counts-too-many": ({"imbalance": '"counts:' + ",".join(["5"] * 11) + '"'}, [], ["gives 11 counts"]),
    "counts-cifar100": ({"dataset": '"cifar100"', "imbalance": '"counts:5,5"'}, [], ["cifar100 has 100 classes"]),
    "counts-beyond-class": ({"imbalance": '"counts:' + ",".join(["100"] + ["5"] * 9) + '"'}, [],
                            ["imbalance = 'counts:100", "keeps 100 training images of class 0", "digits has 89",
                             "at most 89"]),
    "counts-beyond-later-class": ({"imbalance": '"counts:' + ",".join(["5"] * 8 + ["88", "5"]) + '"'}, [],
                                  ["class 8", "digits has 87"]),
    "counts-beyond-cifar": ({**CIFAR, "imbalance": '"counts:' + ",".join(["5001"] + ["5"] * 9) + '"'}, [],
                            ["class 0 (airplane)", "cifar10 has 5000"]),
    "counts-beyond-svhn": ({"dataset": '"svhn"', "imbalance": '"counts:' + ",".join(["5000"] * 10) + '"'}, [],
                           ["class 0", "svhn has 4948"]),
    "binary-name-on-digits": ({"imbalance": '"binary:1,cat:10,10"'}, [],
                              ["imbalance = 'binary:1,cat:10,10'", "class 'cat' is not a class of digits",
                               "valid: 0, 1, 2"]),
    "binary-index-out-of-range": ({"imbalance": '"binary:1,10:10,10"'}, [], ["class '10'", "valid: 0, 1"]),
    "binary-negative-index": ({"imbalance": '"binary:-1,2:10,10"'}, [], ["class '-1'"]),
    "binary-cifar-typo": ({**CIFAR, "imbalance": '"binary:cat,hrose:10,10"'}, [],
                          ["class 'hrose' is not a class of cifar10", "horse", "indices 0-9"]),
    "binary-cifar100-index": ({"dataset": '"cifar100"', "imbalance": '"binary:3,100:10,10"'}, [], ["class '100'"]),
    "binary-same-class": ({**CIFAR, "imbalance": '"binary:cat,3:100,10"'}, [], ["same class (index 3)"]),
    "binary-beyond-class": ({**CIFAR, "imbalance": '"binary:cat,horse:5001,50"'}, [],
                            ["keeps 5001 training images of class 3 (cat)", "at most 5000"]),
    "binary-beyond-digits": ({"imbalance": '"binary:3,8:50,88"'}, [], ["class 8", "digits has 87"]),
    "n-max-beyond-digits": ({"grid": "dataset_args.n_max = 500"}, [],
                            ["dataset_args.n_max = 500", "digits has 89", "n_max must be at most 89"]),
    "n-max-beyond-cifar-exp": ({**CIFAR, "imbalance": '"exp-100"', "grid": "dataset_args.n_max = 6000"}, [],
                               ["dataset_args.n_max = 6000", "n_max must be at most 5000"]),
    "n-max-beyond-svhn-step": ({"dataset": '"svhn"', "grid": "dataset_args.n_max = 5000"}, [],
                               ["svhn has 4948", "n_max must be at most 4948"]),
    "n-max-beyond-cifar100": ({"dataset": '"cifar100"', "imbalance": '"balanced"', "grid": "dataset_args.n_max = 501"},
                              [], ["cifar100 has 500"]),
    "n-max-negative": ({"grid": "dataset_args.n_max = -1"}, [], ["dataset_args.n_max = -1", "whole number >= 0"]),
    "n-max-fraction": ({"grid": "dataset_args.n_max = 2.5"}, [], ["dataset_args.n_max = 2.5", "whole number"]),
    "n-max-set": ({}, ["--set", "dataset_args.n_max=90"], ["--set: dataset_args.n_max = 90", "at most 89"]),
    "gaussian-counts-beyond": ({**GAUSS, "imbalance": '"counts:3000,10"'}, [], ["gaussian has 2000"]),
    "gaussian-n-test-zero": ({**GAUSS, "grid": "dataset_args.n_test = 0"}, [], ["dataset_args.n_test = 0", ">= 1"]),
    "gaussian-n-max-zero": ({**GAUSS, "grid": "dataset_args.n_max = 0"}, [], ["dataset_args.n_max = 0"]),
    "gaussian-sigma": ({**GAUSS, "grid": "dataset_args.sigma = -1"}, [], ["dataset_args.sigma = -1", "> 0"]),
    "gaussian-d": ({**GAUSS, "grid": "dataset_args.d = 0"}, [], ["dataset_args.d = 0"]),
    "imbalance-unknown": ({"imbalance": '"stp-10"'}, [], ["imbalance", "valid forms"]),
    # -- non-finite numbers ---------------------------------------------------------------------------------------
    "lr-nan-defaults": ({"defaults": "lr = nan"}, [], ["s.toml: defaults: lr = nan", "finite"]),
    "lr-inf-grid": ({"grid": "lr = inf"}, [], ["s.toml: grid[0]: lr = inf", "finite"]),
    "lr-nan-string": ({"grid": 'lr = "nan"'}, [], ["lr", "finite"]),
    "lr-huge-string": ({"grid": 'lr = "1e999"'}, [], ["lr", "finite"]),
    "lr-axis-nan": ({"grid": "lr = [0.1, nan]"}, [], ["lr[1] = nan"]),
    "momentum-minus-inf": ({"grid": "momentum = -inf"}, [], ["momentum = -inf"]),
    "weight-decay-nan": ({"grid": "weight_decay = nan"}, [], ["weight_decay = nan"]),
    "lr-decay-inf": ({"grid": "lr_decay = inf"}, [], ["lr_decay = inf"]),
    "epochs-nan": ({"grid": "epochs = nan"}, [], ["epochs = nan"]),
    "train-eps-nan": ({"grid": PGD.format(eps="nan", alpha=0.01)}, [], ["train_attack.eps = nan"]),
    "eval-eps-inf": ({"grid": 'eval_attacks = [{ kind = "pgd", eps = inf, alpha = 0.01, steps = 2 }]'}, [],
                     ["eval_attacks[0].eps = inf"]),
    "eval-alpha-nan-string": ({"grid": 'eval_attacks = [{ kind = "pgd", eps = 0.1, alpha = "nan", steps = 2 }]'},
                              [], ["eval_attacks[0].alpha", "finite"]),
    "method-arg-nan": ({"method": '"srat-ce"', "grid": "method_args.lam = nan"}, [], ["method_args.lam = nan"]),
    "method-arg-inf-string": ({"method": '"cb-reweight"', "grid": 'method_args.beta = "inf"'}, [],
                              ["method_args", "beta", "finite"]),
    "dataset-arg-nan": ({"grid": "dataset_args.n_max = nan"}, [], ["dataset_args.n_max = nan"]),
    "gaussian-eta-inf": ({**GAUSS, "grid": "dataset_args.eta = inf"}, [], ["dataset_args.eta = inf"]),
    "set-lr-nan": ({}, ["--set", "lr=nan"], ["--set: lr = nan", "finite"]),
    "set-lr-inf-string": ({}, ["--set", "lr=1e999"], ["--set", "lr", "finite"]),
    "set-eps-inf": ({}, ["--set", "train_attack.eps=inf"], ["--set: train_attack.eps = inf"]),
    "set-method-arg-nan": ({"method": '"srat-ce"'}, ["--set", "method_args.lam=nan"],
                           ["--set: method_args.lam = nan"]),
    # -- ε and α against the input range ------------------------------------------------------------------------
    "train-eps-8": ({"grid": PGD.format(eps=8, alpha=0.01)}, [],
                    ["s.toml: grid[0]: train_attack.eps = 8", "input range [0, 1] of digits", "[0, 1]"]),
    "train-eps-8-string": ({"grid": PGD.format(eps='"8"', alpha=0.01)}, [], ["train_attack.eps = 8"]),
    "train-alpha-2": ({"grid": PGD.format(eps=0.1, alpha=2)}, [], ["train_attack.alpha = 2", "[0, 1]"]),
    "train-eps-negative": ({"grid": PGD.format(eps=-0.1, alpha=0.01)}, [], ["train_attack.eps = -0.1", "negative"]),
    "train-alpha-negative": ({"grid": PGD.format(eps=0.1, alpha=-0.01)}, [], ["train_attack.alpha", "negative"]),
    "eval-eps-8": ({"grid": 'eval_attacks = [{ kind = "pgd", eps = 8, alpha = 0.01, steps = 2 }]'}, [],
                   ["eval_attacks[0].eps = 8", "[0, 1]"]),
    "eval-second-alpha": ({"grid": 'eval_attacks = [{ kind = "fgsm", eps = 0.1 }, '
                                   '{ kind = "pgd", eps = 0.1, alpha = 2, steps = 2 }]'}, [],
                          ["eval_attacks[1].alpha = 2"]),
    "eval-fgsm-eps-negative": ({"grid": 'eval_attacks = [{ kind = "fgsm", eps = -1 }]'}, [],
                               ["eval_attacks[0].eps", "negative"]),
    "eval-autoattack-eps-8": ({"grid": 'eval_attacks = [{ kind = "autoattack", eps = 8 }]'}, [],
                              ["eval_attacks[0].eps = 8"]),
    "cifar-eps-8": ({**CIFAR, "grid": PGD.format(eps=8, alpha='"2/255"')}, [], ["of cifar10", "train_attack.eps"]),
    "set-eps-8": ({}, ["--set", 'train_attack={kind="pgd", eps=8, alpha=0.01, steps=2}'],
                  ["--set: train_attack.eps = 8", "[0, 1]"]),
    # -- empty axes -----------------------------------------------------------------------------------------------
    "method-empty": ({"method": "[]"}, [], ["s.toml: grid[0]: method = []", "empty axis"]),
    "imbalance-empty": ({"imbalance": "[]"}, [], ["imbalance = []", "empty axis"]),
    "dataset-empty": ({"dataset": "[]"}, [], ["dataset = []", "empty axis"]),
    "model-empty": ({"grid": "model = []"}, [], ["model = []"]),
    "method-args-axis-empty": ({"method": '"srat-ce"', "grid": "method_args.lam = []"}, [],
                               ["method_args.lam = []", "empty axis"]),
    "train-attack-axis-empty": ({"grid": 'train_attack = { kind = "pgd", eps = [], alpha = 0.01 }'}, [],
                                ["train_attack.eps = []"]),
    "seeds-empty": ({"seeds": "[]"}, [], ["seeds"]),
    # -- keys that would make a cell fail at once -------------------------------------------------------------------
    "epochs-zero": ({"grid": "epochs = 0"}, [], ["epochs", ">= 1"]),
    "eval-batch-size-zero": ({"grid": "eval_batch_size = 0"}, [], ["eval_batch_size", ">= 1"]),
    "batch-size-negative": ({"grid": "batch_size = -8"}, [], ["batch_size"]),
    "warmup-beyond-run": ({"grid": "warmup_epochs = 5"}, [], ["warmup_epochs = 5", "epochs = 2", "at most 2"]),
    "momentum-one-or-more": ({"grid": "momentum = 1.5"}, [], ["momentum = 1.5", "[0, 1)"]),
    "gaussian-conv-model": ({**GAUSS, "grid": 'model = "cnn-small"'}, [],
                            ["model = 'cnn-small' needs image inputs", "valid: linear"]),
    "gaussian-crop": ({**GAUSS, "grid": 'augment = "crop-flip"'}, [], ["augment = 'crop-flip'", "valid: none"]),
    "binary-autoattack": ({"imbalance": '"binary:3,8:20,5"', "grid": 'eval_attacks = [{ kind = "autoattack", '
                                                                     'eps = 0.1 }]'}, [],
                          ["eval_attacks[0]: autoattack's apgd-t needs at least 4 classes", "has 2"]),
    "binary-autoattack-dlr": ({"imbalance": '"binary:3,8:20,5"', "grid": 'eval_attacks = [{ kind = "autoattack", '
                                                                         'eps = 0.1, attacks = ["apgd-dlr"] }]'}, [],
                              ["apgd-dlr needs at least 3 classes"]),
    "gaussian-square": ({**GAUSS, "grid": 'eval_attacks = [{ kind = "autoattack", eps = 0.1, '
                                          'attacks = ["apgd-ce", "square"] }]'}, [], ["square needs images"]),
    "set-epochs-zero": ({}, ["--set", "epochs=0"], ["--set: epochs", ">= 1"]),
    "set-dataset-unknown": ({}, ["--set", "dataset=cifar11"], ["--set: dataset = 'cifar11'", "cifar10"]),
}


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_bad_input_is_one_line_before_anything_is_written(project, case, dry):
    keys, args, needles = CASES[case]
    (project / "s.toml").write_text(suite_text(**keys))
    result = bench("run", "s.toml", *args, *(["--dry-run"] if dry else []))
    one_line_error(result, *needles)
    assert not (project / "results").exists() and not (project / "runs").exists()


def test_each_kind_leaves_an_existing_database_as_it_was(project):
    store = Store("sqlite:///results/bench.db")
    store.create()
    store.engine.dispose()  # the last connection closes: the write-ahead log is folded into the file
    before = hashlib.sha256((project / "results" / "bench.db").read_bytes()).hexdigest()
    for case in ("counts-too-few", "lr-nan-defaults", "train-eps-8", "method-empty", "warmup-beyond-run"):
        keys, args, needles = CASES[case]
        (project / "s.toml").write_text(suite_text(**keys))
        one_line_error(bench("run", "s.toml", *args), *needles)
    assert hashlib.sha256((project / "results" / "bench.db").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in (project / "results").iterdir()) == ["bench.db"]  # not even opened


def test_bench_toml_defaults_are_named_when_they_are_at_fault(project):
    (project / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\n[defaults]\nlr = nan\n')
    (project / "s.toml").write_text(suite_text())
    one_line_error(bench("run", "s.toml"), "bench.toml: defaults: lr = nan")
    (project / "bench.toml").write_text('[bench]\ndb = "sqlite:///results/bench.db"\n[defaults]\nmomentum = 2\n')
    one_line_error(bench("run", "s.toml", "--dry-run"), "bench.toml: defaults: momentum = 2")
    assert not (project / "results").exists()


@pytest.mark.parametrize("keys, args", [
    ({"dataset": '"gaussian"', "grid": PGD.format(eps=5, alpha=1)}, []),  # unbounded inputs: any ε >= 0
    ({}, ["--set", "epochs=1"]),  # digits' own warm-up (2 epochs) may outlast a short run
    ({"grid": "warmup_epochs = 2"}, []),
    ({"grid": PGD.format(eps=1, alpha='"1/255"') + '\neval_attacks = []'}, []),  # ε = the whole range; no attacks
    ({**CIFAR, "imbalance": '"binary:cat,horse:5000,50"'}, []),
    ({**CIFAR, "imbalance": '["exp-100", "step-10"]', "grid": "dataset_args.n_max = 5000"}, []),
    ({"dataset": '"svhn"', "imbalance": '"exp-100"'}, []),  # n_max = the smallest class, 4659
    ({"dataset": '"cifar100"', "imbalance": '"binary:apple,3:500,5"'}, []),
    ({"imbalance": '"counts:' + ",".join(map(str, DATASETS.get("digits").train_counts)) + '"'}, []),
    ({"dataset": '"gaussian"', "imbalance": '"binary:+1,-1:100,10"', "grid": "dataset_args.n_max = 100"}, []),
    ({"grid": "momentum = 0.0"}, []),
])
def test_valid_neighbours_still_pass(project, keys, args):
    (project / "s.toml").write_text(suite_text(**keys))
    result = bench("run", "s.toml", "--dry-run", *args)
    assert result.exit_code == 0, result.output
    assert not (project / "results").exists()


def test_missing_dataset_files_name_the_dataset_before_the_database_exists(project):
    (project / "s.toml").write_text(suite_text(**CIFAR))
    one_line_error(bench("run", "s.toml"), "dataset cifar10: files not found", "cifar-10-batches-py")
    assert not (project / "results").exists() and not (project / "runs").exists()
    assert bench("run", "s.toml", "--dry-run").exit_code == 0  # listing cells needs metadata only, not the files


def test_every_dataset_knows_its_name():
    assert [DATASETS.get(name).name for name in DATASETS] == list(DATASETS)


def test_metadata_is_what_the_loaders_give():
    digits = DATASETS.get("digits")
    raw = digits().load(None, False, {})
    assert tuple(np.bincount(raw.train_y)) == digits.train_counts
    assert tuple(np.bincount(raw.test_y)) == digits.test_counts
    assert tuple(raw.class_names) == digits.class_names
    svhn = DATASETS.get("svhn")
    assert sum(svhn.train_counts) == 73257 and sum(svhn.test_counts) == 26032  # the split sizes of SVHN
    cifar10, cifar100 = DATASETS.get("cifar10"), DATASETS.get("cifar100")
    assert sum(cifar10.train_counts) == 50000 and sum(cifar10.test_counts) == 10000
    assert sum(cifar100.train_counts) == 50000 and sum(cifar100.test_counts) == 10000
    assert len(cifar100.class_names) == 100 and list(cifar100.class_names) == sorted(cifar100.class_names)
    for name in DATASETS:
        plugin = DATASETS.get(name)
        meta = plugin.metadata(dict(plugin.params))
        for counts in (meta.class_names, meta.train_counts, meta.test_counts):
            assert len(counts) in (0, meta.num_classes), name


def test_a_class_without_test_images_stops_before_training(monkeypatch, tmp_path):
    """Files unlike the real source (metadata promised test images): one line before any training, never a NaN
    accuracy reaching the database's NOT NULL column."""
    digits = DATASETS.get("digits")
    load = digits.load

    def without_class_3(self, root, download, args):
        raw = load(self, root, download, args)
        keep = raw.test_y != 3
        return RawData(raw.train_x, raw.train_y, raw.test_x[keep], raw.test_y[keep], raw.class_names, raw.scale)

    monkeypatch.setattr(digits, "load", without_class_3)
    with pytest.raises(BenchError, match=r"dataset digits: class 3 \(3\) has no test images"):
        prepare("digits", "step-10", 0, root=tmp_path)


def test_bench_evaluate_checks_new_attacks_against_each_run(project):
    from backends import record, result

    store = Store("sqlite:///results/bench.db")
    store.create()
    store.ingest(record(0), result(0))
    store.engine.dispose()
    before = hashlib.sha256((project / "results" / "bench.db").read_bytes()).hexdigest()
    one_line_error(bench("evaluate", "--attack", '{kind="pgd", eps=8, alpha=0.01, steps=2}'),
                   "--attack {kind=\"pgd\", eps=8", ".eps = 8", "input range [0, 1] of digits")
    one_line_error(bench("evaluate", "--attack", '{kind="pgd", eps=0.1, alpha=nan, steps=2}'), "alpha", "finite")
    assert hashlib.sha256((project / "results" / "bench.db").read_bytes()).hexdigest() == before
