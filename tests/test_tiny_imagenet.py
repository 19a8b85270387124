"""Tiny-ImageNet (issue 19) on a tiny fake ``tiny-imagenet-200/`` folder in the real on-disk layout.

Three classes (``wnids.txt`` deliberately unsorted), 4/3/5 training JPEGs of 64×64 each (one greyscale), two
validation images a class listed in ``val/val_annotations.txt``. Every image is one flat colour that encodes its
class, so labels can be checked from the decoded pixels (JPEG keeps a flat colour within a grey level or two).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.data import DATASETS, prepare
from bench.data.datasets import TinyImageNet
from bench.errors import BenchError
from bench.settings import Settings
from bench.suite import load_suite

PIL = pytest.importorskip("PIL.Image")

WNIDS = ["n02124075", "n01443537", "n01629819"]  # file order; sorted: n01443537, n01629819, n02124075
WORDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander, Salamandra salamandra",
         "n02124075": "Egyptian cat", "n09999999": "unused, not a class"}
TRAIN = {"n01443537": 4, "n01629819": 3, "n02124075": 5}
SORTED = sorted(WNIDS)


def colour(label: int) -> tuple[int, int, int]:
    return (40 + 80 * label, 200 - 60 * label, 17 * (label + 1))


def write_jpeg(path, label: int, grey: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if grey:
        PIL.new("L", (64, 64), 30 + 80 * label).save(path, "JPEG", quality=95)
    else:
        PIL.new("RGB", (64, 64), colour(label)).save(path, "JPEG", quality=95)


def make_fake_tiny_imagenet(root):
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in WORDS.items()))
    for wnid, n in TRAIN.items():
        label = SORTED.index(wnid)
        for i in range(n):
            write_jpeg(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", label, grey=(wnid == "n02124075" and i == 0))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # present in the real folder, ignored
    lines = []
    for k, wnid in enumerate(WNIDS * 2):
        name = f"val_{k}.JPEG"
        write_jpeg(base / "val" / "images" / name, SORTED.index(wnid))
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


@pytest.fixture()
def fake_root(tmp_path):
    make_fake_tiny_imagenet(tmp_path)
    return tmp_path


def test_registered_with_its_defaults(tmp_path):
    plugin = DATASETS.get("tiny-imagenet")
    assert plugin is TinyImageNet and plugin.num_classes == 200
    suite = tmp_path / "s.toml"
    suite.write_text('seeds = [0]\n[[grid]]\ndataset = "tiny-imagenet"\nimbalance = ["exp-10", "step-100", '
                     '"balanced"]\nmethod = "ce"\n')
    cells = load_suite(suite, Settings()).cells
    assert len(cells) == 3
    cell = cells[0]
    assert cell["model"] == "preact-resnet18"
    assert cell["train_attack"]["eps"] == pytest.approx(8 / 255) and cell["train_attack"]["alpha"] == pytest.approx(2 / 255)
    assert cell["eval_attacks"][0]["steps"] == 20 and cell["augment"] == "crop-flip"


def test_loads_images_labels_and_class_names(fake_root):
    raw = TinyImageNet().load(fake_root, False, {})
    assert raw.class_names == ["goldfish", "European fire salamander", "Egyptian cat"]  # sorted wnids, words.txt
    assert raw.train_x.shape == (12, 3, 64, 64) and raw.train_x.dtype == np.uint8
    assert raw.train_y.tolist() == [0] * 4 + [1] * 3 + [2] * 5
    assert raw.test_x.shape == (6, 3, 64, 64)
    assert raw.test_y.tolist() == [2, 0, 1, 2, 0, 1]  # val_annotations.txt order
    assert raw.scale == pytest.approx(1 / 255) and raw.bounds == (0.0, 1.0)
    for x, y in zip(np.concatenate([raw.train_x, raw.test_x]), np.concatenate([raw.train_y, raw.test_y])):
        mean = x.reshape(3, -1).mean(1)
        expected = np.array(colour(int(y)), dtype=float)
        if np.allclose(mean, mean[0], atol=1):  # the greyscale file, replicated to three channels
            expected = np.full(3, 30 + 80 * int(y), dtype=float)
        assert np.abs(mean - expected).max() <= 3, (y, mean)


def test_decoded_arrays_are_cached_beside_the_folder(fake_root, monkeypatch):
    first = TinyImageNet().load(fake_root, False, {})
    cache = fake_root / "tiny-imagenet-200.npz"
    assert cache.exists() and not list(fake_root.glob(".*.tmp"))

    def no_decoding(self, files):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(TinyImageNet, "_decode", no_decoding)
    again = TinyImageNet().load(fake_root, False, {})
    assert np.array_equal(again.train_x, first.train_x) and np.array_equal(again.test_x, first.test_x)
    # a changed folder (one more training image) is decoded again and the cache replaced
    monkeypatch.undo()
    write_jpeg(fake_root / "tiny-imagenet-200" / "train" / "n01629819" / "images" / "n01629819_9.JPEG", 1)
    grown = TinyImageNet().load(fake_root, False, {})
    assert grown.train_x.shape[0] == 13 and grown.train_y.tolist().count(1) == 4
    # a corrupt cache is rebuilt, not an error
    cache.write_bytes(b"not an npz")
    assert TinyImageNet().load(fake_root, False, {}).train_x.shape[0] == 13
    cache.write_bytes(b"PK\x03\x04" + b"\0" * 200)  # a zip header and nothing behind it (zipfile.BadZipFile)
    assert TinyImageNet().load(fake_root, False, {}).train_x.shape[0] == 13


def test_profiles_keep_the_subset(fake_root):
    data = prepare("tiny-imagenet", "exp-3", 0, root=fake_root)
    assert data.train_counts == [3, 1, 1]  # n_max = the smallest class (3); exp: 3, int(3·3^-1/2), 1
    assert torch.bincount(data.train_y, minlength=3).tolist() == [3, 1, 1]
    assert data.train_x.shape == (5, 3, 64, 64) and data.train_x.dtype == torch.float32
    assert 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0
    assert data.test_x.shape == (6, 3, 64, 64)
    assert prepare("tiny-imagenet", "step-3", 0, root=fake_root).train_counts == [3, 1, 1]
    assert prepare("tiny-imagenet", "balanced", 0, root=fake_root, args={"n_max": 2}).train_counts == [2, 2, 2]
    binary = prepare("tiny-imagenet", "binary:Egyptian cat,goldfish:2,1", 0, root=fake_root)
    assert binary.class_names == ["Egyptian cat", "goldfish"] and binary.train_counts == [2, 1]


def test_missing_folder_is_one_line_naming_dataset_and_place(tmp_path):
    with pytest.raises(BenchError) as info:
        TinyImageNet().check_available(tmp_path, False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("dataset tiny-imagenet: files not found under ")
    assert str(tmp_path / "tiny-imagenet-200") in message and TinyImageNet.url in message
    with pytest.raises(BenchError, match="tiny-imagenet-200"):
        prepare("tiny-imagenet", "exp-10", 0, root=tmp_path)


def test_partial_folder_names_what_is_missing(fake_root):
    (fake_root / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(BenchError, match=r"\(val/val_annotations.txt missing\)"):
        TinyImageNet().check_available(fake_root, False)


def test_bad_annotation_line_is_one_line(fake_root):
    path = fake_root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    path.write_text(path.read_text() + "val_99.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(BenchError, match=r"val_annotations.txt line 7: .*wnids.txt"):
        TinyImageNet().load(fake_root, False, {})


SUITE = """
name = "tiny-in"
seeds = [0]

