"""Stacked forward passes: M members of one architecture computed as one model, each with its own weights.

Member ``m``'s parameters stay where the unfused runner keeps them — the ``Classifier`` it would train alone — and
each forward stacks them along a leading member dimension (``torch.stack``: a copy whose backward hands every
member exactly its own gradient). For cnn-small and linear every operation is chosen so that a member's
arithmetic does not depend on how many members share the pass (the CPU bit-identity of issue 16):

* activations are batch-last, ``[M, C, H, W, N]``, so every copy and addition runs over rows of ``N`` images;
* convolution (:class:`MemberConv`) is im2col (one strided copy) and one ``torch.bmm`` over the member dimension,
  with a hand-written backward (one GEMM for the weights, one GEMM and ``k·k`` strided additions for the input) —
  each member's product is the same GEMM whatever ``M`` is (grouped convolution is not: its CPU backward picks
  another kernel for ``groups > 1``);
* batch norm is ``F.batch_norm`` over ``M·C`` channels of ``[1, M·C, H·W·N]``, whose CPU kernels reduce, normalise
  and update the running statistics channel by channel; member ``m``'s running statistics are copied back into its
  own buffers;
* the heads (linear, cosine, projection) are ``torch.bmm`` plus a bias added in a separate, single-rounding op.

Shapes: inputs ``[M, N, C, H, W]`` (or ``[M, N, D]``), logits ``[M, N, K]``, features ``[M, N, F]``.
Supported backbones (:data:`STACKED_BACKBONES`): cnn-small's :class:`bench.models.SmallCNN` and the ``linear``
model's ``Flatten``, bit-identical across company on the CPU as above; and resnet18's
:class:`bench.models.ResNetBackbone`, whose convolutions are one grouped ``F.conv2d`` (``groups = M``, channels
member-major, the members' kernels concatenated — what cuDNN runs fast on a GPU, where stacking is meant to pay).
The resnet18 path is within float tolerance of the member's unfused forward and backward, not bit-identical across
company (the grouped kernels may sum in another order for another ``M``). The grouping
(:mod:`bench.fusion.groups`) keeps every other model unfused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import BasicBlock, Classifier, CosineClassifier, ResNetBackbone, SmallCNN, normalized_class_weights


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm`` over members whose per-member result does not depend on the member count.

    With more than one thread the CPU runs a batch of one as a multi-threaded GEMM and a larger batch as one
    single-threaded GEMM per item, and for some shapes (a transposed 9 × 16 operand, the heads' backward) the two
    round differently. A single member is therefore computed as a batch of two (itself and a detached copy whose
    result is dropped), the path every larger batch takes.
    """
    if a.shape[0] != 1:
        return torch.bmm(a, b)
    return torch.bmm(_twice(a), _twice(b))[:1]


def _twice(t: torch.Tensor) -> torch.Tensor:
    """``[1, R, C]`` → ``[2, R, C]`` (``t`` and a detached copy) with the strides a stack of two would have: a
    transposed operand stays transposed, so the GEMM sees the same layout as for any larger member count."""
    if t.is_contiguous():
        return torch.cat([t, t.detach()])
    if t.transpose(1, 2).is_contiguous():
        return torch.cat([t.transpose(1, 2), t.detach().transpose(1, 2)]).transpose(1, 2)
    raise ValueError(f"bmm operand with strides {t.stride()} is neither contiguous nor a transposed contiguous one")


