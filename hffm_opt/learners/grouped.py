"""Grouped matrix products for the mixture of experts: rows sorted by expert, each group of rows times its own
expert's weight, without padding and without copying a weight per block.

:func:`grouped_mm` ``(x (R, K), w (G, K, N), offs (G,) int32) -> (R, N)``: rows ``offs[g-1]:offs[g]`` of ``x``
times ``w[g]`` (``offs`` cumulative row ends, ``offs[-1] == R``; an empty group is allowed). It is torch's
``_grouped_mm`` wrapped in an autograd function with its backward (the input gradient is another grouped product,
the weight gradient a grouped ``x^T dy``) and a ``vmap`` rule that turns a batch of D independent problems into one
product over D x G groups, so it runs under ``torch.func.vmap(grad(...))`` as one call for all devices.
The FLOP counter learns the products' cost (2 R K N; the weight gradient 2 R K N too), so
``torch.utils.flop_counter`` measures what runs. The CPU kernel runs on one thread: with several torch threads its
per-group parallel regions took 50x to 300x longer (60 ms -> 3 to 17 s for 1,024 groups of 64 rows on 2 cores
shared with another process). Units: none.
"""

from __future__ import annotations

import torch
from torch import Tensor
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


class _GroupedMM(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, w: Tensor, offs: Tensor) -> Tensor:
        return _grouped(x, w, offs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, w, offs = ctx.saved_tensors
        grad = grad.contiguous()
        return _GroupedMM.apply(grad, w.transpose(-1, -2), offs), _GroupedWeightGrad.apply(x, grad, offs), None

    @staticmethod
    def vmap(info, in_dims, x, w, offs):
        x, w, offs = _batched(info, in_dims, x, w, offs)
        d, rows = x.shape[:2]
        y = _GroupedMM.apply(x.reshape(d * rows, -1), w.reshape(-1, *w.shape[2:]), _flat_offsets(offs, rows))
        return y.view(d, rows, -1), 0


class _GroupedWeightGrad(torch.autograd.Function):
    """``x^T dy`` per group: (R, K), (R, N), (G,) -> (G, K, N) (the weight gradient of :class:`_GroupedMM`)."""

    @staticmethod
    def forward(x: Tensor, dy: Tensor, offs: Tensor) -> Tensor:
        return _grouped(x.t(), dy, offs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad: Tensor):
        raise NotImplementedError("grouped_mm has no second derivative")

    @staticmethod
    def vmap(info, in_dims, x, dy, offs):
        x, dy, offs = _batched(info, in_dims, x, dy, offs)
        d, rows = x.shape[:2]
        out = _GroupedWeightGrad.apply(x.reshape(d * rows, -1).contiguous(), dy.reshape(d * rows, -1).contiguous(),
                                       _flat_offsets(offs, rows))
        return out.view(d, offs.shape[1], *out.shape[1:]), 0


def grouped_mm(x: Tensor, w: Tensor, offs: Tensor) -> Tensor:
    """Rows ``offs[g-1]:offs[g]`` of ``x`` (R, K) times ``w[g]`` (G, K, N); ``offs`` (G,) int32 cumulative row ends
    with ``offs[-1] == R``. Differentiable in ``x`` and ``w``, and under ``torch.func.vmap``."""
    return _GroupedMM.apply(x, w, offs)


def grouped_available(device: torch.device) -> bool:
    """Whether :func:`grouped_mm` runs on ``device`` in float32 (torch's CPU kernel; its CUDA kernel needs
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
