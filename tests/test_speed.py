"""Speed policy (bench.accel): config keys, cell identity, the attack's frozen parameters, and that the fast paths
do not move the numbers: bf16 training and evaluation against fp32 on a small fixed problem (CPU bf16 autocast,
so it runs here), the in-place PGD against its out-of-place formula, and the CUDA paths (marked ``gpu``)."""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import methods
from bench import accel
from bench.accel import ACCEL_DEFAULTS, Policy
from bench.attacks import pgd
from bench.data import prepare
from bench.errors import BenchError
from bench.evaluate import evaluate
from bench.models import build_model
from bench.settings import Settings
from bench.suite import BUILTIN_DEFAULTS, load_suite
from bench.train import train

SUITE = """
name = "t"
seeds = [0]
[[grid]]
dataset = "digits"
imbalance = "step-10"
method = ["ce", "srat-ldam"]
"""
# Stated tolerance of the drift tests: bf16 may move overall accuracy by at most this many points (measured on this
# problem: at most 0.6 over 3 seeds, clean and PGD, training and evaluation).
TOLERANCE_POINTS = 2.0


def _suite(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SUITE) + extra)
    return path


# --------------------------------------------------------------------------------------------- policy and keys


def test_defaults_keep_the_cpu_on_the_plain_fp32_eager_path():
    model = build_model("resnet18", 10, (3, 32, 32))
    policy = Policy.resolve(BUILTIN_DEFAULTS, "cpu", model)
    assert policy.plain and policy.train_dtype is None and policy.eval_dtype is None
    assert policy.describe() == "cpu: train fp32, eval fp32"
    assert isinstance(policy.autocast(), type(accel.contextlib.nullcontext()))
    assert Policy.resolve({}, "cpu") == policy  # configs without the keys (older stored runs) take the defaults


def test_auto_on_cuda_is_bf16_channels_last_and_compiles_big_models_only():
    # torch.device("cuda") needs no GPU to exist: the decision is checked anywhere.
    big = Policy.resolve(BUILTIN_DEFAULTS, "cuda", build_model("resnet18", 10, (3, 32, 32)))
    small = Policy.resolve(BUILTIN_DEFAULTS, "cuda", build_model("cnn-small", 10, (1, 8, 8)))
    assert big.train_dtype == torch.bfloat16 and big.eval_dtype is None and big.channels_last and big.compile
    assert small.train_dtype == torch.bfloat16 and small.channels_last and not small.compile
    assert big.describe() == "cuda: train bf16, eval fp32, channels-last, compiled"
    explicit = Policy.resolve({"precision": "fp32", "eval_precision": "bf16", "compile": False,
                               "channels_last": False}, "cuda", build_model("resnet18", 10, (3, 32, 32)))
    assert (explicit.train_dtype, explicit.eval_dtype, explicit.channels_last, explicit.compile) == (
        None, torch.bfloat16, False, False)
    assert Policy.resolve({"precision": "bf16", "compile": True}, "cpu").describe() == "cpu: train bf16, eval fp32, compiled"


@pytest.mark.parametrize("line, message", [
    ('precision = "fp16"', "precision = 'fp16' is unknown; valid: auto, fp32, bf16"),
    ('eval_precision = "auto"', "eval_precision = 'auto' is unknown; valid: fp32, bf16"),
    ('compile = "yes"', "compile = 'yes' is unknown; valid: \"auto\", true, false"),
    ("channels_last = 1", "channels_last = 1 is unknown; valid: \"auto\", true, false"),
])
def test_bad_speed_values_are_one_line_errors(tmp_path, line, message):
    with pytest.raises(BenchError) as info:
        load_suite(_suite(tmp_path, f"[defaults]\n{line}\n"), Settings())
    text = str(info.value)
    assert message in text and "\n" not in text and "s.toml" in text


def test_speed_keys_are_visible_but_leave_cell_hashes_alone(tmp_path):
    cells = load_suite(_suite(tmp_path), Settings()).cells
    for cell in cells:
        assert {k: cell.config[k] for k in ACCEL_DEFAULTS} == ACCEL_DEFAULTS
        # independent: the hash the code computed before these keys existed
        before = {k: v for k, v in cell.config.items() if k not in ACCEL_DEFAULTS}
        assert cell.cell_hash == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    execution = load_suite(_suite(tmp_path), Settings(), overrides={"compile": False, "channels_last": True}).cells
    assert [c.cell_hash for c in execution] == [c.cell_hash for c in cells]  # how, not what: same cells
    assert execution[0].config["compile"] is False
    for key, value in (("precision", "bf16"), ("eval_precision", "bf16")):
        other = load_suite(_suite(tmp_path), Settings(), overrides={key: value}).cells
        assert not {c.cell_hash for c in other} & {c.cell_hash for c in cells}, key  # bf16 numbers: new cells