class MemberConv(torch.autograd.Function):
    """Member-wise convolution in batch-last layout: ``x`` ``[M, C, H, W, N]``, ``weight`` ``[M, O, C, k, k]`` →
    ``[M, O, H', W', N]``, as im2col and one GEMM per member, with a hand-written backward.

    With the batch innermost every copy and addition below runs over contiguous rows of ``N`` images, not over the
    few pixels of an image row. im2col is one strided view of the padded input copied once into
    ``[M, C·k·k, H'·W'·N]`` (the weight's own ``(c, i, j)`` order, so the kernel is a free reshape); the backward
    takes the weight gradient with one GEMM against those columns and the input gradient with one GEMM and ``k·k``
    strided additions into a single buffer (col2im). Autograd through ``k·k`` shifted slices instead allocates,
    fills and adds one padded tensor per slice, which costs more than the convolution. Every step is a copy, a GEMM
    per member (:func:`bmm`) or an element-wise addition in a fixed order, so a member's result does not depend on
    the member count. Gradients are computed only for the inputs that need them: the attack needs none for the
    (frozen) weights, the training step none for the (adversarial) input.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        m, c, h, w, n = x.shape
        o, k = weight.shape[1], weight.shape[-1]
        padded = F.pad(x, (0, 0) + (padding,) * 4)  # [M, C, H + 2p, W + 2p, N], contiguous
        h_out = (h + 2 * padding - k) // stride + 1
        w_out = (w + 2 * padding - k) // stride + 1
        sm, sc, sh, sw, sn = padded.stride()
        cols = padded.as_strided((m, c, k, k, h_out, w_out, n), (sm, sc, sh, sw, stride * sh, stride * sw, sn))
        cols = cols.reshape(m, c * k * k, h_out * w_out * n)
        kernel = weight.reshape(m, o, c * k * k)
        ctx.save_for_backward(cols if ctx.needs_input_grad[1] else None,
                              kernel if ctx.needs_input_grad[0] else None)
        ctx.geometry = (x.shape, k, stride, padding, h_out, w_out)
        return bmm(kernel, cols).view(m, o, h_out, w_out, n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        cols, kernel = ctx.saved_tensors
        (m, c, h, w, n), k, stride, padding, h_out, w_out = ctx.geometry
        grad = grad.contiguous().view(m, -1, h_out * w_out * n)
        grad_weight = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_weight = bmm(grad, cols.transpose(1, 2)).view(m, -1, c, k, k)
        if ctx.needs_input_grad[0]:
            grad_cols = bmm(kernel.transpose(1, 2), grad).view(m, c, k, k, h_out, w_out, n)
            grad_x = grad.new_zeros(m, c, h, w, n)  # col2im straight into the unpadded input: padding gets nothing
            for i in range(k):
                rows = _inside(i, stride, padding, h, h_out)
                for j in range(k):
                    cols_ = _inside(j, stride, padding, w, w_out)
                    if rows is None or cols_ is None:
                        continue
                    grad_x[:, :, rows[0]:rows[1]:stride, cols_[0]:cols_[1]:stride].add_(  # in place: no copy back
                        grad_cols[:, :, i, j, rows[2]:rows[3], cols_[2]:cols_[3]])
        return grad_x, grad_weight, None, None


def _inside(offset: int, stride: int, padding: int, size: int, size_out: int) -> tuple[int, int, int, int] | None:
    """The output positions ``o`` whose tap ``offset`` reads the unpadded input (``0 <= offset + stride·o − padding <
    size``), as ``(first input, end input, first output, end output)``; ``None`` when the tap only reads padding."""
    first = max(0, -(-(padding - offset) // stride))
    last = min(size_out - 1, (size - 1 + padding - offset) // stride)
    if last < first:
        return None
    start = offset + stride * first - padding
    return start, start + stride * (last - first) + 1, first, last + 1


def conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Member-wise convolution (:class:`MemberConv`): ``x`` ``[M, C, H, W, N]``, ``weight`` ``[M, O, C, k, k]`` →
    ``[M, O, H', W', N]``."""
    return MemberConv.apply(x.contiguous(), weight, stride, padding)


class BatchNorms:
    """The running statistics of one ``BatchNorm2d`` across members, as ``[M·C]`` tensors for ``F.batch_norm``."""

    def __init__(self, layers: Sequence[nn.BatchNorm2d]) -> None:
        self.layers = list(layers)
        self.mean = torch.cat([b.running_mean for b in layers])
        self.var = torch.cat([b.running_var for b in layers])
        self.eps = layers[0].eps
        self.momentum = layers[0].momentum
        self.counters = [b.num_batches_tracked for b in layers]  # one foreach call counts every member's batch
        self.frozen = False  # batch statistics without updating the running ones (bn_mode "frozen")

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, training: bool) -> torch.Tensor:
        if training and self.frozen:  # nn.BatchNorm2d in train mode with track_running_stats = False
            return F.batch_norm(x, None, None, weight.reshape(-1), bias.reshape(-1), True, self.momentum, self.eps)
        out = F.batch_norm(x, self.mean, self.var, weight.reshape(-1), bias.reshape(-1), training, self.momentum,
                           self.eps)
        if training:
            torch._foreach_add_(self.counters, 1)
        return out

    def write_back(self) -> None:
        """Copy each member's running statistics into its own module (exact copies)."""
        c = self.layers[0].num_features
        for i, b in enumerate(self.layers):
            b.running_mean.copy_(self.mean[i * c:(i + 1) * c])
            b.running_var.copy_(self.var[i * c:(i + 1) * c])


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(tensors))