[defaults]
model = "cnn-small"
epochs = 1
batch_size = 4
warmup_epochs = 0
milestones = []
train_attack = {{ eps = "8/255", alpha = "4/255", steps = 1 }}
eval_attacks = [{{ kind = "pgd", eps = "8/255", alpha = "4/255", steps = 1 }}]
guards = []

[[grid]]
dataset = "tiny-imagenet"
imbalance = "exp-3"
method = "ce"
"""


def _project(tmp_path, monkeypatch, data_root: str):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    (tmp_path / "bench.toml").write_text(f'[bench]\ndb = "sqlite:///results/bench.db"\nrun_dir = "runs"\n'
                                         f'data_root = "{data_root}"\n')
    suite = tmp_path / "tiny.toml"
    suite.write_text(textwrap.dedent(SUITE.format()))
    return suite


def test_bench_run_without_the_folder_exits_2_with_one_line(tmp_path, monkeypatch):
    suite = _project(tmp_path, monkeypatch, "nowhere")
    result = CliRunner().invoke(cli, ["run", str(suite), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "dataset tiny-imagenet" in lines[0] and "tiny-imagenet-200" in lines[0]


def test_bench_run_trains_a_cell_on_the_fake_folder(tmp_path, monkeypatch):
    make_fake_tiny_imagenet(tmp_path / "data")
    suite = _project(tmp_path, monkeypatch, "data")
    result = CliRunner().invoke(cli, ["run", str(suite), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from bench.results.read import load_results

    frame = load_results("sqlite:///results/bench.db")
    assert set(frame["attack"]) == {"clean", "pgd-1"}
    clean = frame[frame["attack"] == "clean"].sort_values("class_index")
    assert clean["class_name"].tolist() == ["goldfish", "European fire salamander", "Egyptian cat"]
    assert clean["n_train"].tolist() == [3, 1, 1] and clean["n_test"].tolist() == [2, 2, 2]