def test_attack_context_freezes_parameters_only_off_the_plain_path():
    model = build_model("cnn-small", 10, (1, 8, 8))
    model.head[0].weight.requires_grad_(False)  # a parameter frozen by someone else stays frozen
    before = [p.requires_grad for p in model.parameters()]
    with Policy.resolve({}, "cpu").attack(model):
        assert [p.requires_grad for p in model.parameters()] == before
    fast = Policy.resolve({"precision": "bf16"}, "cpu")
    with fast.attack(model):
        assert not any(p.requires_grad for p in model.parameters())
        assert torch.is_autocast_enabled("cpu")
    assert [p.requires_grad for p in model.parameters()] == before and not torch.is_autocast_enabled("cpu")
    with pytest.raises(RuntimeError), fast.attack(model):
        raise RuntimeError("restored on errors too")
    assert [p.requires_grad for p in model.parameters()] == before


def test_attack_under_the_fast_path_computes_no_parameter_gradient():
    torch.manual_seed(0)
    model = build_model("cnn-small", 10, (1, 8, 8)).train()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    with Policy.resolve({"precision": "bf16"}, "cpu").attack(model):
        x_adv = pgd(model, x, y, eps=0.1, alpha=0.025, steps=3, generator=torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in model.parameters())
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6 and not torch.equal(x_adv, x)


def test_prepare_and_release_keep_state_dict_names_and_undo_compilation():
    model = build_model("cnn-small", 10, (1, 8, 8))
    names = list(model.state_dict())
    policy = Policy("cpu", None, None, channels_last=True, compile=True)
    policy.prepare(model)  # nn.Module.compile is lazy: nothing compiles until a call
    assert "_compiled_call_impl" in vars(model.backbone)
    assert torch._dynamo.config.recompile_limit >= 16  # room for every graph of a cell (see Policy.prepare)
    assert list(model.state_dict()) == names
    conv = model.backbone.net[3].weight  # [32, 16, 3, 3]: the first conv's one input channel is both formats
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    Policy.release(model)
    assert model.backbone._compiled_call_impl is None and list(model.state_dict()) == names


# --------------------------------------------------------------------------------------------- numbers


