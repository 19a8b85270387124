"""Suite files: grids, precedence, cell identity, selection, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.settings import Settings, load_settings
from bench.suite import cell_hash, expand_grid, load_suite, parse_overrides, read_suite_file, select


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


BASIC = """
name = "t"
seeds = [0, 1]
[[grid]]
dataset = "digits"
imbalance = ["step-10", "exp-10"]
method = ["ce", "srat-ldam"]
"""


def test_three_line_grid_is_a_complete_suite_with_dataset_defaults(tmp_path):
    suite = load_suite(write(tmp_path, BASIC), Settings())
    assert len(suite.cells) == 2 * 2 * 2
    cfg = suite.cells[0].config
    assert cfg["model"] == "cnn-small" and cfg["epochs"] == 15  # digits' own defaults
    assert cfg["train_attack"] == {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 10,
                                   "random_start": True, "bn_mode": "train"}
    assert {c["seed"] for c in suite.cells} == {0, 1}
    assert len({c.cell_hash for c in suite.cells}) == 8


def test_cifar_defaults_follow_the_recipe(tmp_path):
    suite = load_suite(write(tmp_path, 'seeds=[0]\n[[grid]]\ndataset="cifar10"\nimbalance="step-100"\nmethod="ce"\n'), Settings())
    cfg = suite.cells[0].config
    assert cfg["model"] == "resnet18" and cfg["epochs"] == 200 and cfg["batch_size"] == 128
    assert cfg["milestones"] == [160, 180] and cfg["warmup_epochs"] == 5 and cfg["lr"] == 0.1
    assert cfg["train_attack"]["eps"] == pytest.approx(8 / 255) and cfg["train_attack"]["alpha"] == pytest.approx(2 / 255)
    assert cfg["eval_attacks"][0]["steps"] == 20
    assert cfg["method_params"]["drw_epoch"] == 160  # DRW starts at the first LR milestone


def test_svhn_alpha_is_one_over_255(tmp_path):
    suite = load_suite(write(tmp_path, '[[grid]]\ndataset="svhn"\nimbalance="step-10"\nmethod="ce"\n'), Settings())
    assert suite.cells[0].config["train_attack"]["alpha"] == pytest.approx(1 / 255)


def test_fractions_accepted_where_floats_expected(tmp_path):
    text = BASIC + '[defaults]\ntrain_attack = { eps = "8/255", alpha = "2/255" }\nlr = "1/10"\n'
    cfg = load_suite(write(tmp_path, text), Settings()).cells[0].config
    assert cfg["train_attack"]["eps"] == pytest.approx(8 / 255)
    assert cfg["train_attack"]["steps"] == 10  # merged key by key with the dataset's table
    assert cfg["lr"] == pytest.approx(0.1)


def test_precedence_builtin_project_suite_grid_cli(tmp_path):
    (tmp_path / "bench.toml").write_text("[defaults]\nepochs = 3\nbatch_size = 64\nlr = 0.2\nmomentum = 0.5\n")
    settings = load_settings(tmp_path / "bench.toml")
    text = """
    [defaults]
    batch_size = 32
    lr = 0.3
    momentum = 0.6
    [[grid]]
    dataset = "digits"
    imbalance = "step-10"
    method = "ce"
    lr = 0.4
    momentum = 0.7
    """
    overrides = parse_overrides(["momentum=0.8"])
    cfg = load_suite(write(tmp_path, text), settings, overrides=overrides).cells[0].config
    assert cfg["warmup_epochs"] == 2  # built-in (digits)
    assert cfg["epochs"] == 3  # bench.toml over built-in
    assert cfg["batch_size"] == 32  # suite defaults over bench.toml
    assert cfg["lr"] == 0.4  # grid over suite defaults
    assert cfg["momentum"] == 0.8  # CLI over grid


def test_grids_are_a_union_and_table_keys_sweep(tmp_path):
    text = """
    seeds = [0]
    [[grid]]
    dataset = "digits"
    imbalance = "step-10"
    method = "srat-ce"
    method_args.lam = [0.5, 1, 2]
    [[grid]]
    dataset = "digits"
    imbalance = "exp-10"
    method = ["ce"]
    eval_attacks = [[{ kind = "pgd", eps = 0.1, alpha = 0.025, steps = 5 }],
                    [{ kind = "fgsm", eps = 0.1, alpha = 0.1, steps = 1 }]]
    """
    cells = load_suite(write(tmp_path, text), Settings()).cells
    assert sorted(c["method_params"]["lam"] for c in cells if c["method"] == "srat-ce") == [0.5, 1.0, 2.0]
    kinds = sorted(c["eval_attacks"][0]["kind"] for c in cells if c["method"] == "ce")
    assert kinds == ["fgsm", "pgd"]


def test_expand_grid_is_a_cartesian_product():
    points = expand_grid({"a": [1, 2], "b": ["x", "y", "z"], "c": 5})
    assert len(points) == 6 and {"a": 2, "b": "z", "c": 5} in points


def test_cell_hash_is_the_resolved_configuration(tmp_path):
    a = load_suite(write(tmp_path, BASIC), Settings()).cells
    b = load_suite(write(tmp_path, BASIC, "copy.toml"), Settings()).cells
    assert [c.cell_hash for c in a] == [c.cell_hash for c in b]
    changed = load_suite(write(tmp_path, BASIC + "[defaults]\nepochs = 14\n", "e.toml"), Settings()).cells
    assert not {c.cell_hash for c in a} & {c.cell_hash for c in changed}
    assert cell_hash({"x": 1, "y": 2}) == cell_hash({"y": 2, "x": 1})


def test_only_and_seeds(tmp_path):
    suite = load_suite(write(tmp_path, BASIC), Settings(), seeds=[5])
    assert {c["seed"] for c in suite.cells} == {5}
    picked = select(suite.cells, ["method=srat-*", "imbalance=exp-*"])
    assert [(c["method"], c["imbalance"]) for c in picked] == [("srat-ldam", "exp-10")]
    assert select(suite.cells, ["method_params.lam=2.0"])[0]["method"] == "srat-ldam"
    with pytest.raises(BenchError, match="KEY=PATTERN"):
        select(suite.cells, ["method"])
    with pytest.raises(BenchError, match="did you mean 'method'"):
        select(suite.cells, ["methd=ce"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = \n", "malformed TOML"),
        (BASIC + "epoch = 3\n", "unknown key 'epoch'"),
        (BASIC.replace('"ce"', '"srat-ldm"'), r"method = 'srat-ldm' is unknown \(did you mean 'srat-ldam'\?\); valid: ce, focal"),
        (BASIC.replace('"digits"', '"cifar11"'), r"dataset = 'cifar11' is unknown.*valid: cifar10, cifar100, svhn, digits, gaussian"),
        (BASIC.replace('"step-10"', '"stp-10"'), r"unknown imbalance profile 'stp-10'; valid forms"),
        (BASIC.replace('"step-10"', '"step-0.5"'), r"K must be >= 1"),
        (BASIC + "[defaults]\ntrain_attack = { eps = -0.1 }\n", r"train_attack.eps = -0.1 is negative"),
        (BASIC + "[defaults]\nepochs = 0\n", r"epochs: must be an integer >= 1"),
        (BASIC + "[defaults]\nmethod_args = { lamda = 1 }\n", r"unknown hyperparameter 'lamda' \(did you mean 'lam'\?\)"),
        (BASIC + "[defaults]\nmethod_args = { beta = 1.5 }\n", r"beta = 1.5 is invalid"),
        (BASIC + "[defaults]\naugment = \"rotate\"\n", r"augment = 'rotate' is unknown; valid: none, crop-flip"),
        (BASIC + "[defaults]\nlr = \"fast\"\n", r"lr: expected a number"),
        ("name = \"x\"\n", r"needs at least one \[\[grid\]\]"),
        (BASIC.replace("seeds = [0, 1]", "seeds = [-1]"), r"seeds must be a non-empty list of integers in \[0, 2\*\*31 - 1\]"),
        # a seed the store cannot hold (a SQL INTEGER: 32 bits on PostgreSQL), a seed twice, a value twice on an axis
        (BASIC.replace("seeds = [0, 1]", "seeds = [2147483648]"), r"integers in \[0, 2\*\*31 - 1\], got \[2147483648\]"),
        (BASIC.replace("seeds = [0, 1]", "seeds = [0, 1, 0]"), r"seeds lists 0 more than once"),
        (BASIC.replace('method = ["ce", "srat-ldam"]', 'method = ["ce", "srat-ldam", "ce"]'),
         r"grid\[0\]: method lists 'ce' more than once"),
        (BASIC + "method_args.lam = [1, 1]\n", r"method_args.lam lists 1 more than once"),
        # a learning rate of zero trains nothing; one beyond float32 overflows the optimiser
        (BASIC + "[defaults]\nlr = 0\n", r"lr: must be > 0.0, got 0"),
        (BASIC + "[defaults]\nlr = 1e300\n", r"lr = 1e\+300 does not fit a float32"),
        (BASIC + "[defaults]\nepochs = 10\nmilestones = [6, 3]\n", r"milestones = \[6, 3\] must be given in increasing order"),
        (BASIC + "[defaults]\nepochs = 10\nmilestones = [3, 3]\n", r"must be given in increasing order, each once"),
        # a uniform start for a Gaussian-start method, even the default's name
        (BASIC.replace('"srat-ldam"', '"trades"') + '[defaults]\ntrain_attack = { start = "symmetric" }\n',
         r"train_attack.start = 'symmetric' is a uniform start, but trades starts its attack at x \+ 0.001"),
        # a profile the largest class cannot make: the smallest would keep < 1 image, clamped to 1
        (BASIC.replace('["step-10", "exp-10"]', '"exp-100"') + "dataset_args.n_max = 5\n",
         r"dataset_args.n_max = 5 with imbalance = 'exp-100' would keep 0.05 images of the smallest class"),
        (BASIC.replace('["step-10", "exp-10"]', '"binary:3,3:50,5"'), r"names class 3 twice; binary:A,B:NA,NB"),
    ],
)
def test_bad_suites_are_one_line_naming_file_key_and_value(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(BenchError, match=message) as info:
        load_suite(path, Settings())
    assert str(path) in str(info.value) or "K must be" in str(info.value) or "lr" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_suite_file(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load_suite(tmp_path / "nope.toml", Settings())


def test_bad_bench_toml(tmp_path):
    (tmp_path / "bench.toml").write_text("[bench]\ndata_rot = 'x'\n")
    with pytest.raises(BenchError, match=r"unknown key bench.data_rot \(did you mean 'data_root'\?\)"):
        load_settings(tmp_path / "bench.toml")


# -- one read, no torch ---------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def test_loading_a_suite_imports_neither_torch_nor_the_store():
    """Reading and expanding a suite (all its validation included) stays light: a fresh interpreter."""
    code = ("import sys; from bench.settings import Settings; from bench.suite import load_suite; "
            "load_suite('suites/quick.toml', Settings()); "
            "print(sorted(m for m in ('torch', 'torchvision', 'sqlalchemy', 'pandas', 'scipy', 'bench.results', "
            "'bench.attacks', 'bench.models', 'bench.guards', 'bench.data.subset') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_a_suite_file_is_read_once_and_knows_its_kind_and_executor_tables(tmp_path):
    cells = read_suite_file(write(tmp_path, BASIC + '\n[slurm]\npartition = "gpu"\n'))
    assert cells.kind == "cells" and cells.executor_table("slurm") == {"partition": "gpu"}
    assert cells.executor_table("ray") == {}
    assert read_suite_file(cells) is cells
    suite = load_suite(cells, Settings())
    assert suite.file is cells and suite.path == cells.path
    assert [c.cell_hash for c in suite.cells] == [c.cell_hash for c in load_suite(cells.path, Settings()).cells]
    theory = read_suite_file(write(tmp_path, 'name = "t"\nkind = "theory"\n[theory]\nd = 1\n', "t.toml"))
    assert theory.kind == "theory"
    bad = read_suite_file(write(tmp_path, "slurm = 3\n" + BASIC, "bad.toml"))
    with pytest.raises(BenchError) as info:
        bad.executor_table("slurm")
    assert str(info.value) == f"{bad.path}: slurm must be a table ([slurm]), got 3"
    with pytest.raises(BenchError, match="does not exist"):
        read_suite_file(tmp_path / "nope.toml")


@pytest.mark.parametrize("kind", ["cells", "theory"])
def test_bench_run_reads_the_suite_file_once(kind, tmp_path, monkeypatch):
    """Kind, cells (or theory grid) and executor tables all come from one read of the file."""
    from click.testing import CliRunner

    from bench.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm tools: the run stops after reading the executor table
    if kind == "cells":
        path = write(tmp_path, BASIC + '\n[slurm]\npartition = "gpu"\n')
        args = ["run", str(path), "--executor", "slurm"]
    else:
        path = write(tmp_path, 'name = "t"\nkind = "theory"\n[theory]\nd = 1\neta = 1\nsigma = 1\nK = 2\nrho = 1\n')
        args = ["run", str(path), "--dry-run"]
    reads = []
    read_text = Path.read_text

    def counting(self, *a, **k):
        if self.name == path.name:
            reads.append(self)
        return read_text(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", counting)
    out = CliRunner().invoke(cli, args)
    expected = "needs Slurm's sbatch" if kind == "cells" else "1 grid point(s) to evaluate"
    assert expected in out.output, out.output
    assert len(reads) == 1


def test_the_catalog_declares_exactly_what_the_plugins_register():
    """bench.catalog (torch-free, what suites are checked against) and the torch plug-ins name the same things."""
    from bench import catalog
    from bench.attacks import ATTACKS, AttackSpec
    from bench.guards import GUARDS
    from bench.models import MODELS, register_model

    assert list(MODELS) == list(catalog.MODEL_NAMES)
    assert list(GUARDS) == list(catalog.GUARD_NAMES)
    assert list(ATTACKS) == list(catalog.KINDS)
    with pytest.raises(ValueError, match="not declared in bench.catalog"):
        register_model("vit")(lambda *a: None)
    table = {"kind": "pgd", "eps": 0.1, "alpha": 0.01, "steps": 20, "restarts": 5}
    assert AttackSpec.from_table(table).label == catalog.AttackConfig.from_table(table).label == "pgd-20x5"