class StackedClassifier:
    """M :class:`bench.models.Classifier` members (one architecture) evaluated as one stacked model.

    ``weights(grad)`` stacks the members' parameters (with autograd when ``grad``); a forward then takes those
    stacked weights. The members keep their own running statistics (:meth:`sync_buffers` copies them back) and
    inference adjustment (``logit_scale``, ``logit_bias``).
    """

    def __init__(self, members: Sequence[Classifier]) -> None:
        self.members = list(members)
        first = self.members[0]
        kinds = {type(m.backbone) for m in self.members} | {type(m.classifier) for m in self.members}
        if len({type(m.backbone) for m in self.members}) != 1 or len({type(m.classifier) for m in self.members}) != 1:
            raise ValueError(f"members of a stacked model must share one architecture, got {sorted(map(str, kinds))}")
        self.backbone = STACKED_BACKBONES.get(type(first.backbone))
        if self.backbone is None:
            raise ValueError(f"no stacked forward for backbone {type(first.backbone).__name__}")
        self.cosine = isinstance(first.classifier, CosineClassifier)
        gammas = {getattr(m.classifier, "gamma", 0.0) for m in self.members}
        if len(gammas) != 1:
            raise ValueError(f"members of a stacked model must share one classifier head, got gammas {sorted(gammas)}")
        self.gamma = gammas.pop()
        self.names = [name for name, _ in first.named_parameters() if not name.startswith("head.")]
        self.norms = _batch_norms(self.members)

    def weights(self, grad: bool) -> dict[str, torch.Tensor]:
        """Every parameter stacked over members ``[M, ...]``; detached copies unless ``grad``."""
        per_member = [dict(m.named_parameters()) for m in self.members]
        with torch.set_grad_enabled(grad):
            return {name: _stack([p[name] if grad else p[name].detach() for p in per_member]) for name in self.names}

    def forward_features(self, w: dict[str, torch.Tensor], x: torch.Tensor,
                         training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [M, N, K], h [M, N, F])`` of stacked inputs ``x`` ``[M, N, ...]``."""
        h = self.backbone(self, w, x, training)
        if self.cosine:
            weight = normalized_class_weights(w["classifier.weight"], self.gamma, dim=2)
            logits = bmm(F.normalize(h, dim=2), weight.transpose(1, 2))
        else:
            logits = bmm(h, w["classifier.weight"].transpose(1, 2)) + w["classifier.bias"][:, None, :]
        scale = _stack([m.logit_scale for m in self.members])
        bias = _stack([m.logit_bias for m in self.members])
        return logits * scale[:, None, None] + bias[:, None, :], h

    def project(self, h: torch.Tensor, members: Sequence[int]) -> torch.Tensor:
        """SRAT's projection head of the members at positions ``members`` only: ``[M, N, F]`` →
        ``[len(members), N, 128]``. The head's weights are stacked from those members alone, so the other members'
        heads get no gradient (``None``, as unfused), not a zero one that weight decay and momentum would act on."""
        idx = torch.as_tensor(list(members), device=h.device)
        h = h.index_select(0, idx)
        head = {name: _stack([dict(self.members[i].named_parameters())[name] for i in members])
                for name in ("head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias")}
        z = torch.relu(bmm(h, head["head.0.weight"].transpose(1, 2)) + head["head.0.bias"][:, None, :])
        z = bmm(z, head["head.2.weight"].transpose(1, 2)) + head["head.2.bias"][:, None, :]
        return F.normalize(z, dim=2)

    @contextlib.contextmanager
    def statistics_frozen(self, frozen: bool) -> Iterator[None]:
        """Within the block, train-mode forwards use batch statistics and leave the running ones as they are
        (:func:`bench.attacks.crafting_mode`'s ``frozen``); nothing changes when ``frozen`` is false."""
        for norm in self.norms.values():
            norm.frozen = frozen
        try:
            yield
        finally:
            for norm in self.norms.values():
                norm.frozen = False

    def sync_buffers(self) -> None:
        """Copy the stacked running statistics back into each member's modules."""
        for norm in self.norms.values():
            norm.write_back()

    def reload_buffers(self) -> None:
        """Re-read the members' running statistics (after a member's state was loaded or replaced)."""
        self.norms = _batch_norms(self.members)


def _batch_norms(members: Sequence[Classifier]) -> dict[str, BatchNorms]:
    per_member = [dict(m.named_modules()) for m in members]
    names = [n for n, mod in per_member[0].items() if isinstance(mod, nn.BatchNorm2d)]
    return {n: BatchNorms([p[n] for p in per_member]) for n in names}


def _small_cnn(model: StackedClassifier, w: dict[str, torch.Tensor], x: torch.Tensor, training: bool) -> torch.Tensor:
    """:class:`bench.models.SmallCNN` over stacked members, in batch-last layout ``[M, C, H, W, N]`` throughout:
    the convolutions need no transposes, and batch norm sees each member's channel as one contiguous run
    (``[1, M·C, H·W·N]``)."""
    out = x.permute(0, 2, 3, 4, 1)  # [M, N, C, H, W] → [M, C, H, W, N]
    # SmallCNN.net: conv (0) bn (1) relu, conv (3, stride 2) bn (4) relu, conv (6, stride 2) bn (7) relu, pool
    for conv, norm, stride in (("0", "1", 1), ("3", "4", 2), ("6", "7", 2)):
        out = conv2d(out, w[f"backbone.net.{conv}.weight"], stride, 1)
        shape = out.shape
        out = model.norms[f"backbone.net.{norm}"](out.view(1, shape[0] * shape[1], -1),
                                                  w[f"backbone.net.{norm}.weight"], w[f"backbone.net.{norm}.bias"],
                                                  training)
        out = torch.relu(out).view(shape)
    m, c, h, w_, n = out.shape
    pooled = out.view(m * c, h * w_, n).mean(dim=1).view(m, c, n)  # global average pool
    return pooled.transpose(1, 2).contiguous()  # [M, N, F]


def _flatten(model: StackedClassifier, w: dict[str, torch.Tensor], x: torch.Tensor, training: bool) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], -1)