def _reference_pgd(model, x, y, eps, alpha, steps, generator):
    """The out-of-place formula of methods.md §2, written independently of bench.attacks."""
    x0 = x.detach()
    x_adv = (x0 + (2 * torch.rand(x0.shape, generator=generator) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = x0 + (x_adv - x0).clamp(-eps, eps)
            x_adv = x_adv.clamp(0, 1)
    return x_adv.detach()


def test_in_place_pgd_is_bit_for_bit_the_formula():
    torch.manual_seed(0)
    model = build_model("cnn-small", 10, (1, 8, 8)).eval()
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    kept = x.clone()
    ours = pgd(model, x, y, eps=0.1, alpha=0.025, steps=7, generator=torch.Generator().manual_seed(3))
    theirs = _reference_pgd(model, x, y, 0.1, 0.025, 7, torch.Generator().manual_seed(3))
    assert torch.equal(ours, theirs) and not torch.equal(ours, x)
    assert torch.equal(x, kept)  # the in-place steps never write into the caller's input


@pytest.fixture(scope="module")
def digits():
    return prepare("digits", "balanced", 0, root=Path("data"))


def _config(**speed) -> dict:
    """A small fixed problem: balanced digits, cnn-small, 4 epochs of PGD-3 training, PGD-10 evaluation."""
    attack = {"kind": "pgd", "eps": 0.1, "alpha": 0.025, "random_start": True}
    return {**copy.deepcopy(BUILTIN_DEFAULTS), "dataset": "digits", "model": "cnn-small", "epochs": 4,
            "batch_size": 128, "lr": 0.05, "warmup_epochs": 1, "milestones": [3], "lr_decay": 0.1, "seed": 0,
            "train_attack": {**attack, "steps": 3, "bn_mode": "train"}, "eval_attacks": [{**attack, "steps": 10}],
            **speed}


def _accuracy(correct: dict) -> dict[str, float]:
    return {label: 100 * float(flags.mean()) for label, flags in correct.items()}


def _train(config: dict, data):
    with tempfile.TemporaryDirectory() as tmp:
        return train(config, methods.get("ce").for_run(epochs=config["epochs"], milestones=config["milestones"]),
                     data, Path(tmp)).model


def test_bf16_training_and_evaluation_match_fp32_within_tolerance(digits):
    fp32 = _train(_config(precision="fp32"), digits)
    bf16 = _train(_config(precision="bf16"), digits)
    assert not torch.equal(fp32.backbone.net[0].weight, bf16.backbone.net[0].weight)  # bf16 really ran
    plain = _accuracy(evaluate(fp32, digits, _config()))
    assert plain["clean"] > 80 and plain["pgd-10"] > 50  # a trained model, so the comparison means something
    for label, value in _accuracy(evaluate(bf16, digits, _config())).items():
        assert abs(value - plain[label]) <= TOLERANCE_POINTS, (label, value, plain[label])
    for label, value in _accuracy(evaluate(fp32, digits, _config(eval_precision="bf16"))).items():
        assert abs(value - plain[label]) <= TOLERANCE_POINTS, (label, value, plain[label])


@pytest.mark.slow
def test_compiled_training_matches_eager_within_tolerance_on_the_cpu(digits):
    """The compile path for real where no GPU is (about a minute of compiling): same accuracy, released after."""
    compiled = _train(_config(compile=True), digits)
    assert compiled.backbone._compiled_call_impl is None
    plain = _accuracy(evaluate(_train(_config(), digits), digits, _config()))
    for label, value in _accuracy(evaluate(compiled, digits, _config())).items():
        assert abs(value - plain[label]) <= TOLERANCE_POINTS, (label, value, plain[label])


# --------------------------------------------------------------------------------------------- CUDA paths


@pytest.fixture(scope="module")
def cuda_digits():
    return prepare("digits", "balanced", 0, root=Path("data"), device="cuda")


@pytest.mark.gpu
def test_cuda_default_policy_matches_fp32_within_tolerance(cuda_digits):
    fast = _train(_config(), cuda_digits)  # auto: bf16, channels-last (cnn-small: not compiled)
    assert fast.backbone.net[3].weight.is_contiguous(memory_format=torch.channels_last)
    plain = _train(_config(precision="fp32", channels_last=False), cuda_digits)
    reference = _accuracy(evaluate(plain, cuda_digits, _config()))
    for label, value in _accuracy(evaluate(fast, cuda_digits, _config())).items():
        assert abs(value - reference[label]) <= TOLERANCE_POINTS, (label, value, reference[label])


@pytest.mark.gpu
def test_cuda_compiled_training_matches_eager_and_is_released(cuda_digits):
    compiled = _train(_config(compile=True), cuda_digits)
    assert compiled.backbone._compiled_call_impl is None  # evaluation runs eager
    eager = _train(_config(compile=False), cuda_digits)
    reference = _accuracy(evaluate(eager, cuda_digits, _config()))
    for label, value in _accuracy(evaluate(compiled, cuda_digits, _config())).items():
        assert abs(value - reference[label]) <= TOLERANCE_POINTS, (label, value, reference[label])


@pytest.mark.gpu
def test_cuda_compiled_attack_computes_no_parameter_gradient():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, (3, 32, 32)).cuda().train()
    policy = Policy.resolve(BUILTIN_DEFAULTS, "cuda", model)
    assert policy.compile
    policy.prepare(model)
    x, y = torch.rand(32, 3, 32, 32, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    with policy.attack(model):
        x_adv = pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=2)
    assert all(p.grad is None for p in model.parameters())
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    Policy.release(model)


@pytest.mark.gpu
def test_cuda_fp32_evaluation_turns_tf32_off_and_restores_it():
    policy = Policy.resolve(BUILTIN_DEFAULTS, "cuda")
    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = True
    try:
        with policy.evaluation():
            assert not torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cudnn.allow_tf32
        with Policy.resolve({"eval_precision": "bf16"}, "cuda").evaluation():
            assert torch.is_autocast_enabled("cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])
