"""Precision and device policy of training and evaluation, in one place: autocast, channels-last, compile.

Four cell keys choose it (defaults in ``bench.suite.BUILTIN_DEFAULTS``, checked by :func:`validate`):

==================  ============================  =====================================================================
key                 values (default first)        what it does
==================  ============================  =====================================================================
``precision``       ``"auto"``, ``"fp32"``,       the training attack and the training step; ``auto`` = bf16 autocast on
                    ``"bf16"``                    CUDA, plain fp32 elsewhere (``bf16`` autocasts on the CPU too)
``eval_precision``  ``"fp32"``, ``"bf16"``        clean evaluation and every evaluation attack; fp32 for reported
                                                  numbers (on CUDA also without TF32)
``compile``         ``"auto"``, ``true``,         ``torch.compile`` the backbone for training; ``auto`` = on for CUDA and
                    ``false``                     models of at least :data:`COMPILE_MIN_PARAMETERS` parameters
``channels_last``   ``"auto"``, ``true``,         channels-last weights (and so activations) for image models; ``auto``
                    ``false``                     = on for CUDA
==================  ============================  =====================================================================

On the CPU every default resolves to the plain fp32 eager path, so CPU results are bit for bit those of the code
before these keys existed. On CUDA, :meth:`Policy.prepare` also turns on cuDNN autotuning
(``torch.backends.cudnn.benchmark``): the shapes of a cell repeat every batch, so the search pays for itself.

Why bf16 and not fp16: it has fp32's exponent range, so no loss scaling is needed and the attack's input
gradients (whose sign is all PGD uses) do not underflow. Why the attack freezes the parameters
(:meth:`Policy.attack`): eager autograd already skips parameter gradients that ``torch.autograd.grad`` does not
ask for (measured: no difference on the CPU), but a compiled backward computes the gradient of every input that
requires one, so without freezing the compiled attack would compute all weight gradients and throw them away.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from bench.accel_keys import ACCEL_DEFAULTS, EXECUTION_KEYS, identity_view, validate  # noqa: F401 - re-exported

# A cell's first compile takes about a minute (seconds once Inductor's on-disk cache has it). Below this size
# (cnn-small: 24 k parameters, a few seconds a cell) that is never won back; ResNet-18 (11 M) wins it in an epoch.
# Never automatic on the CPU: there it changes the last bits (measured 1.2x faster for cnn-small; opt in).
COMPILE_MIN_PARAMETERS = 1_000_000


def _dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision on a device; ``None`` = no autocast (plain fp32)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Policy:
    """A resolved policy for one cell on one device (no ``"auto"`` left)."""

    device_type: str
    train_dtype: torch.dtype | None  # autocast dtype of the training attack and step; None = fp32
    eval_dtype: torch.dtype | None   # autocast dtype of evaluation; None = fp32
    channels_last: bool
    compile: bool

    @classmethod
    def resolve(cls, config: Mapping[str, Any], device: torch.device | str, model: nn.Module | None = None) -> Policy:
        """The policy of ``config`` on ``device``; ``model`` sizes the ``compile = "auto"`` decision."""
        device = torch.device(device)
        keys = validate(config, "config")
        cuda = device.type == "cuda"
        n_params = sum(p.numel() for p in model.parameters()) if model is not None else 0
        compile_on = keys["compile"] if keys["compile"] != "auto" else cuda and n_params >= COMPILE_MIN_PARAMETERS
        channels_last = keys["channels_last"] if keys["channels_last"] != "auto" else cuda
        return cls(device.type, _dtype(keys["precision"], device), _dtype(keys["eval_precision"], device),
                   bool(channels_last), bool(compile_on))

    @property
    def plain(self) -> bool:
        """True when training runs exactly the fp32 eager path (every CPU default)."""
        return self.train_dtype is None and not self.channels_last and not self.compile

    def describe(self) -> str:
        """One line for logs and benchmarks, e.g. ``cuda: train bf16, eval fp32, channels-last, compiled``."""
        name = {None: "fp32", torch.bfloat16: "bf16"}
        parts = [f"train {name[self.train_dtype]}", f"eval {name[self.eval_dtype]}"]
        parts += ["channels-last"] * self.channels_last + ["compiled"] * self.compile
        return f"{self.device_type}: {', '.join(parts)}"

    # ----------------------------------------------------------------------------------------------- training

    def prepare(self, model: nn.Module) -> nn.Module:
        """Make ``model`` fast for training, in place: channels-last, cuDNN autotuning, compiled backbone.

        Compiling uses :meth:`torch.nn.Module.compile` on ``model.backbone`` (or the whole model when it has no
        backbone), in place, so parameter names, ``state_dict`` and checkpoints are unchanged; the heads are a
        few small linear layers and stay eager. :meth:`release` undoes it.
        """
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # only 4-D weights change; others are left as they are
        if self.device_type == "cuda":
            torch.backends.cudnn.benchmark = True
        if self.compile:
            from torch import _dynamo  # imported on use: it takes seconds

            # One graph per (attack | step | clean no-grad forward) × (BN train | eval) × (full | ragged last batch):
            # up to 12, over Dynamo's default of 8, past which it silently falls back to eager.
            _dynamo.config.recompile_limit = max(_dynamo.config.recompile_limit, 16)
            getattr(model, "backbone", model).compile()
        return model

    @staticmethod
    def release(model: nn.Module) -> nn.Module:
        """Undo :meth:`prepare`'s compilation: evaluation runs eager (a few batches do not repay compiling)."""
        for module in model.modules():
            if "_compiled_call_impl" in vars(module):  # set by nn.Module.compile; the class default is None
                del module._compiled_call_impl
        return model

    def autocast(self, evaluation: bool = False) -> contextlib.AbstractContextManager:
        """The autocast context of the training step (or of evaluation); a no-op for fp32."""
        dtype = self.eval_dtype if evaluation else self.train_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=dtype)

    @contextlib.contextmanager
    def attack(self, model: nn.Module) -> Iterator[None]:
        """Context of the training attack: the step's autocast, and the parameters frozen (see the module doc).

        With the plain policy this is a no-op, so the CPU path is untouched.
        """
        if self.plain:
            yield
            return
        frozen = [p for p in model.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            with self.autocast():
                yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    # --------------------------------------------------------------------------------------------- evaluation

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Context of evaluation: bf16 autocast if asked; else true fp32, i.e. on CUDA without TF32 convolutions
        and matrix products (PyTorch allows TF32 in cuDNN by default), so reported numbers are fp32 numbers."""
        if self.eval_dtype is not None:
            with self.autocast(evaluation=True):
                yield
            return
        if self.device_type != "cuda":
            yield
            return
        cudnn_tf32, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = cudnn_tf32
            torch.set_float32_matmul_precision(matmul)