def grouped_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Member-wise convolution as one grouped convolution: ``x`` ``[N, M·C, H, W]`` (member-major channels),
    ``weight`` ``[M, O, C, k, k]`` → ``[N, M·O, H', W']``. Within tolerance of each member's own ``F.conv2d``; the
    kernel (and so the rounding) may differ with ``M``."""
    m, o = weight.shape[:2]
    return F.conv2d(x, weight.reshape(m * o, *weight.shape[2:]), None, stride, padding, 1, m)


def _resnet(model: StackedClassifier, w: dict[str, torch.Tensor], x: torch.Tensor, training: bool) -> torch.Tensor:
    """:class:`bench.models.ResNetBackbone` (3×3 stem, :class:`bench.models.BasicBlock` stages with 1×1 shortcuts,
    global average pool) over stacked members."""
    m, n = x.shape[:2]
    out = x.transpose(0, 1).reshape(n, m * x.shape[2], *x.shape[3:])  # [N, M·C, H, W]

    def conv_bn(t: torch.Tensor, conv: str, norm: str, stride: int, padding: int) -> torch.Tensor:
        t = grouped_conv2d(t, w[f"{conv}.weight"], stride, padding)
        return model.norms[norm](t, w[f"{norm}.weight"], w[f"{norm}.bias"], training)

    out = torch.relu(conv_bn(out, "backbone.conv1", "backbone.bn1", 1, 1))
    for i, block in enumerate(model.members[0].backbone.layers):
        assert isinstance(block, BasicBlock), type(block)
        p = f"backbone.layers.{i}"
        stride = block.conv1.stride[0]
        y = torch.relu(conv_bn(out, f"{p}.conv1", f"{p}.bn1", stride, 1))
        y = conv_bn(y, f"{p}.conv2", f"{p}.bn2", 1, 1)
        shortcut = conv_bn(out, f"{p}.shortcut.0", f"{p}.shortcut.1", stride, 0) if len(block.shortcut) else out
        out = torch.relu(y + shortcut)
    pooled = F.adaptive_avg_pool2d(out, 1).view(n, m, -1)
    return pooled.transpose(0, 1).contiguous()  # [M, N, F]


Backbone = Callable[[StackedClassifier, dict, torch.Tensor, bool], torch.Tensor]
# Backbone classes with a stacked forward; a model whose backbone is not here is never fused.
STACKED_BACKBONES: dict[type, Backbone] = {SmallCNN: _small_cnn, nn.Flatten: _flatten, ResNetBackbone: _resnet}


def stackable(model: Classifier) -> bool:
    """Whether a model's architecture has a stacked forward."""
    return type(model.backbone) in STACKED_BACKBONES
