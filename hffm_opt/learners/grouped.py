"""Grouped products for the mixture of experts: rows sorted by expert, each group of rows through its own expert's
two layers, without padding and without copying a weight per block.

:func:`grouped_mlp` ``(x (R, K), w1 (G, K, H), w2 (G, H, N), offs (G,) int32) -> (R, N)``: rows ``offs[g-1]:offs[g]``
of ``x`` through ``gelu(rows @ w1[g]) @ w2[g]`` (``offs`` cumulative row ends, ``offs[-1] == R``; an empty group is
allowed). Each product is torch's ``_grouped_mm``; the two layers are one autograd function whose backward (the input
gradients are grouped products by the transposed weights, the weight gradients grouped ``x^T dy`` products) is a
second one, each with a ``vmap`` rule that turns a batch of D independent problems into one product over D x G
groups, so the experts run under ``torch.func.vmap(grad(...))`` as one call for all devices. One function for both
layers instead of one per product: under ``vmap(grad)`` every custom function call costs a dispatch in Python
(a 20-device MoE step 19.9 -> 18.1 ms median on one thread, ``experiments/learner_speed``), and the backward reuses
the first layer's output instead of computing it again. The FLOP counter learns the products' cost (2 R K N; a weight
gradient 2 R K N too), so ``torch.utils.flop_counter`` measures what runs. The CPU kernel runs on one thread: with
several torch threads its per-group parallel regions took 50x to 300x longer (60 ms -> 3 to 17 s for 1,024 groups of
64 rows on 2 cores shared with another process). Units: none.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils import flop_counter


def _batched(info, in_dims, *tensors: Tensor) -> list[Tensor]:
    """The tensors with their vmap dimension first (an unbatched one expanded to the batch)."""
    return [t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
            for t, d in zip(tensors, in_dims)]


def _grouped(a: Tensor, b: Tensor, offs: Tensor) -> Tensor:
    """``torch._grouped_mm`` on one thread (module docstring)."""
    threads = torch.get_num_threads()
    if threads == 1:
        return torch._grouped_mm(a, b, offs=offs)
    torch.set_num_threads(1)
    try:
        return torch._grouped_mm(a, b, offs=offs)
    finally:
        torch.set_num_threads(threads)


def _flat_offsets(offs: Tensor, rows: int) -> Tensor:
    """(D, G) per-problem row ends -> (D * G,) row ends in the D problems' stacked rows."""
    shift = torch.arange(offs.shape[0], dtype=offs.dtype, device=offs.device)[:, None] * rows
    return (offs + shift).reshape(-1)


def _flat(t: Tensor) -> Tensor:
    """(D, R, ...) -> (D * R, ...): a batch of problems' rows (or groups' weights) stacked."""
    return t.reshape(-1, *t.shape[2:])


class _GroupedMLP(torch.autograd.Function):
    """``gelu(x @ w1[g]) @ w2[g]`` per group (the experts' two layers in one function: one dispatch forward, one
    backward, instead of one per product); also returns the first layer's output before and after the GELU (not
    differentiable), which the backward reuses."""

    @staticmethod
    def forward(x: Tensor, w1: Tensor, w2: Tensor, offs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pre = _grouped(x, w1, offs)
        h = F.gelu(pre)
        return _grouped(h, w2, offs), pre, h

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(*inputs, *output[1:])

    @staticmethod
    def backward(ctx, grad: Tensor, *_):
        x, w1, w2, offs, pre, h = ctx.saved_tensors
        return (*_GroupedMLPGrad.apply(grad.contiguous(), x, w1, w2, offs, pre, h), None)

    @staticmethod
    def vmap(info, in_dims, x, w1, w2, offs):
        x, w1, w2, offs = _batched(info, in_dims, x, w1, w2, offs)
        d, rows = x.shape[:2]
        out = _GroupedMLP.apply(_flat(x), _flat(w1), _flat(w2), _flat_offsets(offs, rows))
        return tuple(t.view(d, rows, -1) for t in out), (0, 0, 0)


class _GroupedMLPGrad(torch.autograd.Function):
    """The gradients (dx, dw1, dw2) of :class:`_GroupedMLP`, given its first layer's output ``pre`` and ``h`` =
    gelu(pre)."""

    @staticmethod
    def forward(dy: Tensor, x: Tensor, w1: Tensor, w2: Tensor, offs: Tensor, pre: Tensor, h: Tensor):
        dh = _grouped(dy, w2.transpose(-1, -2), offs)
        dw2 = _grouped(h.t(), dy, offs)
        dpre = torch.ops.aten.gelu_backward(dh, pre)
        return _grouped(dpre, w1.transpose(-1, -2), offs), _grouped(x.t(), dpre, offs), dw2

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("grouped_mlp has no second derivative")

    @staticmethod
    def vmap(info, in_dims, dy, x, w1, w2, offs, pre, h):
        dy, x, w1, w2, offs, pre, h = _batched(info, in_dims, dy, x, w1, w2, offs, pre, h)
        d, rows = x.shape[:2]
        dx, dw1, dw2 = _GroupedMLPGrad.apply(_flat(dy).contiguous(), _flat(x).contiguous(), _flat(w1), _flat(w2),
                                             _flat_offsets(offs, rows), _flat(pre), _flat(h))
        g = offs.shape[1]
        return (dx.view(d, rows, -1), dw1.view(d, g, *dw1.shape[1:]), dw2.view(d, g, *dw2.shape[1:])), (0, 0, 0)


def grouped_mlp(x: Tensor, w1: Tensor, w2: Tensor, offs: Tensor) -> Tensor:
    """``gelu(rows @ w1[g]) @ w2[g]`` for the rows ``offs[g-1]:offs[g]`` of ``x`` (R, K); ``w1`` (G, K, H), ``w2``
    (G, H, N). Differentiable in ``x``, ``w1`` and ``w2``, and under ``torch.func.vmap``."""
    return _GroupedMLP.apply(x, w1, w2, offs)[0]


def grouped_available(device: torch.device) -> bool:
    """Whether :func:`grouped_mlp` runs on ``device`` in float32 (torch's CPU kernel; its CUDA kernel needs
    bfloat16)."""
    return device.type == "cpu" and hasattr(torch, "_grouped_mm")


def _grouped_flops(a_shape, b_shape, *args, **kwargs) -> int:
    """FLOPs of ``_grouped_mm``: 2 x rows x K x N for (R, K) x (G, K, N); 2 x K_total x M x N for (M, K) x (K, N)
    split along K (the weight gradient)."""
    if len(b_shape) == 3:
        return 2 * a_shape[0] * a_shape[1] * b_shape[2]
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


if hasattr(torch.ops.aten, "_grouped_mm") and torch.ops.aten._grouped_mm not in flop_counter.flop_registry:
    flop_counter.register_flop_formula(torch.ops.aten._grouped_mm)(_grouped_flops)
